"""Rule parity of bidijax's BabyAI GoTo levels against Farama ``minigrid`` itself.

Three families of checks, all against the real minigrid environments (``gymnasium.make(id)``):

1. Trajectory parity: minigrid episodes (``reset(seed=s)``) are converted into bidijax states
   and both environments are driven by the same uniformly random action sequence (all seven
   actions). Every step must give the same observation image, direction, reward, step type and
   the same full world state (grid, agent position, carried object).
2. Reset-distribution parity: two-sample chi-square tests between minigrid resets and many more
   bidijax resets, on the statistics of the initial layout; hard invariants on every bidijax
   reset; minigrid's own observation, mission text and reachability check on bidijax layouts.
3. A random-policy statistic (success rate, episode length, return) on GoToRedBallNoDists.

The JAX side is compiled once per level (module-level caches) and batched with ``vmap`` and
``lax.scan``; the minigrid side is recorded once per level and shared by every test.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest

import gymnasium as gym  # noqa: E402
import minigrid  # noqa: E402,F401  (registers the BabyAI ids)
import scipy.stats as stats  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from minigrid.core.grid import Grid  # noqa: E402
from minigrid.envs.babyai.core.verifier import GoToInstr, ObjDesc  # noqa: E402
from navix.environments.environment import Timestep  # noqa: E402

from bidijax.envs import babyai, make, mission_text  # noqa: E402
from bidijax.envs import constants as C  # noqa: E402
from bidijax.envs.babyai import observation  # noqa: E402
from bidijax.envs.scene import Scene  # noqa: E402

NODISTS = "BabyAI-GoToRedBallNoDists-v0"
GREY = "BabyAI-GoToRedBallGrey-v0"
REDBALL = "BabyAI-GoToRedBall-v0"
OBJ = "BabyAI-GoToObj-v0"
LOCAL = "BabyAI-GoToLocal-v0"
LEVELS = (NODISTS, GREY, REDBALL, OBJ, LOCAL)
#: Levels whose minigrid generator calls ``check_objs_reachable``.
REACHABLE_LEVELS = (GREY, REDBALL, LOCAL)
#: Levels with objects other than the target (so pickup / drop / toggle can happen).
DISTRACTOR_LEVELS = (GREY, REDBALL, LOCAL)
#: Levels whose target object is drawn at random (the mission varies).
VARYING_TARGET_LEVELS = (OBJ, LOCAL)
#: Objects placed by minigrid's generator on each level.
NUM_OBJECTS = {NODISTS: 1, GREY: 8, REDBALL: 8, OBJ: 1, LOCAL: 8}

ROOM = 8
MAX_STEPS = 64
OBJECT_TYPES = (C.KEY, C.BALL, C.BOX)

#: Minigrid resets per level for the distribution tests (the first ones are also rolled out).
N_MG_RESETS = 2000
#: Minigrid random-action episodes per level replayed step by step in bidijax.
N_TRAJ = {level: 150 for level in LEVELS}
#: Minigrid random-action episodes of GoToRedBallNoDists for the random-policy statistic (the
#: first ``N_TRAJ`` are the replayed ones; the others are run without rendering observations).
N_MG_POLICY = 1000
#: Bidijax resets per level for the distribution tests, drawn in fixed-size compiled chunks.
N_BJ_RESETS = 20000
BJ_CHUNK = 500
#: Bidijax resets per level re-rendered by minigrid (observation, mission text).
N_RENDER = 300
#: Bidijax random-policy episodes for the statistic test.
N_BJ_POLICY = 4000

P_MIN = 1e-3  # chi-square tests pass when p > P_MIN
Z_MAX = 3.29  # two-sided normal quantile for p = 1e-3


# --------------------------------------------------------------------------------------------
# minigrid side
# --------------------------------------------------------------------------------------------


def parse_mission(text: str) -> np.ndarray:
    """Minigrid's GoTo mission string -> bidijax mission ints (task, colour, type, article)."""
    m = re.fullmatch(r"go to (the|a) (\w+) (\w+)", text)
    assert m is not None, f"unexpected minigrid mission {text!r}"
    article, colour, obj = m.groups()
    return np.asarray(
        [C.TASK_GOTO, C.COLOR_TO_IDX[colour], C.OBJECT_TO_IDX[obj], C.ARTICLE_THE if article == "the" else C.ARTICLE_A],
        np.int32,
    )


def mg_world(u) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """(cells [row, col, 3], agent (row, col), direction, carried encoding) of a minigrid env."""
    cells = np.ascontiguousarray(u.grid.encode().transpose(1, 0, 2))
    x, y = (int(v) for v in u.agent_pos)
    carrying = np.asarray(u.carrying.encode(), np.uint8) if u.carrying is not None else np.zeros(3, np.uint8)
    return cells, np.asarray([y, x], np.int32), int(u.agent_dir), carrying


def mg_load(u, cells: np.ndarray, pos, direction: int) -> None:
    """Put a bidijax layout (cells [row, col, 3], agent (row, col)) into a minigrid env."""
    u.grid, _ = Grid.decode(np.ascontiguousarray(np.asarray(cells, np.uint8).transpose(1, 0, 2)))
    u.agent_pos = (int(pos[1]), int(pos[0]))
    u.agent_dir = int(direction)
    u.carrying = None


def action_rng(level: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([LEVELS.index(level), seed, 12345])


@functools.lru_cache(maxsize=None)
def minigrid_data(level: str) -> dict:
    """Minigrid resets ``seed = 0 .. N_MG_RESETS - 1``; the first ``N_TRAJ`` are rolled out with
    uniformly random actions and every step's outputs and world state are recorded."""
    env = gym.make(level)
    u = env.unwrapped
    n, n_traj = N_MG_RESETS, N_TRAJ[level]
    d = {
        "cells": np.zeros((n, ROOM, ROOM, 3), np.uint8),
        "pos": np.zeros((n, 2), np.int32),
        "dir": np.zeros(n, np.int32),
        "mission": np.zeros((n, 4), np.int32),
        "mission_str": [],
        "image": np.zeros((n, 7, 7, 3), np.uint8),
        "obs_dir": np.zeros(n, np.int32),
        "max_steps": set(),
        # trajectories
        "actions": np.zeros((n_traj, MAX_STEPS), np.int32),
        "length": np.zeros(n_traj, np.int32),
        "t_image": np.zeros((n_traj, MAX_STEPS, 7, 7, 3), np.uint8),
        "t_dir": np.zeros((n_traj, MAX_STEPS), np.int32),
        "t_reward": np.zeros((n_traj, MAX_STEPS), np.float64),
        "t_step_type": np.zeros((n_traj, MAX_STEPS), np.int32),
        "t_cells": np.zeros((n_traj, MAX_STEPS, ROOM, ROOM, 3), np.uint8),
        "t_pos": np.zeros((n_traj, MAX_STEPS, 2), np.int32),
        "t_carrying": np.zeros((n_traj, MAX_STEPS, 3), np.uint8),
        "terminated": np.zeros(n_traj, bool),
        "truncated": np.zeros(n_traj, bool),
        "events": {"pickup": 0, "drop": 0, "box_toggle": 0, "pickup_episodes": 0, "drop_episodes": 0},
    }
    for s in range(n):
        obs, _ = env.reset(seed=s)
        cells, pos, direction, carrying = mg_world(u)
        assert carrying[0] == 0
        d["cells"][s], d["pos"][s], d["dir"][s] = cells, pos, direction
        d["mission_str"].append(obs["mission"])
        d["mission"][s] = parse_mission(obs["mission"])
        d["image"][s] = obs["image"]
        d["obs_dir"][s] = obs["direction"]
        d["max_steps"].add(u.max_steps)
        if s >= n_traj:
            continue
        actions = action_rng(level, s).integers(0, C.NUM_ACTIONS, size=MAX_STEPS)
        d["actions"][s] = actions
        picked = dropped = False
        for k, a in enumerate(actions):
            front = u.grid.get(*u.front_pos)
            held_before = u.carrying is not None
            obs, reward, terminated, truncated, _ = env.step(int(a))
            held_after = u.carrying is not None
            if a == C.PICKUP and not held_before and held_after:
                d["events"]["pickup"] += 1
                picked = True
            if a == C.DROP and held_before and not held_after:
                d["events"]["drop"] += 1
                dropped = True
            if a == C.TOGGLE and front is not None and front.type == "box" and u.grid.get(*u.front_pos) is None:
                d["events"]["box_toggle"] += 1
            d["t_image"][s, k] = obs["image"]
            d["t_dir"][s, k] = obs["direction"]
            d["t_reward"][s, k] = reward
            d["t_step_type"][s, k] = 2 if terminated else (1 if truncated else 0)
            d["t_cells"][s, k], d["t_pos"][s, k], _, d["t_carrying"][s, k] = mg_world(u)
            if terminated or truncated:
                d["length"][s] = k + 1
                d["terminated"][s], d["truncated"][s] = terminated, truncated
                break
        assert d["length"][s] > 0, "minigrid episode did not end within 64 steps"
        d["events"]["pickup_episodes"] += picked
        d["events"]["drop_episodes"] += dropped
    env.close()
    return d


@functools.lru_cache(maxsize=None)
def minigrid_policy_outcomes(level: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lengths, terminated, final rewards) of ``N_MG_POLICY`` uniformly random minigrid episodes:
    the recorded replays, then more episodes (same seeding scheme) stepped by minigrid itself
    with observation rendering switched off (outcomes do not depend on it; it is 90% of the
    cost of a step)."""
    d = minigrid_data(level)
    n = N_TRAJ[level]
    lengths = list(d["length"])
    terminated = list(d["terminated"])
    finals = list(d["t_reward"][np.arange(n), d["length"] - 1])
    env = gym.make(level)
    u = env.unwrapped
    for s in range(n, N_MG_POLICY):
        u.reset(seed=s)
        u.gen_obs = lambda: None  # instance override: no observation rendering
        actions = action_rng(level, s).integers(0, C.NUM_ACTIONS, size=MAX_STEPS)
        for k, a in enumerate(actions):
            _, reward, te, tr, _ = u.step(int(a))
            if te or tr:
                break
        del u.gen_obs
        assert te or tr
        lengths.append(k + 1)
        terminated.append(te)
        finals.append(reward)
    env.close()
    return np.asarray(lengths), np.asarray(terminated), np.asarray(finals, float)


# --------------------------------------------------------------------------------------------
# bidijax side
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def bj_env(level: str):
    return make(level)


def scenes_from_arrays(cells, pos, dirs) -> Scene:
    """Batched bidijax scenes from numpy layouts (cells [row, col, 3], agent (row, col))."""
    return Scene(
        cells=jnp.asarray(cells, jnp.uint8),
        agent_pos=jnp.asarray(pos, jnp.int32),
        agent_dir=jnp.asarray(dirs, jnp.int32),
        carrying=jnp.zeros((len(pos), 3), jnp.uint8),
    )


def start_timestep(env, key, scene: Scene, mission) -> Timestep:
    """A fresh-episode timestep of ``env`` holding the given scene and mission.

    It is built from ``env.reset`` (so every field, cache and ``info`` entry has the structure
    ``env.step`` returns) with the scene and mission swapped in and the observation re-rendered.
    """
    ts = env.reset(key)
    state = ts.state.replace(key=key, scene=scene, mission=mission)
    if hasattr(state, "with_view"):  # the state caches its egocentric view
        state = state.with_view()
    return ts.replace(state=state, observation=observation(state))


@functools.lru_cache(maxsize=None)
def bj_replay_env(level: str):
    """The level's environment for replays.

    ``env.step`` also draws the autoreset state (selected only when the episode has ended), so
    every replayed step runs the level's reset sampler. The replays compare only the steps
    minigrid took, never an autoreset, and the transition, success and reward rules do not read
    ``check_reachable``; the reachability rejection loop is switched off here so that the replay
    cost does not depend on the reset sampler (reset rules are tested separately below).
    """
    env = bj_env(level)
    if getattr(env, "check_reachable", False):
        env = env.replace(check_reachable=False)
    return env


@functools.lru_cache(maxsize=None)
def bj_rollout_fn(level: str):
    """jit(vmap(episode)): the initial image, then the outputs of ``env.step`` along the actions."""
    env = bj_replay_env(level)

    def episode(key, scene, mission, actions):
        ts0 = start_timestep(env, key, scene, mission)

        def body(ts, a):
            ts = env.step(ts, a)
            sc = ts.state.scene
            return ts, (
                ts.observation["image"],
                ts.observation["direction"],
                ts.reward,
                ts.step_type,
                sc.cells,
                sc.agent_pos,
                sc.carrying,
                ts.t,
            )

        _, outs = jax.lax.scan(body, ts0, actions)
        return ts0.observation["image"], ts0.observation["direction"], outs

    return jax.jit(jax.vmap(episode))


@functools.lru_cache(maxsize=None)
def bj_resets(level: str) -> dict:
    """Bidijax resets of ``level`` (vmapped, in compiled chunks), as numpy arrays."""
    env = bj_env(level)

    def one(key):
        ts = env.reset(key)
        sc = ts.state.scene
        return {
            "cells": sc.cells,
            "pos": sc.agent_pos,
            "dir": sc.agent_dir,
            "carrying": sc.carrying,
            "mission": ts.state.mission,
            "key": ts.state.key,
            "image": ts.observation["image"],
            "obs_dir": ts.observation["direction"],
            "obs_mission": ts.observation["mission"],
            "t": ts.t,
            "reward": ts.reward,
            "step_type": ts.step_type,
        }

    fn = jax.jit(jax.vmap(one))
    base = jax.random.PRNGKey(20240 + LEVELS.index(level))
    chunks = [
        jax.device_get(fn(jax.random.split(jax.random.fold_in(base, i), BJ_CHUNK)))
        for i in range(-(-N_BJ_RESETS // BJ_CHUNK))
    ]
    return {k: np.concatenate([c[k] for c in chunks])[:N_BJ_RESETS] for k in chunks[0]}


# --------------------------------------------------------------------------------------------
# statistics helpers
# --------------------------------------------------------------------------------------------


def object_mask(cells: np.ndarray) -> np.ndarray:
    return np.isin(cells[..., 0], OBJECT_TYPES)


def target_distance(cells, pos, mission) -> np.ndarray:
    """Manhattan distance agent -> nearest object matching the mission (-1 when none)."""
    rows, cols = np.meshgrid(np.arange(ROOM), np.arange(ROOM), indexing="ij")
    match = (
        object_mask(cells)
        & (cells[..., 0] == mission[:, 2, None, None])
        & (cells[..., 1] == mission[:, 1, None, None])
    )
    dist = np.abs(rows[None] - pos[:, 0, None, None]) + np.abs(cols[None] - pos[:, 1, None, None])
    dist = np.where(match, dist, 10**6).min(axis=(1, 2))
    return np.where(dist >= 10**6, -1, dist)


def reachable(cells: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """[N, H, W] cells reachable from the agent without moving objects (objects are reached,
    not crossed; walls are never entered), by repeated dilation."""
    n = len(cells)
    passable = cells[..., 0] == C.EMPTY
    enterable = cells[..., 0] != C.WALL
    reach = np.zeros(cells.shape[:3], bool)
    reach[np.arange(n), pos[:, 0], pos[:, 1]] = True
    while True:
        src = reach & passable
        src[np.arange(n), pos[:, 0], pos[:, 1]] = True
        nb = np.zeros_like(reach)
        nb[:, 1:] |= src[:, :-1]
        nb[:, :-1] |= src[:, 1:]
        nb[:, :, 1:] |= src[:, :, :-1]
        nb[:, :, :-1] |= src[:, :, 1:]
        new = reach | (nb & enterable)
        if (new == reach).all():
            return reach
        reach = new


def features(d: dict) -> dict:
    """Per-reset statistics compared between minigrid and bidijax."""
    cells, pos, mission, image = d["cells"], d["pos"], d["mission"], d["image"]
    objs = object_mask(cells)
    codes = cells[..., 0].astype(np.int64) * 16 + cells[..., 1]
    return {
        "agent_cell": pos[:, 0] * ROOM + pos[:, 1],
        "agent_dir": d["dir"],
        "target_distance": target_distance(cells, pos, mission),
        "num_objects": objs.sum(axis=(1, 2)),
        "mission_target": mission[:, 1] * 16 + mission[:, 2],
        "article": mission[:, 3],
        "visible_objects": (image[..., 0] > C.WALL).sum(axis=(1, 2)),
        # pooled over every object of every reset (types and colours are drawn independently)
        "object_codes": codes[objs],
    }


def chi2_same_distribution(a: np.ndarray, b: np.ndarray, name: str) -> None:
    """Two-sample chi-square homogeneity test; rare categories are merged so that every
    expected count is at least 5."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    cats = np.union1d(a, b)
    table = np.stack([(a[:, None] == cats).sum(0), (b[:, None] == cats).sum(0)]).astype(float)
    need = 5.0 / (table.sum(1).min() / table.sum())  # minimal column total
    order = np.argsort(table.sum(0), kind="stable")
    cols, rare = [], np.zeros(2)
    for j in order:
        col = table[:, j]
        if col.sum() >= need:
            cols.append(col)
        else:
            rare = rare + col
    if rare.sum() > 0:
        if rare.sum() >= need or not cols:
            cols.append(rare)
        else:
            cols[0] = cols[0] + rare  # the smallest large category absorbs the rare ones
    merged = np.stack(cols, 1)
    if merged.shape[1] < 2:
        return
    p = stats.chi2_contingency(merged, correction=False).pvalue
    if p <= P_MIN:
        fa = table[0] / table[0].sum()
        fb = table[1] / table[1].sum()
        worst = np.argsort(-np.abs(fa - fb))[:8]
        detail = ", ".join(f"{int(cats[j])}: minigrid {fa[j]:.3f} vs bidijax {fb[j]:.3f}" for j in worst)
        pytest.fail(
            f"{name}: distributions differ (chi-square p = {p:.2e}, minigrid n = {len(a)}, "
            f"bidijax n = {len(b)}); largest frequency gaps: {detail}"
        )


def repro(level: str, seed: int, actions: np.ndarray, k: int) -> str:
    return (
        f"reproduce: env = gymnasium.make({level!r}); env.reset(seed={seed}); "
        f"actions = {actions[: k + 1].tolist()}"
    )


# --------------------------------------------------------------------------------------------
# 1. trajectory parity
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def replay_outputs(level: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Bidijax replays of the first ``N_TRAJ`` minigrid episodes of ``level`` (initial image,
    initial direction, per-step outputs). On GoToRedBallNoDists the same compiled call also runs
    ``N_BJ_POLICY`` random-policy episodes from bidijax resets (appended to the batch; they use
    ``env.step``'s autoreset after their first episode ends)."""
    d = minigrid_data(level)
    n = N_TRAJ[level]
    cells, pos, dirs, missions = d["cells"][:n], d["pos"][:n], d["dir"][:n], d["mission"][:n]
    keys = np.broadcast_to(np.asarray(jax.random.PRNGKey(0)), (n, 2))
    actions = d["actions"]
    if level == NODISTS:
        r, m = bj_resets(NODISTS), N_BJ_POLICY
        cells = np.concatenate([cells, r["cells"][:m]])
        pos = np.concatenate([pos, r["pos"][:m]])
        dirs = np.concatenate([dirs, r["dir"][:m]])
        missions = np.concatenate([missions, r["mission"][:m]])
        keys = np.concatenate([keys, r["key"][:m]])
        policy = np.random.default_rng(99).integers(0, C.NUM_ACTIONS, size=(m, MAX_STEPS))
        actions = np.concatenate([actions, policy]).astype(np.int32)
    init_image, init_dir, outs = bj_rollout_fn(level)(
        jnp.asarray(keys), scenes_from_arrays(cells, pos, dirs), jnp.asarray(missions, jnp.int32), jnp.asarray(actions)
    )
    names = ("image", "dir", "reward", "step_type", "cells", "pos", "carrying", "t")
    return np.asarray(init_image), np.asarray(init_dir), dict(zip(names, jax.device_get(outs)))


def trajectories(level: str):
    n = N_TRAJ[level]
    init_image, init_dir, outs = replay_outputs(level)
    return minigrid_data(level), init_image[:n], init_dir[:n], {k: v[:n] for k, v in outs.items()}


@pytest.mark.parametrize("level", LEVELS)
def test_minigrid_conversion_round_trip(level):
    """The converted minigrid missions render back to minigrid's text; max_steps agree."""
    d = minigrid_data(level)
    assert d["max_steps"] == {bj_env(level).max_steps} == {MAX_STEPS}
    for s in range(0, N_MG_RESETS, 97):
        assert mission_text(d["mission"][s]) == d["mission_str"][s]


@pytest.mark.parametrize("level", LEVELS)
def test_trajectory_parity(level):
    d, init_image, init_dir, bj = trajectories(level)
    n = N_TRAJ[level]
    np.testing.assert_array_equal(init_dir, d["obs_dir"][:n])
    bad = np.flatnonzero((init_image != d["image"][:n]).any(axis=(1, 2, 3)))
    assert bad.size == 0, (
        f"initial observation differs for {bad.size}/{n} episodes, first seed {bad[0]}: "
        f"minigrid {d['image'][bad[0]][..., 0].T.tolist()} vs bidijax {init_image[bad[0]][..., 0].T.tolist()}"
    )

    live = np.arange(MAX_STEPS)[None] < d["length"][:, None]  # steps minigrid actually took
    checks = {
        "image": (bj["image"] != d["t_image"]).any(axis=(2, 3, 4)),
        "direction": bj["dir"] != d["t_dir"],
        "reward": ~np.isclose(bj["reward"], d["t_reward"], rtol=0.0, atol=1e-6),
        "step_type": bj["step_type"] != d["t_step_type"],
        "grid": (bj["cells"] != d["t_cells"]).any(axis=(2, 3, 4)),
        "agent_pos": (bj["pos"] != d["t_pos"]).any(axis=2),
        "carrying": (bj["carrying"] != d["t_carrying"]).any(axis=2),
        "t": bj["t"] != np.arange(1, MAX_STEPS + 1)[None],
    }

    def summary(reward, step_type, direction, pos):
        pos = np.asarray(pos).tolist()
        return f"(reward {float(reward):.6f}, step_type {int(step_type)}, dir {int(direction)}, pos {pos})"

    failures = []
    for what, mismatch in checks.items():
        mismatch = mismatch & live
        if mismatch.any():
            s, k = np.argwhere(mismatch)[0]
            mg = summary(d["t_reward"][s, k], d["t_step_type"][s, k], d["t_dir"][s, k], d["t_pos"][s, k])
            ours = summary(bj["reward"][s, k], bj["step_type"][s, k], bj["dir"][s, k], bj["pos"][s, k])
            failures.append(
                f"{what}: {int(mismatch.any(1).sum())}/{n} episodes differ; first at seed {s}, step {k} "
                f"(action {d['actions'][s, k]}): minigrid {mg} vs bidijax {ours}; "
                + repro(level, int(s), d["actions"][s], int(k))
            )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("level", LEVELS)
def test_trajectories_cover_the_rules(level):
    """The random replays really exercise the rules: successes and time-outs happen, and on
    levels with distractors objects are picked up, dropped and boxes toggled away."""
    d = minigrid_data(level)
    n = N_TRAJ[level]
    assert 0.05 * n < d["terminated"].sum() < 0.95 * n, d["terminated"].sum()
    assert d["truncated"].sum() > 0.05 * n, d["truncated"].sum()
    assert (d["length"][d["truncated"]] == MAX_STEPS).all()
    ev = d["events"]
    if level in DISTRACTOR_LEVELS:
        assert ev["pickup_episodes"] >= 10, ev
        assert ev["drop_episodes"] >= 5, ev
        assert ev["box_toggle"] >= 3, ev
        assert (d["t_carrying"][..., 0] > 0).any()  # carried objects are recorded (and compared)
    else:
        assert ev["pickup"] == 0 and ev["drop"] == 0  # the only object is the target


# --------------------------------------------------------------------------------------------
# 2. reset distributions
# --------------------------------------------------------------------------------------------


COMMON_STATS = (
    "agent_cell",
    "agent_dir",
    "target_distance",
    "num_objects",
    "article",
    "visible_objects",
    "object_codes",
)


def _stat_params():
    params = []
    for level in LEVELS:
        for stat in COMMON_STATS:
            params.append((level, stat))
        if level in VARYING_TARGET_LEVELS:
            params.append((level, "mission_target"))
    return params


@pytest.mark.parametrize("level,stat", _stat_params())
def test_reset_distribution(level, stat):
    mg = features(minigrid_data(level))[stat]
    bj = features(bj_resets(level))[stat]
    chi2_same_distribution(mg, bj, f"{level} {stat}")


@pytest.mark.parametrize("level", LEVELS)
def test_reset_fixed_features(level):
    """Features that are constant in minigrid are the same constant in bidijax."""
    mg, bj = minigrid_data(level), bj_resets(level)
    fm, fb = features(mg), features(bj)
    assert set(fm["num_objects"].tolist()) == set(fb["num_objects"].tolist()) == {NUM_OBJECTS[level]}
    if level not in VARYING_TARGET_LEVELS:
        for d in (mg, bj):
            assert (d["mission"][:, 1] == C.RED).all() and (d["mission"][:, 2] == C.BALL).all()
    if level in (NODISTS, GREY, OBJ):  # a unique target: always "the"
        assert (fm["article"] == C.ARTICLE_THE).all() and (fb["article"] == C.ARTICLE_THE).all()
    if level == GREY:
        for f in (fm, fb):
            colours = f["object_codes"] % 16
            assert ((colours == C.GREY) | (f["object_codes"] == C.BALL * 16 + C.RED)).all()
    assert (fm["target_distance"] >= 2).all()


@pytest.mark.parametrize("level", LEVELS)
def test_reset_invariants(level):
    d = bj_resets(level)
    n = len(d["pos"])
    cells, pos, mission = d["cells"], d["pos"], d["mission"]
    idx = np.arange(n)
    assert n >= BJ_CHUNK
    # timestep fields
    assert (d["t"] == 0).all() and (d["step_type"] == 0).all() and (d["reward"] == 0).all()
    assert (d["carrying"] == 0).all()
    np.testing.assert_array_equal(d["obs_dir"], d["dir"])
    np.testing.assert_array_equal(d["obs_mission"], mission)
    # room: walls on the border, nothing else is a wall, the agent inside
    border = np.ones((ROOM, ROOM), bool)
    border[1:-1, 1:-1] = False
    assert (cells[:, border] == np.asarray([C.WALL, C.GREY, 0], np.uint8)).all()
    assert (cells[:, ~border, 0] != C.WALL).all()
    assert ((pos >= 1) & (pos <= ROOM - 2)).all()
    assert ((d["dir"] >= 0) & (d["dir"] < 4)).all()
    # objects: one per cell (none lost by overwriting), none on or next to the agent
    objs = object_mask(cells)
    assert ((cells[..., 0] == C.EMPTY) | objs | (cells[..., 0] == C.WALL)).all()
    assert (objs.sum(axis=(1, 2)) == NUM_OBJECTS[level]).all(), "objects overlap (some were overwritten)"
    assert (cells[objs][:, 2] == 0).all()
    assert (cells[idx, pos[:, 0], pos[:, 1], 0] == C.EMPTY).all()
    rows, cols = np.meshgrid(np.arange(ROOM), np.arange(ROOM), indexing="ij")
    dist = np.abs(rows[None] - pos[:, 0, None, None]) + np.abs(cols[None] - pos[:, 1, None, None])
    assert not (objs & (dist < 2)).any(), "an object starts next to the agent"
    # the mission names an object that exists; the article counts the matching objects
    tdist = target_distance(cells, pos, mission)
    assert (tdist >= 2).all()
    match = objs & (cells[..., 0] == mission[:, 2, None, None]) & (cells[..., 1] == mission[:, 1, None, None])
    count = match.sum(axis=(1, 2))
    np.testing.assert_array_equal(mission[:, 3], np.where(count > 1, C.ARTICLE_A, C.ARTICLE_THE))
    assert (mission[:, 0] == C.TASK_GOTO).all()
    # the agent never starts facing a target (nor any object)
    front = pos + C.DIR_VEC[d["dir"]]
    fcell = cells[idx, front[:, 0], front[:, 1]]
    assert not ((fcell[:, 0] == mission[:, 2]) & (fcell[:, 1] == mission[:, 1])).any()
    assert not np.isin(fcell[:, 0], OBJECT_TYPES).any()
    # reachability
    if level in REACHABLE_LEVELS:
        reach = reachable(cells, pos)
        boxed = (objs & ~reach).any(axis=(1, 2))
        assert not boxed.any(), f"{boxed.sum()} resets have an unreachable object"


@pytest.mark.parametrize("level", LEVELS)
def test_minigrid_renders_bidijax_resets(level):
    """Minigrid's own observation and mission text on bidijax-generated layouts."""
    d = bj_resets(level)
    env = gym.make(level)
    env.reset(seed=0)
    u = env.unwrapped
    for s in range(min(N_RENDER, len(d["pos"]))):
        mg_load(u, d["cells"][s], d["pos"][s], d["dir"][s])
        obs = u.gen_obs()
        np.testing.assert_array_equal(
            d["image"][s], obs["image"], err_msg=f"{level}: observation of bidijax reset #{s} differs from minigrid's"
        )
        m = d["mission"][s]
        instr = GoToInstr(ObjDesc(C.OBJECT_NAMES[m[2]], C.COLOR_NAMES[m[1]]))
        assert mission_text(m) == instr.surface(u), f"{level}: mission text of bidijax reset #{s}"
    env.close()


def test_reachability_rule_matches_minigrid():
    """bidijax's reachability check (used to reject layouts) against minigrid's
    ``check_objs_reachable`` on random room layouts with 1-14 objects."""
    rng = np.random.default_rng(7)
    n = 1500
    cells = np.zeros((n, ROOM, ROOM, 3), np.uint8)
    cells[...] = (C.WALL, C.GREY, 0)
    cells[:, 1:-1, 1:-1] = (C.EMPTY, 0, 0)
    pos = np.zeros((n, 2), np.int32)
    rows, cols = np.meshgrid(np.arange(ROOM), np.arange(ROOM), indexing="ij")
    for s in range(n):
        pos[s] = rng.integers(1, ROOM - 1, size=2)
        far = (np.abs(rows - pos[s, 0]) + np.abs(cols - pos[s, 1]) >= 2) & (cells[s, ..., 0] == C.EMPTY)
        free = np.argwhere(far)
        for r, c in free[rng.choice(len(free), size=rng.integers(1, 15), replace=False)]:
            cells[s, r, c] = (rng.choice(OBJECT_TYPES), rng.integers(0, 6), 0)
    check = babyai._reachable_objects
    reach = np.asarray(jax.jit(jax.vmap(check))(jnp.asarray(cells), jnp.asarray(pos)))
    objs = object_mask(cells)
    bj_ok = ~(objs & ~reach).any(axis=(1, 2))
    env = gym.make(REDBALL)
    env.reset(seed=0)
    u = env.unwrapped
    mg_ok = np.zeros(n, bool)
    for s in range(n):
        mg_load(u, cells[s], pos[s], 0)
        mg_ok[s] = u.check_objs_reachable(raise_exc=False)
    env.close()
    # the test-side BFS agrees with minigrid (sanity of the invariant used above)
    np.testing.assert_array_equal(~(objs & ~reachable(cells, pos)).any(axis=(1, 2)), mg_ok)
    assert 0.2 < mg_ok.mean() < 0.95
    bad = np.flatnonzero(bj_ok != mg_ok)
    if bad.size:
        s = bad[0]
        pytest.fail(
            f"bidijax reachability disagrees with minigrid on {bad.size}/{n} layouts "
            f"(bidijax accepts {bj_ok.mean():.3f}, minigrid {mg_ok.mean():.3f}); first: agent (row, col) "
            f"{pos[s].tolist()}, object types per row:\n{cells[s, ..., 0]}\nminigrid says "
            f"{'reachable' if mg_ok[s] else 'unreachable'}"
        )


# --------------------------------------------------------------------------------------------
# 3. random-policy statistic
# --------------------------------------------------------------------------------------------


def test_random_policy_statistics_nodists():
    """Uniform random policy on GoToRedBallNoDists: bidijax (from its own resets, through
    ``env.step``) vs minigrid episodes: success rate, mean episode length and mean return."""
    n = N_TRAJ[NODISTS]
    init_image, _, outs = replay_outputs(NODISTS)
    r = bj_resets(NODISTS)
    np.testing.assert_array_equal(init_image[n:], r["image"][:N_BJ_POLICY])
    step_type, t, reward = outs["step_type"][n:], outs["t"][n:], outs["reward"][n:]
    ended = step_type > 0
    assert ended.any(axis=1).all(), "an episode outlived max_steps"
    # navix autoreset: the step after an end starts a fresh episode; otherwise t counts up
    after_end = np.zeros_like(ended)
    after_end[:, 1:] = ended[:, :-1]
    t_prev = np.concatenate([np.zeros((len(t), 1), t.dtype), t[:, :-1]], axis=1)
    assert ((t == 0) & (step_type == 0) & (reward == 0))[after_end].all()
    assert (t == t_prev + 1)[~after_end].all()
    first = ended.argmax(axis=1)
    rows = np.arange(len(first))
    length = t[rows, first].astype(float)
    success = step_type[rows, first] == 2
    ret = reward[rows, first].astype(float)
    np.testing.assert_array_equal(length, first + 1)
    mg_len, mg_success, mg_ret = minigrid_policy_outcomes(NODISTS)
    mg_len = mg_len.astype(float)
    assert (mg_ret[~mg_success] == 0).all() and (mg_ret[mg_success] > 0).all()
    assert ((length == MAX_STEPS) | success).all() and (ret[~success] == 0).all()
    n1, n2 = len(length), len(mg_len)
    p1, p2 = success.mean(), mg_success.mean()
    pool = (success.sum() + mg_success.sum()) / (n1 + n2)
    z_success = (p1 - p2) / np.sqrt(pool * (1 - pool) * (1 / n1 + 1 / n2))

    def z_mean(a, b):
        a, b = np.asarray(a, float), np.asarray(b, float)
        return (a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))

    z_len = z_mean(length, mg_len)
    z_ret = z_mean(ret, mg_ret)
    summary = (
        f"success bidijax {p1:.3f} (n={n1}) vs minigrid {p2:.3f} (n={n2}), z={z_success:.2f}; "
        f"mean length {length.mean():.2f} vs {mg_len.mean():.2f}, z={z_len:.2f}; "
        f"mean return {ret.mean():.4f} vs {mg_ret.mean():.4f}, z={z_ret:.2f}"
    )
    assert abs(z_success) < Z_MAX and abs(z_len) < Z_MAX and abs(z_ret) < Z_MAX, summary
    # and the minigrid numbers are the known ones for this level
    assert 0.18 < p2 < 0.30 and 50 < mg_len.mean() < 61, summary
