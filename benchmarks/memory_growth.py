"""Memory over a long run: resident memory (RSS), live JAX arrays and Python objects per iteration.

Runs a small ``bidirectional`` config (2 seeds of 8 envs x 16 steps on
BabyAI-GoToRedBallNoDists-v0; the scripted ``noisy_oracle`` teacher by default, the shipped LM
with ``--teacher default``) for ``--iterations`` iterations in-process through
``bidijax.loop.train`` (a real run directory: metrics.csv, checkpoints every
``--checkpoint-every``, evaluations every ``--eval-every``), and every ``--every`` iterations,
after a ``gc.collect()``, samples the RSS (``/proc/self/statm``, after ``malloc_trim``),
``len(jax.live_arrays())``, ``len(gc.get_objects())`` (container objects) and
``sys.getallocatedblocks()`` (all Python allocations, e.g. metric rows, which gc does not track).
Prints the samples and the least-squares slope of each over the second half of the run (after the
warm-up and the compiles: table capacity doublings recompile the student), per iteration, and the
growth that slope would add over 2,100 iterations (the reference study's long budget).
``--types``: which object types and array shapes grew over the second half.

Run: ``nice python benchmarks/memory_growth.py`` (500 iterations; a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import source_fingerprint  # noqa: E402

import jax  # noqa: E402

from bidijax import config as cfg  # noqa: E402
from bidijax.loop import train  # noqa: E402

TINY_PPO = dict(num_envs=8, num_steps=16, num_minibatches=2, update_epochs=1, hidden=16, miss_buffer_size=128)
TINY_FINETUNE = dict(steps=1, batch_size=16, rescore_budget=16)


def tiny_config(args) -> cfg.TrainConfig:
    base = cfg.with_preset(cfg.TrainConfig(), "default", TINY_PPO)
    teacher = cfg.TeacherConfig(name=args.teacher, score_batch_size=32, finetune=cfg.FinetuneConfig(**TINY_FINETUNE))
    return base.replace(
        arm=args.arm, teacher=teacher, iterations=args.iterations, num_seeds=args.num_seeds, table_capacity=16,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, eval_episodes=8,
    )  # fmt: skip


def rss_kib() -> float:
    """Resident memory, after glibc returns its free heap pages (``malloc_trim``): what is still
    allocated, not what the allocator kept after a peak (that makes RSS step up at random)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def sample(iteration: int, types: bool = False) -> dict:
    gc.collect()
    objects = gc.get_objects()
    out = dict(iteration=iteration, rss_kib=rss_kib(), arrays=len(jax.live_arrays()), objects=len(objects),
               blocks=sys.getallocatedblocks())  # fmt: skip
    if types:  # objects by type, and live arrays by shape and dtype
        out["by_type"] = collections.Counter(type(o).__qualname__ for o in objects)
        out["by_array"] = collections.Counter(f"{a.dtype}{list(a.shape)}" for a in jax.live_arrays())
    del objects
    return out


def growth(a: collections.Counter, b: collections.Counter, top: int = 8) -> str:
    diff = collections.Counter({k: b[k] - a[k] for k in set(a) | set(b) if b[k] != a[k]})
    items = sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]
    return ", ".join(f"{k} {v:+d}" for k, v in items) or "none"


def slope(xs, ys) -> float:
    """Least-squares slope of ``ys`` over ``xs``."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else float("nan")


def run(config: cfg.TrainConfig, every: int, run_dir: str | None = None, types: bool = False) -> list[dict]:
    """``config`` through ``train`` in a run directory; samples before the first and after every
    ``every``-th iteration (``types``: with counts by type at the half and at the end)."""
    samples = [sample(0)]
    half = config.iterations // 2 // every * every

    def on_iteration(rows, state):
        it = state.iteration
        if it % every == 0 or it == config.iterations:
            samples.append(sample(it, types and it in (half, config.iterations)))

    with tempfile.TemporaryDirectory(prefix="bidijax-memory-") as tmp:
        train(config, run_dir or os.path.join(tmp, "run"), on_iteration=on_iteration)
    return samples


def second_half(samples: list[dict], iterations: int) -> list[dict]:
    """Samples from the half of the run on, but the last (the end's checkpoint and evaluation
    need not fall on the periodic ones)."""
    return [s for s in samples[:-1] if s["iteration"] >= iterations // 2]


def slopes(samples: list[dict], iterations: int) -> dict:
    late = second_half(samples, iterations)
    xs = [s["iteration"] for s in late]
    return {k: slope(xs, [s[k] for s in late]) for k in ("rss_kib", "arrays", "objects", "blocks")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--every", type=int, default=10, help="sample every this many iterations (default: %(default)s)")
    p.add_argument("--teacher", default="noisy_oracle", help="noisy_oracle (default) or default (the shipped LM)")
    p.add_argument("--arm", default="bidirectional")
    p.add_argument("--num-seeds", type=int, default=2)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--run-dir", default=None, help="keep the run here (default: a temporary directory)")
    p.add_argument("--types", action="store_true", help="print which object types and array shapes grew over the second half")
    args = p.parse_args()
    config = tiny_config(args)
    print(f"bidijax {source_fingerprint()}; jax {jax.__version__}; {os.cpu_count()} CPUs")
    print(f"{config.arm} arm, teacher {config.teacher.name}, {config.env_id}, {config.num_seeds} seeds x "
          f"{config.ppo.num_envs} envs x {config.ppo.num_steps} steps, {config.iterations} iterations, checkpoint every "
          f"{config.checkpoint_every}, eval every {config.eval_every}")  # fmt: skip
    start = time.perf_counter()
    samples = run(config, args.every, args.run_dir, args.types)
    wall = time.perf_counter() - start
    print("\n| iteration | RSS (MiB) | live JAX arrays | Python objects (gc) | Python memory blocks |\n|---|---|---|---|---|")
    for s in samples:
        print(f"| {s['iteration']} | {s['rss_kib'] / 1024:.1f} | {s['arrays']} | {s['objects']:,} | {s['blocks']:,} |")
    sl = slopes(samples, config.iterations)
    late = second_half(samples, config.iterations)
    print(f"\nleast-squares slope over iterations {late[0]['iteration']}-{late[-1]['iteration']} ({len(late)} samples):")
    for key, unit in (("rss_kib", "KiB"), ("arrays", "arrays"), ("objects", "objects"), ("blocks", "blocks")):
        print(f"  {key:8s} {sl[key]:+.3f} {unit}/iteration  (x 2,100 iterations: {sl[key] * 2100:+,.0f} {unit})")
    typed = [s for s in samples if "by_type" in s]
    if len(typed) == 2:
        a, b = typed
        print(f"  objects that grew from iteration {a['iteration']} to {b['iteration']}: {growth(a['by_type'], b['by_type'])}")
        print(f"  live arrays that grew: {growth(a['by_array'], b['by_array'])}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
