"""``bidijax sweep``: traced cells equal lone runs, programs split by structure, resume, bad specs."""

import dataclasses
import io
import json
import math
import os
import shutil

import numpy as np
import pytest
import yaml

from bidijax import config as cfg
from bidijax import loop as loop_mod
from bidijax import rundir
from bidijax import sweep as sw
from bidijax.loop import TIMING_COLUMNS, train
from bidijax.progress import Bar
from helpers import one_line_error

TINY_PPO = dict(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=1, hidden=16, miss_buffer_size=128)
SPEC = {
    "base": {
        "iterations": 2, "eval_every": 1, "eval_episodes": 4, "checkpoint_every": 1, "table_capacity": 64,
        "teacher": {"name": "noisy_oracle"}, "ppo": TINY_PPO,
    },
    "seeds": 2,
    "grid": {"ppo.lr": [1e-3, 2.5e-4], "arm": ["ppo", "one_way"]},
    "zip": [{"ppo.clip_eps": [0.2], "ppo.vf_coef": [0.5]}],
}  # fmt: skip
# columns that may differ in the last float digits between a lane of a wider program and a lone run
_DISCRETE = ("frames", "episodes", "table_rows", "misses", "scored_first", "miss_overflow", "teacher_version")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("sweep") / "out")
    plan = sw.plan(SPEC)
    rows = sw.run(plan, d, spec_text=yaml.safe_dump(SPEC))
    return plan, d, rows


def _cell_rows(path, name):
    rows = [r for r in rundir.read_metrics(path) if r["cell"] == name]
    return sorted(rows, key=lambda r: (int(r["iteration"]), int(r["seed"])))


def _close(a: dict, b: dict):
    for k in a:
        if k in TIMING_COLUMNS or k in ("cell", "ppo.lr", "arm", "ppo.clip_eps", "ppo.vf_coef"):
            continue
        x, y = float(a[k]), float(b[k])
        if math.isnan(x) or math.isnan(y):
            assert math.isnan(x) and math.isnan(y), (k, x, y)
        elif k in _DISCRETE or k.startswith("eval_"):
            assert x == y, (k, x, y)
        else:
            assert x == pytest.approx(y, rel=1e-3, abs=1e-6), (k, x, y)


def test_plan_splits_programs_by_structure_only():
    plan = sw.plan(SPEC)
    assert len(plan.cells) == 4 and len(plan.programs) == 2  # lr (traced) x arm (structural)
    for p in plan.programs:
        assert {plan.cells[i]["arm"] for i in p.cells} == {p.config.arm}
        assert p.config.cells == {"ppo.lr": [1e-3, 2.5e-4], "ppo.clip_eps": [0.2, 0.2], "ppo.vf_coef": [0.5, 0.5]}
        assert p.config.seeds == [0, 1, 0, 1]  # lanes: cell after cell, the same seed ids in each
        shifted = dataclasses.replace(p.config, seed=7)
        for c in (p.config, shifted):
            assert [c.seed_of(j) for j in range(c.num_lanes)] == c.seeds
    # a traced-only grid is one program, whatever the number of cells
    assert len(sw.plan({**SPEC, "grid": {"ppo.lr": [1e-3, 3e-4, 1e-4], "ppo.ent_coef": [0.0, 0.01]}}).programs) == 1


def test_sweep_directory(swept):
    plan, d, rows = swept
    assert sorted(os.listdir(d)) == [".lock", "metrics.csv", "programs", "spec.yaml", "summary.csv", "summary.md", "sweep.json"]
    tidy = rundir.read_metrics(d)
    assert len(tidy) == 4 * 2 * 2  # cells x seeds x iterations
    assert list(tidy[0])[:5] == ["cell", "ppo.lr", "arm", "ppo.clip_eps", "ppo.vf_coef"]
    assert {r["cell"] for r in rows} == {plan.cell_name(i) for i in range(4)}
    assert all(r["seeds"] == 2 and r["iteration"] == 2 for r in rows)
    with open(os.path.join(d, "sweep.json")) as f:
        assert json.load(f)["fields"] == ["ppo.lr", "arm", "ppo.clip_eps", "ppo.vf_coef"]


@pytest.mark.parametrize("arm", ["ppo", "one_way"])
def test_cell_equals_the_same_config_run_alone(swept, tmp_path, arm):
    """A cell of a 4-lane program gives the numbers of its config run alone with 2 seeds."""
    plan, d, _ = swept
    i = next(i for i, c in enumerate(plan.cells) if c["arm"] == arm and c["ppo.lr"] == 2.5e-4)
    alone = cfg.from_dict({**SPEC["base"], "preset": "default", "arm": arm, "num_seeds": 2, "ppo": {**TINY_PPO, "lr": 2.5e-4}})
    _, solo = train(alone, str(tmp_path / "solo"))
    solo = sorted(solo, key=lambda r: (r["iteration"], r["seed"]))
    mine = _cell_rows(d, plan.cell_name(i))
    assert len(mine) == len(solo) == 4
    for a, b in zip(mine, solo):
        _close(a, b)
    # and the other learning rate really is different
    other = _cell_rows(d, plan.cell_name(plan.cells.index({**plan.cells[i], "ppo.lr": 1e-3})))
    assert any(float(a["policy_loss"]) != float(b["policy_loss"]) for a, b in zip(mine, other))


def test_teacher_numbers_vary_per_lane(swept, tmp_path):
    """The noisy oracle's eps is a lane field: one program, each lane equals its setting run alone."""
    assert len(sw.plan({**SPEC, "grid": {"teacher.eps": [0.0, 0.5, 1.0], "ppo.lr": [1e-3, 2.5e-4]}}).programs) == 1
    base = {**SPEC["base"], "arm": "one_way", "num_seeds": 2, "ppo": {**TINY_PPO, "lr": 2.5e-4}}
    _, lanes = train(cfg.from_dict({**base, "cells": {"teacher.eps": [0.0, 1.0]}}), str(tmp_path / "lanes"))
    for cell, eps in enumerate([0.0, 1.0]):
        _, solo = train(cfg.from_dict({**base, "teacher": {"name": "noisy_oracle", "eps": eps}}), str(tmp_path / f"solo{cell}"))
        mine = sorted((r for r in lanes if r["cell"] == cell), key=lambda r: (r["iteration"], r["seed"]))
        solo = sorted(solo, key=lambda r: (r["iteration"], r["seed"]))
        assert len(mine) == len(solo) == 4
        for a, b in zip(mine, solo):
            _close({k: v for k, v in a.items() if k != "cell"}, b)
    zero, one = ([r["teacher_oracle_agreement"] for r in lanes if r["cell"] == c] for c in (0, 1))
    assert np.mean(one) < np.mean(zero) - 0.2  # eps 1: uniform hints (argmax: the first action)


def test_resume_finishes_an_interrupted_sweep_exactly(swept, tmp_path):
    plan, d, _ = swept
    out = str(tmp_path / "sweep")

    def stop(program, rows, state):
        if program.name == "p01" and state.iteration == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sw.run(plan, out, spec_text="x", progress=stop)
    assert sw.done_units(plan, out) == 2 * 2 + 2  # program p00 done, p01 one iteration
    seen = []
    sw.run(plan, out, resume=True, progress=lambda p, rows, s: seen.append((p.name, s.iteration)))
    assert seen == [("p01", 2)]  # p00 skipped, p01 continued from its checkpoint
    for name in (plan.cell_name(i) for i in range(4)):
        for a, b in zip(_cell_rows(out, name), _cell_rows(d, name), strict=True):
            _close(a, b)


def test_finished_sweep_resumes_without_training(swept, monkeypatch):
    plan, d, _ = swept
    monkeypatch.setattr(loop_mod, "train", lambda *a, **k: pytest.fail("a finished program ran again"))
    rows = sw.run(plan, d, resume=True)
    assert len(rows) == 4


def test_sweep_written_before_a_field_existed_resumes(swept, tmp_path, monkeypatch):
    """A sweep.json without a field added since (its default keeps the old behaviour) still matches."""
    plan, d, _ = swept
    old = str(tmp_path / "old")
    shutil.copytree(d, old)
    with open(os.path.join(old, sw.RESOLVED)) as f:
        saved = json.load(f)
    del saved["base"]["ppo"]["distill_temperature"], saved["base"]["teacher"]["finetune"]["objective"]
    with open(os.path.join(old, sw.RESOLVED), "w") as f:
        json.dump(saved, f)
    monkeypatch.setattr(loop_mod, "train", lambda *a, **k: pytest.fail("a finished program ran again"))
    assert len(sw.run(plan, old, resume=True)) == 4
    saved["base"]["ppo"]["lr"] = 0.5  # a value that differs is still refused
    with open(os.path.join(old, sw.RESOLVED), "w") as f:
        json.dump(saved, f)
    with pytest.raises(ValueError, match="base.ppo.lr: 0.5 in the sweep directory"):
        sw.run(plan, old, resume=True)


def test_changed_spec_is_refused_naming_the_difference(swept, capsys):
    plan, d, _ = swept
    spec = {**SPEC, "grid": {**SPEC["grid"], "ppo.lr": [1e-3, 5e-4]}}
    with open(os.path.join(d, "spec.yaml")) as f:
        assert yaml.safe_load(f) == SPEC
    path = os.path.join(os.path.dirname(d), "changed.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)
    one_line_error(capsys, ["sweep", path, "--resume", d], "0.00025", "0.0005")


def _bad(tmp_path, capsys, spec, *needles):
    path = str(tmp_path / "spec.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(spec, f)
    out = str(tmp_path / "never")
    one_line_error(capsys, ["sweep", path, "--out", out], *needles)
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "change, needles",
    [
        ({"grid": {"ppo.lrr": [1e-3]}}, ("'lrr'", "allowed")),
        ({"grid": {"ppo.lr": ["fast"]}}, ("ppo.lr='fast'", "float")),
        ({"grid": {"arm": ["ppo", "both"]}}, ("'both'", "one_way")),
        ({"grid": {}, "zip": []}, ("grid is empty",)),
        ({"grid": {"ppo.lr": []}}, ("ppo.lr", "non-empty list")),
        ({"grid": {**{f"ppo.{k}": list(range(1, 11)) for k in ("hidden", "num_envs", "update_epochs")}, "ppo.lr": [1e-3] * 1000}},
         ("1,000,000 cells", "GiB", "at most 10,000")),
        ({"one_program": True, "grid": {"ppo.lr": [1e-3], "ppo.num_envs": [8, 16]}}, ("'ppo.num_envs'", "one_program", "ppo.lr")),
        ({"seeds": 0}, ("seeds=0",)),
        ({"zip": [{"ppo.gamma": [0.9, 0.99], "ppo.gae_lambda": [0.9]}]}, ("zip[0]", "different lengths")),
        ({"grid": {"num_seeds": [1, 2]}}, ("'num_seeds'", "seeds")),
        ({"grid": {"ppo.lr": [-1.0]}}, ("ppo.lr=-1.0", "> 0")),
        ({"colour": "red"}, ("'colour'", "allowed")),
    ],
)
def test_bad_spec_one_line_no_directory(tmp_path, capsys, change, needles):
    _bad(tmp_path, capsys, {**SPEC, **change}, *needles)


def test_hyper_holds_every_traced_field():
    import dataclasses

    from bidijax.student import TRACED, Hyper

    assert [f.name for f in dataclasses.fields(Hyper)] == list(TRACED)
    assert cfg.TRACED_FIELDS == tuple(f"ppo.{n}" for n in TRACED) + cfg.TEACHER_LANE_FIELDS


def test_cells_config_is_checked():
    base = cfg.TrainConfig()
    with pytest.raises(ValueError, match="cannot vary inside one program"):
        cfg.resolve(base.replace(cells={"ppo.num_envs": [8, 16]}))
    with pytest.raises(ValueError, match="different lengths"):
        cfg.resolve(base.replace(cells={"ppo.lr": [1e-3, 1e-4], "ppo.gamma": [0.9]}))
    with pytest.raises(ValueError, match="gamma=1.5"):
        cfg.resolve(base.replace(cells={"ppo.gamma": [0.9, 1.5]}))
    c = cfg.resolve(base.replace(num_seeds=2, cells={"ppo.lr": [1e-3, 1e-4, 1e-5]}))
    assert c.num_cells == 3 and c.seeds == [0, 1] * 3 and c.num_lanes == 6 and c.cell_ppo(2).lr == 1e-5
    with pytest.raises(ValueError, match="eps=1.5"):
        cfg.resolve(base.replace(cells={"teacher.eps": [0.1, 1.5]}))
    with pytest.raises(ValueError, match="lr=0.0"):
        cfg.resolve(base.replace(cells={"teacher.finetune.lr": [1e-4, 0.0]}))
    c = cfg.resolve(base.replace(num_seeds=2, cells={"teacher.finetune.lr": [1e-4, 1e-3], "teacher.temperature": [1.0, 2.0]}))
    lanes = c.lane_teachers()
    assert [t.finetune.lr for t in lanes] == [1e-4, 1e-4, 1e-3, 1e-3] and [t.temperature for t in lanes] == [1.0, 1.0, 2.0, 2.0]
    assert c.cell_ppo(1) == c.ppo and lanes[0].finetune.steps == c.teacher.finetune.steps


def test_bar_plain_lines_with_eta():
    out = io.StringIO()
    bar = Bar(20, "job", stream=out)
    for _ in range(20):
        bar.update(1, "| status")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("job 1/20 [") and lines[-1].startswith("job 20/20 [")
    assert 3 <= len(lines) <= 12 and all("ETA" in x and x.endswith("| status") for x in lines)
    assert lines[-1].split("ETA ")[1].startswith("00:00")
    assert "ETA ?" in lines[0]  # no rate from the first unit alone (it carries compilation)
    quiet = io.StringIO()
    Bar(5, "job", stream=quiet, quiet=True).update(5)
    assert quiet.getvalue() == ""


def test_resumed_bar_counts_only_this_process():
    bar = Bar(100, "job", done=90, stream=io.StringIO())
    assert math.isinf(bar.eta())
    bar.update(5)
    assert math.isinf(bar.eta())  # the first update of this process: no rate yet
    bar.update(1)
    assert 0 < bar.eta() < 10  # 4 units left at (far more than) 1 unit per ~0 s
    assert np.isfinite(bar.eta())


def test_plot_sweep_draws_sensitivity(swept, tmp_path):
    from bidijax.plot import plot_runs

    _, d, _ = swept
    paths = plot_runs([d], str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["learning_curves.png", "teacher_agreement.png", "sensitivity.png"]
    assert all(os.path.getsize(p) > 10_000 for p in paths)
