"""Evaluation of the student network alone: no teacher, no hint table, no exploration bonus.

``make_evaluate(config, env, episodes)`` returns ``evaluate(params, key) -> metrics``: one
compiled program that plays ``episodes`` fresh episodes with the student's sampled policy and
the same ``episodes`` layouts again with its greedy policy (argmax), every episode to its end
(``env.max_steps`` steps, so short and long episodes count alike: no bias towards the short,
successful episodes that end first in a training rollout). ``jax.vmap`` it over seeds.

``eval_key(seed, iteration)`` derives the environment and action randomness of an evaluation
from a PRNG stream that training never draws from (training's keys come from
``PRNGKey(seed)``'s splits; evaluation's from ``fold_in(PRNGKey(seed), EVAL_STREAM)``). The
levels have finitely many layouts, so an evaluation layout can coincide with a training one; the
random numbers that pick them are disjoint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import PPOConfig
from .networks import ActorCritic

EVAL_STREAM = 0x5EED_E7A1

#: metric names ``evaluate`` returns (each a scalar per seed)
EVAL_COLUMNS = (
    "eval_success", "eval_return", "eval_length", "eval_greedy_success", "eval_greedy_return",
)  # fmt: skip


def eval_key(seed: int, iteration: int) -> jax.Array:
    """The key of seed ``seed``'s evaluation after ``iteration`` updates (disjoint from training's)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_STREAM), iteration)


def first_episodes(env, timestep, act, key: jax.Array) -> dict:
    """Play the episodes that ``timestep`` (a batch of fresh resets) starts, each to its end.

    ``act(key, timestep) -> actions`` chooses the batch's actions. Runs ``env.max_steps`` steps
    (every episode ends by then: termination or truncation). Returns per-environment
    ``success`` (terminated with a positive reward), ``return`` and ``length`` of that first
    episode, and ``done``.
    """
    n = timestep.t.shape[0]

    def step(carry, k):
        ts, done, success, length, ret = carry
        nts = jax.vmap(env.step)(ts, act(k, ts))
        ended = ~done & (nts.step_type > 0)
        success = jnp.where(ended, (nts.step_type == 2) & (nts.reward > 0), success)
        length = jnp.where(ended, nts.t, length)
        ret = jnp.where(ended, nts.info["return"], ret)
        return (nts, done | ended, success, length, ret), None

    init = (timestep, jnp.zeros(n, bool), jnp.zeros(n, bool), jnp.zeros(n, jnp.int32), jnp.zeros(n, jnp.float32))
    keys = jax.random.split(key, int(env.max_steps))
    (_, done, success, length, ret), _ = jax.lax.scan(step, init, keys)
    return {"done": done, "success": success & done, "length": length, "return": ret}


def make_evaluate(config: PPOConfig, env, episodes: int):
    """``evaluate(params, key) -> {name: scalar}`` for the student network of ``config`` on ``env``."""
    if episodes < 1:
        raise ValueError(f"eval episodes={episodes} must be >= 1")
    num_actions = int(env.action_space.n)
    net = ActorCritic(num_actions=num_actions, hidden=config.hidden)
    apply = jax.vmap(net.apply, in_axes=(None, 0))

    def evaluate(params, key: jax.Array) -> dict:
        k_reset, k_act = jax.random.split(key)
        ts = jax.vmap(env.reset)(jax.random.split(k_reset, episodes))
        ts = jax.tree.map(lambda x: jnp.concatenate([x, x]), ts)
        greedy = jnp.arange(2 * episodes) >= episodes

        def act(k, ts):
            logits, _ = apply(params, ts.observation)
            return jnp.where(greedy, jnp.argmax(logits, -1), jax.random.categorical(k, logits))

        out = first_episodes(env, ts, act, k_act)
        f = lambda x: jnp.mean(x.astype(jnp.float32))
        sampled, greedy_ = slice(0, episodes), slice(episodes, None)
        return {
            "eval_success": f(out["success"][sampled]),
            "eval_return": f(out["return"][sampled]),
            "eval_length": f(out["length"][sampled]),
            "eval_greedy_success": f(out["success"][greedy_]),
            "eval_greedy_return": f(out["return"][greedy_]),
        }

    return evaluate
