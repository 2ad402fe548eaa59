"""Throughput of the whole loop: ``bidirectional`` vs ``ppo`` arm, and vs a Lamorel-style teacher.

For each teacher (the shipped default LM, and a model of Flan-T5-small's shape built from a
config with random weights: speed only):

1. ``bidirectional`` loop vs ``ppo`` arm, same student config (``--preset``, ``--seeds``), both
   compiled beforehand (one untimed run of each). Then a fresh run of each, their iterations
   interleaved (A, B, A, B, ...) so that machine noise hits both alike. ``steady``: frames of the
   iterations after the first ``--skip`` over their time; ``incl. warm-up``: all frames over the
   time of the warm-up (first rollout scored by the teacher) plus every iteration.
2. Lamorel-style baseline: the same teacher scores the prompt of every step (no cache), batched
   over the environments of a step as Lamorel does; its frames/s is prompts scored per second.
   Reported: bidijax steady frames/s / Lamorel-style frames/s.

Run: ``python benchmarks/loop_throughput.py`` (about 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import source_fingerprint  # noqa: E402

from bidijax import config as cfg  # noqa: E402
from bidijax.loop import Loop  # noqa: E402


def flan_t5_small_shaped(directory: str) -> str:
    """Save a random T5 of Flan-T5-small's shape (~77M parameters) with the default teacher's tokenizer."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    from bidijax.teacher import default_model_path

    tok = AutoTokenizer.from_pretrained(default_model_path())
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    config = T5Config(
        vocab_size=32128, d_model=512, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6, d_kv=64,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=pad,
        eos_token_id=tok.eos_token_id if tok.eos_token_id is not None else 1, decoder_start_token_id=pad,
    )  # fmt: skip
    import torch

    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def measure(config: cfg.TrainConfig, iterations: int, skip: int) -> dict:
    """Interleaved fresh runs of ``config`` (bidirectional) and its ppo arm; frames/s of each."""
    arms = {"bidirectional": config, "ppo": config.replace(arm="ppo")}
    loops = {name: Loop(c) for name, c in arms.items()}
    for loop in loops.values():  # compile: init, warm-up and one iteration, untimed
        s, _ = loop.warmup(loop.init())
        loop.step(s)
    teachers = {"bidirectional": Loop(config).teachers, "ppo": []}  # fresh teachers for the timed runs
    loops = {name: Loop(c, teachers[name]) for name, c in arms.items()}
    states, times, warm = {}, {n: [] for n in arms}, {}
    for name, loop in loops.items():
        t0 = time.perf_counter()
        states[name], _ = loop.warmup(loop.init())
        warm[name] = time.perf_counter() - t0
    frames = config.ppo.frames_per_update * config.num_seeds
    for _ in range(iterations):
        for name, loop in loops.items():
            t0 = time.perf_counter()
            states[name], rows = loop.step(states[name])
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name in arms:
        steady = times[name][skip:]
        out[name] = {
            "steady": frames * len(steady) / sum(steady),
            "median_iteration_s": statistics.median(steady),
            "incl_warmup": frames * iterations / (warm[name] + sum(times[name])),
        }
    out["teacher"] = loops["bidirectional"].teachers[0]
    return out


def lamorel_style(teacher, num_prompts: int, batch: int) -> float:
    """Prompts scored per second when every step's prompt goes through the LM (no cache)."""
    prompts = list(teacher.prompts.values())
    prompts = (prompts * (num_prompts // max(len(prompts), 1) + 1))[:num_prompts]
    teacher.score_prompts(prompts[:batch])  # warm
    t0 = time.perf_counter()
    for i in range(0, num_prompts, batch):
        teacher.score_prompts(prompts[i : i + batch])
    return num_prompts / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="large", choices=sorted(cfg.PRESETS))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--skip", type=int, default=2, help="iterations left out of the steady state")
    p.add_argument("--lamorel-prompts", type=int, default=256)
    p.add_argument("--lamorel-batch", type=int, default=2, help="prompts per LM call (Lamorel's example: 2 envs)")
    p.add_argument("--teachers", default="default,flan-t5-small-shaped")
    args = p.parse_args()
    print(f"bidijax sources {source_fingerprint()}")
    base = cfg.with_preset(cfg.TrainConfig(num_seeds=args.seeds), args.preset)
    print(f"preset {args.preset}: {base.ppo.num_envs} envs x {base.ppo.num_steps} steps x {args.seeds} seed(s) "
          f"= {base.ppo.frames_per_update * args.seeds:,} frames per iteration; {args.iterations} iterations")
    tmp = tempfile.mkdtemp()
    try:
        rows = []
        for name in args.teachers.split(","):
            model = "default" if name == "default" else flan_t5_small_shaped(os.path.join(tmp, "t5"))
            c = base.replace(teacher=cfg.TeacherConfig(name=model))
            r = measure(c, args.iterations, args.skip)
            lam = lamorel_style(r["teacher"], args.lamorel_prompts, args.lamorel_batch)
            rows.append((name, r, lam))
        print()
        print("| teacher | bidirectional steady (frames/s) | ppo arm steady | ratio (target >= 0.85) | "
              "ratio incl. warm-up | Lamorel-style (frames/s) | bidijax / Lamorel-style |")
        print("|---|---|---|---|---|---|---|")
        for name, r, lam in rows:
            b, q = r["bidirectional"], r["ppo"]
            print(f"| {name} | {b['steady']:,.0f} | {q['steady']:,.0f} | {b['steady'] / q['steady']:.2f}x | "
                  f"{b['incl_warmup'] / q['incl_warmup']:.2f}x | {lam:,.1f} | {b['steady'] / lam:,.0f}x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
