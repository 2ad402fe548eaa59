"""Jitted, vmapped rollouts of simple policies (oracle, uniform random) for demos and checks."""

from __future__ import annotations

from typing import Callable

import jax

from .envs import constants as C
from .envs.oracle import oracle_actions, oracle_probs
from .student.evaluate import first_episodes as play


def oracle_policy(key: jax.Array, timestep) -> jax.Array:
    """Uniform over the oracle's optimal actions (uniform over all actions when there are none)."""
    return jax.random.choice(key, C.NUM_ACTIONS, p=oracle_probs(oracle_actions(timestep.state)))


def random_policy(key: jax.Array, timestep) -> jax.Array:
    return jax.random.randint(key, (), 0, C.NUM_ACTIONS)


def first_episodes(env, policy: Callable, num_envs: int, key: jax.Array) -> dict:
    """Run ``policy(key, timestep) -> action`` for one episode in each of ``num_envs``
    environments (one compiled program); per-environment ``done``, ``success``, ``length`` and
    ``return`` of that first episode (see ``bidijax.student.evaluate.first_episodes``)."""
    k_reset, k_act = jax.random.split(key)
    ts = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    act = lambda k, ts: jax.vmap(policy)(jax.random.split(k, num_envs), ts)
    return play(env, ts, act, k_act)
