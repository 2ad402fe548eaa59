"""The JAX GPT-2 teachers stacked over seeds against the torch ``HFTeacher`` (the reference):
scores, a fine-tuning update, seed independence, checkpoints."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bidijax.envs import constants as C  # noqa: E402
from bidijax.feedback import Feedback  # noqa: E402
from bidijax.teacher import HFTeacher  # noqa: E402
from bidijax.teacher.batched import GPT2Teachers  # noqa: E402
from bidijax.teacher.finetune import FinetuneConfig  # noqa: E402
from test_teacher_hf import make_situations, models  # noqa: E402, F401  (module-scoped model fixture)

A = C.NUM_ACTIONS
FT = FinetuneConfig(steps=2, batch_size=16, micro_batch_size=8)


def feedback_for(n, seed=0):
    rng = np.random.default_rng(seed)
    count = rng.integers(0, 3, (n, A)).astype(np.float32)
    adv = rng.normal(scale=0.3, size=(n, A)).astype(np.float32) * count
    z = np.zeros_like(count)
    return Feedback(td_sum=z, adv_sum=adv, count=count, visits=count.sum(1))


@pytest.fixture(scope="module")
def situations():
    return make_situations(40, seed=3)


@pytest.mark.parametrize("which", ["default", "causal"])
def test_scores_match_the_torch_teacher(models, situations, which):
    path = "default" if which == "default" else models["paths"]["causal"]
    keys, missions, percepts = situations
    want = HFTeacher(path).score(keys, missions, percepts)[1]
    group = GPT2Teachers(path, seeds=[0, 1], chunk=16)
    got = group.score([(keys, missions, percepts), (keys[:5], missions[:5], _first(percepts, 5))])
    np.testing.assert_allclose(got[0][1], want, atol=1e-4)
    np.testing.assert_allclose(got[1][1], want[:5], atol=1e-4)


def _first(tree, n):
    import jax

    return jax.tree.map(lambda x: x[:n], tree)


@pytest.mark.parametrize("objective", ["unlikelihood", "reweight"])
def test_update_matches_the_torch_teacher_and_seeds_are_independent(situations, objective):
    keys, missions, percepts = situations
    fb = feedback_for(len(keys))
    FT = FinetuneConfig(steps=2, batch_size=16, micro_batch_size=8, objective=objective)
    torch_teacher = HFTeacher("default", seed=1, finetune=FT)
    torch_teacher.score(keys, missions, percepts)
    torch_stats = torch_teacher.update(fb, keys)
    want = torch_teacher.rescore(keys)[1]

    pair = GPT2Teachers("default", seeds=[0, 1], finetune=FT, chunk=16)
    pair.score([(keys, missions, percepts)] * 2)
    other = feedback_for(len(keys), seed=9)  # seed 0 learns from other feedback
    stats = pair.update([(other, keys), (fb, keys)])
    got = pair.rescore([keys, keys])
    assert stats[1]["steps"] == torch_stats["steps"] == 2 and pair.versions == [1, 1]
    assert stats[1]["loss"] == pytest.approx(torch_stats["loss"], rel=1e-3, abs=1e-5)
    np.testing.assert_allclose(got[1][1], want, atol=1e-4)  # same draws, same objective as torch

    alone = GPT2Teachers("default", seeds=[1], finetune=FT, chunk=16)
    alone.score([(keys, missions, percepts)])
    alone.update([(fb, keys)])
    np.testing.assert_allclose(alone.rescore([keys])[0][1], got[1][1], rtol=1e-5, atol=1e-6)  # rounding only
    assert not np.allclose(got[0][1], got[1][1], atol=1e-3)  # the seeds' teachers differ


def test_seed_without_signal_is_left_exactly_as_it_was(situations):
    keys, missions, percepts = situations
    pair = GPT2Teachers("default", seeds=[0, 1], finetune=FT, chunk=16)
    pair.score([(keys, missions, percepts)] * 2)
    before = pair.rescore([keys, keys])
    zero = feedback_for(len(keys))
    zero = zero.replace(adv_sum=np.zeros_like(zero.adv_sum))
    stats = pair.update([(feedback_for(len(keys)), keys), (zero, keys)])
    assert stats[1]["steps"] == 0 and pair.versions == [1, 0]
    np.testing.assert_array_equal(pair.rescore([keys, keys])[1][1], before[1][1])


def test_save_load_round_trip_is_exact(situations, tmp_path):
    keys, missions, percepts = situations
    fb = feedback_for(len(keys))
    a = GPT2Teachers("default", seeds=[4], finetune=FT, chunk=16)
    a.score([(keys, missions, percepts)])
    a.update([(fb, keys)])
    a.save(0, str(tmp_path / "t"))
    b = GPT2Teachers("default", seeds=[4], finetune=FT, chunk=16)
    b.load(0, str(tmp_path / "t"))
    assert b.versions == a.versions and b.prompts == a.prompts
    for x, y in zip(a.update([(fb, keys)]), b.update([(fb, keys)])):
        assert x["loss"] == y["loss"]
    np.testing.assert_array_equal(a.rescore([keys])[0][1], b.rescore([keys])[0][1])
    # the weights are a Hugging Face checkpoint: the torch teacher reads them
    t = HFTeacher("default")
    from safetensors.torch import load_model

    load_model(t.model, str(tmp_path / "t" / "model.safetensors"))
    assert not np.allclose(t.score(keys, missions, percepts)[1], HFTeacher("default").score(keys, missions, percepts)[1])
    with pytest.raises(ValueError, match="cannot load the teacher state"):
        b.load(0, str(tmp_path / "nothing"))


def test_per_seed_settings_equal_each_setting_alone(situations):
    """A sweep's lanes: temperature, lr and kl_coef per seed; each lane equals that setting run alone."""
    keys, missions, percepts = situations
    fb = feedback_for(len(keys))
    temps = [1.0, 2.0, 1.0]
    tunes = [FT, FinetuneConfig(steps=2, batch_size=16, micro_batch_size=8, lr=3e-3), FinetuneConfig(steps=2, batch_size=16, micro_batch_size=8, kl_coef=2.0)]
    lanes = GPT2Teachers("default", seeds=[1, 1, 1], temperature=temps, finetune=tunes, chunk=16)
    lanes.score([(keys, missions, percepts)] * 3)
    lanes.update([(fb, keys)] * 3)
    got = lanes.rescore([keys] * 3)
    for i, (temp, tune) in enumerate(zip(temps, tunes)):
        alone = GPT2Teachers("default", seeds=[1], temperature=temp, finetune=tune, chunk=16)
        alone.score([(keys, missions, percepts)])
        alone.update([(fb, keys)])
        # equal up to float rounding (the batch shapes differ): ~1e-6 after two AdamW steps
        np.testing.assert_allclose(got[i][1], alone.rescore([keys])[0][1], rtol=1e-5, atol=1e-6)
    for i in (1, 2):
        assert not np.allclose(got[i][1], got[0][1], atol=1e-3)  # each setting changes the teacher
    with pytest.raises(ValueError, match="differ only in lr and kl_coef"):
        GPT2Teachers("default", seeds=[0, 1], finetune=[FT, FinetuneConfig(steps=3)])
    with pytest.raises(ValueError, match="2 values for 3 seeds"):
        GPT2Teachers("default", seeds=[0, 1, 2], temperature=[1.0, 2.0])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_make_teachers_gives_each_lane_its_cell_settings(backend):
    from bidijax import config as cfg
    from bidijax.teaching import make_teachers

    cells = {"teacher.temperature": [1.0, 2.0], "teacher.finetune.lr": [1e-4, 1e-3], "teacher.finetune.kl_coef": [0.1, 0.0]}
    c = cfg.resolve(cfg.TrainConfig(num_seeds=2, cells=cells, teacher=cfg.TeacherConfig(backend=backend)))
    teachers = make_teachers(c)
    if backend == "jax":
        assert teachers.temperatures.tolist() == [1.0, 1.0, 2.0, 2.0]
        assert [f.lr for f in teachers.lane_finetune] == [1e-4, 1e-4, 1e-3, 1e-3]
        assert np.asarray(teachers._lanes[1]).tolist() == pytest.approx([0.1, 0.1, 0.0, 0.0])
    else:
        members = teachers.members
        assert [t.temperature for t in members] == [1.0, 1.0, 2.0, 2.0]
        assert [(t.finetune.lr, t.finetune.kl_coef) for t in members] == [(1e-4, 0.1)] * 2 + [(1e-3, 0.0)] * 2
