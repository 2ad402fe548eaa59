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

    python experiments/paper_study.py --iterations 40 --seeds 16 --out experiments/results/study-40
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

from bidijax import config as cfg
from bidijax import report, rundir
from bidijax.loop import train
from bidijax.plot import plot_runs

ARMS = ("ppo", "one_way", "bidirectional", "teacher_only")


def arm_config(arm: str, args) -> cfg.TrainConfig:
    base = cfg.with_preset(cfg.TrainConfig(), args.preset)
    return cfg.resolve(
        base.replace(
            env_id=args.env, arm=arm, iterations=args.iterations, num_seeds=args.seeds, seed=args.first_seed,
            eval_every=args.eval_every, eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every,
        )
    )  # fmt: skip


def finished(run_dir: str, config: cfg.TrainConfig) -> bool:
    rows = rundir.read_metrics(run_dir) if rundir.is_run_dir(run_dir) else []
    return sum(int(r["iteration"]) == config.iterations for r in rows) == config.num_seeds


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
    args = ap.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        ap.error(f"unknown arm(s) {bad}; allowed: {', '.join(ARMS)}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "commands.txt"), "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} python {' '.join(sys.argv)}\n")
    dirs, walls = [], {}
    for arm in arms:
        config = arm_config(arm, args)
        d = os.path.join(args.out, arm)
        dirs.append(d)
        if finished(d, config):
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
        print(f"{arm}: {walls[arm]:.0f} s", flush=True)
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
