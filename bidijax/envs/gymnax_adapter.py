"""Gymnax environments behind navix's ``reset(key)`` / ``step(timestep, action)`` contract.

The adapter resets lazily like navix (the step after an episode's end starts a new episode
and ignores its action), so every episode's true final observation is kept and truncation
(gymnax's time limit) is told apart from termination.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from navix.environments.environment import Timestep


class GymnaxState(struct.PyTreeNode):
    key: jax.Array
    env_state: Any


class GymnaxEnv(struct.PyTreeNode):
    env: Any = struct.field(pytree_node=False)
    params: Any = struct.field(pytree_node=False)

    @property
    def action_space(self):
        return self.env.action_space(self.params)

    @property
    def max_steps(self) -> int:
        return int(getattr(self.params, "max_steps_in_episode", 0))

    def reset(self, key: jax.Array, cache=None) -> Timestep:
        k_env, k_next = jax.random.split(key)
        obs, env_state = self.env.reset_env(k_env, self.params)
        ts = Timestep(
            t=jnp.asarray(0, jnp.int32),
            observation=obs,
            action=jnp.asarray(-1, jnp.int32),
            reward=jnp.asarray(0.0, jnp.float32),
            step_type=jnp.asarray(0, jnp.int32),
            state=GymnaxState(k_next, env_state),
        )
        ts.info["return"] = jnp.asarray(0.0, jnp.float32)
        return ts

    def step(self, timestep: Timestep, action: jax.Array) -> Timestep:
        done = timestep.step_type > 0
        fresh = self.reset(timestep.state.key)
        k_next, k_step = jax.random.split(timestep.state.key)
        obs, env_state, reward, terminated, _ = self.env.step_env(k_step, timestep.state.env_state, action, self.params)
        truncated = self.env.is_truncated(env_state, self.params)
        reward = jnp.asarray(reward, jnp.float32)
        moved = Timestep(
            t=timestep.t + 1,
            observation=obs,
            action=jnp.asarray(action, jnp.int32),
            reward=reward,
            step_type=jnp.where(terminated, 2, jnp.where(truncated, 1, 0)).astype(jnp.int32),
            state=GymnaxState(k_next, env_state),
        )
        moved.info["return"] = timestep.info["return"] + reward
        return jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, moved)


def from_gymnax(env_id_or_env, params=None) -> GymnaxEnv:
    """Wrap a gymnax environment (or gymnax id such as ``"CartPole-v1"``)."""
    if isinstance(env_id_or_env, str):
        import gymnax

        env, default = gymnax.make(env_id_or_env)
        return GymnaxEnv(env=env, params=default if params is None else params)
    return GymnaxEnv(env=env_id_or_env, params=env_id_or_env.default_params if params is None else params)
