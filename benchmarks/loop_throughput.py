"""Throughput of the whole loop: ``bidirectional`` vs ``ppo`` arm, and vs a Lamorel-style teacher.

For each teacher (the shipped default LM, and a model of Flan-T5-small's shape built from a
config with random weights: speed only):

1. ``bidirectional`` loop (synchronous, and with ``overlap``: the teachers work on the previous
   update's feedback while the student's next update runs) vs ``ppo`` arm, same student config
   (``--preset``, ``--seeds``; ``--arms`` also offers ``one_way``), all compiled beforehand (one
   untimed run of each with the oracle teacher: same compiled student functions). Then a fresh
   run of each, their iterations interleaved (A, B, C, A, B, C, ...) so that machine noise hits
   all alike. ``steady``: frames of the
   iterations after the first ``--skip`` over their time; ``incl. warm-up``: all frames over the
   time of the warm-up (first rollout scored by the teacher) plus every iteration.
2. Lamorel-style baseline: the same teacher scores the prompt of every step (no cache), batched
   over the environments of a step as Lamorel does; its frames/s is prompts scored per second.
   Reported: bidijax steady frames/s / Lamorel-style frames/s.
3. ``--turn-seeds 1,16``: the teachers' turn (``teacher_s``: fine-tune, re-score, score misses)
   of the default teacher against the number of seeds, for each ``--backends`` (``jax``: every
   seed in one vmapped program; ``torch``: one ``HFTeacher`` per seed), in a bidirectional run at
   ``--preset``: median over the iterations after ``--skip``, and its ratio to one seed's.

Run: ``python benchmarks/loop_throughput.py`` (about 10 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import flan_t5_small_shaped, source_fingerprint  # noqa: E402

from bidijax import config as cfg  # noqa: E402
from bidijax.loop import Loop  # noqa: E402


ARMS = {
    "bidirectional": lambda c: c,
    "overlap": lambda c: c.replace(overlap=True),
    "one_way": lambda c: c.replace(arm="one_way"),
    # the "update less often" lever: fine-tune on every 4th update (the summed feedback)
    "every4": lambda c: c.replace(teacher=dataclasses.replace(c.teacher, finetune=dataclasses.replace(c.teacher.finetune, update_every=4))),
    "ppo": lambda c: c.replace(arm="ppo"),
}
CHOICES = ", ".join(a for a in ARMS if a != "ppo")  # the arms compared with the ppo arm
LABELS = {"ppo": "ppo arm", "bidirectional": "bidirectional", "overlap": "bidirectional, overlap", "one_way": "one_way",
          "every4": "bidirectional, update_every=4"}


def measure(config: cfg.TrainConfig, iterations: int, skip: int, names: list[str]) -> dict:
    """Interleaved fresh runs of ``config`` in the arms ``names`` and its ppo arm; frames/s of each."""
    arms = {name: ARMS[name](config) for name in [*names, "ppo"]}
    # compile, untimed: init, warm-up and two iterations of each arm with the oracle teacher (the
    # student's compiled functions are shared by every Loop with the same student config, so the
    # LM teacher's own runs below compile nothing, and a slow teacher costs no extra iterations)
    oracle = cfg.TeacherConfig(name="oracle")
    for c in arms.values():
        loop = Loop(c.replace(teacher=oracle))
        s, _ = loop.warmup(loop.init())
        s, _ = loop.step(loop.step(s)[0])
        loop.evaluate(s.runners, 0)  # the student evaluation's program too (every eval_every iterations)
    loops = {name: Loop(c) for name, c in arms.items()}
    states, times, warm = {}, {n: [] for n in arms}, {}
    for name, loop in loops.items():
        t0 = time.perf_counter()
        states[name], _ = loop.warmup(loop.init())
        warm[name] = time.perf_counter() - t0
    frames = config.ppo.frames_per_update * config.num_seeds
    rows_of = {n: [] for n in arms}
    for _ in range(iterations):
        for name, loop in loops.items():
            t0 = time.perf_counter()
            states[name], rows = loop.step(states[name])
            times[name].append(time.perf_counter() - t0)
            rows_of[name].append(rows[0])
    out = {}
    for name in arms:
        steady = times[name][skip:]
        out[name] = {
            "steady": frames * len(steady) / sum(steady),
            "median_iteration_s": statistics.median(steady),
            "incl_warmup": frames * iterations / (warm[name] + sum(times[name])),
        }
    group = loops[names[0]].teachers
    out["prompts"] = list((group.prompts[0] if hasattr(group, "prompts") else group[0].prompts).values())
    out["teacher_s"] = {n: statistics.median(r["teacher_s"] for r in rows_of[n][skip:]) for n in names}
    out["warmup_s"] = warm
    return out


def lamorel_style(model: str, prompts: list[str], num_prompts: int, batch: int) -> float:
    """Prompts scored per second when every step's prompt goes through the LM (torch, no cache)."""
    from bidijax.teacher import HFTeacher

    teacher = HFTeacher(model)
    prompts = (prompts * (num_prompts // max(len(prompts), 1) + 1))[:num_prompts]
    teacher.score_prompts(prompts[:batch])  # warm
    t0 = time.perf_counter()
    for i in range(0, num_prompts, batch):
        teacher.score_prompts(prompts[i : i + batch])
    return num_prompts / (time.perf_counter() - t0)


def turn_scaling(args, base: cfg.TrainConfig) -> None:
    """Median teacher turn per iteration against seeds and backends (see the module docstring)."""
    seeds = [int(x) for x in args.turn_seeds.split(",")]
    backends = args.backends.split(",")
    states, loops, times = {}, {}, {}
    for backend in backends:
        for n in seeds:
            teacher = cfg.TeacherConfig(name="default", backend=backend)
            loops[backend, n] = Loop(base.replace(num_seeds=n, teacher=teacher, eval_every=10**6))
            states[backend, n], _ = loops[backend, n].warmup(loops[backend, n].init())
            times[backend, n] = []
    for _ in range(args.iterations):  # interleaved: machine noise hits every configuration alike
        for key, loop in loops.items():
            states[key], rows = loop.step(states[key])
            times[key].append(rows[0]["teacher_s"])
    print("| backend | seeds | teacher turn per iteration (s) | / 1 seed |")
    print("|---|---|---|---|")
    for backend in backends:
        one = statistics.median(times[backend, seeds[0]][args.skip:])
        for n in seeds:
            t = statistics.median(times[backend, n][args.skip:])
            print(f"| {backend} | {n} | {t:.2f} | {t / one:.1f}x |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="large", choices=sorted(cfg.PRESETS))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--num-steps", type=int, default=0, help="override the preset's steps per environment")
    p.add_argument("--iterations", type=int, default=6)
    p.add_argument("--skip", type=int, default=2, help="iterations left out of the steady state")
    p.add_argument("--lamorel-prompts", type=int, default=256)
    p.add_argument("--lamorel-batch", type=int, default=2, help="prompts per LM call (Lamorel's example: 2 envs)")
    p.add_argument("--teachers", default="default,flan-t5-small-shaped")
    p.add_argument("--arms", default="bidirectional,overlap", help=f"compared with the ppo arm: some of {CHOICES}")
    p.add_argument("--turn-seeds", default="", help="e.g. 1,16: measure the teachers' turn against seeds instead")
    p.add_argument("--backends", default="jax,torch", help="teacher backends for --turn-seeds")
    args = p.parse_args()
    names = [a for a in args.arms.split(",") if a]
    bad = [a for a in names if a not in ARMS or a == "ppo"]
    if bad or not names:
        p.error(f"--arms {args.arms!r}: use some of {CHOICES}")
    print(f"bidijax sources {source_fingerprint()}")
    steps = {"num_steps": args.num_steps} if args.num_steps else None
    base = cfg.with_preset(cfg.TrainConfig(num_seeds=args.seeds), args.preset, steps)
    print(f"preset {args.preset}: {base.ppo.num_envs} envs x {base.ppo.num_steps} steps x {args.seeds} seed(s) "
          f"= {base.ppo.frames_per_update * args.seeds:,} frames per iteration; {args.iterations} iterations")
    if args.turn_seeds:
        turn_scaling(args, base)
        return
    tmp = tempfile.mkdtemp()
    try:
        rows = []
        for name in args.teachers.split(","):
            model = "default" if name == "default" else flan_t5_small_shaped(os.path.join(tmp, "t5"))
            c = base.replace(teacher=cfg.TeacherConfig(name=model))
            r = measure(c, args.iterations, args.skip, names)
            lam = lamorel_style(model, r["prompts"], args.lamorel_prompts, args.lamorel_batch)
            rows.append((name, r, lam))
            for arm in names:
                print(f"{name}, {LABELS[arm]}: warm-up {r['warmup_s'][arm]:.1f} s, median teacher time per "
                      f"iteration {r['teacher_s'][arm]:.2f} s", flush=True)
        print()
        print("| teacher | loop | frames/s steady | / ppo arm steady (target >= 0.85) | / ppo arm incl. warm-up | "
              "median iteration (s) | / Lamorel-style |")
        print("|---|---|---|---|---|---|---|")
        for name, r, lam in rows:
            q = r["ppo"]
            for arm in ("ppo", *names):
                b = r[arm]
                print(f"| {name} | {LABELS[arm]} | {b['steady']:,.0f} | {b['steady'] / q['steady']:.2f}x | "
                      f"{b['incl_warmup'] / q['incl_warmup']:.2f}x | {b['median_iteration_s']:.2f} | "
                      f"{b['steady'] / lam:,.0f}x |")
            print(f"| {name} | Lamorel-style (every step's prompt scored) | {lam:,.1f} | | | | 1x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
