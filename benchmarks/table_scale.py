"""Hint-table cost against its size, up to a million situations.

For each capacity ``K`` (``--sizes``, powers of two up to 2**20), a table holding K - 2,048 random
situations (7 actions), and, each timed side by side in one run (best of ``--repeats`` after a
warm-up):

- ``lookup, 64 keys``: one rollout step of 64 environments (``hints.lookup`` jitted; a binary
  search of log2(K) steps per key), in microseconds;
- ``lookup, 4,096 keys``: a whole default rollout's keys in one call, in microseconds;
- ``merge 1,536 rows``: the host merge of one GoToLocal iteration's new situations per seed
  (``hints.merge``: numpy, the whole table rebuilt), in milliseconds;
- ``touch 4,096 keys``: restamping the rows an update visited (host), in milliseconds;
- the table's bytes on the device (keys 8 B, probabilities 4 B x 7, valid 1 B, stamp 4 B per row).

Ratios are against the smallest size. ``python benchmarks/table_scale.py [--sizes 12,14,16,18,20]``
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

from bidijax import hints as hn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time  # noqa: E402


def best(fn, repeats: int) -> float:
    """Best of ``repeats`` timed calls after one warm-up call of ``fn`` itself."""
    return best_time(fn, repeats, fn)


A = 7


def random_keys(rng, n: int) -> np.ndarray:
    return rng.integers(0, 2**32 - 1, size=(n, 2), dtype=np.uint32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="12,14,16,18,20", help="log2 of the capacities")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    lookup = jax.jit(hn.lookup)
    print("| capacity | rows | lookup, 64 keys (us) | lookup, 4,096 keys (us) | merge 1,536 rows (ms) | touch 4,096 keys (ms) | device MiB |")
    print("|---|---|---|---|---|---|---|")
    first = None
    for log2 in [int(s) for s in args.sizes.split(",")]:
        cap = 2**log2
        n = cap - 2048  # room for one merge
        keys = random_keys(rng, n)
        table = hn.from_rows(keys, np.full((n, A), 1 / A, np.float32), capacity=cap)
        step = jax.device_put(np.concatenate([keys[:32], random_keys(rng, 32)]))  # half hits
        rollout = jax.device_put(np.concatenate([keys[:2048], random_keys(rng, 2048)]))
        t_step = best(lambda: jax.block_until_ready(lookup(table, step)), args.repeats)
        t_roll = best(lambda: jax.block_until_ready(lookup(table, rollout)), args.repeats)
        new, new_p = random_keys(rng, 1536), np.full((1536, A), 1 / A, np.float32)
        t_merge = best(lambda: hn.merge(table, new, new_p), max(3, args.repeats // 4))
        visited = keys[rng.choice(n, 4096)]
        t_touch = best(lambda: hn.touch(table, visited, 1), max(3, args.repeats // 4))
        mib = sum(x.nbytes for x in jax.tree.leaves(table)) / 2**20
        now = (t_step, t_roll, t_merge, t_touch)
        first = first or now
        ratio = lambda i: f" ({now[i] / first[i]:.1f}x)"  # noqa: E731
        print(f"| 2^{log2} | {n:,} | {t_step * 1e6:,.0f}{ratio(0)} | {t_roll * 1e6:,.0f}{ratio(1)} | "
              f"{t_merge * 1e3:,.1f}{ratio(2)} | {t_touch * 1e3:,.1f}{ratio(3)} | {mib:,.1f} |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
