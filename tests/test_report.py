"""bidijax.report (rliable statistics over cells of runs) and bidijax.plot, on hand-made run directories."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest
import scipy.stats

from bidijax import report, rundir

FRAMES_PER_IT = 100


def make_run(path, arm="ppo", teacher="default", seeds=(0, 1, 2), iterations=6, eval_every=2, curve=None, old_names=False):
    """A run directory whose metrics.csv has ``curve(seed, iteration)`` as its success values;
    eval columns are filled only every ``eval_every`` iterations (empty otherwise)."""
    curve = curve or (lambda s, it: min(1.0, 0.1 * it + 0.05 * s))
    os.makedirs(path, exist_ok=True)
    rundir.write_config(str(path), {"arm": arm, "teacher": {"name": teacher}, "num_seeds": len(seeds)})
    log = rundir.MetricsLog(str(path))
    for it in range(1, iterations + 1):
        rows = []
        for s in seeds:
            v = curve(s, it)
            evaluated = it % eval_every == 0
            row = {"iteration": it, "seed": s, "frames": it * FRAMES_PER_IT}
            if old_names:
                row.update(success_rate=v, mean_return=v / 2)
            else:
                row.update(
                    eval_success=v if evaluated else "",
                    eval_return=v / 2 if evaluated else "nan",
                    behaviour_success=v * 0.9,
                    behaviour_return=v / 3,
                )
            row.update(teacher_oracle_agreement=float("nan") if arm == "ppo" else 0.5 + 0.01 * it, hint_coverage=0.3)
            rows.append(row)
        log.log(rows)
    return str(path)


# ---------------------------------------------------------------------------------------------
# loading


def test_load_runs_from_run_dirs_and_parent_dir(tmp_path):
    a = make_run(tmp_path / "exp" / "r1", arm="ppo")
    b = make_run(tmp_path / "exp" / "r2", arm="one_way", teacher="/models/oracle/")
    c = make_run(tmp_path / "exp" / "r3", arm="one_way", teacher="oracle")
    os.makedirs(tmp_path / "exp" / "not_a_run")
    cells = report.load_runs([a])
    assert [c_.name for c_ in cells] == ["ppo"]
    cell = cells[0]
    assert cell.iterations.tolist() == list(range(1, 7)) and cell.frames.tolist() == [100 * i for i in range(1, 7)]
    v = cell.values("eval_success")
    assert v.shape == (3, 6) and np.isnan(v[:, 0]).all() and v[1, 1] == pytest.approx(0.25)
    assert np.isnan(cell.values("teacher_oracle_agreement")).all() and not cell.has("teacher_oracle_agreement")

    cells = report.load_runs(str(tmp_path / "exp"))
    names = [x.name for x in cells]
    assert names == ["ppo", "one_way/oracle [r2]", "one_way/oracle [r3]"]  # duplicates made unique
    assert cells[1].config["teacher"]["name"] == "/models/oracle/"
    assert report.load_runs([b, c])[1].name == "one_way/oracle [r3]"


def test_old_column_names_are_read_under_the_new_ones(tmp_path):
    cell = report.load_runs([make_run(tmp_path / "old", old_names=True)])[0]
    assert cell.has("behaviour_success") and not cell.has("eval_success")
    assert np.allclose(cell.values("behaviour_return"), cell.values("mean_return"))


def test_load_runs_sweep_metrics_with_cell_column(tmp_path):
    sweep = tmp_path / "sweep"
    os.makedirs(sweep)
    with open(sweep / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["cell", "teacher.lr", "iteration", "seed", "frames", "eval_success"])
        w.writeheader()
        for cell, lr, base in (("lr-small", "1e-4", 0.2), ("lr-big", "1e-3", 0.6)):
            for it in (1, 2, 3):
                for s in (0, 1):
                    w.writerow({"cell": cell, "teacher.lr": lr, "iteration": it, "seed": s,
                                "frames": 50 * it, "eval_success": base + 0.1 * it if it != 2 else "nan"})  # fmt: skip
    cells = report.load_runs([str(sweep)])
    assert [c.name for c in cells] == ["lr-small", "lr-big"]
    assert cells[1].config == {"cell": "lr-big", "teacher.lr": "1e-3"}
    assert cells[1].values("eval_success").shape == (2, 3) and cells[1].frames.tolist() == [50, 100, 150]
    assert report.at_budget(cells[1].values("eval_success"), cells[1].iterations, 2) == pytest.approx([0.7, 0.7])
    # a parent directory may hold sweep directories too
    assert [c.name for c in report.load_runs(str(tmp_path))] == ["lr-small", "lr-big"]


def test_bad_paths_give_one_line_errors(tmp_path):
    for bad in (str(tmp_path / "missing"), str(tmp_path)):
        with pytest.raises(ValueError, match="not a run directory") as e:
            report.load_runs([bad])
        assert "\n" not in str(e.value) and bad in str(e.value)
    with pytest.raises(ValueError):
        report.load_runs([])


# ---------------------------------------------------------------------------------------------
# per-seed scores


def test_at_budget_defaults_to_last_complete_and_falls_back_to_earlier_values():
    its = np.array([1, 2, 3, 4, 5])
    v = np.array(
        [[0.1, np.nan, 0.3, np.nan, 0.5],
         [0.2, np.nan, 0.4, np.nan, np.nan]]
    )  # fmt: skip
    assert report.last_complete_iteration(v, its) == 3
    assert report.at_budget(v, its).tolist() == [0.3, 0.4]
    assert report.at_budget(v, its, at=4).tolist() == [0.3, 0.4]  # last non-NaN at or before 4
    assert report.at_budget(v, its, at=5).tolist() == [0.5, 0.4]
    with pytest.raises(ValueError, match="outside"):
        report.at_budget(v, its, at=9)
    with pytest.raises(ValueError, match="no value"):
        report.at_budget(np.array([[np.nan, 1.0], [np.nan, np.nan]]), np.array([1, 2]), at=2)
    with pytest.raises(ValueError, match="every seed"):
        report.at_budget(np.array([[np.nan, 1.0], [2.0, np.nan]]), np.array([1, 2]))


def test_frames_to_threshold_and_auc_on_hand_computed_curves():
    frames = np.array([0, 10, 20, 30])
    v = np.array(
        [[0.0, 0.5, 1.0, 1.0],        # reaches 0.9 at 20; AUC = (2.5 + 7.5 + 10) / 30
         [0.0, np.nan, 0.95, 0.5],    # NaN skipped: reaches at 20; AUC = (9.5 + 7.25) / 30
         [0.1, 0.2, 0.3, 0.4]]        # never; AUC = mean of a line = 0.25
    )  # fmt: skip
    ftt = report.frames_to_threshold(v, frames, 0.9)
    assert ftt[0] == 20 and ftt[1] == 20 and math.isinf(ftt[2])
    assert np.allclose(report.auc(v, frames), [20 / 30, (9.5 + 7.25) / 30, 0.25])
    assert report.auc(np.array([[np.nan, 0.7, np.nan]]), np.array([0, 1, 2]))[0] == pytest.approx(0.7)


# ---------------------------------------------------------------------------------------------
# rliable statistics


def test_iqm_is_the_25_percent_trimmed_mean_and_ci_brackets_it():
    x = np.random.default_rng(1).normal(size=16)
    est = report.interval_estimates({"a": x}, reps=500)["a"]
    point, lo, hi = est["iqm"]
    assert point == pytest.approx(scipy.stats.trim_mean(x, 0.25))
    assert point == pytest.approx(np.sort(x)[4:12].mean())
    assert lo < point < hi
    m, mlo, mhi = est["mean"]
    assert m == pytest.approx(x.mean()) and mlo < m < mhi


def test_ci_narrows_with_more_seeds_and_is_deterministic():
    rng = np.random.default_rng(2)
    few, many = rng.normal(size=5), rng.normal(size=80)
    a = report.interval_estimates({"few": few, "many": many}, reps=1000, seed=3)
    width = {k: a[k]["iqm"][2] - a[k]["iqm"][1] for k in a}
    assert width["many"] < 0.6 * width["few"]
    state = np.random.get_state()[1].copy()
    assert report.interval_estimates({"few": few, "many": many}, reps=1000, seed=3) == a
    assert np.array_equal(np.random.get_state()[1], state)  # the global random state is restored
    assert report.interval_estimates({"few": few}, reps=1000, seed=4)["few"] != a["few"]


def test_probability_of_improvement():
    rng = np.random.default_rng(3)
    base = rng.normal(size=10)
    scores = {"base": base, "better": base + 10, "same": base.copy(), "similar": rng.normal(size=200)}
    poi = report.probability_of_improvement(scores, "base", reps=300)
    assert set(poi) == {"better", "same", "similar"}
    assert poi["better"][0] == 1.0 and poi["better"][1] > 0.95
    p, lo, hi = poi["same"]
    assert p == 0.5 and lo < 0.5 < hi
    assert abs(poi["similar"][0] - 0.5) < 0.15 and poi["similar"][1] < 0.5 < poi["similar"][2]
    assert report.probability_of_improvement(scores, "base", reps=300) == poi
    with pytest.raises(ValueError, match="'nope'") as e:
        report.probability_of_improvement(scores, "nope")
    assert "\n" not in str(e.value) and "'better'" in str(e.value)


def test_performance_profile():
    scores = {"a": np.array([0.1, 0.2, 0.6, 0.9]), "b": np.array([0.95, 0.97, 0.99, 1.0])}
    prof = report.performance_profile(scores, [0.0, 0.5, 0.92], reps=200)
    assert np.allclose(prof["a"][0], [1.0, 0.5, 0.0]) and np.allclose(prof["b"][0], [1.0, 1.0, 1.0])
    lo, hi = prof["a"][1], prof["a"][2]
    assert np.all(lo <= prof["a"][0]) and np.all(prof["a"][0] <= hi) and hi[1] > lo[1]


def test_curve_with_ci_skips_missing_seeds_and_is_fast():
    import time

    rng = np.random.default_rng(4)
    v = rng.random((20, 300))
    v[:, 1::3] = np.nan  # not evaluated at these iterations
    v[:5, 0] = np.nan  # some seeds missing at the first iteration
    t0 = time.perf_counter()
    center, lo, hi = report.curve_with_ci(v, reps=500)
    assert time.perf_counter() - t0 < 10
    assert np.isnan(center[1::3]).all() and np.isnan(lo[1::3]).all()
    ok = ~np.isnan(center)
    assert np.all(lo[ok] <= center[ok]) and np.all(center[ok] <= hi[ok]) and np.all(hi[ok] > lo[ok])
    assert center[0] == pytest.approx(scipy.stats.trim_mean(v[5:, 0], 0.25))
    assert center[2] == pytest.approx(scipy.stats.trim_mean(v[:, 2], 0.25))
    mean, *_ = report.curve_with_ci(v, reps=100, stat="mean")
    assert mean[0] == pytest.approx(v[5:, 0].mean())
    again = report.curve_with_ci(v, reps=500)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(again, (center, lo, hi)))


# ---------------------------------------------------------------------------------------------
# summary and plots


def test_summarize_and_write_summary(tmp_path):
    base = make_run(tmp_path / "runs" / "ppo", arm="ppo", seeds=range(4), curve=lambda s, it: 0.05 * it + 0.01 * s)
    good = make_run(
        tmp_path / "runs" / "bidi", arm="bidirectional", seeds=range(4), curve=lambda s, it: min(1.0, 0.2 * it + 0.01 * s)
    )
    cells = report.load_runs([base, good])
    rows = report.summarize(cells, metric="eval_success", baseline="ppo", threshold=0.9, reps=300)
    by = {r["cell"]: r for r in rows}
    assert set(by) == {"ppo", "bidirectional/default"}
    b = by["bidirectional/default"]
    assert b["iteration"] == 6 and b["frames"] == 600 and b["seeds"] == 4
    assert b["iqm"] == pytest.approx(1.0) and b["reached"] == 4 and b["frames_to_threshold"] == 600  # evaluated at 2, 4, 6
    assert b["poi"] == 1.0 and math.isnan(by["ppo"]["poi"]) and by["ppo"]["reached"] == 0
    assert by["ppo"]["iqm_lo"] <= by["ppo"]["iqm"] <= by["ppo"]["iqm_hi"]
    assert by["ppo"]["auc"] == pytest.approx(np.mean([0.05 * 4 + 0.01 * s for s in range(4)]))  # a line from 2 to 6
    rows4 = report.summarize(cells, at=4, reps=100)
    assert rows4[1]["iteration"] == 4 and rows4[1]["iqm"] == pytest.approx(0.815) and "poi" not in rows4[1]
    paths = report.write_summary(rows, str(tmp_path / "out"))
    assert [os.path.basename(p) for p in paths] == ["summary.csv", "summary.md"]
    with open(paths[0]) as f:
        assert len(list(csv.DictReader(f))) == 2
    md = open(paths[1]).read()
    assert "| bidirectional/default |" in md and "never (0/4)" in md and "IQM" in md
    with pytest.raises(ValueError, match="unknown baseline cell 'x'"):
        report.summarize(cells, baseline="x")
    with pytest.raises(ValueError, match="no metric 'nope'"):
        report.summarize(cells, metric="nope")


def test_plot_runs_writes_pngs_with_sparse_eval_columns(tmp_path):
    from PIL import Image

    from bidijax.plot import plot_runs

    dirs = [make_run(tmp_path / "a", arm="ppo"), make_run(tmp_path / "b", arm="one_way", teacher="oracle")]
    paths = plot_runs(dirs, str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == ["learning_curves.png", "teacher_agreement.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 300
    old = make_run(tmp_path / "old", old_names=True)  # no eval columns: the behaviour curves instead
    assert len(plot_runs([old], str(tmp_path / "plots_old"))) == 2


def test_compact_results_keeps_eval_rows_and_the_same_summary(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "compact_results", os.path.join(os.path.dirname(__file__), "..", "experiments", "compact_results.py")
    )
    compact = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compact)
    curve = lambda s, it: min(1.0, 0.02 * it + 0.01 * s)  # noqa: E731
    runs = [make_run(tmp_path / "study" / a, arm=a, seeds=range(4), iterations=60, eval_every=25, curve=curve) for a in ("ppo", "one_way")]
    before = report.summarize(report.load_runs(runs), baseline="ppo", reps=200)
    full = open(os.path.join(runs[0], "metrics.csv")).read()
    assert compact.main([str(tmp_path / "study"), "--every", "25", "--edge", "3"]) == 0
    assert open(os.path.join(runs[0], compact.FULL)).read() == full  # the full file is kept beside
    its = sorted({int(r["iteration"]) for r in rundir.read_metrics(runs[0])})
    assert its == [1, 2, 3, 25, 50, 58, 59, 60]
    after = report.summarize(report.load_runs(runs), baseline="ppo", reps=200)
    assert [r["iqm"] for r in after] == [r["iqm"] for r in before] and after[1]["poi"] == before[1]["poi"]
    assert compact.main([str(tmp_path / "study"), "--every", "25", "--edge", "3"]) == 0  # idempotent
    assert sorted({int(r["iteration"]) for r in rundir.read_metrics(runs[0])}) == its
    with open(os.path.join(runs[0], "metrics.csv"), "a") as f:  # a row appended after compacting
        f.write(full.splitlines()[-1] + "\n")
    with pytest.raises(SystemExit):
        compact.main([str(tmp_path / "study")])
    with pytest.raises(SystemExit):
        compact.main([str(tmp_path / "nowhere")])
