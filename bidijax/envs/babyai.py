"""The BabyAI GoTo family as navix environments, following Farama ``minigrid``'s rules.

Rules reproduced (``minigrid/envs/babyai/goto.py`` and its ``RoomGrid`` helpers): a single
``room_size`` x ``room_size`` room (walls included); the agent is placed first, uniformly on
a free cell with a uniform direction; each object is then placed uniformly on a free cell
that is neither the agent's nor next to it (Manhattan distance >= 2); levels that check
reachability reject and resample the whole layout when an object is boxed in. Objects never
move by themselves. After every action the episode succeeds when an object matching the
mission (type and colour) is in the cell in front of the agent; reward ``1 - 0.9 t / max_steps``
on success, else 0; truncation at ``max_steps`` (``room_size ** 2``). ``pickup``, ``drop`` and
``toggle`` act as in MiniGrid (a toggled box disappears, its contents being empty).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import navix as nx
from flax import struct
from navix.environments.environment import StepType, Timestep
from navix.spaces import Discrete

from . import constants as C
from .scene import Scene, cell_at, front_pos
from .view import egocentric_view


class BabyAIState(struct.PyTreeNode):
    """State of a BabyAI GoTo episode: the scene, the mission integers and an RNG key.

    ``view`` caches the scene's egocentric image (``with_view`` renders it), so observations
    and percepts render the view once per step.
    """

    key: jax.Array
    scene: Scene
    mission: jax.Array  # int32[4]: (task, colour, object type, article)
    view: jax.Array | None = None  # uint8[7, 7, 3]

    def with_view(self) -> "BabyAIState":
        return self.replace(view=egocentric_view(self.scene))


def observation(state: BabyAIState) -> dict:
    """MiniGrid-style observation: the egocentric image, the direction and the mission ints."""
    image = egocentric_view(state.scene) if state.view is None else state.view
    return {"image": image, "direction": state.scene.agent_dir, "mission": state.mission}


def _interior(room_size: int) -> jax.Array:
    inner = jnp.zeros((room_size, room_size), bool)
    return inner.at[1:-1, 1:-1].set(True)


def _reachable_objects(cells: jax.Array, agent_pos: jax.Array) -> jax.Array:
    """Bool grid of cells reachable from the agent without moving objects (MiniGrid's check).

    A reached cell is expanded further only when it is empty (or the agent's own cell).
    """
    start = jnp.zeros(cells.shape[:2], bool).at[agent_pos[0], agent_pos[1]].set(True)
    passable = (cells[..., 0] == C.EMPTY) | start

    def body(carry):
        reach, _ = carry
        p = jnp.pad(reach & passable, 1)
        new = reach | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]
        return new, jnp.any(new != reach)

    reach, _ = jax.lax.while_loop(lambda c: c[1], body, (start, jnp.asarray(True)))
    return reach


class BabyAIGoTo(nx.Environment):
    """A BabyAI GoTo level (single room) with navix's ``reset(key)`` / ``step(timestep, action)``.

    ``target``: ``(type, colour)`` of a fixed target object, or ``None`` for a target drawn
    uniformly among the placed objects. ``num_dists``: number of distractors (or of objects
    when ``target`` is None). ``grey_dists``: distractors are recoloured grey.
    ``check_reachable``: resample layouts in which some object is boxed in.
    """

    room_size: int = struct.field(pytree_node=False, default=8)
    target: Any = struct.field(pytree_node=False, default=None)
    num_dists: int = struct.field(pytree_node=False, default=0)
    grey_dists: bool = struct.field(pytree_node=False, default=False)
    check_reachable: bool = struct.field(pytree_node=False, default=False)

    @property
    def num_objects(self) -> int:
        return self.num_dists + (self.target is not None)

    def _layout(self, key: jax.Array):
        """Draw one layout: (scene, mission ints, whether it passes the reachability check).

        All randomness comes from two draws (cheap to compile): random bits per cell, whose
        argmax over the allowed cells is a uniform placement (agent, then each object), and
        uniforms for the rest.
        """
        n, m = self.room_size, self.num_objects
        k_cells, k_rest = jax.random.split(key)
        noise = jax.random.bits(k_cells, (m + 1, n, n)) >> 1  # 31 random bits per cell
        u = jax.random.uniform(k_rest, (2 * m + 2,))
        pick = lambda x, k: jnp.minimum(jnp.floor(x * k), k - 1).astype(jnp.int32)
        interior = _interior(n)

        def place(noise, allowed):
            flat = jnp.argmax(jnp.where(allowed, noise | np.uint32(1 << 31), np.uint32(0)))
            return jnp.stack(jnp.divmod(flat, n)).astype(jnp.int32)

        agent_pos = place(noise[0], interior)
        agent_dir = pick(u[0], 4)
        rows, cols = jnp.meshgrid(jnp.arange(n), jnp.arange(n), indexing="ij")
        far = jnp.abs(rows - agent_pos[0]) + jnp.abs(cols - agent_pos[1]) >= 2
        types = jnp.asarray([C.KEY, C.BALL, C.BOX])[pick(u[1 : 1 + m], 3)]
        colours = pick(u[1 + m : 1 + 2 * m], len(C.COLOR_NAMES))
        if self.grey_dists:
            colours = jnp.full((m,), C.GREY)
        if self.target is not None:
            types = types.at[0].set(self.target[0])
            colours = colours.at[0].set(self.target[1])
        occupied = jnp.zeros((n, n), bool)
        positions = []
        for i in range(m):
            pos = place(noise[i + 1], interior & far & ~occupied)
            occupied = occupied.at[pos[0], pos[1]].set(True)
            positions.append(pos)
        positions = jnp.stack(positions)
        cells = jnp.where(
            interior[..., None],
            jnp.asarray((C.EMPTY, 0, 0), jnp.uint8),
            jnp.asarray((C.WALL, C.GREY, 0), jnp.uint8),
        )
        codes = jnp.stack([types, colours, jnp.zeros_like(types)], -1).astype(jnp.uint8)
        cells = cells.at[positions[:, 0], positions[:, 1]].set(codes)
        tgt = 0 if self.target is not None else pick(u[-1], m)
        ok = jnp.asarray(True)
        if self.check_reachable:
            reach = _reachable_objects(cells, agent_pos)
            ok = jnp.all(reach[positions[:, 0], positions[:, 1]])
        matches = jnp.sum((types == types[tgt]) & (colours == colours[tgt]))
        article = jnp.where(matches > 1, C.ARTICLE_A, C.ARTICLE_THE)
        mission = jnp.stack([jnp.int32(C.TASK_GOTO), colours[tgt], types[tgt], article]).astype(jnp.int32)
        scene = Scene(cells=cells, agent_pos=agent_pos, agent_dir=agent_dir, carrying=jnp.zeros(3, jnp.uint8))
        return scene, mission, ok

    def _initial_state(self, key: jax.Array) -> BabyAIState:
        """A fresh episode's state; layouts failing the reachability check are redrawn."""
        if not self.check_reachable:
            scene, mission, _ = self._layout(key)
            return BabyAIState(key=key, scene=scene, mission=mission)

        def body(carry):
            k, _, _, _ = carry
            k, sub = jax.random.split(k)
            return (k,) + self._layout(sub)

        shapes = jax.eval_shape(self._layout, key)
        dummy = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        key, scene, mission, _ = jax.lax.while_loop(lambda c: ~c[3], body, (key,) + dummy)
        return BabyAIState(key=key, scene=scene, mission=mission)

    def _reset(self, key: jax.Array, cache=None) -> Timestep:
        return self._timestep(self._initial_state(key), jnp.int32(0), jnp.int32(-1), jnp.float32(0), jnp.int32(0))

    def _timestep(self, state, t, action, reward, step_type, ret=None) -> Timestep:
        state = state.with_view()
        ts = Timestep(
            t=jnp.asarray(t, jnp.int32),
            observation=observation(state),
            action=jnp.asarray(action, jnp.int32),
            reward=jnp.asarray(reward, jnp.float32),
            step_type=jnp.asarray(step_type, jnp.int32),
            state=state,
        )
        ts.info["return"] = jnp.asarray(reward if ret is None else ret, jnp.float32)
        return ts

    def reset(self, key: jax.Array, cache=None) -> Timestep:
        k1, k2 = jax.random.split(key)
        state = self._initial_state(k1).replace(key=k2)
        return self._timestep(state, 0, -1, 0.0, 0)

    def step(self, timestep: Timestep, action: jax.Array) -> Timestep:
        """Navix contract: a timestep whose episode ended is reset (lazily) and ``action`` ignored.

        The reset and the transition are both computed on states, then selected; the observation
        is rendered once, from the selected state.
        """
        action = jnp.asarray(action, jnp.int32)
        done = timestep.step_type > 0
        k1, k2 = jax.random.split(timestep.state.key)
        fresh = self._initial_state(k1).replace(key=k2)
        moved, reward, step_type = self._transition(timestep, action)
        pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(done, x, y), a, b)
        state = pick(fresh, moved)
        t = jnp.where(done, 0, timestep.t + 1)
        reward = jnp.where(done, 0.0, reward)
        ret = jnp.where(done, 0.0, timestep.info.get("return", jnp.float32(0)) + reward)
        return self._timestep(
            state, t, jnp.where(done, -1, action), reward, jnp.where(done, 0, step_type), ret
        )

    def _step(self, timestep: Timestep, action: jax.Array) -> Timestep:
        """One transition without the autoreset (navix's ``_step``)."""
        state, reward, step_type = self._transition(timestep, jnp.asarray(action, jnp.int32))
        ret = timestep.info.get("return", jnp.float32(0)) + reward
        return self._timestep(state, timestep.t + 1, action, reward, step_type, ret)

    def _transition(self, timestep: Timestep, action: jax.Array):
        """MiniGrid's transition, success check and reward for one action."""
        state = timestep.state
        scene = transition(state.scene, action)
        t = timestep.t + 1
        front = cell_at(scene.cells, front_pos(scene))
        success = (front[0] == state.mission[2]) & (front[1] == state.mission[1])
        reward = jnp.where(success, 1.0 - 0.9 * t / self.max_steps, 0.0).astype(jnp.float32)
        step_type = jnp.where(
            success, StepType.TERMINATION, jnp.where(t >= self.max_steps, StepType.TRUNCATION, StepType.TRANSITION)
        ).astype(jnp.int32)
        return state.replace(scene=scene, view=None), reward, step_type


def transition(scene: Scene, action: jax.Array) -> Scene:
    """MiniGrid's deterministic effect of one action on the scene."""
    fpos = front_pos(scene)
    h, w = scene.cells.shape[:2]
    fcell = cell_at(scene.cells, fpos)
    ftype = fcell[0]
    carried = scene.carrying[0] > 0
    empty = jnp.asarray((C.EMPTY, 0, 0), jnp.uint8)
    # movement: MiniGrid's can_overlap cells (empty, floor, goal, lava, open door)
    walkable = (ftype == C.EMPTY) | (ftype == C.FLOOR) | (ftype == C.GOAL) | (ftype == C.LAVA)
    walkable |= (ftype == C.DOOR) & (fcell[2] == C.OPEN)
    direction = jnp.where(
        action == C.LEFT, (scene.agent_dir + 3) % 4, jnp.where(action == C.RIGHT, (scene.agent_dir + 1) % 4, scene.agent_dir)
    )
    pos = jnp.where((action == C.FORWARD) & walkable, fpos, scene.agent_pos)
    # interactions write at most the front cell and the pocket
    can_pick = (action == C.PICKUP) & ~carried & ((ftype == C.KEY) | (ftype == C.BALL) | (ftype == C.BOX))
    can_drop = (action == C.DROP) & carried & (ftype == C.EMPTY)
    toggle_box = (action == C.TOGGLE) & (ftype == C.BOX)
    is_door = (action == C.TOGGLE) & (ftype == C.DOOR)
    has_key = (scene.carrying[0] == C.KEY) & (scene.carrying[1] == fcell[1])
    door_state = jnp.where(
        fcell[2] == C.LOCKED,
        jnp.where(has_key, C.OPEN, C.LOCKED),
        jnp.where(fcell[2] == C.OPEN, C.CLOSED, C.OPEN),
    ).astype(jnp.uint8)
    new_front = jnp.where(can_pick | toggle_box, empty, fcell)
    new_front = jnp.where(can_drop, scene.carrying, new_front)
    new_front = jnp.where(is_door, fcell.at[2].set(door_state), new_front)
    inside = (fpos[0] >= 0) & (fpos[0] < h) & (fpos[1] >= 0) & (fpos[1] < w)
    row = jnp.where(inside, fpos[0], h)
    cells = scene.cells.at[row, fpos[1]].set(new_front, mode="drop")
    carrying = jnp.where(can_pick, fcell, jnp.where(can_drop, jnp.zeros(3, jnp.uint8), scene.carrying))
    return Scene(cells=cells, agent_pos=pos, agent_dir=direction, carrying=carrying)


def make_goto(room_size: int = 8, max_steps: int | None = None, num_actions: int = C.NUM_ACTIONS, **kwargs) -> BabyAIGoTo:
    """Build a GoTo level; ``max_steps`` defaults to MiniGrid's ``room_size ** 2``. With
    ``num_actions=6`` the action set is BabyAI-Text's (Lamorel's): MiniGrid's without ``done``."""
    image = Discrete.create(n_elements=256, shape=(C.VIEW, C.VIEW, 3), dtype=jnp.uint8)
    return BabyAIGoTo.create(
        height=room_size,
        width=room_size,
        max_steps=room_size**2 if max_steps is None else max_steps,
        observation_fn=observation,
        observation_space=image,
        action_space=Discrete.create(num_actions),
        room_size=room_size,
        **kwargs,
    )
