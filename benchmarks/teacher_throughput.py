"""Teacher throughput: situations scored per second and fine-tuning examples per second.

Two models, both through ``HFTeacher``:

- ``default``: the shipped default teacher (GPT-2-style, 2 layers, 0.44M parameters);
- ``t5-small-shape``: a T5 with Flan-T5-small's shape built from config (d_model 512, d_ff 1024,
  8 + 8 layers, 6 heads, d_kv 64, vocab 32128, gated-gelu, untied head; ~77M parameters) with
  random weights and the shipped word-level tokenizer, saved to a temp dir: speed only. The
  word-level tokenizer gives fewer tokens per prompt than Flan-T5's SentencePiece would.

Prompts are the BabyAI-Text prompts of the initial states of ``--task`` (GoToLocal: several
objects per prompt). For each batch size ``b`` (``--batch-sizes``, default 1 / 32 / 256):

- ``score/s``: ``score_prompts`` on ``max(b, --min-prompts)`` prompts with ``HFTeacher(batch_size=b)``
  (``b`` prompts per forward pass, each expanded to the 7 actions), no cache;
- ``train ex/s``: ``update`` with ``FinetuneConfig(batch_size=b)``, reported by the update itself
  (``examples_per_s``: each example is one situation: forward with gradient over the 7 actions,
  a reference forward, backward, AdamW step), ``max(1, --min-examples // b)`` steps.

With ``--gflops``, for each model the FLOPs of one fine-tuning step at batch ``--gflops-batch``
(one ``update`` with ``steps=1``; counted by ``torch.utils.flop_counter.FlopCounterMode``: the
forward with gradient, the backward and the reference forward of newly seen situations) over its
time (best of ``--repeats``), next to this machine's dense f32 matmul rate (``torch.mm`` of two
2048 x 2048 matrices, best of 5) on the same number of torch threads, measured in the same run.

torch runs on ``--threads`` threads (default 1, as the loop's teachers). One small warm-up call
per cell (2 prompts; a 1-example update), then the best of ``--repeats`` timed runs. Throughput
only: no learning is measured here (see ``experiments/teacher_from_feedback.py``).

    python benchmarks/teacher_throughput.py [--models default,t5-small-shape] [--batch-sizes 1,32,256]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

import jax
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_time, flan_t5_small_shaped, print_header, print_table  # noqa: E402

from bidijax import envs  # noqa: E402
from bidijax.envs import constants as C  # noqa: E402
from bidijax.feedback import Feedback  # noqa: E402
from bidijax.hints import key64  # noqa: E402
from bidijax.teacher.finetune import FinetuneConfig  # noqa: E402
from bidijax.teacher.hf import HFTeacher  # noqa: E402


def situations(task: str, n: int, seed: int = 0):
    """Keys, missions and percepts of ``n`` random initial states of ``task`` (distinct keys)."""
    env = envs.make(task)

    def observe(key):
        state = env.reset(key).state
        p = envs.percept(state)
        m = envs.mission_of(state)
        return envs.situation_key(m, p), m, p

    keys, missions, percepts = jax.device_get(jax.jit(jax.vmap(observe))(jax.random.split(jax.random.PRNGKey(seed), 4 * n)))
    _, first = np.unique(key64(np.asarray(keys)), return_index=True)
    rows = np.sort(first)[:n]
    return jax.tree.map(lambda x: np.asarray(x)[rows], (keys, missions, percepts))


def random_feedback(n: int, seed: int = 0) -> Feedback:
    """Two steps per situation, on two different random actions, with random advantages (speed
    only; two actions so that the per-situation baseline leaves a signal)."""
    rng = np.random.default_rng(seed)
    count = np.zeros((n, C.NUM_ACTIONS), np.float32)
    first = rng.integers(0, 3, n)
    count[np.arange(n), first] = 1.0
    count[np.arange(n), (first + rng.integers(1, 3, n)) % 3] = 1.0
    adv = count * rng.normal(size=count.shape).astype(np.float32)
    zero = np.zeros_like(count)
    return Feedback(td_sum=zero, adv_sum=adv, count=count, visits=count.sum(1))


def measure(path: str, b: int, data, texts: list[str], args) -> tuple[float, float]:
    """``(situations scored per second, fine-tuning examples per second)`` at batch size ``b``."""
    n_score = max(b, args.min_prompts)
    steps = max(1, args.min_examples // b)
    teacher = HFTeacher(path, batch_size=b, finetune=FinetuneConfig(batch_size=b, steps=steps))
    score_s = best_time(lambda: teacher.score_prompts(texts[:n_score]), args.repeats, lambda: teacher.score_prompts(texts[:2]))
    keys, missions, percepts = data
    teacher.score(keys, missions, percepts)  # the teacher learns the prompts of these situations
    feedback = random_feedback(len(keys))
    timed = teacher.finetune
    teacher.finetune = dataclasses.replace(timed, batch_size=1, steps=1)
    teacher.update(feedback, keys)  # warm-up (and the reference copy, made by the first update)
    teacher.finetune = timed
    train = max(teacher.update(feedback, keys)["examples_per_s"] for _ in range(args.repeats))
    return n_score / score_s, train


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Dense f32 matmul GFLOP/s of torch on its current threads (best of ``repeats``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(best_time(lambda: torch.mm(a, b), 1, lambda: None) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def finetune_gflops(path: str, b: int, data, args) -> tuple[float, float, float]:
    """``(GFLOP per step, seconds per step, GFLOP/s)`` of one fine-tuning step at batch ``b``."""
    from torch.utils.flop_counter import FlopCounterMode

    teacher = HFTeacher(path, batch_size=b, finetune=FinetuneConfig(batch_size=b, steps=1, micro_batch_size=min(b, 32)))
    keys, missions, percepts = data
    teacher.score(keys[:b], missions[:b], jax.tree.map(lambda x: x[:b], percepts))
    feedback = random_feedback(b)
    teacher.update(feedback, keys[:b])  # warm-up; every situation's reference row now cached
    counter = FlopCounterMode(display=False)
    with counter:
        teacher.update(feedback, keys[:b])
    flops = counter.get_total_flops()
    seconds = min(best_time(lambda: teacher.update(feedback, keys[:b]), 1, lambda: None) for _ in range(args.repeats))
    return flops / 1e9, seconds, flops / seconds / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="default,t5-small-shape")
    ap.add_argument("--batch-sizes", default="1,32,256")
    ap.add_argument("--task", default="BabyAI-GoToLocal-v0")
    ap.add_argument("--min-prompts", type=int, default=16, help="prompts scored per timed run (at least b)")
    ap.add_argument("--min-examples", type=int, default=8, help="fine-tuning examples per timed update (at least b)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1, as the loop; 0: torch's default)")
    ap.add_argument("--gflops", action="store_true", help="measure the fine-tuning step's GFLOP/s against matmul's instead")
    ap.add_argument("--gflops-batch", type=int, default=64)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    start = time.time()
    data = situations(args.task, max(sizes + [args.min_prompts, args.gflops_batch]))
    texts = envs.prompt(data[1], data[2])
    print_header("Teacher throughput: situations scored/s and fine-tuning examples/s (HFTeacher)", ("torch", "transformers"), argv)
    print(f"torch {torch.get_num_threads()} thread(s)")
    print(f"{len(texts)} distinct {args.task} prompts, ~{np.mean([len(t.split()) for t in texts]):.0f} words each")

    rows = []
    if args.gflops:
        peak = matmul_gflops()
        print(f"dense f32 matmul (torch.mm 2048^2, {torch.get_num_threads()} thread(s)): {peak:.1f} GFLOP/s")
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.models.split(","):
                path = flan_t5_small_shaped(os.path.join(tmp, name)) if name == "t5-small-shape" else name
                gflop, secs, rate = finetune_gflops(path, args.gflops_batch, data, args)
                rows.append([name, args.gflops_batch, f"{gflop:.1f}", f"{secs:.2f}", f"{rate:.1f}", f"{rate / peak:.0%}"])
                print(f"  {name}: {gflop:.1f} GFLOP per step in {secs:.2f} s = {rate:.1f} GFLOP/s", flush=True)
        print()
        print_table(rows, ["model", "batch", "GFLOP per step", "s per step", "GFLOP/s", "/ matmul"])
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "default":
                path = "default"
            elif name == "t5-small-shape":
                path = flan_t5_small_shaped(os.path.join(tmp, name))
            else:
                path = name  # any other model directory or hub id
            for b in sizes:
                score, train = measure(path, b, data, texts, args)
                rows.append((name, b, score, train))
                print(f"  {name} b={b}: {score:.1f} scored/s, {train:.1f} train ex/s ({time.time() - start:.0f}s)", flush=True)

    print()
    print_table([[name, b, f"{score:.1f}", f"{train:.1f}"] for name, b, score, train in rows], ["model", "batch", "scored/s", "train ex/s"])
    print(f"total time {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
