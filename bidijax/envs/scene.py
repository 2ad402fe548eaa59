"""A uniform, MiniGrid-encoded view of any grid-world state.

``Scene`` is what percepts, observations and the oracle read: the full grid as MiniGrid
cell encodings ``uint8[H, W, 3]`` indexed ``(row, col)`` (the agent is not drawn on it),
the agent's position ``(row, col)`` and direction, and the encoding of what it carries.
``scene_of`` builds it from a bidijax BabyAI state or from a native navix ``State``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from . import constants as C


class Scene(struct.PyTreeNode):
    cells: jax.Array  # uint8[H, W, 3]: (object, colour, door state) per cell, MiniGrid codes
    agent_pos: jax.Array  # int32[2]: (row, col)
    agent_dir: jax.Array  # int32: 0 east, 1 south, 2 west, 3 north
    carrying: jax.Array  # uint8[3]: encoding of the carried object, type 0 when nothing


def encode_cell(obj: int, colour: int = 0, state: int = 0) -> jax.Array:
    return jnp.asarray([obj, colour, state], dtype=jnp.uint8)


WALL_CELL = (C.WALL, C.GREY, 0)
EMPTY_CELL = (C.EMPTY, 0, 0)


def _navix_scene(state) -> Scene:
    """Scene of a navix ``State``: grid walls plus every non-player entity that is on the map."""
    grid = state.grid
    height, width = grid.shape
    cells = jnp.where(
        (grid < 0)[..., None],
        jnp.asarray(WALL_CELL, jnp.uint8),
        jnp.asarray(EMPTY_CELL, jnp.uint8),
    )
    carrying = jnp.zeros(3, jnp.uint8)
    player = state.get_player(idx=0)
    for name, ent in state.entities.items():
        if name == "player":
            continue
        pos = ent.position.reshape(-1, 2)
        tag = jnp.broadcast_to(ent.tag, pos.shape[:1]).astype(jnp.uint8)
        colour = jnp.broadcast_to(getattr(ent, "colour", jnp.uint8(0)), pos.shape[:1]).astype(jnp.uint8)
        if name == "door":
            st = jnp.broadcast_to(ent.symbolic_state, pos.shape[:1]).astype(jnp.uint8)
        else:
            st = jnp.zeros(pos.shape[:1], jnp.uint8)
        code = jnp.stack([tag, colour, st], axis=-1)
        on_map = (pos[:, 0] >= 0) & (pos[:, 0] < height) & (pos[:, 1] >= 0) & (pos[:, 1] < width)
        rows = jnp.where(on_map, pos[:, 0], height)  # out of range rows are dropped
        cells = cells.at[rows, pos[:, 1]].set(code, mode="drop")
        if name == "key":
            held = ent.id.reshape(-1) == player.pocket
            first = jnp.argmax(held)
            carrying = jnp.where(jnp.any(held), code[first], carrying)
    return Scene(
        cells=cells,
        agent_pos=player.position.astype(jnp.int32),
        agent_dir=player.direction.astype(jnp.int32),
        carrying=carrying,
    )


def scene_of(state) -> Scene:
    """Return the ``Scene`` of a bidijax BabyAI state or a navix ``State`` (trace-time dispatch)."""
    if isinstance(state, Scene):
        return state
    if hasattr(state, "scene"):
        return state.scene
    if hasattr(state, "entities") and hasattr(state, "grid"):
        return _navix_scene(state)
    raise TypeError(f"scene_of: unsupported state type {type(state).__name__}; expected a bidijax or navix state")


def front_pos(scene: Scene) -> jax.Array:
    return scene.agent_pos + jnp.asarray(C.DIR_VEC)[scene.agent_dir]


def cell_at(cells: jax.Array, pos: jax.Array) -> jax.Array:
    """Cell encoding at ``pos`` (row, col); positions off the map read as walls."""
    h, w = cells.shape[:2]
    inside = (pos[0] >= 0) & (pos[0] < h) & (pos[1] >= 0) & (pos[1] < w)
    cell = cells[jnp.clip(pos[0], 0, h - 1), jnp.clip(pos[1], 0, w - 1)]
    return jnp.where(inside, cell, jnp.asarray(WALL_CELL, jnp.uint8))


def mission_of(state) -> jax.Array:
    """Mission integers ``int32[4]`` (task, colour, type, article) of a bidijax or navix state.

    Navix states carry no mission text; it is derived from the entities present: a key and a
    door make the DoorKey mission, a goal the "get to the green goal square" mission.
    """
    if hasattr(state, "mission") and not (hasattr(state, "entities") and hasattr(state, "grid")):
        return jnp.asarray(state.mission, jnp.int32)
    ents = getattr(state, "entities", {})
    if "door" in ents and "key" in ents:
        task = C.TASK_DOORKEY
    elif "goal" in ents:
        task = C.TASK_GOAL
    else:
        task = C.TASK_OTHER
    return jnp.asarray([task, C.GREEN, C.GOAL, C.ARTICLE_THE], jnp.int32)
