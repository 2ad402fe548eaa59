"""The BFS oracle: always taking an oracle action succeeds, in exactly the BFS distance."""

import jax
import numpy as np
import pytest

from bidijax import envs
from bidijax.envs import constants as C
from bidijax.rollout import first_episodes, oracle_policy
from helpers import room, state

LEVELS = ["BabyAI-GoToRedBallNoDists-v0", "BabyAI-GoToLocal-v0", "Navix-Empty-Random-6x6-v0", "Navix-FourRooms-v0"]


@pytest.mark.parametrize("env_id", LEVELS)
def test_oracle_policy_is_optimal(env_id):
    env = envs.make(env_id)
    n = 64 if "FourRooms" in env_id else 256

    @jax.jit
    def run(key):
        ts = jax.vmap(env.reset)(jax.random.split(jax.random.split(key)[0], n))
        return jax.vmap(envs.oracle_distance)(ts.state), first_episodes(env, oracle_policy, n, key)

    dist, out = jax.device_get(run(jax.random.PRNGKey(11)))
    assert (dist <= env.max_steps).all()
    if env_id.startswith("BabyAI"):
        assert dist.min() >= 1  # MiniGrid never starts the agent facing its target
    # navix's Empty-Random may start the agent on the goal (distance 0, nothing to do):
    # such episodes only end when the agent walks onto the goal again, so they are left out
    real = dist > 0
    assert real.mean() > 0.8
    assert out["done"][real].all() and out["success"][real].all()
    np.testing.assert_array_equal(out["length"][real], dist[real])


def test_oracle_actions_hand_built():
    cells = room()
    cells[2, 3] = (C.BALL, C.RED, 0)
    # agent at (6, 3) facing north: the ball is 4 rows ahead, so only "forward" is optimal
    s = state(cells, (6, 3), 3)
    assert np.flatnonzero(envs.oracle_actions(s)).tolist() == [C.FORWARD]
    assert int(envs.oracle_distance(s)) == 3
    # facing south: both turns lead to a shortest path (2 turns + 3 forwards)
    s = state(cells, (6, 3), 1)
    assert np.flatnonzero(envs.oracle_actions(s)).tolist() == [C.LEFT, C.RIGHT]
    assert int(envs.oracle_distance(s)) == 5
    # a boxed-in target is unreachable: no action is optimal
    cells[1:4, 2:5] = (C.BOX, C.GREY, 0)
    cells[2, 3] = (C.BALL, C.RED, 0)
    s = state(cells, (6, 3), 3)
    assert not envs.oracle_actions(s).any()
