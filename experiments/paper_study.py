"""The reference study (arXiv 2401.06603) with bidijax: arms x seeds at the Lamorel preset.

One command runs every arm (``ppo``, ``one_way``, ``bidirectional``, ``teacher_only``) with
``--seeds`` seeds on BabyAI-GoToRedBallNoDists-v0 at the ``lamorel`` preset (2 envs x 128 steps
per iteration), for ``--iterations`` iterations, as one ``bidijax sweep`` over the arms: the spec
is written to ``OUT/study.yaml`` and the sweep to ``OUT/sweep`` (one program per arm, its seeds
vmapped; ``arm_dirs`` maps each arm to its run directory). It resumes where it stopped: finished
arms are skipped, an interrupted arm continues from its last checkpoint, and a changed study
(other arms, seeds, budget) is refused with the first difference. Then it writes the comparison
with ``bidijax.report`` (rliable: IQM and mean with 95% stratified bootstrap CIs, probability of
improvement of each arm over ``one_way``, frames to 0.9, AUC) for ``eval_success`` and
``eval_return`` (``OUT/<metric>/summary.csv`` / ``summary.md``), a tidy ``metrics.csv`` of every
arm with an ``arm`` column, learning curves (``learning_curves.png``) and the commands
(``commands.txt``).

The primary metric is fixed before the runs: ``eval_success`` (the student network alone,
sampled, ``--eval-episodes`` fresh episodes per seed) at the last iteration, IQM over seeds.

``--teacher-noise EPS`` (issue 11 item 5, a teacher of controlled quality; default 0: the shipped
default teacher): the teacher arms use a teacher pretrained by ``experiments/pretrain_teacher.py
--label-noise EPS`` into ``OUT/teacher-noise-EPS`` (once; reused when present). Its log and its
held-out table (``teacher=oracle``: how often its argmax is an optimal action) are kept in
``OUT/teacher-noise-EPS.log`` and ``OUT/teacher_quality.csv``.

``--update-every K``: the learning teachers (``bidirectional``, ``teacher_only``) fine-tune on
every K-th student update only, on the K updates' feedback summed
(``teacher.finetune.update_every``; checked against the primary metric in README before use).
``--extra-runs DIR ...`` adds finished run directories (e.g. a ``ppo`` arm, which no teacher
affects) to the report, the tidy CSV and the curves. Each arm's wall time, summed over the
sittings that ran it, is appended to ``OUT/wall_time.csv`` when the arm finishes.

    python experiments/paper_study.py --iterations 40 --seeds 16 --out experiments/results/study-40
    python experiments/paper_study.py --iterations 40 --seeds 16 --teacher-noise 0.6 \
        --arms one_way,bidirectional --extra-runs experiments/results/study-40/ppo \
        --out experiments/results/study-40-noise0.6

Study directories written before the study ran through ``bidijax sweep`` hold one run directory
per arm (``OUT/<arm>``); ``arm_dirs`` reads both layouts.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import shutil
import sys
import time

import yaml

from bidijax import cli, report, rundir, sweep
from bidijax import config as cfg
from bidijax.plot import plot_runs

ARMS = ("ppo", "one_way", "bidirectional", "teacher_only")
SWEEP = "sweep"  # the study's sweep directory inside --out


def study_spec(args, arms: list[str], teacher: str | None = None) -> dict:
    """The study as a ``bidijax sweep`` spec: the arms as a grid over one base config;
    ``teacher``: a model directory replacing the default teacher (ignored by ``ppo``)."""
    base = dict(
        env_id=args.env, preset=args.preset, iterations=args.iterations, seed=args.first_seed,
        eval_every=args.eval_every, eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
    )  # fmt: skip
    if teacher is not None:
        base["teacher"] = {"name": teacher}
    if args.update_every != 1:  # the learning teachers fine-tune every k-th update
        base.setdefault("teacher", {})["finetune"] = {"update_every": args.update_every}
    spec = {"base": base, "seeds": args.seeds, "grid": {"arm": list(arms)}, "metric": "eval_success"}
    if "one_way" in arms:
        spec["baseline"] = "arm=one_way"
    return spec


def arm_dirs(out: str) -> dict[str, str]:
    """Each arm's run directory in the study directory ``out``: its program of ``OUT/sweep``, or
    ``OUT/<arm>`` in studies written before the study ran as a sweep."""
    resolved = os.path.join(out, SWEEP, "sweep.json")
    if os.path.isfile(resolved):
        with open(resolved) as f:
            planned = json.load(f)
        return {planned["cells"][cells[0]]["arm"]: os.path.join(out, SWEEP, "programs", name) for name, cells in planned["programs"]}
    return {a: os.path.join(out, a) for a in ARMS if rundir.is_run_dir(os.path.join(out, a))}


def noise_label(eps: float) -> str:
    return f"{eps:g}"


class _Tee:
    """Writes to several streams (the pretraining's printout to the console and a log file)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def noisy_teacher(eps: float, out: str, seed: int) -> str:
    """The teacher pretrained at label noise ``eps`` in ``out/teacher-noise-EPS`` (trained once:
    into a temporary directory, renamed when its evaluation is written); returns its path.
    Appends its held-out table to ``out/teacher_quality.csv``."""
    import pretrain_teacher  # experiments/, beside this script

    name = f"teacher-noise-{noise_label(eps)}"
    path = os.path.join(out, name)
    report_csv = os.path.join(out, f"{name}.csv")
    if os.path.isdir(path) and os.path.isfile(report_csv):
        print(f"teacher at label noise {noise_label(eps)}: {path} (reused)", flush=True)
    else:
        partial = path + ".partial"
        for p in (partial, path):
            if os.path.isdir(p):
                shutil.rmtree(p)
        argv = ["--label-noise", str(eps), "--seed", str(seed), "--out", partial, "--report", report_csv + ".partial"]
        with open(os.path.join(out, "commands.txt"), "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} (pretraining) python experiments/pretrain_teacher.py {' '.join(argv)}\n")
        start = time.perf_counter()
        with open(os.path.join(out, f"{name}.log"), "w") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)):
            code = pretrain_teacher.main(argv)
        if code:
            raise SystemExit(f"pretraining the teacher at label noise {eps} failed (exit code {code})")
        os.replace(partial, path)
        os.replace(report_csv + ".partial", report_csv)
        record_wall(out, f"pretrain {name}", time.perf_counter() - start)
    with open(report_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["model"] = path
    write_rows(os.path.join(out, "teacher_quality.csv"), rows)
    return path


def write_rows(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def arm_wall_seconds(rows: list[dict]) -> float:
    """An arm's wall time over every process that ran it. ``wall_s`` restarts at 0 in each
    process (a resume), so this sums each process's last value, read on one seed's rows."""
    seed = min(int(r["seed"]) for r in rows)
    walls = [float(r["wall_s"]) for r in sorted(rows, key=lambda r: int(r["iteration"])) if int(r["seed"]) == seed]
    total = sum(w for w, after in zip(walls, walls[1:]) if after < w)
    return total + walls[-1]


def record_wall(out: str, step: str, seconds: float) -> None:
    path = os.path.join(out, "wall_time.csv")
    new = not os.path.isfile(path)
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["time", "step", "seconds"])
        w.writerow([time.strftime("%Y-%m-%d %H:%M:%S"), step, f"{seconds:.1f}"])


def parser() -> argparse.ArgumentParser:
    """The study's command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/study-40")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--env", default="BabyAI-GoToRedBallNoDists-v0")
    ap.add_argument("--preset", default="lamorel", choices=sorted(cfg.PRESETS))
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--eval-episodes", type=int, default=32)
    ap.add_argument("--checkpoint-every", type=int, default=10)
    ap.add_argument(
        "--teacher-noise", type=float, default=0.0, metavar="EPS",
        help="label noise of the teacher pretrained for the teacher arms (default 0: the shipped default teacher)",
    )  # fmt: skip
    ap.add_argument("--teacher-seed", type=int, default=0, help="--seed of the teacher's pretraining")
    ap.add_argument(
        "--update-every", type=int, default=1, metavar="K",
        help="the learning teachers fine-tune on every K-th student update, on the K updates' summed feedback "
        "(teacher.finetune.update_every; default 1)",
    )  # fmt: skip
    ap.add_argument(
        "--extra-runs", nargs="*", default=[], metavar="DIR",
        help="finished run directories to include in the report (e.g. an existing ppo arm)",
    )  # fmt: skip
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        ap.error(f"unknown arm(s) {bad}; allowed: {', '.join(ARMS)}")
    try:  # every config value checked up front, with the config's own one-line errors
        sweep.plan(study_spec(args, arms))
    except ValueError as err:
        ap.error(str(err))
    if not (math.isfinite(args.teacher_noise) and 0.0 <= args.teacher_noise <= 1.0):
        ap.error(f"--teacher-noise must be a number in [0, 1], got {args.teacher_noise}")
    for d in args.extra_runs:
        if not rundir.is_run_dir(d) or not rundir.read_metrics(d):
            ap.error(f"--extra-runs: {d!r} is not a run directory with metrics")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "commands.txt"), "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} python {' '.join(sys.argv)}\n")
    teacher = None
    if args.teacher_noise > 0 and any(cfg.TrainConfig(arm=a).uses_teacher for a in arms):
        teacher = noisy_teacher(args.teacher_noise, args.out, args.teacher_seed)
    spec_path, sweep_dir = os.path.join(args.out, "study.yaml"), os.path.join(args.out, SWEEP)
    pending = os.path.join(args.out, "study.partial.yaml")  # becomes study.yaml once the sweep accepts it
    with open(pending, "w") as f:
        yaml.safe_dump(study_spec(args, arms, teacher), f, sort_keys=False)
    where = ["--resume", sweep_dir] if os.path.isdir(sweep_dir) else ["--out", sweep_dir]
    before = arm_dirs(args.out) if os.path.isdir(sweep_dir) else {}
    done = {a: rundir.finished(d, args.iterations, args.seeds) for a, d in before.items()}
    code = 1
    try:
        code = cli.main(["sweep", pending] + where)
    finally:
        if code == 0:
            os.replace(pending, spec_path)
        else:
            os.remove(pending)
        with open(os.path.join(args.out, "commands.txt"), "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} (the study's runs) bidijax sweep {spec_path} {' '.join(where)}"
                    f"{'' if code == 0 else f'  [exit code {code}: not run]'}\n")  # fmt: skip
    if code:
        return code
    by_arm = arm_dirs(args.out)
    dirs, walls = [by_arm[a] for a in arms], {}
    for arm in arms:
        if not done.get(arm):
            walls[arm] = arm_wall_seconds(rundir.read_metrics(by_arm[arm]))
            record_wall(args.out, arm, walls[arm])
    extra_arms = [rundir.read_config(d).get("arm", os.path.basename(os.path.normpath(d))) for d in args.extra_runs]
    arms, dirs = extra_arms + arms, list(args.extra_runs) + dirs
    with open(os.path.join(args.out, "metrics.csv"), "w", newline="") as f:
        writer = None
        for arm, d in zip(arms, dirs):
            for r in rundir.read_metrics(d):
                row = {"arm": arm, **r}
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
                    writer.writeheader()
                writer.writerow(row)
    cells = report.load_runs(dirs)
    baseline = next((c.name for c in cells if c.config.get("arm") == "one_way"), None)
    for metric in ("eval_success", "eval_return"):
        rows = report.summarize(cells, metric=metric, baseline=baseline, threshold=0.9)
        paths = report.write_summary(rows, os.path.join(args.out, metric))
        print(report.to_markdown(rows), end="")
        print("\n".join(paths))
    print("\n".join(plot_runs(dirs, args.out)))
    if walls:
        print("wall time (all sittings): " + ", ".join(f"{a} {w:.0f} s" for a, w in walls.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
