"""experiments/pretrain_teacher.py --label-noise: the label corruption (``corrupt``)."""

from __future__ import annotations

import importlib.util
import math
import os

import numpy as np
import pytest

from bidijax.envs import constants as C

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "experiments", "pretrain_teacher.py")


@pytest.fixture(scope="module")
def pt():
    spec = importlib.util.spec_from_file_location("pretrain_teacher", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _labels(n=10_000, seed=0):
    """Heuristic-like labels: left, right, forward."""
    return np.random.default_rng(seed).choice([C.LEFT, C.RIGHT, C.FORWARD], size=n, p=[0.2, 0.2, 0.6])


def test_choices_are_lamorel_actions(pt):
    assert sorted(pt.LAMOREL_ACTIONS) == [C.LEFT, C.RIGHT, C.FORWARD, C.PICKUP, C.DROP, C.TOGGLE]
    assert C.DONE not in pt.LAMOREL_ACTIONS


def test_zero_noise_is_identity(pt):
    labels = _labels()
    out = pt.corrupt(labels, 0.0, np.random.default_rng(3))
    np.testing.assert_array_equal(out, labels)
    assert out.dtype == np.int64


@pytest.mark.parametrize("eps", [0.1, 0.3, 0.6, 1.0])
def test_changed_fraction_and_values(pt, eps):
    labels = _labels()
    out = pt.corrupt(labels, eps, np.random.default_rng(1), pt.LAMOREL_ACTIONS)
    changed = out != labels
    se = math.sqrt(eps * (1 - eps) / len(labels))
    assert abs(changed.mean() - eps) <= 4 * se + 1e-12
    assert np.isin(out, pt.LAMOREL_ACTIONS).all()
    # a changed label is a different action, spread over the 5 others
    for a in (C.LEFT, C.RIGHT, C.FORWARD):
        new = out[changed & (labels == a)]
        assert (new != a).all()
        assert set(new.tolist()) == set(pt.LAMOREL_ACTIONS) - {a}


def test_deterministic_and_nested(pt):
    labels = _labels()
    a = pt.corrupt(labels, 0.3, np.random.default_rng(7))
    b = pt.corrupt(labels, 0.3, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert (a != pt.corrupt(labels, 0.3, np.random.default_rng(8))).any()
    # the same draws at every eps: what 0.3 corrupts, 0.6 corrupts alike
    c = pt.corrupt(labels, 0.6, np.random.default_rng(7))
    hit = a != labels
    np.testing.assert_array_equal(c[hit], a[hit])


def test_label_outside_choices_gets_any_choice(pt):
    labels = np.full(2000, C.DONE)
    out = pt.corrupt(labels, 1.0, np.random.default_rng(0))
    assert set(out.tolist()) == set(pt.LAMOREL_ACTIONS)


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan"), "x"])
def test_bad_noise_is_one_line_error(pt, eps):
    with pytest.raises(ValueError) as info:
        pt.corrupt(_labels(10), eps, np.random.default_rng(0))
    msg = str(info.value)
    assert "\n" not in msg and repr(eps) in msg and "[0, 1]" in msg


def test_cli_rejects_bad_noise(pt, capsys):
    with pytest.raises(SystemExit) as info:
        pt.main(["--label-noise", "1.5", "--out", os.devnull])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "label noise must be a number in [0, 1], got '1.5'" in err
