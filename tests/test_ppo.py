"""PPO student: GAE, feedback aggregation, hint modes, seed independence, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bidijax import envs, feedback, hints
from bidijax.envs import constants as C
from bidijax.student import PPOConfig, gae, make_train, vmap_seeds

A = C.NUM_ACTIONS
CAP = 512  # one table shape everywhere: each program compiles once


def gae_reference(rewards, values, next_values, next_type, gamma, lam):
    T = len(rewards)
    adv, td = np.zeros_like(values), np.zeros_like(values)
    running = np.zeros_like(values[0])
    for t in reversed(range(T)):
        terminal = next_type[t] == 2
        td[t] = rewards[t] + gamma * next_values[t] * (1 - terminal) - values[t]
        running = td[t] + gamma * lam * (next_type[t] == 0) * running
        adv[t] = running
    return adv, td


def test_gae_matches_reference_with_truncation_and_termination():
    rng = np.random.default_rng(0)
    T, E = 40, 5
    rewards = rng.normal(size=(T, E)).astype(np.float32)
    values = rng.normal(size=(T, E)).astype(np.float32)
    next_values = rng.normal(size=(T, E)).astype(np.float32)
    next_type = rng.choice([0, 0, 0, 1, 2], size=(T, E)).astype(np.int32)
    adv, td = gae(rewards, values, next_values, next_type, 0.97, 0.9)
    ref_adv, ref_td = gae_reference(rewards, values, next_values, next_type, 0.97, 0.9)
    np.testing.assert_allclose(td, ref_td, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-4, atol=1e-4)
    # a truncated step bootstraps from the next value, a terminated one does not
    t, e = np.argwhere(next_type == 1)[0]
    assert td[t, e] == pytest.approx(rewards[t, e] + 0.97 * next_values[t, e] - values[t, e], abs=1e-5)


def test_aggregate_matches_numpy():
    rng = np.random.default_rng(1)
    K, n = 16, 500
    rows = rng.integers(0, K + 1, n)  # K means "miss"
    actions = rng.integers(0, A, n)
    td, adv = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    mask = rng.random(n) < 0.8
    out = feedback.aggregate(rows, actions, td, adv, mask, K, A)
    ref = np.zeros((5, K, A))
    for r, a, x, y, m in zip(rows, actions, td, adv, mask):
        if m and r < K:
            ref[:, r, a] += (x, x * x, y, y * y, 1)
    for got, want in zip((out.td_sum, out.adv_sum, out.count), ref[[0, 2, 4]]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.visits, ref[4].sum(1))


def test_config_errors():
    with pytest.raises(ValueError, match="hint_mode='bogus' is not one of"):
        PPOConfig(hint_mode="bogus")
    with pytest.raises(ValueError, match="num_minibatches=3 must divide num_envs \\* num_steps = 64"):
        PPOConfig(num_envs=4, num_steps=16, num_minibatches=3)


# ---------------------------------------------------------------------------------------------
# BabyAI with a hint table (one compiled update shared by the tests below)

CFG = PPOConfig(
    num_envs=8, num_steps=16, num_minibatches=2, update_epochs=2, lr=1e-3,
    hint_mode="distill", beta_start=5.0, beta_end=5.0, miss_buffer_size=256,
)


@pytest.fixture(scope="module")
def babyai():
    env = envs.make("BabyAI-GoToRedBallNoDists-v0")
    train = make_train(CFG, env)
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    # a table over half the situations of a first rollout: the teacher always says "left"
    collect = jax.jit(train.collect)
    first = collect(runner, hints.empty(CAP, A))
    keys = np.unique(np.asarray(first.traj.key).reshape(-1, 2), axis=0)[::2]
    table = hints.from_rows(keys, np.tile(np.eye(A, dtype=np.float32)[C.LEFT], (len(keys), 1)), capacity=CAP)
    return env, train, runner, table, collect, jax.jit(train.init), jax.jit(train.update)


def test_feedback_matches_numpy_on_the_same_rollout(babyai):
    env, train, runner, table, collect, _, update = babyai
    roll = jax.device_get(collect(runner, table))
    _, metrics, fb = update(runner, table)
    tr = roll.traj
    mask = tr.valid & tr.hit
    assert mask.any() and (tr.valid & ~tr.hit).any()
    K = table.capacity
    count, td_sum, adv_sum = np.zeros((K, A)), np.zeros((K, A)), np.zeros((K, A))
    for r, a, d, g, m in zip(tr.row.ravel(), tr.action.ravel(), roll.td_errors.ravel(), roll.advantages.ravel(), mask.ravel()):
        if m:
            count[r, a] += 1
            td_sum[r, a] += d
            adv_sum[r, a] += g
    np.testing.assert_allclose(fb.count, count)
    np.testing.assert_allclose(fb.td_sum, td_sum, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fb.adv_sum, adv_sum, rtol=1e-4, atol=1e-4)
    # the TD errors are the critic's: r + gamma V(s') (1 - terminal) - V(s)
    nv = np.concatenate([tr.value[1:], np.zeros_like(tr.value[:1])])
    t = slice(0, -1)
    want = tr.reward[t] + CFG.gamma * nv[t] * (tr.next_type[t] != 2) - tr.value[t]
    np.testing.assert_allclose(roll.td_errors[t], want, rtol=1e-4, atol=1e-4)
    # misses: exactly the distinct keys of valid steps not in the table
    missed = {tuple(k) for k in tr.key[tr.valid & ~tr.hit].tolist()}
    n = int(fb.misses.count)
    assert n == len(missed) and int(fb.misses.overflow) == 0
    assert {tuple(k) for k in np.asarray(fb.misses.keys)[:n].tolist()} == missed
    # each miss carries the oracle's actions at the first step (time-major) with its key
    best = np.asarray(roll.percepts[2]).reshape(-1, A)
    flat_keys = [tuple(k) for k in tr.key.reshape(-1, 2).tolist()]
    missed_steps = (tr.valid & ~tr.hit).reshape(-1)
    first = {}
    for i, k in enumerate(flat_keys):
        if missed_steps[i] and k not in first:
            first[k] = best[i]
    for k, o in zip(np.asarray(fb.misses.keys)[:n].tolist(), np.asarray(fb.misses.oracle)[:n]):
        np.testing.assert_array_equal(o, first[tuple(k)])
    assert not np.asarray(fb.misses.oracle)[n:].any()
    # the update runs the oracle after its rollout on sampled hit steps (all of them here: fewer
    # than agreement_samples); collect runs it at every step: same agreement
    agree = tr.valid & tr.hit & tr.has_oracle
    assert 0 < agree.sum() < CFG.agreement_samples
    assert float(metrics["teacher_oracle_agreement"]) == pytest.approx(tr.agree[agree].mean())


def test_agreement_on_a_sample_of_hit_steps(babyai):
    from bidijax.student.ppo import _agreement

    env, train, runner, table, collect, _, _ = babyai
    roll = jax.device_get(collect(runner, table))
    tr = roll.traj
    best = jnp.asarray(roll.percepts[2]).reshape(-1, A)  # the per-step oracle of collect
    oracle_at = lambda src, filled: best[src]
    hits = tr.valid & tr.hit & tr.has_oracle
    exact = tr.agree[hits].mean()
    tr = jax.tree.map(jnp.asarray, tr)
    assert float(_agreement(oracle_at, tr, jax.random.PRNGKey(0), 0)) == pytest.approx(exact)
    # a uniform sample of 8 hit steps: unbiased, so its mean over many draws is the exact value
    draws = jax.jit(jax.vmap(lambda k: _agreement(oracle_at, tr, k, 8)))(jax.random.split(jax.random.PRNGKey(1), 400))
    assert len(np.unique(np.asarray(draws))) > 3
    assert float(jnp.mean(draws)) == pytest.approx(exact, abs=0.03)


def test_distill_pulls_student_toward_teacher(babyai):
    env, train, runner, table, _, _, update = babyai
    kls = []
    for _ in range(8):
        runner, metrics, _ = update(runner, table)
        kls.append(float(metrics["kl_teacher_student"]))
    assert metrics["hint_coverage"] > 0
    assert kls[-1] < 0.5 * kls[0]


def test_seeds_vmapped_equal_single(babyai):
    env, train, _, table, _, init, update = babyai
    keys = jax.random.split(jax.random.PRNGKey(42), 3)
    tables = jax.tree.map(lambda x: jnp.stack([x] * 3), table)

    def two_updates(init, update, key, table):
        r = init(key)
        r, _, _ = update(r, table)
        r, m, f = update(r, table)
        return r.params, m, f.count

    def batched_updates(keys, tables):
        runners = jax.lax.map(train.init, keys)  # see student.seeds.vmap_seeds
        runners, _, _ = jax.vmap(train.update)(runners, tables)
        runners, m, f = jax.vmap(train.update)(runners, tables)
        return runners.params, m, f.count

    batched = jax.jit(batched_updates)(keys, tables)
    single = two_updates(init, update, keys[1], table)  # the single-seed programs, compiled once
    one = jax.tree.map(lambda x: x[1], batched)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), one, single)
    # different seeds really differ
    assert not np.allclose(batched[2][0], batched[2][1])


# ---------------------------------------------------------------------------------------------
# Acting modes and learning


@pytest.mark.parametrize("mode", ["prior", "teacher_policy"])
def test_acting_modes_follow_the_teacher(mode):
    env = envs.make("BabyAI-GoToRedBallNoDists-v0")
    cfg = PPOConfig(num_envs=8, num_steps=16, num_minibatches=1, update_epochs=1, hint_mode=mode, prior_weight=20.0)
    train = make_train(cfg, env)
    runner = jax.jit(train.init)(jax.random.PRNGKey(1))
    collect = jax.jit(train.collect)
    first = collect(runner, hints.empty(CAP, A))
    keys = np.unique(np.asarray(first.traj.key).reshape(-1, 2), axis=0)
    teacher = np.tile(np.eye(A, dtype=np.float32)[C.RIGHT], (len(keys), 1))
    tr = collect(runner, hints.from_rows(keys, np.clip(teacher, 1e-6, 1), capacity=CAP)).traj
    hit = np.asarray(tr.valid & tr.hit)
    assert hit.sum() >= 16  # situations of the first rollout come back
    assert (np.asarray(tr.action)[hit] == C.RIGHT).mean() > 0.95
    # without the teacher the untrained student acts near uniformly
    assert (np.asarray(first.traj.action) == C.RIGHT).mean() < 0.5


def metric_history(env_id, cfg, updates, table):
    """Train from scratch for ``updates`` iterations; the host metrics of each one."""
    train = make_train(cfg, envs.make(env_id))
    runner = jax.jit(train.init)(jax.random.PRNGKey(0))
    update = jax.jit(train.update)
    history = []
    for _ in range(updates):
        runner, metrics, _ = update(runner, table)
        history.append(jax.device_get(metrics))
    return history


def test_ppo_learns_empty_5x5():
    # 4 seeds in one program: one seed's final episode length varies from ~5.5 to ~14 steps
    # (with either minibatch shuffle), their mean far less
    cfg = PPOConfig(num_envs=16, num_steps=32, num_minibatches=2, update_epochs=2, lr=1e-3)
    init, update = vmap_seeds(make_train(cfg, envs.make("Navix-Empty-5x5-v0")))
    runners = init(jnp.stack([jax.random.PRNGKey(s) for s in range(4)]))
    tables = jax.tree.map(lambda x: jnp.stack([x] * 4), hints.empty(1, A))
    history = []
    for _ in range(100):
        runners, metrics, _ = update(runners, tables)
        history.append(jax.device_get(metrics))
    late = history[-10:]
    success = sum(m["behaviour_success"] * m["episodes"] for m in late) / sum(m["episodes"] for m in late)
    length = np.mean([m["behaviour_length"] for m in late], axis=0)
    assert np.all(success > 0.9) and np.mean(length) < 12  # a random policy needs ~70 steps here
    assert np.all(history[-1]["frames"] == 100 * cfg.frames_per_update)


def test_gymnax_cartpole_smoke():
    cfg = PPOConfig(num_envs=8, num_steps=64, num_minibatches=2, update_epochs=4, lr=2.5e-3)
    returns = [float(m["behaviour_return"]) for m in metric_history("gymnax:CartPole-v1", cfg, 40, hints.empty(1, 2))]
    assert np.mean(returns[-10:]) > 2 * np.mean(returns[:3])


def test_feistel_shuffle_is_a_random_partition():
    from bidijax.student.shuffle import permutation

    for n in (1, 2, 3, 7, 100, 4097, 8192):
        p = np.asarray(permutation(jax.random.PRNGKey(n), n))
        np.testing.assert_array_equal(np.sort(p), np.arange(n))
    perms = np.asarray(jax.jit(jax.vmap(lambda k: permutation(k, 64)))(jax.random.split(jax.random.PRNGKey(0), 2000)))
    assert len({tuple(p) for p in perms}) == 2000
    # every index is equally likely at every position (chi-square over the 64 x 64 counts)
    pos = np.argsort(perms, axis=1)
    counts = np.stack([np.bincount(pos[:, i], minlength=64) for i in range(64)])
    expected = 2000 / 64
    chi2 = ((counts - expected) ** 2 / expected).sum() / (64 * 63)  # 64 x chi2(63): ~1 per dof
    assert 0.8 < chi2 < 1.2
    # neighbours land in the same minibatch (of 4) as often as any pair: 15 / 63
    same = (pos[:, :-1] // 16 == pos[:, 1:] // 16).mean()
    assert abs(same - 15 / 63) < 0.02


def test_oracle_at_runs_the_bfs_up_to_the_last_filled_row_and_matches_it():
    from bidijax.envs.oracle import oracle_actions
    from bidijax.envs.scene import mission_of, scene_of
    from bidijax.student import ppo

    env = envs.make("BabyAI-GoToRedBallNoDists-v0")
    T, E = 2, 150  # 300 steps: three chunks of 128
    state = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), T * E)).state
    scene, missions = jax.vmap(scene_of)(state), jax.vmap(mission_of)(state)
    direct = np.asarray(jax.vmap(oracle_actions)(scene, missions))[:, :A]
    assert direct.any(-1).mean() > 0.9  # the oracle has something to say on most steps
    steps = lambda x: x.reshape((T, E) + x.shape[1:])
    at = ppo._oracle_at((steps(scene.cells), steps(scene.agent_pos), steps(scene.agent_dir)), steps(missions), A)
    src = np.random.default_rng(0).permutation(T * E)[:260]
    cases = {
        "all": np.ones(260, bool),
        "prefix of 129": np.arange(260) < 129,
        "sparse, last at 250": (np.arange(260) % 3 == 1) & (np.arange(260) <= 250),
        "none": np.zeros(260, bool),
    }
    run = jax.jit(at)
    for name, filled in cases.items():
        np.testing.assert_array_equal(np.asarray(run(src, filled)), direct[src] & filled[:, None], err_msg=name)
    # vmapped (as over seeds): each row of the batch as alone, the loop running to the longest
    got = jax.jit(jax.vmap(at, in_axes=(None, 0)))(src, np.stack([cases["none"], cases["prefix of 129"]]))
    np.testing.assert_array_equal(np.asarray(got), np.stack([direct[src] & f[:, None] for f in (cases["none"], cases["prefix of 129"])]))
