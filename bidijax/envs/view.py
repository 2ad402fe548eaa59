"""MiniGrid's egocentric 7x7 view, with MiniGrid's occlusion (``Grid.process_vis``).

The image is indexed like MiniGrid's ``obs["image"]``: ``image[i, j]`` with ``i`` the view
column (left to right) and ``j`` the view row (far to near); the agent sits at ``(3, 6)``
facing up. Cells outside the map read as walls; cells the agent cannot see are ``(0, 0, 0)``;
the agent's own cell shows what it carries (or empty).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import constants as C
from .scene import WALL_CELL, Scene

_I, _J = np.meshgrid(np.arange(C.VIEW), np.arange(C.VIEW), indexing="ij")
_FWD = (C.AGENT_VY - _J).astype(np.int32)  # steps forward of each view cell
_RIGHT = (_I - C.AGENT_VX).astype(np.int32)  # steps to the right of each view cell
#: World (row, col) offsets of each view cell, per agent direction: int32[4, 7, 7, 2].
VIEW_OFFSETS = np.stack(
    [_FWD[..., None] * C.DIR_VEC[d] + _RIGHT[..., None] * C.DIR_VEC[(d + 1) % 4] for d in range(4)]
).astype(np.int32)


def _see_behind(cells: jax.Array) -> jax.Array:
    """MiniGrid ``see_behind``: walls and closed or locked doors block sight."""
    obj, state = cells[..., 0], cells[..., 2]
    return ~((obj == C.WALL) | ((obj == C.DOOR) & (state != C.OPEN)))


_ROW = np.uint32((1 << C.VIEW) - 1)
_BIT = np.uint32(1) << np.arange(C.VIEW, dtype=np.uint32)
#: 7-bit reversal table: turns a right-to-left sweep into a left-to-right one.
_REVERSE = np.array([int(f"{b:0{C.VIEW}b}"[::-1], 2) for b in range(1 << C.VIEW)], np.uint32)


def _spread_right(mask: jax.Array, see: jax.Array) -> jax.Array:
    """Left-to-right sweep on 7-bit rows (bit i = view column i).

    A visible transparent cell reveals its right neighbour, which, if transparent, reveals the
    next one, and so on: adding ``mask & see`` to ``see`` carries through each run of
    transparent cells and flips exactly the cells reached, up to the first opaque one.
    """
    carried = (see + (mask & see)) & _ROW
    return ((carried ^ see) | mask) & _ROW


def visibility(image: jax.Array) -> jax.Array:
    """Boolean ``[7, 7]`` mask of visible cells, propagated exactly as ``Grid.process_vis``.

    Rows are processed from the agent's (nearest) to the farthest, as 7-bit integers: a
    left-to-right then a right-to-left sweep per row, each visible transparent cell also
    revealing the cells ahead of it and diagonally ahead in its sweep direction.
    """
    see = _see_behind(image).T  # [j, i]
    see_bits = jnp.sum(jnp.where(see, _BIT, np.uint32(0)), axis=1, dtype=jnp.uint32)
    reverse = jnp.asarray(_REVERSE)

    def row(incoming, see_row):
        m1 = _spread_right(incoming, see_row)
        m2 = reverse[_spread_right(reverse[m1], reverse[see_row])]
        go_right = m1 & see_row & (_ROW >> 1)  # columns 0..5 reveal up and up-right
        go_left = m2 & see_row & (_ROW - 1)  # columns 1..6 reveal up and up-left
        above = (go_right | (go_right << 1) | go_left | (go_left >> 1)) & _ROW
        return above, m2

    start = np.uint32(1 << C.AGENT_VX)
    _, rows = jax.lax.scan(row, start, see_bits[::-1])  # the agent's row first
    rows = rows[::-1]
    return ((rows[None, :] >> jnp.arange(C.VIEW, dtype=jnp.uint32)[:, None]) & 1).astype(bool)


def egocentric_view(scene: Scene) -> jax.Array:
    """MiniGrid's ``obs["image"]`` for ``scene``: ``uint8[7, 7, 3]`` indexed ``[i, j]``."""
    pad = C.VIEW
    cells = jnp.pad(scene.cells, ((pad, pad), (pad, pad), (0, 0)))
    h, w = scene.cells.shape[:2]
    rows_in = jnp.arange(h + 2 * pad)
    cols_in = jnp.arange(w + 2 * pad)
    on_map = ((rows_in >= pad) & (rows_in < h + pad))[:, None] & ((cols_in >= pad) & (cols_in < w + pad))[None, :]
    cells = jnp.where(on_map[..., None], cells, jnp.asarray(WALL_CELL, jnp.uint8))
    pos = jnp.asarray(VIEW_OFFSETS)[scene.agent_dir] + scene.agent_pos + pad
    image = cells[pos[..., 0], pos[..., 1]]
    image = image.at[C.AGENT_VX, C.AGENT_VY].set(jnp.asarray((C.EMPTY, 0, 0), jnp.uint8))
    vis = visibility(image)
    agent_cell = jnp.where(scene.carrying[0] > 0, scene.carrying, jnp.asarray((C.EMPTY, 0, 0), jnp.uint8))
    image = image.at[C.AGENT_VX, C.AGENT_VY].set(agent_cell)
    return jnp.where(vis[..., None], image, jnp.uint8(0))
