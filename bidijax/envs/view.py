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


def visibility(image: jax.Array) -> jax.Array:
    """Boolean ``[7, 7]`` mask of visible cells, propagated exactly as ``Grid.process_vis``."""
    see = _see_behind(image)
    n = C.VIEW
    mask = [[False] * n for _ in range(n)]
    mask[C.AGENT_VX][C.AGENT_VY] = True
    for j in reversed(range(n)):
        for i in range(n - 1):
            go = jnp.logical_and(mask[i][j], see[i, j])
            mask[i + 1][j] = jnp.logical_or(mask[i + 1][j], go)
            if j > 0:
                mask[i + 1][j - 1] = jnp.logical_or(mask[i + 1][j - 1], go)
                mask[i][j - 1] = jnp.logical_or(mask[i][j - 1], go)
        for i in reversed(range(1, n)):
            go = jnp.logical_and(mask[i][j], see[i, j])
            mask[i - 1][j] = jnp.logical_or(mask[i - 1][j], go)
            if j > 0:
                mask[i - 1][j - 1] = jnp.logical_or(mask[i - 1][j - 1], go)
                mask[i][j - 1] = jnp.logical_or(mask[i][j - 1], go)
    return jnp.stack([jnp.stack([jnp.asarray(m) for m in col]) for col in mask])


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
