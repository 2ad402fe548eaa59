"""The student -> teacher signal: schedules tied to the run, the unlikelihood term, targets
(noise floor, per-situation baseline), when the teacher starts learning, the informativeness
measure, and a control: pure-noise feedback leaves the teacher's agreement with the oracle put."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bidijax import config as cfg
from bidijax import envs, teaching
from bidijax.envs import constants as C
from bidijax.envs.oracle import oracle_actions
from bidijax.envs.perception import percept, situation_key
from bidijax.envs.scene import mission_of
from bidijax.feedback import Feedback
from bidijax.student.ppo import beta_schedule
from bidijax.teacher.finetune import feedback_oracle_corr, rank_correlation, targets

A = C.NUM_ACTIONS


def feedback(adv_sum, count):
    adv_sum, count = np.asarray(adv_sum, np.float32), np.asarray(count, np.float32)
    z = np.zeros_like(count)
    return Feedback(td_sum=z, adv_sum=adv_sum, count=count, visits=count.sum(1))


# ---------------------------------------------------------------------------------------------
# schedules


def test_beta_and_lr_horizons_follow_the_run():
    c = cfg.resolve(cfg.default_config().replace(iterations=2100))
    assert c.ppo.num_updates == 2100  # learning-rate annealing and beta span the run
    beta = lambda u: float(beta_schedule(c.ppo, jnp.asarray(u)))
    half = int(c.ppo.beta_anneal_frac * 2100)
    assert beta(0) == pytest.approx(c.ppo.beta_start)
    assert beta(half // 2) == pytest.approx((c.ppo.beta_start + c.ppo.beta_end) / 2, rel=1e-3)
    # after the anneal the floor stays: the teacher still shapes the student at iteration 2000
    assert beta(half) == pytest.approx(c.ppo.beta_end) and beta(2000) == pytest.approx(c.ppo.beta_end)
    assert c.ppo.beta_end > 0
    short = cfg.resolve(cfg.default_config().replace(iterations=40)).ppo
    assert float(beta_schedule(short, jnp.asarray(20))) == pytest.approx(short.beta_end)


# ---------------------------------------------------------------------------------------------
# unlikelihood


def test_unlikelihood_pushes_down_a_confident_wrong_hint():
    torch = pytest.importorskip("torch")
    from bidijax.teacher.finetune import feedback_loss

    logits = torch.tensor([[20.0, 0, 0, 0, 0, 0, 0]], dtype=torch.float32, requires_grad=True)
    logp = torch.log_softmax(logits, -1)
    weight = torch.tensor([[-1.0, 0, 0, 0, 0, 0, 0]])
    pg, _ = feedback_loss(logp, logp.detach(), weight, torch.ones(1, 1))
    # value: log(1 - pi_0) = log(6 e^0 / (e^20 + 6)), exact even though pi_0 rounds to 1 in float32
    want = np.log(6.0) - np.logaddexp(20.0, np.log(6.0))
    assert float(pg.detach()) == pytest.approx(-want, rel=1e-5)
    pg.backward()
    grad = logits.grad[0].numpy()
    assert grad[0] > 0.5  # gradient descent lowers the wrong action's logit (a clamp gave exactly 0)
    assert np.all(grad[1:] < 0)


@pytest.mark.parametrize("objective", ["unlikelihood", "reweight"])
def test_jax_feedback_loss_is_the_torch_one(objective):
    torch = pytest.importorskip("torch")
    from bidijax.teacher.finetune import feedback_loss, feedback_loss_jax

    rng = np.random.default_rng(4)
    logits = rng.normal(scale=3.0, size=(5, A)).astype(np.float32)
    ref = np.log(rng.dirichlet(np.ones(A), 5)).astype(np.float32)
    weight = (rng.normal(size=(5, A)) * (rng.random((5, A)) < 0.6)).astype(np.float32)
    share = rng.dirichlet(np.ones(5))[:, None].astype(np.float32)

    z = torch.tensor(logits, requires_grad=True)
    pg, kl = feedback_loss(torch.log_softmax(z, -1), torch.tensor(ref), torch.tensor(weight), torch.tensor(share), objective)
    pg.backward()

    def loss(x):
        return feedback_loss_jax(jax.nn.log_softmax(x, -1), ref, weight, share, objective)[0]

    np.testing.assert_allclose(float(loss(jnp.asarray(logits))), float(pg.detach()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.grad(loss)(jnp.asarray(logits))), z.grad.numpy(), rtol=1e-4, atol=1e-6)
    jkl = feedback_loss_jax(jax.nn.log_softmax(jnp.asarray(logits), -1), ref, weight, share, objective)[1]
    np.testing.assert_allclose(float(jkl), float(kl.detach()), rtol=1e-5, atol=1e-6)


def test_reweight_moves_the_teacher_towards_its_reweighted_self():
    """``reweight``: the gradient in logit space is ``share * (pi - q)``, ``q ∝ pi exp(target)``:
    a bad action's mass goes mostly to the actions that paid off."""
    torch = pytest.importorskip("torch")
    from bidijax.teacher.finetune import feedback_loss

    logits = torch.tensor([[2.0, 1.0, 0.5, 0, 0, 0, 0]], requires_grad=True)
    weight = torch.tensor([[-1.5, 1.5, 0, 0, 0, 0, 0]])
    logp = torch.log_softmax(logits, -1)
    pg, _ = feedback_loss(logp, logp.detach(), weight, torch.full((1, 1), 0.5), "reweight")
    pg.backward()
    pi = torch.softmax(logits.detach(), -1)
    q = torch.softmax(logits.detach() + weight, -1)
    np.testing.assert_allclose(logits.grad.numpy(), (0.5 * (pi - q)).numpy(), atol=1e-6)
    # at the start of a step the teacher is pi_old itself: the value is KL(q || pi)
    assert float(pg.detach()) == pytest.approx(0.5 * float((q * (q.log() - pi.log())).sum()), rel=1e-5)
    # one small descent step: the bad action loses, the paid-off one gains (relatively) most
    after = torch.softmax(logits.detach() - 0.5 * logits.grad, -1)[0]
    gain = after / pi[0]
    assert gain[0] < 1 < gain[1] and torch.all(gain[2:] < gain[1])
    # without feedback (every target 0) a step leaves the teacher where it is: value and gradient 0
    z = logits.detach().clone().requires_grad_(True)
    lz = torch.log_softmax(z, -1)
    still, _ = feedback_loss(lz, lz.detach(), torch.zeros_like(weight), torch.ones(1, 1), "reweight")
    still.backward()
    assert float(still.detach()) == pytest.approx(0.0, abs=1e-7) and float(z.grad.abs().max()) < 1e-7


def test_unknown_objective_is_one_line():
    from bidijax.teacher.finetune import FinetuneConfig

    with pytest.raises(ValueError, match=r"objective='mpo' is not allowed; use one of unlikelihood, reweight"):
        FinetuneConfig(objective="mpo")


# ---------------------------------------------------------------------------------------------
# targets


def test_noise_floor_shrinks_small_signals_instead_of_scaling_them_up():
    rng = np.random.default_rng(0)
    count = rng.integers(1, 20, (50, A)).astype(np.float32)
    mean = rng.normal(size=(50, A))
    big, small = feedback(mean * count, count), feedback(1e-3 * mean * count, count)
    a = targets(big, noise_floor=0.05)
    b = targets(small, noise_floor=0.0)
    c = targets(small, noise_floor=0.05)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # without a floor: scale-free
    assert np.abs(c).max() < 0.05 * np.abs(a).max()  # with it: signal 1000x below the floor stays small
    np.testing.assert_allclose(c, a * 1e-3 * np.std(mean) / 0.05, rtol=1e-3, atol=1e-7)  # sd of the means / floor


def test_situation_baseline_cancels_a_per_state_critic_error():
    count = np.array([[4, 4, 0, 0, 0, 0, 0], [3, 1, 2, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0]], np.float32)
    means = np.array([[0.3, -0.1, 0, 0, 0, 0, 0], [0.2, 0.0, -0.4, 0, 0, 0, 0], [0.7, 0, 0, 0, 0, 0, 0]])
    shift = np.array([[5.0], [-2.0], [9.0]])  # a critic error per state moves all its actions alike
    t0 = targets(feedback(means * count, count), baseline="situation")
    t1 = targets(feedback((means + shift) * count, count), baseline="situation")
    np.testing.assert_allclose(t0, t1, atol=1e-5)
    assert np.all(t0[2] == 0)  # one visited action: nothing to compare it with
    assert t0[0, 0] > 0 > t0[0, 1] and t0[1, 0] > 0 > t0[1, 2]
    none = targets(feedback((means + shift) * count, count), baseline="none")
    assert np.all(none[2, 0] > none[0, :2])  # without it the state with a large critic error dominates


def test_rank_correlation_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = (x + rng.normal(size=200) > 0).astype(float)  # binary, with ties, like oracle optimality
    x[:20] = 0.0  # ties in x as well
    assert rank_correlation(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert np.isnan(rank_correlation(np.ones(5), y[:5]))


def test_feedback_oracle_corr_separates_informative_from_shuffled_feedback():
    rng = np.random.default_rng(2)
    K = 300
    oracle = np.zeros((K, A), bool)
    oracle[np.arange(K), rng.integers(0, 3, K)] = True
    count = rng.integers(0, 4, (K, A)).astype(np.float32)
    adv = np.where(oracle, 0.5, -0.2) + rng.normal(scale=0.2, size=(K, A))
    has = rng.random(K) < 0.9
    good = feedback_oracle_corr(targets(feedback(adv * count, count)), count, oracle, has)
    shuffled = rng.permutation(adv.reshape(-1)).reshape(K, A)
    noise = feedback_oracle_corr(targets(feedback(shuffled * count, count)), count, oracle, has)
    assert good > 0.5 and abs(noise) < 0.1


# ---------------------------------------------------------------------------------------------
# when the teacher learns


def test_teacher_starts_after_start_iteration_and_a_fitting_critic():
    c = cfg.resolve(cfg.default_config())
    pending = lambda update, ev: teaching.Pending(None, [], np.asarray(ev), update)
    assert teaching.learns_from(c, pending(1, [-5.0]), 0)  # defaults: from the first update on
    ft = dataclasses.replace(c.teacher.finetune, start_iteration=10, min_explained_variance=0.2)
    late = c.replace(teacher=dataclasses.replace(c.teacher, finetune=ft))
    assert not teaching.learns_from(late, pending(10, [0.9]), 0)
    assert not teaching.learns_from(late, pending(11, [0.1]), 0)
    assert teaching.learns_from(late, pending(11, [0.1, 0.3]), 1)
    assert not teaching.learns_from(c.replace(arm="one_way"), pending(11, [0.9]), 0)


class _Recorder:
    """A learning teacher that records what it is asked to learn from (one seed)."""

    version = 0

    def __init__(self):
        self.updates = []

    def update(self, fb, keys):
        self.updates.append((jax.tree.map(np.array, fb), np.array(keys)))
        self.version += 1
        return {"steps": 1, "loss": 0.0, "kl": 0.0}

    def rescore(self, keys):
        keys = np.asarray(keys, np.uint32).reshape(-1, 2)
        return keys, np.full((len(keys), A), 1.0 / A, np.float32)


def _pending(update, keys, adv, count):
    """A one-seed ``Pending`` over table ``keys`` (no missed situations)."""
    from bidijax.hints import MissBuffer

    fb = jax.tree.map(lambda x: x[None], feedback(adv, count))
    none = MissBuffer(keys=np.zeros((1, 0, 2), np.uint32), missions=np.zeros((1, 0, 4), np.int32), percepts=None,
                      count=np.zeros(1, np.int32), overflow=np.zeros(1, np.int32))  # fmt: skip
    return teaching.Pending(fb.replace(misses=none), [np.asarray(keys, np.uint32)], np.asarray([1.0]), update)


def test_update_every_learns_on_every_kth_update_from_the_summed_feedback(tmp_path):
    from bidijax import hints as hn

    c = cfg.resolve(cfg.default_config())
    ft = dataclasses.replace(c.teacher.finetune, update_every=3)
    c = c.replace(teacher=dataclasses.replace(c.teacher, finetune=ft))
    rec = _Recorder()
    teachers, tables, books = teaching.PerSeed([rec]), [hn.empty(16, A)], [{}]
    rng = np.random.default_rng(0)
    # the table grows, and one situation (key 5) is evicted before the third update
    keys = [np.array([[0, 1], [0, 2], [0, 5]]), np.array([[0, 1], [0, 2], [0, 5], [0, 7]]), np.array([[0, 7], [0, 1], [0, 2]])]
    adv = [rng.normal(size=(len(k), A)).astype(np.float32) for k in keys]
    count = [rng.integers(0, 3, size=(len(k), A)).astype(np.float32) for k in keys]
    carry = None
    for u in range(3):
        tables, stats, carry = teaching.turn(c, tables, books, teachers, _pending(u + 1, keys[u], adv[u], count[u]), carry)
        assert stats[0]["teacher_learned"] == int(u == 2)
        if u < 2:  # carried feedback survives a checkpoint
            teaching.save_carry(str(tmp_path / "carry.npz"), carry)
            carry = teaching.load_carry(str(tmp_path / "carry.npz"), 1)
    assert carry is None and len(rec.updates) == 1
    fb, got = rec.updates[0]
    assert [tuple(k) for k in got] == [(0, 7), (0, 1), (0, 2), (0, 5)]  # the last update's rows first
    want = {5: adv[0][2] + adv[1][2], 7: adv[1][3] + adv[2][0], 1: adv[0][0] + adv[1][0] + adv[2][1]}
    for row, k in ((3, 5), (0, 7), (1, 1)):
        np.testing.assert_allclose(fb.adv_sum[row], want[k], rtol=1e-6)
    np.testing.assert_allclose(fb.count.sum(), sum(x.sum() for x in count))
    np.testing.assert_allclose(fb.visits, fb.count.sum(1))
    # every update learns at update_every=1, on that update's feedback alone
    once, rec1 = c.replace(teacher=dataclasses.replace(c.teacher, finetune=dataclasses.replace(ft, update_every=1))), _Recorder()
    for u in range(2):
        _, _, carry1 = teaching.turn(once, tables, books, teaching.PerSeed([rec1]), _pending(u + 1, keys[u], adv[u], count[u]))
        assert carry1 is None
    assert len(rec1.updates) == 2
    np.testing.assert_array_equal(rec1.updates[1][0].adv_sum, adv[1])


def test_update_every_must_be_a_positive_integer():
    from bidijax.teacher.finetune import FinetuneConfig

    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="update_every"):
            FinetuneConfig(update_every=bad)


# ---------------------------------------------------------------------------------------------
# control: pure noise


@pytest.fixture(scope="module")
def situations():
    """Distinct situations of GoToRedBallNoDists met by random walks, with the oracle's actions."""
    env = envs.make("BabyAI-GoToRedBallNoDists-v0")

    @jax.jit
    def walk(key):
        ts = jax.vmap(env.reset)(jax.random.split(key, 64))

        def step(ts, k):
            s = ts.state
            p = jax.vmap(percept)(s)
            m = jax.vmap(mission_of)(s)
            out = (jax.vmap(situation_key)(m, p), m, p, jax.vmap(oracle_actions)(s))
            a = jax.random.randint(k, (64,), 0, 3)
            return jax.vmap(env.step)(ts, a), out

        return jax.lax.scan(step, ts, jax.random.split(key, 6))[1]

    keys, missions, percepts, oracle = jax.tree.map(
        lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), jax.device_get(walk(jax.random.PRNGKey(0)))
    )
    from bidijax.hints import key64

    _, first = np.unique(key64(keys), return_index=True)
    first = first[oracle[first].any(1)]
    pick = lambda x: x[first]
    return keys[first], missions[first], jax.tree.map(pick, percepts), oracle[first]


def test_pure_noise_feedback_leaves_the_teachers_agreement_put(situations):
    """Ten updates of the default teacher on feedback that is pure critic noise (zero-mean, at
    the scale of a converged student's advantages) move its agreement with the oracle by at most
    0.05 with the default noise floor; the same noise without a floor is scaled up to unit size."""
    pytest.importorskip("torch")
    keys, missions, percepts, oracle = situations
    c = cfg.resolve(cfg.default_config())

    def agreement(teachers):
        probs = teachers.score([(keys, missions, percepts, None)])[0][1]
        return float(oracle[np.arange(len(keys)), probs.argmax(1)].mean())

    rng = np.random.default_rng(3)
    count = rng.integers(0, 4, (len(keys), A)).astype(np.float32)
    noise = lambda: feedback(rng.normal(scale=0.01, size=count.shape) * count, count)
    assert c.teacher.finetune.noise_floor > 0
    floors = {"default": c.teacher.finetune, "none": dataclasses.replace(c.teacher.finetune, noise_floor=0.0)}
    moved, sizes = {}, {}
    for name, tc in floors.items():
        teachers = teaching.make_teachers(c.replace(teacher=dataclasses.replace(c.teacher, finetune=tc), num_seeds=1))
        before = agreement(teachers)
        sizes[name] = np.abs(targets(noise(), tc.signal, tc.min_count, baseline=tc.baseline, noise_floor=tc.noise_floor)).max()
        for _ in range(10):
            teachers.update([(noise(), keys)])
        moved[name] = abs(agreement(teachers) - before)
    assert moved["default"] <= 0.05, moved
    assert sizes["default"] < 0.5 < sizes["none"], sizes


def test_distill_target_temperature():
    from bidijax.student.ppo import distill_target

    p = jnp.asarray([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]], jnp.float32)
    assert np.array_equal(np.asarray(distill_target(p, jnp.float32(1.0))), np.asarray(p))  # exactly the hint
    q = np.asarray(distill_target(p, jnp.float32(0.5)))
    want = np.asarray(p) ** 2 / np.sum(np.asarray(p) ** 2, -1, keepdims=True)
    assert np.allclose(q, want, atol=1e-6)
    hard = np.asarray(distill_target(p, jnp.float32(0.01)))
    assert hard[0, 3] > 0.999 and np.allclose(hard[1], 0.25)  # argmax; a uniform hint stays uniform
    with pytest.raises(ValueError, match="distill_temperature=0.0"):
        cfg.PPOConfig(distill_temperature=0.0)
