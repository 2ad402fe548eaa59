"""Breadth-first-search oracle over (position, direction) for GoTo and goal-reaching tasks.

``distances`` gives, for every (row, col, direction), the fewest left / right / forward actions
after which the task succeeds: for GoTo missions, an object matching the mission is in front of
the agent; for goal missions (navix Empty, FourRooms, ...), the agent stands on a goal cell.
Only the navigation actions are searched: objects, walls, lava and closed doors are obstacles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import constants as C
from .scene import mission_of, scene_of

INF = jnp.iinfo(jnp.int32).max // 2


def _success_cells(cells: jax.Array, mission: jax.Array) -> jax.Array:
    """Bool ``[H, W, 4]``: post-action (position, direction) pairs at which the task succeeds."""
    h, w = cells.shape[:2]
    obj, colour = cells[..., 0].astype(jnp.int32), cells[..., 1].astype(jnp.int32)
    if_goto = (obj == mission[2]) & (colour == mission[1])
    padded = jnp.pad(if_goto, 1)
    faced = jnp.stack(
        [padded[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in C.DIR_VEC], axis=-1
    )  # faced[r, c, d]: the cell in front of (r, c) facing d is a target
    on_goal = jnp.broadcast_to((obj == C.GOAL)[..., None], (h, w, 4))
    return jnp.where(mission[0] == C.TASK_GOTO, faced, on_goal)


def _walkable(cells: jax.Array) -> jax.Array:
    obj = cells[..., 0]
    return (obj == C.EMPTY) | (obj == C.FLOOR) | (obj == C.GOAL) | ((obj == C.DOOR) & (cells[..., 2] == C.OPEN))


def distances(cells: jax.Array, mission: jax.Array) -> jax.Array:
    """int32 ``[H, W, 4]`` shortest number of actions to success (``INF`` when unreachable)."""
    h, w = cells.shape[:2]
    walk = _walkable(cells)
    walk_pad = jnp.pad(walk, 1)
    # can_fwd[r, c, d]: moving forward from (r, c) facing d enters a walkable cell
    can_fwd = jnp.stack([walk_pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr, dc in C.DIR_VEC], -1)
    done = _success_cells(cells, mission) & walk[..., None]
    dist0 = jnp.where(done, 0, INF).astype(jnp.int32)

    def relax(dist):
        pad = jnp.pad(dist, ((1, 1), (1, 1), (0, 0)), constant_values=INF)
        fwd = jnp.stack(
            [pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w, d] for d, (dr, dc) in enumerate(C.DIR_VEC)], -1
        )
        fwd = jnp.where(can_fwd, fwd, INF)
        turn = jnp.minimum(jnp.roll(dist, 1, axis=-1), jnp.roll(dist, -1, axis=-1))
        best = jnp.minimum(fwd, turn) + 1
        return jnp.where(walk[..., None], jnp.minimum(dist, jnp.minimum(best, INF)), INF)

    def body(carry):
        dist, _ = carry
        new = relax(dist)
        return new, jnp.any(new != dist)

    dist, _ = jax.lax.while_loop(lambda c: c[1], body, (dist0, jnp.asarray(True)))
    return dist


def oracle_actions(state, mission: jax.Array | None = None) -> jax.Array:
    """Bool ``[7]``: the actions that start a shortest path to success from ``state``.

    ``state`` may be a ``Scene``, then with its ``mission`` (``int32[4]``) given. Only left /
    right / forward can be optimal. All False when success is unreachable or the agent is
    already in a success configuration.
    """
    scene = scene_of(state)
    dist = distances(scene.cells, mission_of(state) if mission is None else mission)
    r, c, d = scene.agent_pos[0], scene.agent_pos[1], scene.agent_dir
    here = dist[r, c, d]
    h, w = dist.shape[:2]
    front = scene.agent_pos + jnp.asarray(C.DIR_VEC)[d]
    inside = (front[0] >= 0) & (front[0] < h) & (front[1] >= 0) & (front[1] < w)
    fr, fc = jnp.clip(front[0], 0, h - 1), jnp.clip(front[1], 0, w - 1)
    fwd = jnp.where(inside & _walkable(scene.cells)[fr, fc], dist[fr, fc, d], INF)
    after = jnp.stack([dist[r, c, (d + 3) % 4], dist[r, c, (d + 1) % 4], fwd])
    best = (after + 1 == here) & (here > 0) & (here < INF)
    return jnp.concatenate([best, jnp.zeros(C.NUM_ACTIONS - 3, bool)])


def oracle_probs(best: jax.Array) -> jax.Array:
    """``[..., A]`` uniform over the True actions of ``best`` (uniform over all where none is)."""
    w = jnp.where(jnp.any(best, -1, keepdims=True), best, True).astype(jnp.float32)
    return w / jnp.sum(w, -1, keepdims=True)


def oracle_distance(state) -> jax.Array:
    """Number of actions an optimal policy needs from ``state`` (``INF`` when unreachable)."""
    scene = scene_of(state)
    dist = distances(scene.cells, mission_of(state))
    return dist[scene.agent_pos[0], scene.agent_pos[1], scene.agent_dir]
