"""The reference study (arXiv 2401.06603) with bidijax: arms x seeds at the Lamorel preset.

One command runs every arm (``ppo``, ``one_way``, ``bidirectional``, ``teacher_only``) with
``--seeds`` seeds vmapped in one program per arm, on BabyAI-GoToRedBallNoDists-v0 at the
``lamorel`` preset (2 envs x 128 steps per iteration), for ``--iterations`` iterations, each arm
in its own run directory under ``--out``. It resumes where it stopped: finished arms are skipped,
an interrupted arm continues from its last checkpoint (``bidijax train --resume``). Then it
writes the comparison with ``bidijax.report`` (rliable: IQM and mean with 95% stratified bootstrap
CIs, probability of improvement of each arm over ``one_way``, frames to 0.9, AUC) as
``summary.csv`` / ``summary.md``, a tidy ``metrics.csv`` of every arm, learning curves
(``learning_curves.png``) and the commands (``commands.txt``).

The primary metric is fixed before the runs: ``eval_success`` (the student network alone,
sampled, ``--eval-episodes`` fresh episodes per seed) at the last iteration, IQM over seeds.

``--teacher-noise EPS`` (issue 11 item 5, a teacher of controlled quality; default 0: the shipped
default teacher): the teacher arms use a teacher pretrained by ``experiments/pretrain_teacher.py
--label-noise EPS`` into ``OUT/teacher-noise-EPS`` (once; reused when present). Its log and its
held-out table (``teacher=oracle``: how often its argmax is an optimal action) are kept in
``OUT/teacher-noise-EPS.log`` and ``OUT/teacher_quality.csv``. ``--extra-runs DIR ...`` adds
finished run directories (e.g. a ``ppo`` arm, which no teacher affects) to the report, the tidy
CSV and the curves. Each invocation's arm wall times are appended to ``OUT/wall_time.csv``.

    python experiments/paper_study.py --iterations 40 --seeds 16 --out experiments/results/study-40
    python experiments/paper_study.py --iterations 40 --seeds 16 --teacher-noise 0.6 \
        --arms one_way,bidirectional --extra-runs experiments/results/study-40/ppo \
        --out experiments/results/study-40-noise0.6
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import csv
import math
import os
import shutil
import sys
import time

from bidijax import config as cfg
from bidijax import report, rundir
from bidijax.loop import train
from bidijax.plot import plot_runs

ARMS = ("ppo", "one_way", "bidirectional", "teacher_only")


def arm_config(arm: str, args, teacher: str | None = None) -> cfg.TrainConfig:
    """The arm's resolved config; ``teacher``: a model directory replacing the default teacher."""
    base = cfg.with_preset(cfg.TrainConfig(), args.preset)
    if teacher is not None:
        base = base.replace(teacher=dataclasses.replace(base.teacher, name=teacher))
    return cfg.resolve(
        base.replace(
            env_id=args.env, arm=arm, iterations=args.iterations, num_seeds=args.seeds, seed=args.first_seed,
            eval_every=args.eval_every, eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
        )
    )  # fmt: skip


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


def record_wall(out: str, step: str, seconds: float) -> None:
    path = os.path.join(out, "wall_time.csv")
    new = not os.path.isfile(path)
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["time", "step", "seconds"])
        w.writerow([time.strftime("%Y-%m-%d %H:%M:%S"), step, f"{seconds:.1f}"])


def main(argv=None) -> int:
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
        "--extra-runs", nargs="*", default=[], metavar="DIR",
        help="finished run directories to include in the report (e.g. an existing ppo arm)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        ap.error(f"unknown arm(s) {bad}; allowed: {', '.join(ARMS)}")
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
    dirs, walls = [], {}
    for arm in arms:
        config = arm_config(arm, args, teacher if cfg.TrainConfig(arm=arm).uses_teacher else None)
        d = os.path.join(args.out, arm)
        dirs.append(d)
        if rundir.finished(d, config.iterations, len(config.seeds)):
            print(f"{arm}: finished, skipped", flush=True)
            continue
        resume = rundir.is_run_dir(d) and rundir.latest_checkpoint(d) is not None
        if rundir.is_run_dir(d) and not resume:  # started, but killed before its first checkpoint
            import shutil

            shutil.rmtree(d)
        start = time.perf_counter()
        print(f"{arm}: {'resuming' if resume else 'running'} {args.seeds} seeds x {args.iterations} iterations", flush=True)
        train(config, d, resume=resume)
        walls[arm] = time.perf_counter() - start
        record_wall(args.out, arm, walls[arm])
        print(f"{arm}: {walls[arm]:.0f} s", flush=True)
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
        print("wall time this invocation: " + ", ".join(f"{a} {w:.0f} s" for a, w in walls.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
