"""Hint coverage and the teachers' cost per iteration on a level, in a real loop.

``python benchmarks/coverage_probe.py ENV ARM ITERATIONS [SCORE_FIRST]`` builds the default run
(default preset, 3 seeds, shipped teacher) for ``ENV`` and ``ARM`` with evaluation off, drives
``bidijax.loop.Loop`` for ``ITERATIONS`` iterations and prints, per iteration for seed 0:
``hint_coverage`` (steps the student learns from that carry a hint), ``acting_coverage`` (steps
whose hint was known while acting), ``scored_first`` (new situations scored before the epochs),
residual ``misses`` and ``miss_overflow``, ``table_rows``, ``student_s``, ``teacher_s`` (both for
all seeds) and ``feedback_oracle_corr``; then the medians of ``student_s`` and ``teacher_s``
after the first two iterations. ``SCORE_FIRST`` (1, default; 0 off) sets ``score_first``.
"""

from __future__ import annotations

import statistics
import sys
import time

from bidijax import config as cfg
from bidijax.loop import Loop

COLUMNS = ("hint_coverage", "acting_coverage", "scored_first", "misses", "miss_overflow", "table_rows",
           "student_s", "teacher_s", "feedback_oracle_corr")  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    env, arm, its = argv[0], argv[1], int(argv[2])
    score_first = len(argv) < 4 or argv[3] == "1"
    c = cfg.default_config().replace(env_id=env, arm=arm, iterations=its, eval_every=10**6, score_first=score_first)
    loop = Loop(c)
    t = time.perf_counter()
    state, info = loop.warmup(loop.init())
    print(f"warm-up {time.perf_counter() - t:.1f} s {info}", flush=True)
    seed0 = []
    for i in range(its):
        state, rows = loop.step(state)
        seed0.append(rows[0])
        print(i + 1, {k: round(rows[0][k], 3) for k in COLUMNS}, flush=True)
    tail = seed0[2:] or seed0
    print(f"median student_s {statistics.median(r['student_s'] for r in tail):.2f}, "
          f"teacher_s {statistics.median(r['teacher_s'] for r in tail):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
