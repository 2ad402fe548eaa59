"""The JAX teacher's scoring of new situations: prompts per second against chunk size and order.

``GPT2Teachers`` scores a turn's new situations in chunks of ``chunk`` prompts (``--teacher.score-batch-size``),
each chunk left-padded to its longest prompt (rounded up to 16 tokens). This script takes the
BabyAI-Text prompts of ``--prompts`` distinct random initial states of ``--task`` (GoToLocal by
default: prompts of 30-140 tokens), and for each chunk size times the scoring of all of them by
the shipped default teacher (``GPT2Teachers._reference_rows``, the path of every situation a
teacher meets first) two ways, side by side in one run:

- ``arrival``: chunks in the order the situations arrive (what the scorer did before it sorted);
- ``by length``: chunks of prompts sorted by token count (what it does now), so a chunk pads
  little.

Both orders are warmed up first (every padded shape compiled), then each is timed ``--repeats``
times, alternating; the best time is kept. Prints ms per prompt, the padded tokens per prompt,
and the speed-up of ``by length`` over ``arrival``.

    python benchmarks/jax_scoring.py [--task BabyAI-GoToLocal-v0] [--prompts 1024] [--chunks 16,32,64,128]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from teacher_throughput import situations  # noqa: E402

from bidijax.hints import key64  # noqa: E402
from bidijax.teacher.batched import LENGTH_BUCKET, GPT2Teachers, _bucket  # noqa: E402


def padded_tokens(lengths: list[int], chunk: int) -> float:
    """Tokens per prompt the chunks compute, padding included."""
    total = sum(_bucket(max(lengths[i : i + chunk]), LENGTH_BUCKET) * len(lengths[i : i + chunk]) for i in range(0, len(lengths), chunk))
    return total / len(lengths)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="BabyAI-GoToLocal-v0")
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--chunks", default="16,32,64,128")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    keys, missions, percepts = situations(args.task, args.prompts)
    print(f"{args.task}: {len(keys)} distinct initial-state prompts, default teacher, JAX backend")
    print("| chunk | order | padded tokens per prompt | ms per prompt | speed-up |")
    print("|---|---|---|---|---|")
    for chunk in [int(c) for c in args.chunks.split(",")]:
        teacher = GPT2Teachers("default", seeds=[0], chunk=chunk)
        teacher.score([(keys, missions, percepts)])  # prompts and token ids of every situation
        k64 = key64(np.asarray(keys)).tolist()
        by_length = teacher._by_length
        arrival = lambda ks: np.arange(len(ks))  # noqa: E731
        orders = {"arrival": arrival, "by length": by_length}
        best = {}
        for name, order in orders.items():  # warm-up: compile every padded shape of this order
            teacher._by_length = order
            teacher._reference_rows(k64, 1.0)
        for _ in range(args.repeats):
            for name, order in orders.items():
                teacher._by_length = order
                t0 = time.perf_counter()
                teacher._reference_rows(k64, 1.0)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
        for name, order in orders.items():
            lengths = [len(teacher._ids[k64[j]]) for j in order(k64)]
            speed = f"{best['arrival'] / best[name]:.2f}x" if name == "by length" else "1.00x"
            print(f"| {chunk} | {name} | {padded_tokens(lengths, chunk):.0f} | {1e3 * best[name] / len(k64):.2f} | {speed} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
