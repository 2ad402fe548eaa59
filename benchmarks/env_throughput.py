"""Random-policy environment throughput: navix step vs step + percept + situation key.

Measures environment steps per second (``num_envs * T / seconds``) of a jitted function that
runs ``T`` steps of ``num_envs`` vmapped environments under ``jax.lax.scan`` with uniformly
random actions (navix's lazy autoreset included), side by side for:

* ``BabyAI-GoToRedBallNoDists-v0``: bidijax's BabyAI GoTo level (8x8 room, walls included,
  one red ball, MiniGrid 7x7 egocentric image with occlusion as observation, 64 steps max);
* ``Navix-DoorKey-5x5-v0``: navix's DoorKey through ``bidijax.envs.make`` (full-grid symbolic
  observation, MiniGrid's 250 steps max);
* ``navix Empty-8x8 1st-person``: ``navix.make("Navix-Empty-8x8-v0", max_steps=64,
  observation_fn=navix.observations.symbolic_first_person)``, navix's own 8x8 single room
  (walls included, a goal square) with a 7x7 egocentric symbolic view (no occlusion): the
  native navix reference the BabyAI rows are compared with.

Two variants per (env, num_envs): ``plain`` (step only) and ``+percept+key`` (every step's
new state also goes through ``bidijax.envs.perception`` and ``situation_key``; the keys are
summed into the scan carry so XLA cannot drop them). Aim: percept + key cost under 30% of the
step time, i.e. ``(t_with - t_plain) / t_plain < 0.30``.

Method: the harness of ``common.py`` (compile in ``--workers`` threads, compile time excluded;
one warm-up call; ``--repeats`` round-robin rounds over every env and variant; medians, with the
interquartile range / median as noise; the overhead from the fastest calls is shown too, as a
cross-check). ``T`` is ``--env-steps // num_envs`` (at least ``--min-steps``), so every timed call
does about the same work. By default one compiled function per (env, num_envs) serves both
variants (a ``lax.switch`` on an unbatched index, so the plain run does not execute the percept
branch): one compile instead of two. ``--separate`` compiles each variant on its own (lets XLA
fuse the percept with the step).

``--breakdown`` also times, at ``--breakdown-size`` envs, cumulative stages of the percept
pipeline (scene_of, view gather without occlusion, view with occlusion, full percept, full
percept + situation key; for BabyAI also the percept of the step's own observation image) and
the step with its autoreset compiled away, to show where the time goes.

    python benchmarks/env_throughput.py              # default: 64 / 1024 / 4096 envs
    python benchmarks/env_throughput.py --quick      # smoke run
    python benchmarks/env_throughput.py --breakdown  # + per-stage percept profile
    python benchmarks/env_throughput.py --no-main --breakdown --breakdown-size 1024 4096
"""

from __future__ import annotations

import argparse
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import navix as nx
import numpy as np

import bidijax.envs as be
from bidijax.envs import perception as percept_mod
from bidijax.envs import view as view_mod
from common import Job, Log, compile_all, fmt_rate, num_actions, print_header, print_table, spread, time_rounds

AIM = 0.30
BABYAI_ID = "BabyAI-GoToRedBallNoDists-v0"
NATIVE = "navix Empty-8x8 1st-person"
NO_RESET = "step without autoreset"
KEY = jax.random.key(0)  # the random actions: the same every call, so every call does the same work


def _env_specs() -> dict:
    """name -> (description, factory). The first entry is compared with ``NATIVE``."""
    return {
        BABYAI_ID: (
            "bidijax BabyAI GoTo: 8x8 room incl. walls, 1 red ball, obs = MiniGrid 7x7 egocentric image "
            "with occlusion, max_steps 64",
            lambda: be.make(BABYAI_ID),
        ),
        "Navix-DoorKey-5x5-v0": (
            "navix DoorKey 5x5 via bidijax.envs.make: obs = full-grid symbolic, max_steps 250",
            lambda: be.make("Navix-DoorKey-5x5-v0"),
        ),
        NATIVE: (
            'navix.make("Navix-Empty-8x8-v0", max_steps=64, observation_fn=symbolic_first_person): native '
            "navix 8x8 single room incl. walls, 1 goal, obs = 7x7 egocentric symbolic view (no occlusion)",
            lambda: nx.make("Navix-Empty-8x8-v0", max_steps=64, observation_fn=nx.observations.symbolic_first_person),
        ),
    }


# ---------------------------------------------------------------------------------------------
# What is computed on each step's new timestep (vmapped over envs), reduced to uint32[2]


def _fold(x: jax.Array) -> jax.Array:
    """Sum of every element of ``x`` (any int/bool dtype) as ``uint32[2]``: cheap and unskippable."""
    s = jnp.sum(x.astype(jnp.uint32))
    return jnp.stack([s, s])


def _key_of_state(state) -> jax.Array:
    return be.situation_key(be.mission_of(state), be.percept(state))


def _stage_key(ts) -> jax.Array:
    return jnp.sum(jax.vmap(_key_of_state)(ts.state), axis=0, dtype=jnp.uint32)


def _stage_scene(ts) -> jax.Array:
    sc = jax.vmap(be.scene_of)(ts.state)
    return _fold(sc.cells) + _fold(sc.agent_pos) + _fold(sc.agent_dir) + _fold(sc.carrying)


def _stage_view_noocc(ts) -> jax.Array:
    # MiniGrid view gather only: occlusion replaced (at trace time) by "everything visible"
    with mock.patch.object(view_mod, "visibility", lambda image: jnp.ones(image.shape[:2], bool)):
        img = jax.vmap(lambda s: be.egocentric_view(be.scene_of(s)))(ts.state)
    return _fold(img)


def _stage_view(ts) -> jax.Array:
    return _fold(jax.vmap(lambda s: be.egocentric_view(be.scene_of(s)))(ts.state))


def _stage_percept(ts) -> jax.Array:
    words = jax.vmap(lambda s: percept_mod.percept_words(be.mission_of(s), be.percept(s)))(ts.state)
    return _fold(words)


def _stage_key_from_obs(ts) -> jax.Array:
    # BabyAI only: the step's observation already is MiniGrid's image; percept it directly
    def one(obs, state):
        p = be.percept_from_image(obs["image"], be.scene_of(state).carrying)
        return be.situation_key(be.mission_of(state), p)

    return jnp.sum(jax.vmap(one)(ts.observation, ts.state), axis=0, dtype=jnp.uint32)


def _stages(env_name: str, obs) -> list[tuple[str, object]]:
    stages = [
        ("step only", None),
        ("+ scene_of", _stage_scene),
        ("+ view gather, no occlusion", _stage_view_noocc),
        ("+ view (gather + occlusion)", _stage_view),
        ("+ percept (view, walls, object slots)", _stage_percept),
        ("+ percept + situation_key", _stage_key),
    ]
    if isinstance(obs, dict) and "image" in obs and tuple(obs["image"].shape[-3:]) == (7, 7, 3):
        stages.append(("+ percept_from_image(obs) + key", _stage_key_from_obs))
    return stages


def _no_reset(env):
    """``env.step`` with the autoreset compiled away: the episode-ended flag is replaced by an
    unbatched constant 0, so XLA folds the reset/step selection (cond or where) to the transition
    and drops the reset. Episodes then run past their end; the cost per step is what matters."""

    def step(ts, action):
        return env.step(ts.replace(step_type=np.int32(0)), action)

    return step


# ---------------------------------------------------------------------------------------------
# Benchmark functions


def _make_run(env, num_envs: int, steps: int, branches: list, step_fn=None):
    """jit(run)(timestep, key, idx): ``steps`` vmapped steps; branch ``idx`` of ``branches``
    (None = nothing) is applied to each new timestep and summed into the carry."""
    n_act = num_actions(env)
    fns = [(lambda ts: jnp.zeros(2, jnp.uint32)) if f is None else f for f in branches]
    step_fn = env.step if step_fn is None else step_fn

    def run(timestep, key, idx):
        def body(carry, k):
            ts, acc = carry
            actions = jax.random.randint(k, (num_envs,), 0, n_act)
            ts = jax.vmap(step_fn)(ts, actions)
            if len(fns) == 1:
                extra = fns[0](ts)
            else:
                extra = jax.lax.switch(idx, fns, ts)
            return (ts, acc + extra), None

        (timestep, acc), _ = jax.lax.scan(body, (timestep, jnp.zeros(2, jnp.uint32)), jax.random.split(key, steps))
        return timestep, acc

    return jax.jit(run)


def _variants(name: str, n: int, steps: int, ts0, fn, labels: list[str]) -> dict[str, Job]:
    """label -> Job calling ``fn`` (a ``_make_run``) with branch index i; they share one compile."""
    return {v: Job(f"{name} N={n} {v}", fn, (ts0, KEY, jnp.int32(i)), n * steps) for i, v in enumerate(labels)}


def _initial_timesteps(envs: dict, sizes: list[int], workers: int, log) -> dict:
    """(env, N) -> batched initial timestep: one jitted reset per env at max(sizes), sliced."""
    nmax = max(sizes)
    keys = jax.random.split(jax.random.key(1), nmax)
    resets = {name: Job(f"reset {name} x{nmax}", jax.jit(jax.vmap(env.reset)), (keys,)) for name, env in envs.items()}
    compile_all(list(resets.values()), workers, log)
    init = {}
    for name, j in resets.items():
        j.run()
        for n in sizes:
            init[(name, n)] = jax.block_until_ready(jax.tree.map(lambda x: x[:n], j.out))
    return init


def _steps_for(args, n: int) -> int:
    return args.steps if args.steps else max(args.min_steps, args.env_steps // n)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 64 envs, 2048 env-steps per call, 3 repeats")
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[64, 1024, 4096], help="numbers of envs (default 64 1024 4096)"
    )
    p.add_argument("--env-steps", type=int, default=16384, help="env-steps per timed call; T = env_steps // num_envs")
    p.add_argument("--min-steps", type=int, default=4, help="lower bound on T (scan length)")
    p.add_argument("--steps", type=int, default=0, help="fixed scan length T for every size (overrides --env-steps)")
    p.add_argument("--repeats", type=int, default=15, help="timed calls per variant (median reported)")
    p.add_argument(
        "--envs", nargs="+", default=None, help="subset of envs, by case-insensitive substring: babyai doorkey empty"
    )
    p.add_argument("--separate", action="store_true", help="compile plain and +percept+key as separate functions")
    p.add_argument("--breakdown", action="store_true", help="also time cumulative percept stages")
    p.add_argument(
        "--breakdown-size", type=int, nargs="+", default=[1024], help="num_envs for --breakdown (default 1024)"
    )
    p.add_argument("--no-main", action="store_true", help="skip the main table (use with --breakdown)")
    p.add_argument("--workers", type=int, default=2, help="threads compiling in parallel (default 2)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.env_steps, args.min_steps, args.repeats = [64], 2048, 4, 3
        args.breakdown_size = [64]

    log = Log()
    specs = _env_specs()
    names = list(specs)
    if args.envs is not None:
        unknown = [a for a in args.envs if not any(a.lower() in n.lower() for n in specs)]
        if unknown:
            p.error(f"unknown env(s) {unknown}; choose among {list(specs)}")
        names = [n for n in specs if any(a.lower() in n.lower() for a in args.envs)]
    envs = {n: specs[n][1]() for n in names}

    print_header(
        "Random-policy env throughput: jit(scan over T steps of vmap(env.step)), uniform random actions", ("navix",), argv
    )
    for n in names:
        print(f"  {n}: {specs[n][0]}")
    sizes_main = [] if args.no_main else sorted(set(args.sizes))
    sizes_all = sorted(set(sizes_main + (list(args.breakdown_size) if args.breakdown else [])))
    if not sizes_all:
        p.error("nothing to run: --no-main without --breakdown")
    print(
        "T per size: "
        + ", ".join(f"N={n}: T={_steps_for(args, n)}" for n in sizes_all)
        + f"; {args.repeats} timed calls per variant (median), compile excluded"
    )
    print(f"Aim: percept + situation key cost < {AIM:.0%} of the step, overhead = (t_with - t_plain) / t_plain")
    sys.stdout.flush()

    log("resetting ...")
    init = _initial_timesteps(envs, sizes_all, args.workers, log)

    # ---- main table: (env, N) -> {"plain": Job, "with": Job}
    main_jobs = {}
    for n in sizes_main:
        t = _steps_for(args, n)
        for name, env in envs.items():
            ts0 = init[(name, n)]
            if args.separate:
                main_jobs[(name, n)] = {
                    **_variants(name, n, t, ts0, _make_run(env, n, t, [None]), ["plain"]),
                    **_variants(name, n, t, ts0, _make_run(env, n, t, [_stage_key]), ["with"]),
                }
            else:
                main_jobs[(name, n)] = _variants(name, n, t, ts0, _make_run(env, n, t, [None, _stage_key]), ["plain", "with"])
    if main_jobs:
        jobs = [j for d in main_jobs.values() for j in d.values()]
        compile_all(jobs, args.workers, log)
        time_rounds(jobs, args.repeats, log)
        rows = []
        for n in sizes_main:
            for name in names:
                plain, with_ = main_jobs[(name, n)]["plain"], main_jobs[(name, n)]["with"]
                over = (with_.median - plain.median) / plain.median
                over_min = (min(with_.times) - min(plain.times)) / min(plain.times)
                ratio = "-"
                if name == BABYAI_ID and (NATIVE, n) in main_jobs:
                    ratio = f"{plain.rate / main_jobs[(NATIVE, n)]['plain'].rate:.2f}x"
                compiles = {id(j.fn): j.compile_s for j in (plain, with_)}.values()  # one per compiled function
                rows.append([
                    name, n, fmt_rate(plain.rate), fmt_rate(with_.rate), f"{over:+.0%}", "yes" if over < AIM else "NO",
                    f"{over_min:+.0%}", "+".join(f"{c:.0f}" for c in compiles),
                    f"{max(spread(plain.times), spread(with_.times)):.0%}", ratio,
                ])  # fmt: skip
        print()
        print_table(rows, [
            "env", "num_envs", "steps/s plain", "steps/s +percept+key", "overhead", f"<{AIM:.0%}?", "overhead(min)",
            "compile s", "noise(IQR)", "BabyAI/native plain",
        ])  # fmt: skip
        print(
            "compile s: wall time of trace+lower+compile"
            + (" (plain+with)" if args.separate else " of one function serving both variants")
            + f", {args.workers} compile(s) in parallel; noise: interquartile range / median of the timed calls;\n"
            "overhead(min): the same overhead from the fastest call of each variant (a cross-check on a noisy"
            " machine);\n"
            f"BabyAI/native plain: {BABYAI_ID} plain steps/s over {NATIVE} plain steps/s at the same num_envs."
        )
        sys.stdout.flush()

    # ---- breakdown: (env, N) -> {stage: Job, ..., NO_RESET: Job}
    if args.breakdown:
        breakdown = {}
        for n in sorted(set(args.breakdown_size)):
            t = _steps_for(args, n)
            for name, env in envs.items():
                ts0 = init[(name, n)]
                stages = _stages(name, ts0.observation)
                breakdown[(name, n)] = {
                    **_variants(name, n, t, ts0, _make_run(env, n, t, [f for _, f in stages]), [s for s, _ in stages]),
                    **_variants(name, n, t, ts0, _make_run(env, n, t, [None], step_fn=_no_reset(env)), [NO_RESET]),
                }
        jobs = [j for d in breakdown.values() for j in d.values()]
        compile_all(jobs, args.workers, log)
        time_rounds(jobs, args.repeats, log)
        print()
        print("Percept pipeline breakdown: cumulative stages computed on each step's new state, each folding its")
        print("output into the carry (one compiled function per env and size, lax.switch on the stage), and the")
        print("step with its autoreset compiled away (under vmap, the autoreset computes a reset on every step).")
        rows = []
        for (name, n), d in breakdown.items():
            base = prev = d["step only"].median
            for s, j in d.items():
                first = s == "step only"
                aside = s == NO_RESET or "from_image" in s  # not a cumulative stage
                rows.append([
                    name if first else "", n if first else "", s, fmt_rate(j.rate), f"{j.median / j.frames * 1e6:.2f}",
                    "-" if first else f"{(j.median - base) / base:+.0%}",
                    "-" if first or aside else f"{(j.median - prev) / base:+.0%}", f"{spread(j.times):.0%}",
                ])  # fmt: skip
                if not aside:
                    prev = j.median
            rows.append(
                ["", "", f"(compile: stages {d['step only'].compile_s:.0f}s, no-autoreset step {d[NO_RESET].compile_s:.0f}s)"]
                + [""] * 5
            )
        print_table(rows, ["env", "num_envs", "stage", "steps/s", "us/env-step", "vs step", "this stage", "noise(IQR)"])
        print("vs step: (t_stage - t_step) / t_step; this stage: increment over the previous stage, as % of the step.")
    log(f"done in {time.perf_counter() - log.start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
