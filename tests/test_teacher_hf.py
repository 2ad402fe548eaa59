"""HFTeacher: exact action log-probs (causal and seq2seq, padded batches), temperature, length
normalisation, the situation cache, the shipped default model, one-line errors, light import."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from bidijax.envs import constants as C  # noqa: E402
from bidijax.envs.perception import MAX_OBJECTS, Percept  # noqa: E402
from bidijax.teacher import HFTeacher, default_model_path  # noqa: E402
from bidijax.teacher.tokenizer import build_tokenizer, save_tokenizer  # noqa: E402

PROMPTS = [
    "Goal of the agent: go to the red ball\nObservation: You see a wall 2 steps forward\nAction:",
    "Goal of the agent: go to a blue key\nObservation: You see a wall 1 step left, You see a blue key 1 step "
    "right and 3 steps forward, You see a grey box 2 steps left and 1 step forward\nAction:",
    "Goal of the agent: go to the purple box\nObservation: \nAction:",
    "Goal of the agent: go to the green ball\nObservation: You see an open red door 1 step left and 4 steps "
    "forward, You see a wall 3 steps right\nAction:",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random GPT-2 and T5 models with the BabyAI-Text word-level tokenizer, saved to disk."""
    root = tmp_path_factory.mktemp("teachers")
    tok = build_tokenizer()
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    causal = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=256, vocab_size=len(tok), **ids)
    ).eval()
    t5 = transformers.T5ForConditionalGeneration(
        transformers.T5Config(
            d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab_size=len(tok),
            decoder_start_token_id=tok.pad_token_id, **ids,
        )
    ).eval()
    paths = {}
    for name, model in (("causal", causal), ("seq2seq", t5)):
        paths[name] = str(root / name)
        model.save_pretrained(paths[name])
        save_tokenizer(tok, paths[name])
    return dict(paths=paths, tok=tok, causal=causal, seq2seq=t5)


@pytest.fixture(scope="module")
def teachers(models):
    return {name: HFTeacher(path, batch_size=3) for name, path in models["paths"].items()}


def manual_logprob(kind, model, tok, prompt, action):
    """log p(action | prompt) for one unpadded prompt, straight from the raw model."""
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        if kind == "causal":
            a = tok(" " + action, add_special_tokens=False)["input_ids"]
            logits = model(input_ids=torch.tensor([p + a])).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            return sum(float(logp[len(p) + j - 1, t]) for j, t in enumerate(a))
        a = tok(action, add_special_tokens=False)["input_ids"]
        dec = [model.config.decoder_start_token_id] + a[:-1]
        logits = model(input_ids=torch.tensor([p]), decoder_input_ids=torch.tensor([dec])).logits[0].double()
        logp = torch.log_softmax(logits, -1)
        return sum(float(logp[j, t]) for j, t in enumerate(a))


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_logprobs_match_unpadded_manual_computation(models, teachers, kind):
    teacher = teachers[kind]
    assert teacher.model_type == kind
    lengths = [len(models["tok"](p)["input_ids"]) for p in PROMPTS]
    assert len(set(lengths)) == len(PROMPTS)  # different lengths: padding is exercised
    got = teacher.action_logprobs(PROMPTS).numpy()  # batch_size=3: two chunks, both padded
    want = np.array(
        [[manual_logprob(kind, models[kind], models["tok"], p, a) for a in C.ACTION_STRINGS] for p in PROMPTS]
    )
    assert got.shape == (len(PROMPTS), C.NUM_ACTIONS)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    # one prompt at a time gives the same numbers as the padded batch
    alone = np.concatenate([teacher.action_logprobs([p]).numpy() for p in PROMPTS])
    np.testing.assert_allclose(alone, got, atol=2e-5)


def test_grad_keeps_graph(teachers):
    logp = teachers["causal"].action_logprobs(PROMPTS[:2], grad=True)
    assert logp.requires_grad
    logp.sum().backward()
    grads = [p.grad for p in teachers["causal"].model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    teachers["causal"].model.zero_grad(set_to_none=True)
    assert not teachers["causal"].action_logprobs(PROMPTS[:2]).requires_grad


def test_temperature_and_length_norm(models):
    path = models["paths"]["causal"]
    base = HFTeacher(path)
    logp = base.action_logprobs(PROMPTS).numpy().astype(np.float64)
    for temp in (0.5, 2.0):
        probs = HFTeacher(path, temperature=temp).score_prompts(PROMPTS)
        z = logp / temp
        want = np.exp(z - z.max(1, keepdims=True))
        want /= want.sum(1, keepdims=True)
        np.testing.assert_allclose(probs, want, atol=1e-5)
        assert probs.dtype == np.float32
    flat = HFTeacher(path, temperature=1e6).score_prompts(PROMPTS)
    np.testing.assert_allclose(flat, 1.0 / C.NUM_ACTIONS, atol=1e-4)
    normed = HFTeacher(path, length_norm=True).action_logprobs(PROMPTS).numpy()
    counts = np.array([len(models["tok"](" " + a, add_special_tokens=False)["input_ids"]) for a in C.ACTION_STRINGS])
    assert set(counts) == {1, 2}  # "drop" vs "turn left": different token lengths
    np.testing.assert_allclose(normed, logp / counts, atol=1e-5)


def make_situations(n, seed=0):
    """Random but valid percept arrays and missions (the teacher only renders them)."""
    rng = np.random.default_rng(seed)
    objects = np.zeros((n, MAX_OBJECTS, 5), np.int32)
    for i in range(n):
        for k in range(rng.integers(0, 4)):
            objects[i, k] = (rng.choice([C.KEY, C.BALL, C.BOX]), rng.integers(6), 0, rng.integers(1, 6), rng.integers(-3, 4))
    percepts = Percept(
        walls=rng.integers(0, 4, (n, 3)).astype(np.int32),
        objects=objects,
        carrying=np.zeros((n, 2), np.int32),
        overflow=np.zeros(n, bool),
    )
    missions = np.stack(
        [np.full(n, C.TASK_GOTO), rng.integers(0, 6, n), rng.choice([C.KEY, C.BALL, C.BOX], n), np.zeros(n, int)], 1
    ).astype(np.int32)
    keys = rng.integers(0, 2**32, (n, 2), dtype=np.uint64).astype(np.uint32)
    return keys, missions, percepts


def test_score_caches_by_key_and_invalidate(models):
    from bidijax.envs.text import prompt

    teacher = HFTeacher(models["paths"]["causal"], batch_size=4)
    calls = []
    forward = teacher.model.forward
    teacher.model.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]
    keys, missions, percepts = make_situations(6)
    keys = np.concatenate([keys, keys[:2]])  # duplicates within one call
    missions = np.concatenate([missions, missions[:2]])
    percepts = Percept(*(np.concatenate([x, x[:2]]) for x in (percepts.walls, percepts.objects, percepts.carrying, percepts.overflow)))
    out_keys, probs = teacher.score(keys, missions, percepts)
    first_calls = len(calls)
    assert first_calls > 0 and teacher.version == 0
    assert out_keys.dtype == np.uint32 and out_keys.shape == (8, 2) and (out_keys == keys).all()
    assert probs.dtype == np.float32 and probs.shape == (8, C.NUM_ACTIONS)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs[6:], probs[:2])
    texts = prompt(missions, percepts)
    np.testing.assert_allclose(probs, teacher.score_prompts(texts), atol=1e-6)
    k64 = (int(keys[3, 0]) << 32) | int(keys[3, 1])
    assert teacher.prompt_of(keys[3]) == teacher.prompt_of(k64) == teacher.prompts[k64] == texts[3]

    calls.clear()
    _, again = teacher.score(keys, missions, percepts, oracle=np.zeros((8, C.NUM_ACTIONS), bool))  # oracle: ignored
    assert calls == [] and np.array_equal(again, probs)

    teacher.invalidate()
    assert teacher.version == 1
    _, rescored = teacher.score(keys[:3], missions[:3], percepts=Percept(*(x[:3] for x in (percepts.walls, percepts.objects, percepts.carrying, percepts.overflow))))
    assert len(calls) > 0
    np.testing.assert_allclose(rescored, probs[:3], atol=1e-6)

    empty_keys, empty_probs = teacher.score(np.zeros((0, 2), np.uint32), np.zeros((0, 4), np.int32), percepts)
    assert empty_keys.shape == (0, 2) and empty_probs.shape == (0, C.NUM_ACTIONS)


def test_default_model_loads_and_is_deterministic():
    teacher = HFTeacher("default")
    assert os.path.samefile(teacher.path, default_model_path()) and teacher.model_type == "causal"
    keys, missions, percepts = make_situations(5, seed=1)
    _, probs = teacher.score(keys, missions, percepts)
    assert probs.shape == (5, C.NUM_ACTIONS) and np.isfinite(probs).all() and (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    teacher.invalidate()
    _, again = teacher.score(keys, missions, percepts)
    np.testing.assert_array_equal(again, probs)
    np.testing.assert_array_equal(teacher.score_prompts(PROMPTS), HFTeacher("default").score_prompts(PROMPTS))


def one_line_error(fn) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_one_line_errors(models, tmp_path):
    missing = str(tmp_path / "no_such_model")
    assert missing in one_line_error(lambda: HFTeacher(missing))
    bare = tmp_path / "bare"
    shutil.copytree(models["paths"]["causal"], bare)
    for name in os.listdir(bare):
        if name.startswith("tokenizer") or name == "special_tokens_map.json":
            os.remove(bare / name)
    msg = one_line_error(lambda: HFTeacher(str(bare)))
    assert str(bare) in msg and "tokenizer" in msg
    msg = one_line_error(lambda: HFTeacher(models["paths"]["causal"], action_strings=("turn left", "fly away")))
    assert "fly away" in msg
    msg = one_line_error(lambda: HFTeacher(models["paths"]["causal"], model_type="encoder"))
    assert "encoder" in msg and "causal" in msg
    assert "temperature" in one_line_error(lambda: HFTeacher(models["paths"]["causal"], temperature=0))


def test_import_bidijax_does_not_import_torch():
    code = "import sys, bidijax, bidijax.teacher; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_score_eos_adds_the_end_of_sequence_factor(models, kind):
    """``score_eos`` (Lamorel's scoring) = the default score + log p(EOS | prompt, action)."""
    path, model, tok = models["paths"][kind], models[kind], models["tok"]
    base = HFTeacher(path).action_logprobs(PROMPTS[:2]).numpy()
    with_eos = HFTeacher(path, score_eos=True).action_logprobs(PROMPTS[:2]).numpy()
    for i, prompt in enumerate(PROMPTS[:2]):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        for j, action in enumerate(C.ACTION_STRINGS):
            with torch.no_grad():
                if kind == "causal":
                    a = tok(" " + action, add_special_tokens=False)["input_ids"]
                    logits = model(input_ids=torch.tensor([p + a])).logits[0, -1].double()
                else:
                    a = tok(action, add_special_tokens=False)["input_ids"]
                    dec = [model.config.decoder_start_token_id] + a
                    logits = model(input_ids=torch.tensor([p]), decoder_input_ids=torch.tensor([dec])).logits[0, -1].double()
            eos = float(torch.log_softmax(logits, -1)[tok.eos_token_id])
            assert with_eos[i, j] - base[i, j] == pytest.approx(eos, abs=5e-5)
