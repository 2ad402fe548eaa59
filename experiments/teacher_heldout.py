"""The teachers at the end of runs, on held-out states: did the student's feedback repair them?

``teacher_oracle_agreement`` in metrics.csv is measured on the situations the student visits, so
it moves when the student moves (``one_way``'s frozen teacher "improves" as its student reaches
easier states). This script removes that confound: it scores each seed's teacher from a run's
last checkpoint (``teacher-<i>/model.safetensors``) on the fixed held-out states of
``experiments/pretrain_teacher.py`` (same rollouts, seeds and split; one task) and reports how
often its argmax action is one of the BFS oracle's optimal actions (``teacher_oracle``, the
``teacher=oracle`` column of pretrain_teacher), the mean probability it puts on the optimal
actions (``oracle_mass``), on its argmax (``max_prob``) and on left/right/forward
(``move_mass``), next to the run's starting teacher (its ``teacher.name``) on the same states.
Per run: IQM and mean over seeds with 95% stratified bootstrap CIs (``bidijax.report``). Writes
``--out`` (CSV, one row per run and seed; seed ``start``: the starting teacher).

Needs the run's checkpoints (not kept in git).

    python experiments/teacher_heldout.py experiments/results/study-40-noise0.6/bidirectional \\
        --out experiments/results/study-40-noise0.6/teacher_heldout.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile

import numpy as np

import pretrain_teacher as pt  # experiments/, beside this script
from bidijax import report, rundir
from bidijax.envs import constants as C
from bidijax.teacher import HFTeacher
from bidijax.teacher.models import resolve_model

MOVES = (C.LEFT, C.RIGHT, C.FORWARD)  # every optimal action of a GoTo level is one of these
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def held_out(task: str, seed: int, envs: int, eval_envs: int, steps: int):
    """The held-out states of ``pretrain_teacher`` for ``task`` (with an optimal action):
    ``(keys, missions, percepts, oracle)``."""
    i = pt.TASKS.index(task)
    recs = pt.collect(task, 1000 * seed + i, envs + eval_envs, steps)
    _, d = pt.split_envs(recs, envs)
    rows = np.flatnonzero(d["oracle"].any(axis=1))
    return pt.situations(d, rows) + (d["oracle"][rows],)


def quality(model_dir: str, states) -> dict:
    """``teacher_oracle``: argmax is an optimal action; ``oracle_mass``: mean probability on the
    optimal actions; ``max_prob``: mean probability of the argmax (how confident the hints are);
    ``move_mass``: mean probability on left, right and forward (the rest never helps in GoTo)."""
    keys, missions, percepts, oracle = states
    _, probs = HFTeacher(model_dir).score(keys, missions, percepts)
    probs = np.asarray(probs, np.float64)
    pick = probs.argmax(axis=1)
    return dict(
        teacher_oracle=float(oracle[np.arange(len(keys)), pick].mean()),
        oracle_mass=float((probs * oracle[:, : probs.shape[1]]).sum(axis=1).mean()),
        max_prob=float(probs.max(axis=1).mean()),
        move_mass=float(probs[:, list(MOVES)].sum(axis=1).mean()),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories (teacher arms) with checkpoints")
    ap.add_argument("--task", default="BabyAI-GoToRedBallNoDists-v0", choices=pt.TASKS)
    ap.add_argument("--seed", type=int, default=0, help="pretrain_teacher's --seed (the held-out states)")
    ap.add_argument("--envs", type=int, default=128)
    ap.add_argument("--eval-envs", type=int, default=64)
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--out", required=True, help="CSV file")
    args = ap.parse_args(argv)
    states = held_out(args.task, args.seed, args.envs, args.eval_envs, args.steps)
    print(f"{args.task}: {len(states[0])} held-out states", flush=True)
    rows = []
    for run in args.runs:
        config = rundir.read_config(run)
        ckpt = rundir.latest_checkpoint(run)
        if ckpt is None:
            ap.error(f"{run!r} has no checkpoint")
        base = resolve_model(config["teacher"]["name"])
        start = quality(base, states)
        it = int(os.path.basename(ckpt).split("-")[-1])
        info = dict(run=run, arm=config["arm"], teacher=config["teacher"]["name"])
        rows.append(dict(info, seed="start", iteration=0, **start))
        ends = []
        with tempfile.TemporaryDirectory(prefix="teacher-heldout-") as tmp:
            for name in MODEL_FILES:
                if os.path.exists(os.path.join(base, name)):
                    shutil.copy(os.path.join(base, name), tmp)
            for i in range(config["num_seeds"]):
                shutil.copy(os.path.join(ckpt, f"teacher-{i}", "model.safetensors"), os.path.join(tmp, "model.safetensors"))
                q = quality(tmp, states)
                ends.append(q)
                rows.append(dict(info, seed=config["seed"] + i, iteration=it, **q))
                print(f"  {run} seed {config['seed'] + i}: " + ", ".join(f"{k} {v:.3f}" for k, v in q.items()), flush=True)
        for key in ("teacher_oracle", "oracle_mass", "max_prob", "move_mass"):
            x = np.array([q[key] for q in ends])
            est = report.interval_estimates({run: x})[run]
            print(
                f"{run} {key}: start {start[key]:.3f} -> iteration {it}: IQM {est['iqm'][0]:.3f} [{est['iqm'][1]:.3f}, "
                f"{est['iqm'][2]:.3f}], mean {est['mean'][0]:.3f} [{est['mean'][1]:.3f}, {est['mean'][2]:.3f}], "
                f"min {x.min():.3f}, max {x.max():.3f}, {int((x > start[key]).sum())}/{len(x)} seeds above the start",
                flush=True,
            )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
