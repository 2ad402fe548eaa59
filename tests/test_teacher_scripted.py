"""Scripted teachers: oracle, noisy oracle and uniform, from the miss buffer's oracle actions."""

import jax
import numpy as np
import pytest

from bidijax import envs, hints
from bidijax.envs import constants as C
from bidijax.student import PPOConfig, make_train
from bidijax.teacher.scripted import ScriptedTeacher, noisy_oracle, oracle, uniform

A = C.NUM_ACTIONS


def random_keys(n, seed=0):
    return np.random.default_rng(seed).integers(0, 2**32, size=(n, 2), dtype=np.uint64).astype(np.uint32)


def test_oracle_is_uniform_over_optimal_actions():
    best = np.zeros((3, A), bool)
    best[0, [C.LEFT, C.FORWARD]] = True
    best[1, C.RIGHT] = True  # row 2: no optimal action -> uniform
    _, probs = oracle().score(random_keys(3), oracle=best)
    np.testing.assert_allclose(probs[0], np.where(best[0], 0.5, 0.0))
    np.testing.assert_allclose(probs[1], np.eye(A)[C.RIGHT])
    np.testing.assert_allclose(probs[2], np.full(A, 1 / A))


def test_noisy_oracle_corrupts_a_fraction_eps_deterministically():
    n = 20000
    keys = random_keys(n, 1)
    best = np.zeros((n, A), bool)
    best[:, C.FORWARD] = True
    _, p1 = noisy_oracle(0.3, seed=5).score(keys, oracle=best)
    _, p2 = noisy_oracle(0.3, seed=5).score(keys, oracle=best)
    np.testing.assert_array_equal(p1, p2)
    corrupted = np.isclose(p1[:, C.FORWARD], 1 / A)
    assert abs(corrupted.mean() - 0.3) < 0.015
    assert np.all(np.isclose(p1[~corrupted, C.FORWARD], 1.0))
    _, p3 = noisy_oracle(0.3, seed=6).score(keys, oracle=best)
    assert not np.array_equal(p1, p3)  # another seed corrupts other situations
    np.testing.assert_array_equal(noisy_oracle(0.0).score(keys, oracle=best)[1], oracle().score(keys, oracle=best)[1])
    np.testing.assert_allclose(noisy_oracle(1.0).score(keys, oracle=best)[1], 1 / A)


def test_uniform_and_errors():
    _, p = uniform().score(random_keys(4))
    np.testing.assert_allclose(p, 1 / A)
    with pytest.raises(ValueError, match="'psychic' is not one of"):
        ScriptedTeacher("psychic")
    with pytest.raises(ValueError, match="eps=1.5 must lie in"):
        noisy_oracle(1.5)
    with pytest.raises(ValueError, match="needs the oracle's actions"):
        oracle().score(random_keys(2))


def test_oracle_teacher_through_the_student_loop():
    """Misses of a real update, scored by the oracle teacher, give a table the oracle agrees with."""
    env = envs.make("BabyAI-GoToRedBallNoDists-v0")
    cfg = PPOConfig(num_envs=8, num_steps=32, num_minibatches=2, update_epochs=1, hint_mode="distill")
    train = make_train(cfg, env)
    update = jax.jit(train.update)
    runner = jax.jit(train.init)(jax.random.PRNGKey(3))
    table = hints.empty(512, A)
    teacher = oracle()
    for _ in range(2):
        runner, metrics, fb = update(runner, table)
        m = jax.device_get(fb.misses)
        n = int(m.count)
        assert n > 0 and m.oracle.shape == (cfg.num_envs * cfg.num_steps, A)  # miss_buffer_size 0: all
        keys, probs = teacher.score(m.keys[:n], m.missions[:n], None, oracle=m.oracle[:n])
        has = m.oracle[:n].any(-1)
        assert m.oracle[:n][has, probs[has].argmax(-1)].all()  # optimal where it was recorded
        table = hints.merge(table, keys, probs)
    runner, metrics, _ = update(runner, table)
    assert float(metrics["hint_coverage"]) > 0.3
    # one text can stand for several states (the ball out of view), whose optimal actions differ
    assert float(metrics["teacher_oracle_agreement"]) > 0.5
