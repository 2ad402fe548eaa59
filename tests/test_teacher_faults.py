"""Teacher faults in the real loop: NaN/inf rows are rejected and counted, a raising teacher stops
the run with one line (checkpoint intact, resumable) or is skipped, as ``teacher_faults`` says."""

import math

import numpy as np
import pytest

from bidijax import rundir, teaching
from bidijax.loop import train
from bidijax.teacher import ScriptedTeacher
from test_loop import tiny


class Faulty(ScriptedTeacher):
    """A noisy oracle whose every third row is NaN / inf (``bad_rows``) or whose ``raise_at``-th
    scoring call raises."""

    def __init__(self, seed, bad_rows=False, raise_at=None):
        super().__init__("noisy_oracle", eps=0.2, seed=seed)
        self.bad_rows, self.raise_at, self.calls = bad_rows, raise_at, 0

    def score(self, keys, missions=None, percepts=None, oracle=None):
        self.calls += 1
        if self.calls == self.raise_at:
            raise RuntimeError("CUDA out of memory\nsecond line of a long message")
        keys, probs = super().score(keys, missions, percepts, oracle)
        if self.bad_rows:
            probs = probs.copy()
            probs[::3, 0] = np.nan
            probs[1::3, 1] = np.inf
        return keys, probs


def test_bad_rows_are_rejected_and_counted(tmp_path):
    config = tiny("one_way", "noisy_oracle")
    state, rows = train(config, str(tmp_path / "run"), teachers=[Faulty(s, bad_rows=True) for s in config.seeds])
    assert sum(r["teacher_rejected"] for r in rows) > 0 and all(r["teacher_errors"] == 0 for r in rows)
    for t in state.tables:
        assert np.isfinite(np.asarray(t.probs)).all()
    assert all(math.isfinite(r["policy_loss"]) and math.isfinite(r["distill_loss"]) for r in rows)
    # every situation scored either became a row or was rejected (then stayed a miss)
    for seed in config.seeds:
        mine = [r for r in rows if r["seed"] == seed]
        sent = sum(r["scored_first"] + r["misses"] for r in mine)
        assert mine[-1]["table_rows"] == sent - sum(r["teacher_rejected"] for r in mine) > 0


def test_raising_teacher_stops_with_one_line_and_resumes(tmp_path):
    config = tiny("one_way", "noisy_oracle")
    d = str(tmp_path / "run")
    with pytest.raises(teaching.TeacherFault) as err:
        train(config, d, teachers=[Faulty(s, raise_at=2) for s in config.seeds])
    message = str(err.value)
    assert "\n" not in message and "CUDA out of memory" in message and "--resume" in message
    assert rundir.latest_checkpoint(d).endswith("it-000001")  # iteration 1 kept; nothing lost
    assert [int(r["iteration"]) for r in rundir.read_metrics(d)] == [1, 1]
    _, rows = train(config, d, resume=True)  # healthy teachers: the run finishes
    assert [int(r["iteration"]) for r in rows] == [1, 1, 2, 2]


def test_raising_teacher_is_skipped_when_configured(tmp_path):
    config = tiny("one_way", "noisy_oracle", teacher_faults="skip").replace(iterations=3)
    teachers = [Faulty(s, raise_at=2 if s == 0 else None) for s in config.seeds]  # seed 0's 2nd call
    state, rows = train(config, str(tmp_path / "run"), teachers=teachers)
    errors = {int(r["iteration"]): r["teacher_errors"] for r in rows}
    assert errors == {1: 0, 2: 1, 3: 0} and state.iteration == 3
    # the failed phase (score_first at iteration 2) left its situations misses: the student
    # learned without their hints and the turn after the update scored them
    it2 = [r for r in rows if r["iteration"] == 2]
    assert all(r["scored_first"] == 0 and r["misses"] > 0 for r in it2)
    assert rows[-1]["table_rows"] > rows[0]["table_rows"]


def test_teacher_faults_choice_is_checked():
    from bidijax import config as cfg

    with pytest.raises(ValueError, match="unknown teacher_faults 'ignore'; allowed: stop, skip"):
        cfg.resolve(cfg.TrainConfig(teacher_faults="ignore"))
