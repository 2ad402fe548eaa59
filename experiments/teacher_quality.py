"""Student against teacher quality (issue 11 item 5): ``teacher_quality.png`` and its table.

Reads study directories written by ``experiments/paper_study.py``, one per teacher: the teacher
pretrained at label noise EPS (``--teacher-noise EPS``; EPS 0 is the shipped default teacher),
each with its ``one_way`` and ``bidirectional`` run directories and ``teacher_quality.csv`` (the
held-out table of ``experiments/pretrain_teacher.py``), plus one ``ppo`` run (no teacher).

The x axis is the teacher's quality: how often its argmax action is one of the BFS oracle's
optimal actions on held-out random states of the study's task (``teacher=oracle``), annotated
with the label noise. Left panel: frames to ``--threshold`` ``eval_success`` per seed, median
over seeds with a 95% percentile bootstrap CI (rliable, 2000 resamples of the seeds); a seed that
never reaches the threshold counts as the budget (10,240 frames at 40 iterations of the lamorel
preset): censored, its true value is higher, so a median at the budget means "not reached by at
least half the seeds". Right panel: ``eval_success`` at the last iteration, IQM over seeds with
its 95% stratified bootstrap CI (``bidijax.report``). ``ppo`` is a flat line (no teacher).

It also writes ``teacher_quality.md`` / ``teacher_quality.csv`` beside the figure: per teacher
and arm, the IQM with CI, frames to the threshold (median, seeds reaching it), AUC, the
probability that ``bidirectional`` beats ``one_way`` (CI), the teacher's agreement with the oracle
on the situations the students visit (``teacher_oracle_agreement``: mean over seeds at iteration 1,
before any teacher update -> over the last 5 iterations) and ``feedback_oracle_corr`` (iterations 1-10 -> the last 10).

    python experiments/teacher_quality.py \\
        --study 0=experiments/results/study-40 --study 0.3=experiments/results/study-40-noise0.3 \\
        --study 0.6=experiments/results/study-40-noise0.6 --ppo experiments/results/study-40/ppo \\
        --out experiments/results/teacher_quality.png
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import numpy as np

import paper_study  # experiments/, beside this script
from bidijax import report

ARMS = ("one_way", "bidirectional")
COLORS = {"ppo": "tab:gray", "one_way": "tab:blue", "bidirectional": "tab:red"}
DEFAULT_STUDIES = (
    "0=experiments/results/study-40",
    "0.3=experiments/results/study-40-noise0.3",
    "0.6=experiments/results/study-40-noise0.6",
)


def median_ci(x: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median of per-seed values with a 95% percentile bootstrap CI over seeds (rliable)."""
    library, _ = report._rliable()
    with report._global_seed(seed):
        points, cis = library.get_interval_estimates(
            {"x": np.asarray(x, np.float64)[:, None]},
            lambda s: np.atleast_1d(np.median(s)),
            reps=reps,
            confidence_interval_size=report.CONFIDENCE,
        )
    return float(np.ravel(points["x"])[0]), float(cis["x"][0, 0]), float(cis["x"][1, 0])


def window_mean(cell: report.Cell, metric: str, first: int, last: int) -> tuple[float, float]:
    """Mean over seeds and the first ``first`` / the last ``last`` iterations of ``metric``."""
    if not cell.has(metric):
        return math.nan, math.nan
    v = cell.values(metric)
    it = cell.iterations
    with np.errstate(all="ignore"):
        return float(np.nanmean(v[:, it <= it.min() + first - 1])), float(np.nanmean(v[:, it > it.max() - last]))


def teacher_agreement(study: str, task: str) -> float:
    path = os.path.join(study, "teacher_quality.csv")
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["task"] == task:
                return float(row["teacher_oracle"])
    raise ValueError(f"{path}: no row for task {task!r}")


HELDOUT = ("teacher_oracle", "oracle_mass", "max_prob", "move_mass")


def heldout(study: str) -> tuple[dict, dict]:
    """From ``teacher_heldout.csv`` (experiments/teacher_heldout.py), if present: the starting
    teacher's values and, per arm, the per-seed values of the teachers at the end of the runs."""
    path = os.path.join(study, "teacher_heldout.csv")
    if not os.path.isfile(path):
        return {}, {}
    start, end = {}, {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            values = {k: float(r[k]) for k in HELDOUT}
            if r["seed"] == "start":
                start = values
            else:
                for k, v in values.items():
                    end.setdefault(r["arm"], {}).setdefault(k, []).append(v)
    return start, {arm: {k: np.asarray(v) for k, v in d.items()} for arm, d in end.items()}


def cell_stats(cell: report.Cell, threshold: float) -> dict:
    v = cell.values("eval_success")
    budget_it = report.last_complete_iteration(v, cell.iterations)
    upto = cell.iterations <= budget_it
    frames = cell.frames[upto]
    budget = int(frames[-1])
    ftt = report.frames_to_threshold(v[:, upto], frames, threshold)
    med = median_ci(np.minimum(ftt, budget))
    ag = window_mean(cell, "teacher_oracle_agreement", 1, 5)  # iteration 1: before any teacher update
    fc = window_mean(cell, "feedback_oracle_corr", 10, 10)
    return dict(
        iteration=budget_it, budget=budget, ftt_median=med[0], ftt_lo=med[1], ftt_hi=med[2], reached=int(np.isfinite(ftt).sum()),
        seeds=int(v.shape[0]), agreement_start=ag[0], agreement_end=ag[1], corr_start=fc[0], corr_end=fc[1],
        scores=report.at_budget(v, cell.iterations, budget_it),
    )  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", action="append", metavar="NOISE=DIR", help="a teacher's study directory (repeat)")
    ap.add_argument("--ppo", default="experiments/results/study-40/ppo", help="the ppo run directory")
    ap.add_argument("--task", default="BabyAI-GoToRedBallNoDists-v0", help="the task whose held-out agreement is the x axis")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--out", default="experiments/results/teacher_quality.png")
    args = ap.parse_args(argv)
    studies = []
    for item in args.study or DEFAULT_STUDIES:
        noise, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--study wants NOISE=DIR, got {item!r}")
        studies.append((float(noise), path))
    studies.sort()

    rows = []
    for k, (noise, study) in enumerate(studies):
        quality = teacher_agreement(study, args.task)
        start, end = heldout(study)
        # the same cells, order and call as experiments/paper_study.py's report: the same CIs
        cells = report.load_runs([args.ppo] + [paper_study.arm_dirs(study)[a] for a in ARMS])
        summary = report.summarize(cells, "eval_success", baseline=cells[1].name, threshold=args.threshold)
        scores = {c.name: report.at_budget(c.values("eval_success"), c.iterations, r["iteration"]) for c, r in zip(cells, summary)}
        over_ppo = report.probability_of_improvement(scores, cells[0].name)
        for arm, cell, srow in zip(("ppo",) + ARMS, cells, summary):
            if arm == "ppo" and k > 0:
                continue
            stats = cell_stats(cell, args.threshold)
            assert srow["reached"] == stats["reached"]
            rows.append(
                dict(
                    noise="" if arm == "ppo" else noise, teacher_agreement=math.nan if arm == "ppo" else quality,
                    oracle_mass=math.nan if arm == "ppo" else start.get("oracle_mass", math.nan),
                    move_mass=math.nan if arm == "ppo" else start.get("move_mass", math.nan),
                    arm=arm, iqm=(srow["iqm"], srow["iqm_lo"], srow["iqm_hi"]), auc=srow["auc"],
                    poi=(srow["poi"], srow["poi_lo"], srow["poi_hi"]) if arm == "bidirectional" else None,
                    over_ppo=over_ppo.get(cell.name), **stats,
                )
            )  # fmt: skip
            if arm in end:  # the teacher at the end, on held-out states: IQM over seeds with CI
                est = report.interval_estimates({k: end[arm][k] for k in ("teacher_oracle", "oracle_mass", "move_mass")})
                rows[-1].update({f"end_{k}": e["iqm"] for k, e in est.items()})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ppo = rows[0]
    teacher_rows = [r for r in rows if r["arm"] != "ppo"]
    noises = sorted({r["noise"] for r in teacher_rows})
    budget = ppo["budget"]
    has_end = any("end_teacher_oracle" in r for r in teacher_rows)
    fig, axes = plt.subplots(1, 3 if has_end else 2, figsize=(18 if has_end else 12, 5.4))
    ticks = []
    for n in noises:
        r = next(r for r in teacher_rows if r["noise"] == n)
        extra = "" if math.isnan(r["oracle_mass"]) else f"\np(optimal) {r['oracle_mass']:.2f}"
        ticks.append(f"{n:g}\nargmax=oracle {r['teacher_agreement']:.3f}{extra}")
    for ax, key in zip(axes, ("ftt", "iqm", "teacher")):
        for k, arm in enumerate(ARMS):
            sel = sorted((r for r in teacher_rows if r["arm"] == arm), key=lambda r: r["noise"])
            x = np.array([r["noise"] for r in sel]) + (k - 0.5) * 0.012  # side by side
            if key == "ftt":
                y, lo, hi = (np.array([r[f] for r in sel]) for f in ("ftt_median", "ftt_lo", "ftt_hi"))
            elif key == "iqm":
                y, lo, hi = (np.array([r["iqm"][i] for r in sel]) for i in range(3))
            else:
                nan3 = (math.nan,) * 3
                for field, style in (("end_teacher_oracle", "-"), ("end_oracle_mass", "--")):
                    y, lo, hi = (np.array([r.get(field, nan3)[i] for r in sel]) for i in range(3))
                    name = "argmax=oracle" if field == "end_teacher_oracle" else "p(optimal)"
                    ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", ls=style, capsize=4, color=COLORS[arm],
                                label=f"{arm}: {name}")  # fmt: skip
                continue
            ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=4, color=COLORS[arm], label=arm)
            if key == "ftt":
                for xi, yi, r in zip(x, y, sel):
                    ax.annotate(f"{r['reached']}/{r['seeds']}", (xi, yi), textcoords="offset points",
                                xytext=(-26 if arm == "one_way" else 6, -12), fontsize=8, color=COLORS[arm])  # fmt: skip
        if key != "teacher":
            if key == "ftt":
                py, plo, phi = ppo["ftt_median"], ppo["ftt_lo"], ppo["ftt_hi"]
                label = f"ppo (no teacher; {ppo['reached']}/{ppo['seeds']} reached: censored at the budget)"
                ax.annotate(f"ppo: {ppo['reached']}/{ppo['seeds']} seeds reach {args.threshold:g}", (0.02, py),
                            xycoords=("axes fraction", "data"), xytext=(0, -12), textcoords="offset points",
                            fontsize=8, color=COLORS["ppo"])  # fmt: skip
            else:
                py, plo, phi = ppo["iqm"]
                label = "ppo (no teacher)"
            ax.axhline(py, color=COLORS["ppo"], ls="--", lw=2, label=label, zorder=0)
            ax.axhspan(plo, phi, color=COLORS["ppo"], alpha=0.15, lw=0)
        ax.set_xticks(noises)
        ax.set_xticklabels(ticks, fontsize=8)
        ax.set_xlim(min(noises) - 0.08, max(noises) + 0.08)
        ax.set_xlabel(f"teacher's label noise (its held-out quality on {args.task.replace('BabyAI-', '')} below)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(top=budget * 1.06)
    axes[0].set_ylabel(f"frames to {args.threshold:g} eval_success (per seed)")
    axes[0].set_title(
        f"median over seeds, 95% bootstrap CI; a seed never reaching {args.threshold:g}\n"
        f"counts as the budget ({budget:,} frames): censored, the true value is higher; n/{ppo['seeds']}: seeds reaching it",
        fontsize=9,
    )  # fmt: skip
    axes[1].set_ylabel(f"eval_success at iteration {ppo['iteration']}")
    axes[1].set_title("student alone: IQM over seeds, 95% stratified bootstrap CI (rliable)", fontsize=9)
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8, loc="lower left")
    if has_end:
        axes[2].set_ylabel("teacher on held-out states")
        axes[2].set_title(
            f"the teachers at iteration {ppo['iteration']} on held-out states (one_way: the frozen start)\n"
            "IQM over seeds, 95% CI; solid: argmax is optimal, dashed: probability on optimal actions",
            fontsize=9,
        )  # fmt: skip
        axes[2].set_ylim(0, 0.8)
        axes[2].legend(fontsize=8, loc="lower left")
    fig.suptitle(
        f"Student vs teacher quality: GoToRedBallNoDists, lamorel preset, {ppo['seeds']} seeds per arm, {budget:,} frames per seed"
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)

    base = os.path.splitext(args.out)[0]
    triples = ("iqm", "poi", "over_ppo", "end_teacher_oracle", "end_oracle_mass", "end_move_mass")
    fields = ["noise", "teacher_agreement", "oracle_mass", "move_mass", "arm", "seeds", "iteration", "budget"]
    fields += [f"{t}{x}" for t in triples[:1] for x in ("", "_lo", "_hi")]
    fields += ["ftt_median", "ftt_lo", "ftt_hi", "reached", "auc"]
    fields += [f"{t}{x}" for t in triples[1:] for x in ("", "_lo", "_hi")]
    fields += ["agreement_start", "agreement_end", "corr_start", "corr_end"]
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            flat = dict(r)
            for t in triples:
                v = r.get(t) or ("", "", "")
                flat.update({t: v[0], f"{t}_lo": v[1], f"{t}_hi": v[2]})
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in flat.items() if k in fields})
    ci = lambda t: "-" if not t else f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"
    num = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
    lines = [
        "| label noise | teacher at the start (held-out): argmax=oracle, p(optimal), p(left/right/forward) | arm | "
        f"eval_success IQM [95% CI] | frames to {args.threshold:g} (median [95% CI], reached) | AUC | "
        "P(bidirectional > one_way) [95% CI] | P(arm > ppo) [95% CI] | teacher at the end (held-out, IQM over seeds): "
        "argmax=oracle [95% CI], p(optimal), p(left/right/forward) | agreement on visited, it. 1 -> last 5 | "
        "feedback_oracle_corr, it. 1-10 -> last 10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ftt = f"{r['ftt_median']:,.0f} [{r['ftt_lo']:,.0f}, {r['ftt_hi']:,.0f}] ({r['reached']}/{r['seeds']})"
        quality = "-" if r["arm"] == "ppo" else f"{num(r['teacher_agreement'])}, {num(r['oracle_mass'])}, {num(r['move_mass'])}"
        endq = "-"
        if "end_teacher_oracle" in r:
            endq = f"{ci(r['end_teacher_oracle'])}, {r['end_oracle_mass'][0]:.3f}, {r['end_move_mass'][0]:.3f}"
        lines.append(
            f"| {'-' if r['noise'] == '' else format(r['noise'], 'g')} | {quality} | {r['arm']} | "
            f"{ci(r['iqm'])} | {ftt} | {r['auc']:.3f} | {ci(r['poi'])} | {ci(r['over_ppo'])} | {endq} | "
            f"{num(r['agreement_start'])} -> {num(r['agreement_end'])} | {num(r['corr_start'])} -> {num(r['corr_end'])} |"
        )
    note = (f"\nFrames to {args.threshold:g}: a seed that never reaches it counts as the budget "
            f"({budget:,} frames), so medians and CIs at the budget are censored (lower bounds).\n")  # fmt: skip
    with open(base + ".md", "w") as f:
        f.write("\n".join(lines) + "\n" + note)
    print("\n".join(lines) + "\n" + note)
    print("\n".join([args.out, base + ".csv", base + ".md"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
