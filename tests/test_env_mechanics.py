"""Mechanics the BabyAI levels must get right where navix departs from MiniGrid, plus jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bidijax import envs
from bidijax.envs import constants as C
from navix.environments.environment import Timestep
from helpers import room, state

NORTH = 3


@pytest.fixture(scope="module")
def env():
    return envs.make("BabyAI-GoToLocal-v0")


@pytest.fixture(scope="module")
def step(env):
    return jax.jit(env.step)


def timestep_of(env, s):
    return Timestep(
        t=jnp.asarray(0, jnp.int32),
        observation=envs.babyai.observation(s),
        action=jnp.asarray(-1, jnp.int32),
        reward=jnp.asarray(0.0),
        step_type=jnp.asarray(0, jnp.int32),
        state=s,
        info={"return": jnp.asarray(0.0)},
    )


def test_objects_stay_put_and_pickup_drop_toggle(env, step):
    cells = room()
    cells[5, 3] = (C.KEY, C.BLUE, 0)
    cells[3, 5] = (C.BALL, C.GREEN, 0)  # a ball: navix's default transition would move it
    cells[6, 2] = (C.BOX, C.YELLOW, 0)  # west of the agent
    ts = timestep_of(env, state(cells, (6, 3), NORTH, mission=(C.TASK_GOTO, C.RED, C.BALL, 0)))
    for _ in range(5):
        ts = step(ts, C.DONE)
    np.testing.assert_array_equal(ts.state.scene.cells, cells)
    ts = step(ts, C.PICKUP)  # pick the key up: it leaves the grid and shows in the agent's cell
    assert ts.state.scene.cells[5, 3].tolist() == [C.EMPTY, 0, 0]
    assert ts.state.scene.carrying.tolist() == [C.KEY, C.BLUE, 0]
    assert ts.observation["image"][3, 6].tolist() == [C.KEY, C.BLUE, 0]
    ts = step(ts, C.PICKUP)  # hands full: nothing happens
    ts = step(ts, C.DROP)  # drop it back in front
    assert ts.state.scene.cells[5, 3].tolist() == [C.KEY, C.BLUE, 0]
    assert ts.state.scene.carrying.tolist() == [0, 0, 0]
    ts = step(ts, C.LEFT)
    ts = step(ts, C.FORWARD)  # blocked by the box: no move
    assert ts.state.scene.agent_pos.tolist() == [6, 3]
    ts = step(ts, C.RIGHT)
    ts = step(ts, C.RIGHT)
    ts = step(ts, C.FORWARD)  # free cell: moves east
    assert ts.state.scene.agent_pos.tolist() == [6, 4]
    ts = step(ts, C.LEFT)
    ts = step(ts, C.LEFT)
    ts = step(ts, C.FORWARD)
    ts = step(ts, C.LEFT)
    assert ts.state.scene.agent_pos.tolist() == [6, 3] and int(ts.state.scene.agent_dir) == 1
    assert int(ts.step_type) == 0 and int(ts.t) == 17


def test_toggle_box_and_success_reward(env, step):
    cells = room()
    cells[5, 3] = (C.BOX, C.YELLOW, 0)
    cells[4, 3] = (C.BALL, C.RED, 0)
    ts = timestep_of(env, state(cells, (6, 3), NORTH))
    ts = step(ts, C.TOGGLE)  # the box vanishes (its contents are empty)
    assert ts.state.scene.cells[5, 3].tolist() == [C.EMPTY, 0, 0] and int(ts.step_type) == 0
    ts = step(ts, C.FORWARD)  # now the red ball is in front: success after 2 steps
    assert int(ts.step_type) == 2
    assert float(ts.reward) == pytest.approx(1 - 0.9 * 2 / 64)
    assert float(ts.info["return"]) == pytest.approx(1 - 0.9 * 2 / 64)
    nxt = step(ts, C.FORWARD)  # lazy autoreset: a fresh episode, the action ignored
    assert int(nxt.t) == 0 and float(nxt.reward) == 0.0 and int(nxt.step_type) == 0


def test_truncation_at_max_steps(env, step):
    ts = timestep_of(env, state(room(), (6, 3), NORTH))
    for _ in range(env.max_steps):
        ts = step(ts, C.DONE)
    assert int(ts.t) == 64 and int(ts.step_type) == 1 and float(ts.reward) == 0.0


def test_jit_vmap_1024_shapes_and_dtypes(env):
    n = 1024

    @jax.jit
    def run(key):
        ts = jax.vmap(env.reset)(jax.random.split(key, n))
        ts = jax.vmap(env.step)(ts, jnp.zeros(n, jnp.int32) + C.FORWARD)
        p = jax.vmap(envs.percept)(ts.state)
        k = jax.vmap(envs.situation_key)(ts.state.mission, p)
        o = jax.vmap(envs.oracle_actions)(ts.state)
        return ts, p, k, o

    ts, p, k, o = run(jax.random.PRNGKey(0))
    obs = ts.observation
    assert obs["image"].shape == (n, 7, 7, 3) and obs["image"].dtype == jnp.uint8
    assert obs["direction"].shape == (n,) and obs["direction"].dtype == jnp.int32
    assert obs["mission"].shape == (n, 4) and obs["mission"].dtype == jnp.int32
    assert ts.reward.dtype == jnp.float32 and ts.step_type.dtype == jnp.int32 and ts.t.dtype == jnp.int32
    assert p.objects.shape == (n, 8, 5) and p.walls.shape == (n, 3) and p.carrying.shape == (n, 2)
    assert k.shape == (n, 2) and k.dtype == jnp.uint32
    assert o.shape == (n, 7) and o.dtype == jnp.bool_
    assert len({tuple(x) for x in np.asarray(k)}) > n // 4  # keys differ across environments


def test_make_errors_and_overrides():
    with pytest.raises(ValueError, match="unknown env id 'BabyAI-GoToFoo-v0'"):
        envs.make("BabyAI-GoToFoo-v0")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['colour'\]"):
        envs.make("BabyAI-GoToObj-v0", colour=3)
    small = envs.make("BabyAI-GoToObj-v0", room_size=6)
    assert small.max_steps == 36 and small.height == 6
    assert envs.make("Navix-DoorKey-5x5-v0").max_steps == 250
    assert envs.make("Navix-Empty-5x5-v0", max_steps=7).max_steps == 7
    assert len(envs.env_ids()) == len(envs.BABYAI_LEVELS) + len(__import__("navix").registry())
