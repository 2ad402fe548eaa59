"""Evaluation of the student alone: unbiased by episode length, paired sampled/greedy layouts,
a PRNG stream of its own, seeds independent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bidijax import envs
from bidijax.rollout import first_episodes, random_policy
from bidijax.student import PPOConfig, eval_key, make_evaluate, make_train

EPISODES = 512


@pytest.fixture(scope="module")
def setup():
    env = envs.make("BabyAI-GoToRedBallNoDists-v0")
    config = PPOConfig(num_envs=4, num_steps=8, num_minibatches=1, hidden=16)
    train = make_train(config, env)
    params = jax.vmap(train.init)(jax.random.split(jax.random.PRNGKey(0), 2)).params
    evaluate = jax.jit(jax.vmap(make_evaluate(config, env, EPISODES)))
    return env, params, evaluate


def test_untrained_student_matches_a_uniform_policy_without_length_bias(setup):
    """At initialisation the actor is ~uniform, so its success rate over whole episodes is the
    uniform random policy's (~0.24 on NoDists), though a rollout's ended episodes over-count
    the short, successful ones."""
    env, params, evaluate = setup
    out = jax.device_get(evaluate(params, jnp.stack([eval_key(0, 1), eval_key(1, 1)])))
    rand = jax.device_get(jax.jit(lambda k: first_episodes(env, random_policy, 2048, k))(jax.random.PRNGKey(5)))
    p = float(np.mean(rand["success"]))
    assert 0.15 < p < 0.35
    se = np.sqrt(p * (1 - p) / EPISODES)
    assert np.all(np.abs(out["eval_success"] - p) < 4 * se + 0.02), (out["eval_success"], p)
    assert np.all(np.abs(out["eval_length"] - np.mean(rand["length"])) < 4.0)
    for k in ("eval_greedy_success", "eval_greedy_return", "eval_return"):
        assert np.all((0 <= out[k]) & (out[k] <= 1))


def test_eval_keys_are_their_own_stream_and_seeds_independent(setup):
    _, params, evaluate = setup
    train_keys = [jax.random.PRNGKey(s) for s in (0, 1)]
    train_keys += [k for key in train_keys for k in jax.random.split(key, 3)]
    ek = [eval_key(s, it) for s in (0, 1) for it in (1, 2)]
    assert len({tuple(np.asarray(k).tolist()) for k in train_keys + ek}) == len(train_keys) + len(ek)
    both = jax.device_get(evaluate(params, jnp.stack([eval_key(0, 3), eval_key(1, 3)])))
    alone = jax.device_get(evaluate(jax.tree.map(lambda x: x[1:], params), eval_key(1, 3)[None]))
    for k in both:
        assert np.isclose(both[k][1], alone[k][0], rtol=1e-6), k
