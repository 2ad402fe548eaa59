"""The seam's interfaces (``bidijax.teacher.protocol``): every teacher implements them and answers
with named messages; plain tuples from a custom teacher still work."""

import numpy as np
import pytest

from bidijax.envs import constants as C
from bidijax.teacher import noisy_oracle, oracle, uniform
from bidijax.teacher.protocol import HintRows, ScoreRequest, Teacher, Teachers
from bidijax.teaching import PerSeed
from test_teacher_hf import make_situations

A = C.NUM_ACTIONS


def _request(n=6, seed=0):
    keys, missions, percepts = make_situations(n, seed)
    best = np.zeros((n, A), bool)
    best[np.arange(n), np.arange(n) % 3] = True
    return ScoreRequest(keys, missions, percepts, best)


def test_scripted_teachers_are_teachers_and_answer_hint_rows():
    req = _request()
    for t in (oracle(0), noisy_oracle(0.5, 1), uniform(2)):
        assert isinstance(t, Teacher)
        rows = t.score(*req)
        assert isinstance(rows, HintRows) and rows.keys.shape == (6, 2) and rows.probs.shape == (6, A)
        np.testing.assert_allclose(rows.probs.sum(1), 1.0, atol=1e-6)
        assert isinstance(t.rescore(req.keys), HintRows)
    assert not isinstance(object(), Teacher)  # the protocol is not vacuous


def test_per_seed_teachers_take_requests_or_plain_tuples():
    req = _request()
    group = PerSeed([oracle(0), uniform(1)])
    assert isinstance(group, Teachers) and not isinstance(oracle(0), Teachers)
    named = group.score([req, None])
    assert isinstance(named[0], HintRows) and named[1] is None
    np.testing.assert_array_equal(named[0].probs.argmax(1), np.arange(6) % 3)  # the oracle's actions
    plain = group.score([tuple(req), tuple(req)])
    np.testing.assert_array_equal(plain[0].probs, named[0].probs)
    np.testing.assert_allclose(plain[1].probs, 1.0 / A)


def test_lm_teachers_implement_the_protocols():
    pytest.importorskip("torch")
    from bidijax.teacher import GPT2Teachers, HFTeacher

    req = _request(4, seed=1)
    lm = HFTeacher("default")
    assert isinstance(lm, Teacher)
    rows = lm.score(*req)
    assert isinstance(rows, HintRows) and rows.probs.shape == (4, A)
    again = lm.rescore(req.keys[:2])
    assert isinstance(again, HintRows)
    np.testing.assert_allclose(again.probs, rows.probs[:2], atol=1e-6)
    group = GPT2Teachers("default", seeds=[0, 1], chunk=8)
    assert isinstance(group, Teachers)
    out = group.score([req, None])
    assert isinstance(out[0], HintRows) and out[1] is None
    np.testing.assert_allclose(out[0].probs, rows.probs, atol=1e-4)  # the JAX twin of the torch scorer
