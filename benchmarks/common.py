"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``).

The timing harness: each function a script compares is a ``Job`` (a jitted function and its
arguments). ``compile_all`` traces, lowers and compiles every job in a thread pool (the compile
wall time is reported, never counted as throughput). ``time_rounds`` calls each job once to warm
up, then times ``repeats`` rounds in which every job runs once (``block_until_ready``), the order
reversed every other round, so that noise on a shared machine hits all of them alike. Reported:
the median time, and ``spread`` (interquartile range / median) as a noise indicator.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jax

import bidijax


def source_fingerprint() -> str:
    """sha1 (12 hex) of bidijax's Python sources and the newest file's mtime: the code measured."""
    root = os.path.dirname(os.path.abspath(bidijax.__file__))
    h, newest = hashlib.sha1(), 0.0
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                with open(path, "rb") as fh:
                    h.update(path[len(root) :].encode() + b"\0" + fh.read())
                newest = max(newest, os.path.getmtime(path))
    return f"{h.hexdigest()[:12]} (newest file {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(newest))})"


def flan_t5_small_shaped(directory: str) -> str:
    """Save a randomly initialised T5 of Flan-T5-small's shape (and a tokenizer) to ``directory``."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from bidijax.teacher.tokenizer import build_tokenizer, save_tokenizer

    tok = build_tokenizer()
    config = T5Config(
        vocab_size=32128, d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6, d_kv=64,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    save_tokenizer(tok, directory)
    return directory


def version(pkg: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "?"


def num_actions(env) -> int:
    return int(env.action_space.maximum) + 1


def print_header(title: str, packages=(), argv=None) -> None:
    """The title, jax and ``packages`` versions, the bidijax sources measured and the command."""
    print(title)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cpu cores)"
        + "".join(f", {p} {version(p)}" for p in packages)
    )
    print(f"bidijax sources: sha1 {source_fingerprint()}")
    print(f"command: {' '.join([os.path.basename(sys.argv[0])] + (sys.argv[1:] if argv is None else list(argv)))}")
    sys.stdout.flush()


class Log:
    """``log(msg)``: a progress line on stderr, stamped with the seconds since start (thread-safe)."""

    def __init__(self):
        self.start = time.perf_counter()
        self._lock = threading.Lock()

    def __call__(self, msg: str) -> None:
        with self._lock:
            print(f"[{time.perf_counter() - self.start:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Timing harness


class Job:
    """A jitted ``fn`` called with ``args``; ``frames``: env steps one call covers (for ``rate``).

    Jobs holding the same ``fn`` object share one compiled executable (their ``args`` must have
    the same shapes and dtypes), e.g. the branches of one ``lax.switch`` picked by an argument.
    """

    def __init__(self, name: str, fn, args: tuple, frames: int = 0):
        self.name, self.fn, self.args, self.frames = name, fn, args, frames
        self.compiled = None
        self.compile_s = float("nan")
        self.times: list[float] = []
        self.out = None  # the last call's output

    def compile(self) -> float:
        t0 = time.perf_counter()
        self.compiled = self.fn.lower(*self.args).compile()
        self.compile_s = time.perf_counter() - t0
        return self.compile_s

    def run(self) -> float:
        """One call of the compiled function; seconds until its output is ready."""
        t0 = time.perf_counter()
        self.out = jax.block_until_ready(self.compiled(*self.args))
        return time.perf_counter() - t0

    @property
    def median(self) -> float:
        return median(self.times)

    @property
    def rate(self) -> float:
        return self.frames / self.median


def compile_all(jobs: list[Job], workers: int, log) -> None:
    """Compile every distinct ``fn`` of ``jobs`` in ``workers`` threads (jobs sharing it, once)."""
    groups: dict[int, list[Job]] = {}
    for j in jobs:
        groups.setdefault(id(j.fn), []).append(j)

    def one(group: list[Job]) -> None:
        s = group[0].compile()
        for j in group[1:]:
            j.compiled, j.compile_s = group[0].compiled, s
        shared = f" (shared by {len(group) - 1} more job(s))" if len(group) > 1 else ""
        log(f"  compiled {group[0].name}{shared} in {s:.1f}s")

    log(f"compiling {len(groups)} function(s) with {workers} worker thread(s) ...")
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(one, groups.values()))


def time_rounds(jobs: list[Job], repeats: int, log, warm: bool = True) -> None:
    """Warm-up call of each job, then ``repeats`` rounds of one timed call of every job, the
    order reversed every other round; the times are appended to ``job.times``."""
    if warm:
        log("warming up ...")
        for j in jobs:
            j.run()
    log(f"timing {repeats} round(s) of {len(jobs)} job(s) ...")
    for r in range(repeats):
        for j in jobs if r % 2 == 0 else jobs[::-1]:
            j.times.append(j.run())


def best_time(fn, repeats: int, warm) -> float:
    """The best of ``repeats`` timed calls of ``fn`` (seconds), after one call of ``warm``."""
    warm()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def median(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def spread(xs) -> float:
    """Interquartile range over the median (min-max range when fewer than 4 values)."""
    if not xs:
        return float("nan")
    if len(xs) < 4:
        return (max(xs) - min(xs)) / statistics.median(xs)
    q = statistics.quantiles(xs, n=4)
    return (q[2] - q[0]) / statistics.median(xs)


def fmt_rate(x: float) -> str:
    """Thousands per second, ``-`` for nan."""
    return f"{x / 1e3:,.1f}k" if x == x else "-"


def print_table(rows: list[list], header: list[str]) -> None:
    """Columns padded to width: the first left-aligned, the others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    line = fmt(header)
    print(line)
    print("-" * len(line))
    for r in rows:
        print(fmt(r))
    sys.stdout.flush()
