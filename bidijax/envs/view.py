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


def _sweep_row(mask: jax.Array, see: jax.Array):
    """One row of ``process_vis``: its left-to-right then right-to-left sweeps, vectorised.

    Returns the row's final mask and the cells it reveals in the row above (farther away).
    """
    idx = jnp.arange(C.VIEW)
    blocked = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(~see)])  # blocked[t]: opaque in [0, t)
    # left to right: cell k reaches i > k when every cell in [k, i) lets sight through
    ltr = (idx[None, :] < idx[:, None]) & (blocked[idx][:, None] == blocked[idx][None, :])
    m1 = mask | jnp.any(ltr & mask[None, :], axis=1)
    # right to left: cell k reaches i < k when every cell in (i, k] lets sight through
    rtl = (idx[None, :] > idx[:, None]) & (blocked[idx + 1][:, None] == blocked[idx + 1][None, :])
    m2 = m1 | jnp.any(rtl & m1[None, :], axis=1)
    go_right = m1 & see & (idx < C.VIEW - 1)
    go_left = m2 & see & (idx > 0)
    above = go_right | go_left
    above = above | jnp.concatenate([jnp.zeros(1, bool), go_right[:-1]])
    above = above | jnp.concatenate([go_left[1:], jnp.zeros(1, bool)])
    return m2, above


def visibility(image: jax.Array) -> jax.Array:
    """Boolean ``[7, 7]`` mask of visible cells, propagated exactly as ``Grid.process_vis``."""
    see = _see_behind(image).T  # [j, i]: rows from far to near
    start = jnp.zeros(C.VIEW, bool).at[C.AGENT_VX].set(True)

    def row(incoming, see_row):
        final, above = _sweep_row(incoming, see_row)
        return above, final

    _, rows = jax.lax.scan(row, start, see[::-1])  # nearest row (the agent's) first
    return rows[::-1].T


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
