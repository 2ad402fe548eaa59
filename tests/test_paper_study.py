"""experiments/paper_study.py: the study's arms run as one ``bidijax sweep``, resumed and reported."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys

import pytest

from bidijax import rundir

_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "experiments")


@pytest.fixture(scope="module")
def study():
    sys.path.insert(0, _DIR)  # paper_study imports pretrain_teacher beside it
    spec = importlib.util.spec_from_file_location("paper_study", os.path.join(_DIR, "paper_study.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(_DIR)


ARGS = ["--iterations", "2", "--seeds", "2", "--arms", "ppo,one_way", "--eval-every", "1", "--eval-episodes", "2"]


def test_the_study_is_a_sweep_that_resumes_and_refuses_a_changed_study(study, tmp_path, capsys):
    out = str(tmp_path / "study")
    assert study.main(ARGS + ["--out", out]) == 0
    with open(os.path.join(out, "sweep", "sweep.json")) as f:
        sweep = json.load(f)
    assert [c["arm"] for c in sweep["cells"]] == ["ppo", "one_way"] and sweep["baseline"] == "arm=one_way"
    dirs = study.arm_dirs(out)
    assert set(dirs) == {"ppo", "one_way"} and all(rundir.finished(d, 2, 2) for d in dirs.values())
    with open(os.path.join(out, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted({(r["arm"], r["seed"], r["iteration"]) for r in rows}) == sorted(
        (a, s, i) for a in ("ppo", "one_way") for s in ("0", "1") for i in ("1", "2")
    )
    for metric in ("eval_success", "eval_return"):
        with open(os.path.join(out, metric, "summary.csv"), newline="") as f:
            summary = list(csv.DictReader(f))
        assert [r["cell"].split("/")[0] for r in summary] == ["ppo", "one_way"] and {r["seeds"] for r in summary} == {"2"}
        assert summary[0]["baseline"] == summary[1]["cell"] and 0.0 <= float(summary[0]["poi"]) <= 1.0
    with open(os.path.join(out, "wall_time.csv"), newline="") as f:
        assert [r["step"] for r in csv.DictReader(f)] == ["ppo", "one_way"]
    stamps = {a: os.path.getmtime(os.path.join(d, rundir.METRICS)) for a, d in dirs.items()}

    capsys.readouterr()
    assert study.main(ARGS + ["--out", out]) == 0  # finished: nothing runs again
    assert {a: os.path.getmtime(os.path.join(d, rundir.METRICS)) for a, d in dirs.items()} == stamps
    with open(os.path.join(out, "wall_time.csv"), newline="") as f:
        assert len(list(csv.DictReader(f))) == 2

    capsys.readouterr()
    with open(os.path.join(out, "study.yaml")) as f:
        spec = f.read()
    assert study.main(["--iterations", "3"] + ARGS[2:] + ["--out", out]) == 2  # another study: refused
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "iterations" in err[0] and "Traceback" not in err[0]
    with open(os.path.join(out, "study.yaml")) as f:
        assert f.read() == spec  # the study's spec stays that of its runs
    assert all(rundir.finished(d, 2, 2) for d in study.arm_dirs(out).values())


def test_arm_wall_time_sums_the_sittings_of_a_resumed_arm(study):
    def rows(walls):  # two seeds; wall_s restarts when a process resumes the arm
        return [{"iteration": i, "seed": s, "wall_s": w} for s in (1, 0) for i, w in reversed(list(enumerate(walls, 1)))]

    assert study.arm_wall_seconds(rows([5.0, 9.0, 12.0])) == 12.0
    assert study.arm_wall_seconds(rows([5.0, 9.0, 2.0, 6.0, 1.0])) == 9.0 + 6.0 + 1.0


def test_update_every_reaches_the_learning_teachers_and_bad_values_are_refused(study, tmp_path, capsys):
    from bidijax import sweep

    def programs(extra):
        args = study.parser().parse_args(["--arms", "ppo,one_way,bidirectional,teacher_only", *extra])
        planned = sweep.plan(study.study_spec(args, args.arms.split(",")))
        return {p.config.arm: p.config.teacher.finetune.update_every for p in planned.programs}

    assert programs(["--update-every", "4"]) == {"ppo": 4, "one_way": 4, "bidirectional": 4, "teacher_only": 4}
    assert programs([]) == {"ppo": 1, "one_way": 1, "bidirectional": 1, "teacher_only": 1}
    assert "finetune" not in study.study_spec(study.parser().parse_args([]), ["bidirectional"]).get("base", {}).get("teacher", {})
    for bad in ("0", "-2"):
        with pytest.raises(SystemExit) as exit_:
            study.main(["--update-every", bad, "--out", str(tmp_path / "s")])
        assert exit_.value.code == 2 and f"update_every={bad} is not allowed; use an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # refused before anything is written
