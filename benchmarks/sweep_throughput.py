"""One grid three ways: ``bidijax sweep`` (one vmapped program) vs separate processes vs one loop.

The grid: ``--lrs`` learning rates (log-spaced 1e-4 .. 3e-3) x ``--seeds`` seeds of the ``ppo``
arm on BabyAI-GoToRedBallNoDists-v0 at the default preset, ``--iterations`` iterations, i.e.
lrs x seeds runs, compile and start-up included, each way as a fresh Python process:

1. ``sweep``: ``bidijax sweep`` on the grid: every (lr, seed) is a lane of one compiled program.
2. ``separate``: one ``bidijax train --num-seeds 1 --seed S --ppo.lr LR`` process per run. Only
   ``--separate-sample`` of them are timed (the first lrs); the total is their mean x the number
   of runs (stated as an extrapolation in the output).
3. ``loop``: one process calls ``bidijax.loop.train`` once per run (one seed each); the student's
   program compiles once, since the learning rate is a traced value.

Reported: wall time of each way, its ratio to ``sweep``, and each process's peak resident memory
(``wait4``'s ``ru_maxrss``). The sweep's and the loop's final ``eval_success`` are compared per
run as a check that both computed the same thing. Targets (issue: ``bidijax sweep``): sweep <=
0.1x separate, <= 1.0x loop.

    python benchmarks/sweep_throughput.py [--lrs 8 --seeds 8 --iterations 20 --separate-sample 4]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import print_header  # noqa: E402

ENV = "BabyAI-GoToRedBallNoDists-v0"
BIDIJAX = [sys.executable, "-m", "bidijax.cli"]

LOOP_SCRIPT = """
import json, sys
from bidijax import config as cfg
from bidijax.loop import train
runs, iterations, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for k, (lr, seed) in enumerate(runs):
    c = cfg.with_preset(cfg.TrainConfig(), "default", {"lr": lr})
    c = c.replace(env_id=%r, arm="ppo", iterations=iterations, num_seeds=1, seed=seed)
    train(c, f"{out}/run{k:03d}")
""" % ENV


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process (its output discarded)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 2**20


def final_eval(metrics_csv: str, key) -> dict:
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    last = max(int(r["iteration"]) for r in rows)
    return {key(r): float(r["eval_success"]) for r in rows if int(r["iteration"]) == last}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrs", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--separate-sample", type=int, default=4, help="separate processes actually timed")
    ap.add_argument("--skip-loop", action="store_true")
    args = ap.parse_args(argv)
    print_header("bidijax sweep throughput: one vmapped program vs separate processes vs one loop", ["navix"], argv)
    lrs = [float(f"{x:.3g}") for x in np.geomspace(1e-4, 3e-3, args.lrs)]
    runs = [(lr, s) for lr in lrs for s in range(args.seeds)]
    print(f"grid: {args.lrs} learning rates {lrs} x {args.seeds} seeds = {len(runs)} runs of the ppo arm, {ENV}, "
          f"default preset (64 envs x 64 steps), {args.iterations} iterations each")  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="sweep-bench-")
    results = {}

    spec = {
        "base": {"env_id": ENV, "arm": "ppo", "preset": "default", "iterations": args.iterations},
        "seeds": args.seeds, "grid": {"ppo.lr": lrs},
    }  # fmt: skip
    spec_path = os.path.join(tmp, "grid.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    results["sweep"] = timed(BIDIJAX + ["sweep", spec_path, "--out", os.path.join(tmp, "sweep"), "--quiet"])
    print(f"  sweep (one program, {len(runs)} lanes): {results['sweep'][0]:.1f} s, peak RSS {results['sweep'][1]:.2f} GiB", flush=True)

    sample = runs[: args.separate_sample * args.seeds : args.seeds][: args.separate_sample]
    walls, peaks = [], []
    for k, (lr, seed) in enumerate(sample):
        w, m = timed(BIDIJAX + ["train", "--arm", "ppo", "--env", ENV, "--iterations", str(args.iterations),
                                "--num-seeds", "1", "--seed", str(seed), f"--ppo.lr={lr}", "--quiet",
                                "--run-dir", os.path.join(tmp, f"separate{k}")])  # fmt: skip
        walls.append(w)
        peaks.append(m)
        print(f"  separate process {k + 1}/{len(sample)} (lr {lr}, seed {seed}): {w:.1f} s", flush=True)
    results["separate"] = (float(np.mean(walls)) * len(runs), max(peaks))
    print(f"  separate: {np.mean(walls):.1f} s per process x {len(runs)} = {results['separate'][0]:.0f} s "
          f"(extrapolated from {len(sample)} timed processes)", flush=True)  # fmt: skip

    if not args.skip_loop:
        out = os.path.join(tmp, "loop")
        results["loop"] = timed([sys.executable, "-c", LOOP_SCRIPT, json.dumps(runs), str(args.iterations), out])
        print(f"  loop (one process, compiled once): {results['loop'][0]:.1f} s", flush=True)
        swept = final_eval(os.path.join(tmp, "sweep", "metrics.csv"), lambda r: (float(r["ppo.lr"]), int(r["seed"])))
        looped = {}
        for k, (lr, seed) in enumerate(runs):
            looped.update({(lr, seed): v for v in final_eval(os.path.join(out, f"run{k:03d}", "metrics.csv"), lambda r: 0).values()})
        same = sum(swept[r] == looped[r] for r in runs)
        mean = lambda d: np.mean([d[r] for r in runs])
        print(f"  check: final eval_success identical in {same}/{len(runs)} runs; mean over runs {mean(swept):.3f} "
              f"(sweep) vs {mean(looped):.3f} (loop). Programs of different lane counts round differently; "
              "once that flips a sampled action, a run's trajectory diverges (see README)")  # fmt: skip

    print()
    print("| way | wall time (s) | / sweep | peak RSS (GiB) |")
    print("|---|---|---|---|")
    base = results["sweep"][0]
    for name, (wall, rss) in results.items():
        label = {"sweep": f"`bidijax sweep`: one vmapped program of {len(runs)} lanes",
                 "separate": f"{len(runs)} separate `bidijax train` processes (extrapolated)",
                 "loop": f"{len(runs)} runs looped in one process, compiled once"}[name]  # fmt: skip
        print(f"| {label} | {wall:.0f} | {wall / base:.2f}x | {rss:.2f} |")
    print(f"\nsweep / separate = {base / results['separate'][0]:.3f} (target <= 0.1)"
          + (f"; sweep / loop = {base / results['loop'][0]:.2f} (target <= 1.0)" if "loop" in results else ""))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
