"""Teacher fine-tuning from student feedback: the batch (numpy), the update's direction and its
KL anchor, re-scoring, most-visited selection, save/load round-trips, config errors, LoRA."""

import jax
import numpy as np
import pytest

from bidijax.envs import constants as C
from bidijax.feedback import Feedback
from bidijax.teacher.finetune import FinetuneConfig, most_visited, sampling_probs, targets
from bidijax.teacher.scripted import ScriptedTeacher, noisy_oracle, uniform

A = C.NUM_ACTIONS


def make_feedback(adv_sum, count, td_sum=None):
    adv_sum, count = np.asarray(adv_sum, np.float32), np.asarray(count, np.float32)
    td_sum = np.zeros_like(adv_sum) if td_sum is None else np.asarray(td_sum, np.float32)
    return Feedback(
        td_sum=td_sum, adv_sum=adv_sum, count=count, visits=count.sum(1)
    )


def one_line_error(fn) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# -- numpy: config, batch construction, most visited -------------------------------------------


def test_config_errors_are_one_line_and_name_the_value():
    assert "signal='q'" in one_line_error(lambda: FinetuneConfig(signal="q"))
    assert "advantage" in one_line_error(lambda: FinetuneConfig(signal="q"))
    for kwargs, text in [
        (dict(lr=0.0), "lr=0.0"),
        (dict(steps=0), "steps=0"),
        (dict(batch_size=2.5), "batch_size=2.5"),
        (dict(kl_coef=-1.0), "kl_coef=-1.0"),
        (dict(min_count=-0.5), "min_count=-0.5"),
        (dict(max_grad_norm=float("nan")), "max_grad_norm=nan"),
        (dict(lora_rank=-2), "lora_rank=-2"),
    ]:
        msg = one_line_error(lambda: FinetuneConfig(**kwargs))
        assert text in msg and ("use" in msg), msg
    FinetuneConfig(signal="td", kl_coef=0.0, min_count=0.0, lora_rank=4)  # all allowed


def test_targets_standardise_means_and_down_weight_low_counts():
    adv = np.array([[4.0, -2.0, 0.0], [0.0, 3.0, 0.0], [9.0, 9.0, 9.0]])
    count = np.array([[4.0, 1.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    td = -adv
    fb = make_feedback(adv, count, td)
    rows = np.array([True, True, False])  # row 2: a situation the teacher does not know
    got = targets(fb, "advantage", min_count=2.0, rows=rows)
    means = np.array([1.0, -2.0, 1.5])  # entries (0,0), (0,1), (1,1)
    z = (means - means.mean()) / means.std()
    want = np.zeros((3, 3))
    want[0, 0], want[0, 1], want[1, 1] = z * np.array([4 / 6, 1 / 3, 2 / 4])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32
    np.testing.assert_allclose(targets(fb, "td", 2.0, rows), -want, rtol=1e-6, atol=1e-7)  # the TD signal
    # min_count 0: plain standardisation (zero mean, unit sd over the selected entries)
    plain = targets(fb, "advantage", min_count=0.0, rows=rows)[count * rows[:, None] > 0]
    np.testing.assert_allclose([plain.mean(), plain.std()], [0.0, 1.0], atol=1e-6)
    # all rows: row 2 joins the normalisation
    assert targets(fb, "advantage", 2.0)[2].all()
    # no variation (e.g. zero advantages), or nothing visited: no signal at all
    assert not targets(make_feedback(np.zeros((3, 3)), count)).any()
    assert not targets(make_feedback(2.0 * count, count)).any()
    assert not targets(make_feedback(np.zeros((2, 3)), np.zeros((2, 3)))).any()


def test_sampling_probs_follow_visits_of_known_rows():
    visits = np.array([1.0, 0.0, 3.0, 4.0])
    np.testing.assert_allclose(sampling_probs(visits), visits / 8)
    np.testing.assert_allclose(sampling_probs(visits, rows=[True, True, True, False]), [0.25, 0, 0.75, 0])
    assert sampling_probs(visits, rows=[False, True, False, False]) is None
    assert sampling_probs(np.zeros(3)) is None


def test_most_visited_breaks_ties_by_key():
    keys = np.array([[5, 1], [2, 9], [2, 3], [7, 7], [0, 0]], np.uint32)
    visits = np.array([3.0, 3.0, 8.0, 3.0, 0.0])
    np.testing.assert_array_equal(most_visited(keys, visits, 3), [[2, 3], [2, 9], [5, 1]])
    np.testing.assert_array_equal(most_visited(keys, visits, 10), [[2, 3], [2, 9], [5, 1], [7, 7]])  # unvisited out
    assert most_visited(keys, visits, 0).shape == (0, 2)
    got = most_visited(keys[::-1], visits[::-1], 2)  # same answer whatever the input order
    np.testing.assert_array_equal(got, [[2, 3], [2, 9]])
    assert got.dtype == np.uint32
    assert "3 keys" in one_line_error(lambda: most_visited(keys[:3], visits, 2))


def test_scripted_teachers_do_not_learn_and_round_trip(tmp_path):
    best = np.zeros((50, A), bool)
    best[:, C.FORWARD] = True
    keys = np.random.default_rng(0).integers(0, 2**32, (50, 2), dtype=np.uint64).astype(np.uint32)
    teacher = noisy_oracle(0.4, seed=3)
    assert teacher.update(make_feedback(np.ones((50, A)), np.ones((50, A))), keys) == {}
    k, p = teacher.rescore(keys)
    assert k.shape == (0, 2) and p.shape == (0, A)
    teacher.save(str(tmp_path / "t"))
    other = uniform(seed=9)
    other.load(str(tmp_path / "t"))
    assert other.state_dict() == teacher.state_dict()
    np.testing.assert_array_equal(other.score(keys, oracle=best)[1], teacher.score(keys, oracle=best)[1])
    assert str(tmp_path / "none") in one_line_error(lambda: ScriptedTeacher().load(str(tmp_path / "none")))


# -- HFTeacher (tiny models built from config) ---------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_teacher_hf import make_situations, models  # noqa: E402, F401  (module-scoped model fixture)

from bidijax.teacher.hf import HFTeacher  # noqa: E402

FAST = FinetuneConfig(lr=3e-3, steps=4, batch_size=16, kl_coef=0.1)


@pytest.fixture(scope="module")
def situations():
    return make_situations(12, seed=3)


def known_teacher(path, situations, **kwargs):
    """A teacher that has scored ``situations`` (so it knows their prompts); returns it and probs."""
    teacher = HFTeacher(path, batch_size=8, **kwargs)
    keys, missions, percepts = situations
    return teacher, teacher.score(keys, missions, percepts)[1]


def push_feedback(n, good=C.FORWARD, bad=C.LEFT, scale=1.0):
    """Advantage +scale for ``good`` and -scale for ``bad`` (an action or one per situation), 3 steps each."""
    adv, count = np.zeros((n, A)), np.zeros((n, A))
    rows = np.arange(n)
    count[rows, good] = count[rows, bad] = 3.0
    adv[rows, good], adv[rows, bad] = 3.0 * scale, -3.0 * scale
    return make_feedback(adv, count)


def least_and_most_likely(probs):
    """The actions with the lowest and the highest mean probability over situations."""
    mean = probs.mean(0)
    return int(mean.argmin()), int(mean.argmax())


def assert_pushed(before, after):
    """After ``push_feedback(good=least likely, bad=most likely)``: good rose, bad fell everywhere."""
    good, bad = least_and_most_likely(before)
    assert (after[:, good] > before[:, good]).all() and (after[:, bad] < before[:, bad]).all()


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_update_raises_good_and_lowers_bad_actions(models, situations, kind):
    teacher, before = known_teacher(models["paths"][kind], situations, finetune=FAST)
    assert not teacher.trained
    keys = situations[0]
    stats = teacher.update(push_feedback(len(keys), *least_and_most_likely(before)), keys)
    assert set(stats) == {"loss", "pg_loss", "kl", "num_situations", "steps", "examples_per_s"}
    assert stats["steps"] == FAST.steps and stats["num_situations"] == len(keys)
    assert np.isfinite([stats["loss"], stats["pg_loss"], stats["kl"]]).all() and stats["kl"] >= 0
    assert teacher.version == 1 and not teacher._cache and not teacher.model.training and teacher.trained
    out_keys, after = teacher.rescore(keys)
    np.testing.assert_array_equal(out_keys, keys)
    assert_pushed(before, after)
    # the frozen reference still gives the probabilities from before the update, and so do the
    # reference rows the update used (cached when the situations were scored in version 0)
    ref = torch.softmax(teacher._reference_logprobs([teacher.prompt_of(k) for k in keys]), -1).numpy()
    np.testing.assert_allclose(ref, before, atol=1e-6)
    cached = np.stack([teacher._ref_logp[HFTeacher.key64(k)] for k in keys])
    np.testing.assert_allclose(np.exp(cached), before, atol=1e-6)


def test_reference_runs_once_per_situation_first_scored_after_training(models, situations):
    """Situations scored in version 0 never need the reference; later ones need it once."""
    keys, missions, percepts = situations
    old, new = slice(0, 8), slice(8, None)
    teacher = HFTeacher(models["paths"]["causal"], batch_size=8, finetune=FAST)
    before = teacher.score(keys[old], missions[old], jax.tree.map(lambda x: x[old], percepts))[1]
    calls = []
    original = teacher._reference_logprobs
    teacher._reference_logprobs = lambda prompts: (calls.append(len(prompts)), original(prompts))[1]
    teacher.update(push_feedback(8, *least_and_most_likely(before)), keys[old])
    assert calls == [] and teacher.trained
    teacher.score(keys[new], missions[new], jax.tree.map(lambda x: x[new], percepts))  # version 1
    for _ in range(2):
        teacher.update(push_feedback(len(keys)), keys)
    assert calls and sum(calls) == len(keys) - 8  # each new situation once, however often drawn
    fresh = np.stack([teacher._ref_logp[HFTeacher.key64(k)] for k in keys[new]])
    np.testing.assert_allclose(fresh, original([teacher.prompt_of(k) for k in keys[new]]).numpy(), atol=1e-6)


def test_micro_batches_accumulate_the_same_step(models, situations):
    """A step over micro-batches of 3 equals one pass over the whole batch of 16."""
    keys = situations[0]
    out = []
    for micro in (16, 3):
        config = FinetuneConfig(lr=FAST.lr, steps=2, batch_size=16, micro_batch_size=micro)
        teacher, before = known_teacher(models["paths"]["seq2seq"], situations, finetune=config)
        stats = teacher.update(push_feedback(len(keys), *least_and_most_likely(before)), keys)
        out.append((stats["loss"], teacher.rescore(keys)[1]))
    assert np.isclose(out[0][0], out[1][0], rtol=1e-5)
    np.testing.assert_allclose(out[0][1], out[1][1], atol=1e-5)
    assert not np.allclose(out[0][1], before, atol=1e-4)  # the step did move the teacher


def test_repeated_draws_are_computed_once_with_their_weight(models, situations):
    """A step over the distinct drawn situations, weighted by their draws, equals the step written
    out over every draw (duplicates included)."""
    keys = situations[0]
    config = FinetuneConfig(lr=FAST.lr, steps=1, batch_size=40, kl_coef=0.5)
    path = models["paths"]["causal"]
    teacher, before = known_teacher(path, situations, finetune=config)
    draws = teacher._draw(np.full(len(keys), 1.0 / len(keys)), 40)
    assert len(np.unique(draws.numpy())) < 40  # 40 draws of 12 situations repeat some
    fb = push_feedback(len(keys), *least_and_most_likely(before))
    manual, _ = known_teacher(path, situations, finetune=config)
    teacher._draw = lambda probs, n: draws
    loss = teacher.update(fb, keys)["loss"]

    # the same step by hand: one row per draw
    manual._prepare_training()
    prompts = [manual.prompt_of(keys[i]) for i in draws.numpy()]
    logp = torch.log_softmax(manual.action_logprobs(prompts, grad=True), -1)
    w = torch.from_numpy(targets(fb)[draws.numpy()])
    ref = torch.log(torch.from_numpy(before[draws.numpy()]))
    probs = logp.exp()
    pg = -(w.clamp(min=0) * logp + (-w).clamp(min=0) * torch.log1p(-probs)).sum(-1).mean()
    expected = pg + config.kl_coef * (probs * (logp - ref)).sum(-1).mean()
    expected.backward()
    torch.nn.utils.clip_grad_norm_(list(manual.model.parameters()), config.max_grad_norm)
    manual.optimizer.step()
    assert np.isclose(loss, expected.item(), rtol=1e-5)
    manual.invalidate()
    np.testing.assert_allclose(teacher.rescore(keys)[1], manual.rescore(keys)[1], atol=1e-5)


def kl_div(p, q):
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def test_zero_advantages_change_nothing_and_kl_keeps_close(models, situations):
    keys = situations[0]
    path = models["paths"]["causal"]
    teacher, before = known_teacher(path, situations, finetune=FAST)
    stats = teacher.update(push_feedback(len(keys), scale=0.0), keys)  # visits, but no signal
    assert stats["steps"] == 0 and teacher.version == 0 and np.isnan(stats["loss"])
    np.testing.assert_array_equal(teacher.rescore(keys)[1], before)
    # the same push with a strong KL penalty stays much closer to the reference than without
    drift = {}
    for kl_coef in (0.0, 20.0):
        config = FinetuneConfig(lr=FAST.lr, steps=FAST.steps, batch_size=FAST.batch_size, kl_coef=kl_coef)
        t, _ = known_teacher(path, situations, finetune=config)
        for _ in range(2):
            t.update(push_feedback(len(keys)), keys)
        drift[kl_coef] = kl_div(t.rescore(keys)[1], before)
    assert 0 < drift[20.0] < 0.5 * drift[0.0]


def test_only_known_situations_sampled_in_proportion_to_visits(models, situations):
    keys = situations[0]
    config = FinetuneConfig(lr=1e-4, steps=1, batch_size=900)
    teacher, _ = known_teacher(models["paths"]["causal"], situations, finetune=config)
    unknown = np.array([[1, 2], [3, 4]], np.uint32)  # never scored: no prompt
    all_keys = np.concatenate([keys[:3], unknown])
    count = np.zeros((5, A))
    count[:, C.FORWARD] = [1.0, 2.0, 3.0, 50.0, 50.0]
    count[:, C.LEFT] = 1.0
    adv = np.where(np.arange(A) == C.FORWARD, 1.0, -1.0) * count
    drawn, trained = [], []
    original_draw, original_logprobs = teacher._draw, teacher.action_logprobs
    teacher._draw = lambda probs, n: (drawn.append(r := original_draw(probs, n)), r)[1]

    def spy(prompts, grad=False):
        if grad:
            trained.extend(prompts)
        return original_logprobs(prompts, grad)

    teacher.action_logprobs = spy
    stats = teacher.update(make_feedback(adv, count), all_keys)
    (draws,) = drawn
    assert stats["num_situations"] == 3 and len(draws) == 900
    freq = np.bincount(draws.numpy(), minlength=5) / 900
    np.testing.assert_allclose(freq, np.array([2, 3, 4, 0, 0]) / 9, atol=0.05)  # visits 2 : 3 : 4
    # each drawn situation went through the model once (weighted by its draws), never the unknown ones
    assert sorted(trained) == sorted(teacher.prompt_of(k) for k in keys[:3])
    fresh = HFTeacher(models["paths"]["causal"], finetune=config)  # knows nothing: no step
    assert fresh.update(make_feedback(adv, count), all_keys)["steps"] == 0 and fresh.version == 0
    msg = one_line_error(lambda: teacher.update(make_feedback(adv[:, :3], count[:, :3]), all_keys))
    assert f"expected [5, {A}]" in msg


def test_rescore_known_keys_in_one_batch(models, situations):
    keys = situations[0]
    teacher, probs = known_teacher(models["paths"]["causal"], situations)
    teacher.invalidate()
    unknown = np.array([[7, 7]], np.uint32)
    query = np.concatenate([keys[5:], unknown, keys[:2], keys[:1]])
    calls = []
    original = teacher._score_rows
    teacher._score_rows = lambda prompts: (calls.append(len(prompts)), original(prompts))[1]
    out_keys, out = teacher.rescore(query)
    assert calls == [len(keys) - 5 + 2]  # one batch, each known situation once
    np.testing.assert_array_equal(out_keys, np.concatenate([keys[5:], keys[:2], keys[:1]]))
    np.testing.assert_allclose(out, np.concatenate([probs[5:], probs[:2], probs[:1]]), atol=1e-6)
    assert out.dtype == np.float32
    _, again = teacher.rescore(query)  # now cached
    assert len(calls) == 1 and np.array_equal(again, out)
    empty_keys, empty = teacher.rescore(np.zeros((0, 2), np.uint32))
    assert empty_keys.shape == (0, 2) and empty.shape == (0, A)


def weights(teacher):
    return {k: v.detach().clone() for k, v in teacher.model.state_dict().items()}


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_save_load_round_trip_is_exact(models, situations, kind, tmp_path):
    keys, missions, percepts = situations
    path = models["paths"][kind]
    teacher, _ = known_teacher(path, situations, finetune=FAST, seed=4)
    feedback = push_feedback(len(keys))
    teacher.update(feedback, keys)
    teacher.rescore(keys[:6])  # half of the situations cached in the new version
    teacher.save(str(tmp_path / "state"))
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "model.safetensors", "optimizer.pt", "reference.safetensors", "state.npz", "teacher.json",
    ]  # fmt: skip

    other = HFTeacher(path, batch_size=8, temperature=3.0, seed=99)  # another config: load restores it
    other.load(str(tmp_path / "state"))
    assert (other.version, other.temperature, other.finetune) == (teacher.version, teacher.temperature, FAST)
    assert other.prompts == teacher.prompts and other._cache.keys() == teacher._cache.keys()
    assert_same_weights(other, teacher)
    np.testing.assert_array_equal(other.score(keys, missions, percepts)[1], teacher.score(keys, missions, percepts)[1])
    # the next update is identical: same batches (generator), optimizer moments, reference
    s1, s2 = teacher.update(feedback, keys), other.update(feedback, keys)
    assert [s1[k] for k in ("loss", "pg_loss", "kl")] == [s2[k] for k in ("loss", "pg_loss", "kl")]
    assert_same_weights(other, teacher)
    np.testing.assert_array_equal(other.rescore(keys)[1], teacher.rescore(keys)[1])


def test_untrained_round_trip_and_load_errors(models, situations, tmp_path):
    teacher, probs = known_teacher(models["paths"]["causal"], situations)
    teacher.save(str(tmp_path / "fresh"))
    assert not (tmp_path / "fresh" / "optimizer.pt").exists()
    trained, _ = known_teacher(models["paths"]["causal"], situations, finetune=FAST)
    trained.update(push_feedback(len(situations[0])), situations[0])
    trained.load(str(tmp_path / "fresh"))  # back to the untrained state
    assert not trained.trained and trained.reference is None and trained.version == 0
    np.testing.assert_array_equal(trained.rescore(situations[0])[1], probs)
    assert_same_weights(trained, teacher)
    missing = str(tmp_path / "missing")
    assert missing in one_line_error(lambda: teacher.load(missing))
    t5 = HFTeacher(models["paths"]["seq2seq"])
    assert "model_type" in one_line_error(lambda: t5.load(str(tmp_path / "fresh")))


def test_lora_trains_adapters_only_and_round_trips(models, situations, tmp_path):
    pytest.importorskip("peft")
    keys = situations[0]
    config = FinetuneConfig(lr=3e-3, steps=4, batch_size=16, lora_rank=4)
    for kind in ("causal", "seq2seq"):
        teacher, before = known_teacher(models["paths"][kind], situations, finetune=config)
        base = {k: v.clone() for k, v in teacher.model.state_dict().items() if "lora_" not in k}
        teacher.update(push_feedback(len(keys), *least_and_most_likely(before)), keys)
        after = teacher.rescore(keys)[1]
        assert_pushed(before, after)
        state = teacher.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in base.items())  # base weights untouched
        assert teacher.reference is None  # the reference is the base model (adapters off)
        ref = torch.softmax(teacher._reference_logprobs([teacher.prompt_of(k) for k in keys]), -1).numpy()
        np.testing.assert_allclose(ref, before, atol=1e-6)
    teacher.save(str(tmp_path / "lora"))
    other = HFTeacher(models["paths"]["seq2seq"], batch_size=8, finetune=config)
    other.load(str(tmp_path / "lora"))
    np.testing.assert_array_equal(other.rescore(keys)[1], after)
    s1, s2 = teacher.update(push_feedback(len(keys)), keys), other.update(push_feedback(len(keys)), keys)
    assert s1["loss"] == s2["loss"]
    assert "lora_rank" in one_line_error(lambda: HFTeacher(models["paths"]["seq2seq"]).load(str(tmp_path / "lora")))
