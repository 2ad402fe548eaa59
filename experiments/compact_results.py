"""Shrink a finished study's metrics files to the rows worth committing.

A long study logs one row per seed per iteration (the 2,100-iteration study: ~12 MB per arm).
Its comparisons only read the evaluation iterations, so for each ``metrics.csv`` under DIR this
keeps the rows whose ``iteration`` is a multiple of ``--every`` (the study's ``--eval-every``), the
first and the last ``--edge`` iterations (teacher agreement start -> end), and moves the full file
to ``metrics.full.csv`` beside it (git-ignored), so nothing is lost. Run again, it re-derives the
compact file from ``metrics.full.csv``. ``bidijax report DIR/sweep`` on the compact files gives the
same ``eval_*`` summaries as on the full ones (evaluation columns are empty elsewhere).

    python experiments/compact_results.py experiments/results/study-2100 --every 25
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys

from bidijax import rundir

FULL = "metrics.full.csv"


def keep_rows(rows: list[dict], every: int, edge: int) -> list[dict]:
    """The rows at multiples of ``every`` and within ``edge`` iterations of either end."""
    its = sorted({int(r["iteration"]) for r in rows})
    if not its:
        return []
    first, last = its[0], its[-1]
    keep = {i for i in its if i % every == 0 or i < first + edge or i > last - edge}
    return [r for r in rows if int(r["iteration"]) in keep]


def _read(path: str) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames or [], list(reader)


def compact(path: str, every: int, edge: int) -> tuple[int, int]:
    """Compact one ``metrics.csv`` in place (full copy kept); returns (rows kept, rows in full)."""
    full = os.path.join(os.path.dirname(path), FULL)
    if not os.path.exists(full):
        os.replace(path, full)
    fields, rows = _read(full)
    kept = keep_rows(rows, every, edge)
    if os.path.exists(path) and len(_read(path)[1]) != len(kept):  # rows appended after compacting
        raise ValueError(f"{path} does not match the compact rows of {FULL} beside it; merge them first")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(kept)
    rundir.write_atomic(path, text.getvalue())
    return len(kept), len(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="a study directory (every metrics.csv below it is compacted)")
    ap.add_argument("--every", type=int, default=25, help="keep iterations that are multiples of this")
    ap.add_argument("--edge", type=int, default=5, help="keep this many first and last iterations")
    args = ap.parse_args(argv)
    if args.every < 1 or args.edge < 0:
        ap.error(f"--every must be >= 1 and --edge >= 0, got {args.every} and {args.edge}")
    if not os.path.isdir(args.dir):
        ap.error(f"{args.dir!r} is not a directory")
    found = 0
    for root, _, files in sorted(os.walk(args.dir)):
        if "metrics.csv" in files or FULL in files:
            path = os.path.join(root, "metrics.csv")
            try:
                kept, total = compact(path, args.every, args.edge)
            except ValueError as err:
                ap.error(str(err))
            print(f"{path}: {kept} of {total} rows kept")
            found += 1
    if not found:
        ap.error(f"no metrics.csv under {args.dir!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
