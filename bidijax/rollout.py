"""Jitted, vmapped rollouts of simple policies (oracle, uniform random) for demos and checks."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from .envs import constants as C
from .envs.oracle import oracle_actions, oracle_probs


def oracle_policy(key: jax.Array, timestep) -> jax.Array:
    """Uniform over the oracle's optimal actions (uniform over all actions when there are none)."""
    return jax.random.choice(key, C.NUM_ACTIONS, p=oracle_probs(oracle_actions(timestep.state)))


def random_policy(key: jax.Array, timestep) -> jax.Array:
    return jax.random.randint(key, (), 0, C.NUM_ACTIONS)


def first_episodes(env, policy: Callable, num_envs: int, key: jax.Array) -> dict:
    """Run ``policy`` for one episode in each of ``num_envs`` environments (one compiled program).

    Returns per-environment arrays: ``success`` (ended by termination with positive reward),
    ``length`` and ``return`` of the first episode.
    """
    k_reset, k_act = jax.random.split(key)
    ts = jax.vmap(env.reset)(jax.random.split(k_reset, num_envs))
    zeros = jnp.zeros(num_envs, jnp.float32)

    def body(carry, k):
        ts, done, success, length, ret = carry
        actions = jax.vmap(policy)(jax.random.split(k, num_envs), ts)
        nts = jax.vmap(env.step)(ts, actions)
        ended = ~done & (nts.step_type > 0)
        success = jnp.where(ended, (nts.step_type == 2) & (nts.reward > 0), success)
        length = jnp.where(ended, nts.t, length)
        ret = jnp.where(ended, nts.info["return"], ret)
        return (nts, done | ended, success, length, ret), None

    init = (ts, jnp.zeros(num_envs, bool), jnp.zeros(num_envs, bool), zeros.astype(jnp.int32), zeros)
    (_, done, success, length, ret), _ = jax.lax.scan(body, init, jax.random.split(k_act, env.max_steps))
    return {"done": done, "success": success, "length": length, "return": ret}
