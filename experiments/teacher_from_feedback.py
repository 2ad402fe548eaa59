"""The RL -> LM direction in isolation: the default teacher learns from feedback arrays.

Random navigation in BabyAI-GoToRedBallNoDists-v0 (forward twice as likely as each turn, as in
``pretrain_teacher.py``) gives states; their situation keys are the rows of a feedback table in
the student's format (``bidijax.feedback.Feedback``). For every step, the action the random
walker took gets advantage +1 if it is one of the BFS oracle's optimal actions there, else -1;
sums and counts are accumulated per (situation, action) exactly as the student's on-device
aggregation does, so several states sharing a key mix their signals and rarely visited situations
carry few counts.

Three teachers start from the shipped default model (identical weights and seeds):

- ``oracle advantages``: ``update(feedback, keys)`` with the feedback above;
- ``shuffled advantages`` (control): the same +1/-1 values permuted across steps, so they carry
  no information about the oracle;
- ``zero advantages`` (control): the same visits and counts, all advantages 0 (``update`` then
  has no signal and leaves the weights untouched).

After every few updates each teacher re-scores (``rescore``) the training situations and a
held-out set (other environments of the same rollouts); the table shows how often its argmax
action is one of the oracle's optimal actions (over states). Fine-tuning uses the default
``FinetuneConfig`` unless overridden. About 2-3 minutes on 2 shared CPU cores (1 torch thread).

    python experiments/teacher_from_feedback.py [--updates 40] [--every 10] [--envs 96] [--lr 3e-4]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pretrain_teacher import collect, split_envs  # noqa: E402  (random states, as for pretraining)

from bidijax.envs import constants as C  # noqa: E402
from bidijax.feedback import Feedback  # noqa: E402
from bidijax.hints import key64  # noqa: E402
from bidijax.teacher.finetune import FinetuneConfig  # noqa: E402
from bidijax.teacher.hf import HFTeacher  # noqa: E402

TASK = "BabyAI-GoToRedBallNoDists-v0"


def actions_taken(data: dict, seed: int) -> np.ndarray:
    """One action per state, drawn like the random walker's (left, right, forward at 1:1:2).

    The feedback needs an action per state and whether the oracle calls it optimal there.
    """
    rng = np.random.default_rng(seed)
    return rng.choice([C.LEFT, C.RIGHT, C.FORWARD], size=len(data["keys"]), p=[0.25, 0.25, 0.5])


def oracle_advantages(data: dict, actions: np.ndarray) -> np.ndarray:
    """+1 where the action taken is optimal for the oracle, else -1 (one per state)."""
    return np.where(data["oracle"][np.arange(len(actions)), actions], 1.0, -1.0)


def feedback_of(data: dict, actions: np.ndarray, adv: np.ndarray) -> tuple[np.ndarray, Feedback]:
    """``(keys uint32[K, 2], Feedback [K, A])`` over the distinct situations of ``data``'s rows."""
    k64 = key64(data["keys"])
    uniq, first, row = np.unique(k64, return_index=True, return_inverse=True)
    K, A = len(uniq), C.NUM_ACTIONS
    count = np.zeros((K, A), np.float32)
    adv_sum = np.zeros((K, A), np.float32)
    np.add.at(count, (row, actions), 1.0)
    np.add.at(adv_sum, (row, actions), adv)
    td = np.zeros((K, A), np.float32)
    fb = Feedback(
        td_sum=td, adv_sum=adv_sum, count=count, visits=count.sum(1)
    )
    return data["keys"][first], fb


def agreement(teacher: HFTeacher, data: dict) -> float:
    """Fraction of ``data``'s states where the teacher's argmax action is optimal for the oracle."""
    keys = data["keys"]
    teacher.score(keys, data["missions"], data["percepts"])  # prompts of new situations (cached otherwise)
    _, probs = teacher.rescore(keys)
    pick = probs.argmax(axis=1)
    return float(data["oracle"][np.arange(len(pick)), pick].mean())


def ceiling(data: dict) -> float:
    """The best agreement any teacher can reach: per situation, the action optimal in most of its states."""
    _, row = np.unique(key64(data["keys"]), return_inverse=True)
    votes = np.zeros((row.max() + 1, C.NUM_ACTIONS))
    np.add.at(votes, row, data["oracle"])
    return float(data["oracle"][np.arange(len(row)), votes.argmax(axis=1)[row]].mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", type=int, default=96, help="environments with feedback (training)")
    ap.add_argument("--eval-envs", type=int, default=32, help="held-out environments")
    ap.add_argument("--steps", type=int, default=48, help="random steps per environment")
    ap.add_argument("--updates", type=int, default=40, help="teacher.update calls per teacher")
    ap.add_argument("--every", type=int, default=10, help="updates between evaluations")
    ap.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    ap.add_argument("--kl-coef", type=float, default=FinetuneConfig.kl_coef)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1, as the loop: fastest for small models)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    finetune = FinetuneConfig(lr=args.lr, kl_coef=args.kl_coef)

    recs = collect(TASK, 7000 + args.seed, args.envs + args.eval_envs, args.steps)
    train, held = split_envs(recs, args.envs)
    keep = lambda d, m: jax.tree.map(lambda x: x[m], d)
    train = keep(train, train["oracle"].any(axis=1))  # states where the oracle has an optimal action
    held = keep(held, held["oracle"].any(axis=1))
    actions = actions_taken(train, args.seed)
    adv = oracle_advantages(train, actions)
    arms = {
        "oracle advantages": feedback_of(train, actions, adv),
        "shuffled advantages": feedback_of(train, actions, np.random.default_rng(args.seed + 1).permutation(adv)),
        "zero advantages": feedback_of(train, actions, np.zeros_like(adv)),
    }
    n_keys = len(arms["oracle advantages"][0])
    print(
        f"{TASK}: {len(train['keys'])} training states ({n_keys} distinct situations), "
        f"{len(held['keys'])} held-out states; {finetune}"
    )
    print(f"best possible agreement on the training states (a situation's majority optimal action): {ceiling(train):.3f}")

    results = {}
    for name, (keys, fb) in arms.items():
        teacher = HFTeacher("default", seed=args.seed, finetune=finetune)
        torch.manual_seed(args.seed)
        rows = [(0, agreement(teacher, train), agreement(teacher, held), float("nan"), float("nan"), float("nan"))]
        stats = {}
        for u in range(1, args.updates + 1):
            stats = teacher.update(fb, keys)
            if u % args.every == 0 or u == args.updates:
                rows.append((u, agreement(teacher, train), agreement(teacher, held), stats["pg_loss"], stats["kl"], stats["examples_per_s"]))
                print(f"  {name}: update {u}/{args.updates} ({time.time() - start:.0f}s)", flush=True)
        results[name] = rows

    print()
    print(f"{'feedback':20s} {'update':>6s} {'agree(train)':>12s} {'agree(held-out)':>15s} {'pg_loss':>8s} {'kl':>7s} {'ex/s':>6s}")
    for name, rows in results.items():
        for u, a_train, a_held, pg, kl, eps in rows:
            print(f"{name:20s} {u:6d} {a_train:12.3f} {a_held:15.3f} {pg:8.3f} {kl:7.3f} {eps:6.0f}")
    for name, rows in results.items():
        (_, t0, h0, *_), (_, t1, h1, *_) = rows[0], rows[-1]
        print(f"{name}: agreement with the oracle {t0:.3f} -> {t1:.3f} (training states), {h0:.3f} -> {h1:.3f} (held-out)")
    print(f"total time {time.time() - start:.0f}s ({torch.get_num_threads()} torch threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
