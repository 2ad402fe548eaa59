"""PPO throughput: bidijax's PPO student vs navix's PPO agent, hint distillation, vmapped seeds.

Three measurements, each printed as a table of ratios measured side by side in one run:

1. ``vs navix`` (``Navix-DoorKey-5x5-v0``, ``--sizes`` environments): bidijax ``make_train``
   with ``hint_mode="none"`` against ``navix.agents.PPO`` with the same ``num_envs``,
   ``num_steps``, ``num_minibatches`` and epochs, learning-rate annealing off and a 64-unit tanh
   MLP actor and critic on both sides. Both are timed as one jitted call ``key -> init + U
   updates`` with the updates under ``jax.lax.scan`` (navix's ``PPO.train(key)`` with ``budget =
   U * num_envs * num_steps``), ``U = max(1, --frames // (num_envs * num_steps))``. navix's agent
   gets the env with its observation flattened (its MLP needs a vector; bidijax's network
   flattens internally). Also timed: random-policy env steps/s of the same env and ``num_envs``
   (``lax.scan`` over ``U * num_steps`` steps of ``vmap(env.step)``), and, at
   ``--profile-sizes``, the parts of one bidijax update: ``train.collect`` (rollout + GAE), one
   jitted ``train.update``, and per-epoch batch shuffles (``jax.random.permutation``, navix's;
   ``student.shuffle.permutation``, bidijax's Feistel network). Aim: bidijax >= 1.5x navix.
2. ``hints`` (``BabyAI-GoToRedBallNoDists-v0`` with ``--hint-babyai-envs`` envs, DoorKey with
   ``--hint-doorkey-envs``): ``distill`` reading a full hint table against ``none``, both timed
   as ``key -> init + U updates`` (``--hint-updates``) with the same key every call, so that every
   call does the same work. The table (``--capacity``) holds the situation keys ``train.collect``
   returns for the first runner, topped up with the update's own miss buffer until a run misses
   nothing (``--table-passes``); its rows are random Dirichlet(1) distributions. The timed run's
   hint coverage is printed (1.00 = every visited situation found). ``distill`` tracks the BFS
   oracle (``make_train``'s default when a table is read); ``distill, no oracle`` is
   ``track_oracle=False``. With ``--profile``: the rollout alone (``train.collect``) for the three
   modes, and a table-reading update's extras on that rollout: ``hints.collect_misses``,
   ``feedback.aggregate`` and the rollout's ``hints.lookup`` calls. Aim: distill >= 0.9x none.
3. ``seeds`` (DoorKey, ``--seeds`` seeds of ``--seed-envs`` envs and ``--seed-updates`` updates,
   hint_mode none, each seed its own empty table): one program ``jit(keys, tables ->
   vmap(U updates)(lax.map(init, keys), tables))`` against the single-seed program compiled once
   and called once per seed, and against ``S`` separate runs that each build ``make_train`` and
   compile after ``jax.clear_caches()`` (as ``S`` launches of a script). Wall time includes trace
   + compile (also reported apart); caches are cleared before each; the arms alternate order over
   ``--seed-repeats``. Seeds are initialised under ``lax.map`` because ``jit(vmap(train.init))``
   hangs on jax 0.10.2 CPU (``--vmap-init`` runs it as is). Aim: vmapped wall time <= 0.4x.

Method (1 and 2): the harness of ``common.py`` (compile in ``--workers`` threads, compile time
excluded; one warm-up call; ``--repeats`` / ``--repeats-hints`` round-robin rounds; medians with
the interquartile range / median as noise).

    python benchmarks/ppo_throughput.py
    python benchmarks/ppo_throughput.py --quick     # smoke run
    python benchmarks/ppo_throughput.py --sections navix --sizes 256 --repeats 7
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from navix.agents import PPO, ActorCritic, PPOHparams
from navix.agents.models import MLPEncoder

import bidijax.envs as be
import bidijax.feedback as fb
import bidijax.hints as hn
from bidijax.student import PPOConfig, make_train, shuffle
from common import Job, Log, compile_all, fmt_rate, median, num_actions, print_header, print_table, spread, time_rounds

DOORKEY = "Navix-DoorKey-5x5-v0"
BABYAI = "BabyAI-GoToRedBallNoDists-v0"
AIM_NAVIX, AIM_DISTILL, AIM_SEEDS = 1.5, 0.9, 0.4
SECTIONS = ("navix", "hints", "seeds")


# ---------------------------------------------------------------------------------------------
# The functions measured


def _config(args, num_envs: int, mode: str = "none") -> PPOConfig:
    return PPOConfig(
        num_envs=num_envs,
        num_steps=args.num_steps,
        num_minibatches=args.num_minibatches,
        update_epochs=args.epochs,
        hint_mode=mode,
    )


def _bidijax_updates(train, updates: int):
    """(runner, table) -> ``updates`` updates under lax.scan: (runner, (metrics, feedback) stacked)."""

    def run(runner, table):
        def body(runner, _):
            runner, metrics, feedback = train.update(runner, table)
            return runner, (metrics, feedback)

        return jax.lax.scan(body, runner, None, updates)

    return run


def _bidijax_run(train, updates: int):
    """(key, table) -> init + ``updates`` updates under lax.scan; every output is returned."""
    upd = _bidijax_updates(train, updates)
    return lambda key, table: upd(train.init(key), table)


def _navix_agent(env, num_envs: int, updates: int, args) -> PPO:
    """navix's PPO on ``env`` with its observation flattened (its MLP encoder needs a vector)."""
    size = int(np.prod(env.observation_space.shape))
    flat_env = env.replace(
        observation_fn=lambda state, f=env.observation_fn: jnp.ravel(f(state)),
        observation_space=env.observation_space.replace(shape=(size,)),
    )
    hparams = PPOHparams(
        budget=updates * num_envs * args.num_steps,
        num_envs=num_envs,
        num_steps=args.num_steps,
        num_minibatches=args.num_minibatches,
        num_epochs=args.epochs,
        anneal_lr=False,
    )
    network = ActorCritic(action_dim=num_actions(env), actor_encoder=MLPEncoder(64), critic_encoder=MLPEncoder(64))
    return PPO(hparams=hparams, network=network, env=flat_env)


def _random_run(env, num_envs: int, steps: int):
    """jit(timestep, key -> ``steps`` steps of vmap(env.step) with uniform random actions)."""
    n_act = num_actions(env)

    def run(timestep, key):
        def body(ts, k):
            return jax.vmap(env.step)(ts, jax.random.randint(k, (num_envs,), 0, n_act)), None

        return jax.lax.scan(body, timestep, jax.random.split(key, steps))[0]

    return run


def _permutations(permutation, batch: int, epochs: int):
    """key -> one ``permutation(key, batch)`` per epoch (navix shuffles with jax.random.permutation,
    bidijax with student.shuffle.permutation, a Feistel network)."""
    return lambda key: jax.lax.map(lambda k: permutation(k, batch), jax.random.split(key, epochs))


# ---------------------------------------------------------------------------------------------
# Section 1: bidijax vs navix


def section_navix(args, log) -> dict:
    env = be.make(DOORKEY)
    T = args.num_steps
    by = {}
    reset = jax.jit(lambda key, n: jax.vmap(env.reset)(jax.random.split(key, n)), static_argnums=1)
    empty = hn.empty(1, num_actions(env))
    for n in args.sizes:
        u = max(1, args.frames // (n * T))
        frames = u * n * T
        train = make_train(_config(args, n), env)
        agent = _navix_agent(env, n, u, args)
        by[(n, "random")] = Job(f"random env N={n}", jax.jit(_random_run(env, n, u * T)), (reset(jax.random.key(1), n), jax.random.key(2)), frames)
        by[(n, "navix")] = Job(f"navix PPO N={n} U={u}", jax.jit(agent.train), (jax.random.key(3),), frames)
        by[(n, "bidijax")] = Job(f"bidijax PPO N={n} U={u}", jax.jit(_bidijax_run(train, u)), (jax.random.key(3), empty), frames)
        by[(n, "updates")] = u
        if args.profile and n in args.profile_sizes:
            runner = jax.block_until_ready(jax.jit(train.init)(jax.random.key(4)))
            by[(n, "collect")] = Job(f"bidijax collect N={n}", jax.jit(train.collect), (runner, empty), n * T)
            by[(n, "update")] = Job(f"bidijax update N={n}", jax.jit(train.update), (runner, empty), n * T)
            by[(n, "perm")] = Job(f"permutation x{args.epochs} N={n}", jax.jit(_permutations(jax.random.permutation, n * T, args.epochs)), (jax.random.key(5),), n * T)
            by[(n, "feistel")] = Job(f"Feistel permutation x{args.epochs} N={n}", jax.jit(_permutations(shuffle.permutation, n * T, args.epochs)), (jax.random.key(5),), n * T)
            by[(n, "random1")] = Job(f"random env N={n} T={T}", jax.jit(_random_run(env, n, T)), (reset(jax.random.key(1), n), jax.random.key(2)), n * T)
    jobs = [j for j in by.values() if isinstance(j, Job)]
    compile_all(jobs, args.workers, log)
    time_rounds(jobs, args.repeats, log)

    print()
    print(f"== 1. bidijax PPO (hint_mode=none) vs navix PPO agent, {DOORKEY}")
    print(
        f"   num_steps={T}, num_minibatches={args.num_minibatches}, epochs={args.epochs}, lr annealing off, "
        "64-unit tanh MLP actor + critic on both sides;"
    )
    print(
        "   both timed as one jitted call: key -> init + U updates under lax.scan (navix: PPO.train(key)); "
        f"U = max(1, {args.frames} // (num_envs * num_steps))"
    )
    rows = []
    for n in args.sizes:
        r, nv, bj = by[(n, "random")], by[(n, "navix")], by[(n, "bidijax")]
        ratio = bj.rate / nv.rate
        rows.append([
            n, by[(n, "updates")], fmt_rate(r.rate), fmt_rate(nv.rate), fmt_rate(bj.rate), f"{ratio:.2f}x",
            "yes" if ratio >= AIM_NAVIX else "NO", f"{bj.rate / r.rate:.3f}", f"{nv.rate / r.rate:.3f}",
            f"{r.compile_s:.0f}/{nv.compile_s:.0f}/{bj.compile_s:.0f}", f"{max(spread(j.times) for j in (r, nv, bj)):.0%}",
        ])  # fmt: skip
    print_table(rows, [
        "num_envs", "U", "random env steps/s", "navix PPO frames/s", "bidijax PPO frames/s", "bidijax/navix",
        f">={AIM_NAVIX}x?", "bidijax/random", "navix/random", "compile s rnd/nvx/bdj", "noise",
    ])  # fmt: skip
    print(
        "   frames/s = U * num_envs * num_steps / median call time (compile excluded); random env: same "
        "env, num_envs and U * num_steps steps;\n   noise = worst interquartile range / median of the three."
    )
    prof = [n for n in args.sizes if (n, "update") in by]
    if prof:
        print()
        print("   Where one bidijax update's time goes (separate top-level jitted calls, medians):")
        rows = []
        for n in prof:
            upd = by[(n, "update")].median
            nv = by[(n, "navix")].median / by[(n, "updates")]
            parts = [
                ("random env, num_steps steps (no policy)", by[(n, "random1")].median),
                ("train.collect: rollout + GAE", by[(n, "collect")].median),
                ("train.update: one whole update", upd),
                ("  update - collect: epochs + feedback", upd - by[(n, "collect")].median),
                (f"  jax.random.permutation(batch) x{args.epochs} (navix's shuffle)", by[(n, "perm")].median),
                (f"  shuffle.permutation(batch) x{args.epochs} (bidijax's shuffle)", by[(n, "feistel")].median),
                ("bidijax, per update in the scanned run", by[(n, "bidijax")].median / by[(n, "updates")]),
                ("navix, per update in PPO.train", nv),
            ]
            for i, (label, t) in enumerate(parts):
                rows.append([n if i == 0 else "", label, f"{t * 1e3:,.0f}", f"{t / upd:.0%}"])
        print_table(rows, ["num_envs", "part", "ms", "of update"])
    sys.stdout.flush()
    return by


# ---------------------------------------------------------------------------------------------
# Section 2: distill with a full table vs none


def _valid_keys(rollout) -> np.ndarray:
    keys = np.asarray(rollout.traj.key).reshape(-1, 2)
    return keys[np.asarray(rollout.traj.valid).reshape(-1)]


def _with_rows(capacity: int, num_actions: int, keys: np.ndarray, rng) -> hn.HintTable:
    keys = np.unique(keys, axis=0)[:capacity]
    probs = rng.dirichlet(np.ones(num_actions), len(keys)).astype(np.float32)
    return hn.from_rows(keys, probs, capacity)


def _misses_of(size: int):
    """rollout -> the miss buffer a table-reading update builds from it (hints.collect_misses)."""

    def run(ro):
        p, mission, _ = ro.percepts
        tr = ro.traj
        return hn.collect_misses(tr.key, tr.valid & ~tr.hit, mission, p, size)

    return run


def _aggregate_of(capacity: int, num_actions: int):
    """rollout -> the update's feedback sums (feedback.aggregate)."""

    def run(ro):
        tr = ro.traj
        return fb.aggregate(tr.row, tr.action, ro.td_errors, ro.advantages, tr.valid & tr.hit, capacity, num_actions)

    return run


def _lookups(table, keys):
    """table, keys [T, N, 2] -> T lookups of N keys under lax.scan (the rollout's lookups alone)."""

    def body(acc, k):
        probs, hit, row = hn.lookup(table, k)
        return acc + jnp.sum(probs) + jnp.sum(hit) + jnp.sum(row), None

    return jax.lax.scan(body, jnp.float32(0), keys)[0]


def section_hints(args, log) -> dict:
    specs = [(name, n) for name, n in ((BABYAI, args.hint_babyai_envs), (DOORKEY, args.hint_doorkey_envs)) if n > 0]
    T, U, key = args.num_steps, args.hint_updates, jax.random.key(7)
    per_env = {}
    jobs = []
    for name, n in specs:
        env = be.make(name)
        A = num_actions(env)
        table0 = hn.empty(args.capacity, A)
        t_none = make_train(_config(args, n, "none"), env)
        t_dist = make_train(_config(args, n, "distill"), env)
        t_noorc = make_train(_config(args, n, "distill"), env, track_oracle=False)
        frames = U * n * T
        d = {
            "n": n,
            "A": A,
            "none": Job(f"{name} none N={n}", jax.jit(_bidijax_run(t_none, U)), (key, table0), frames),
            "distill": Job(f"{name} distill N={n}", jax.jit(_bidijax_run(t_dist, U)), (key, table0), frames),
            "noorc": Job(f"{name} distill no-oracle N={n}", jax.jit(_bidijax_run(t_noorc, U)), (key, table0), frames),
        }
        # the runner of the timed run's first update: same key, same init
        runner = jax.block_until_ready(jax.jit(t_dist.init)(key))
        d["c_dist"] = Job(f"{name} collect distill N={n}", jax.jit(t_dist.collect), (runner, table0), n * T)
        if args.profile:
            d["c_none"] = Job(f"{name} collect none N={n}", jax.jit(t_none.collect), (runner, table0), n * T)
            d["c_noorc"] = Job(f"{name} collect distill no-oracle N={n}", jax.jit(t_noorc.collect), (runner, table0), n * T)
        per_env[name] = d
        jobs += [j for j in d.values() if isinstance(j, Job)]
    compile_all(jobs, args.workers, log)

    rng = np.random.default_rng(0)
    for name, d in per_env.items():
        # 1) keys visited by the first runner, 2) top up with the run's own misses until none
        t0 = time.perf_counter()
        first = d["c_dist"]
        keys = _valid_keys(first.compiled(*first.args))
        table = _with_rows(args.capacity, d["A"], keys, rng)
        log(f"  {name}: {len(keys)} valid steps of the first rollout, {int(np.sum(np.asarray(table.valid)))} distinct keys")
        dist = d["distill"]
        for p in range(args.table_passes):
            dist.args = (key, table)
            dist.run()
            metrics, feedback = dist.out[1]
            miss = feedback.misses
            cov = np.asarray(metrics["hint_coverage"])
            count = np.asarray(miss.count)
            over = int(np.sum(np.asarray(miss.overflow)))
            log(f"  {name} pass {p + 1}: coverage per update {np.round(cov, 4).tolist()}, {int(count.sum())} missed keys (+{over} overflow)")
            if count.sum() == 0 and over == 0:
                break
            mk = np.concatenate([np.asarray(miss.keys)[u, : count[u]] for u in range(len(count))])
            table = _with_rows(args.capacity, d["A"], np.concatenate([hn.rows(table)[0], mk]), rng)
        d["table_rows"] = int(np.sum(np.asarray(table.valid)))
        d["build_s"] = time.perf_counter() - t0
        for k in ("none", "distill", "noorc", "c_dist", "c_none", "c_noorc"):
            if k in d:
                d[k].args = (d[k].args[0], table)
    if args.profile:
        extra = []
        for name, d in per_env.items():
            ro = d["c_dist"].compiled(*d["c_dist"].args)
            n = d["n"]
            d["misses"] = Job(f"{name} collect_misses N={n}", jax.jit(_misses_of(_config(args, n).miss_buffer_size or n * T)), (ro,), n * T)
            d["aggregate"] = Job(f"{name} feedback.aggregate N={n}", jax.jit(_aggregate_of(args.capacity, d["A"])), (ro,), n * T)
            d["lookup"] = Job(f"{name} hints.lookup x{T} N={n}", jax.jit(_lookups), (d["c_dist"].args[1], ro.traj.key), n * T)
            extra += [d["misses"], d["aggregate"], d["lookup"]]
        compile_all(extra, args.workers, log)
        jobs += extra
    time_rounds(jobs, args.repeats_hints, log)

    print()
    print(f"== 2. distill with a full hint table vs none (num_steps={T}, {args.num_minibatches} minibatches, {args.epochs} epochs)")
    print(f"   each: one jitted call key -> init + {U} update(s) under lax.scan, same key every call; table capacity {args.capacity}")
    rows = []
    for name, d in per_env.items():
        base = d["none"]
        for k, label in (("none", "none"), ("distill", "distill (make_train default: oracle tracked)"), ("noorc", "distill, track_oracle=False")):
            j = d[k]
            cov = np.asarray(j.out[1][0]["hint_coverage"]).min() if k != "none" else float("nan")
            ratio = j.rate / base.rate
            rows.append([
                name if k == "none" else "", d["n"] if k == "none" else "", label, fmt_rate(j.rate),
                "-" if k == "none" else f"{ratio:.2f}x", ("yes" if ratio >= AIM_DISTILL else "NO") if k == "distill" else "",
                "-" if k == "none" else f"{cov:.4f}", f"{j.median * 1e3:,.0f}", f"{j.compile_s:.0f}", f"{spread(j.times):.0%}",
            ])  # fmt: skip
        rows.append(["", "", f"(table: {d['table_rows']} rows, built in {d['build_s']:.0f}s)"] + [""] * 7)
    print_table(rows, ["env", "num_envs", "hint mode", "frames/s", "vs none", f">={AIM_DISTILL}x?", "min coverage", "ms/call", "compile s", "noise"])
    if args.profile:
        print()
        print("   Rollout alone (train.collect: rollout + GAE, one top-level jitted call on the first runner, full table):")
        rows = []
        for name, d in per_env.items():
            base = d["c_none"]
            for k, label in (
                ("c_none", "none: policy + env step"),
                ("c_noorc", "+ percept + situation key + table lookup"),
                ("c_dist", "+ the BFS oracle (distill default)"),
            ):
                j = d[k]
                rows.append([
                    name if k == "c_none" else "", d["n"] if k == "c_none" else "", label, fmt_rate(j.rate), f"{j.median * 1e3:,.0f}",
                    f"{j.rate / base.rate:.2f}x", f"{(j.median - base.median) / (d['none'].median / U):+.0%}", f"{spread(j.times):.0%}",
                ])  # fmt: skip
            j = d["lookup"]
            rows.append(["", "", f"  of which hints.lookup alone ({T} x {d['n']} keys)", fmt_rate(j.rate), f"{j.median * 1e3:,.1f}", "", f"{j.median / (d['none'].median / U):+.0%}", f"{spread(j.times):.0%}"])
            for k, label in (("misses", "hints.collect_misses (once per update)"), ("aggregate", "feedback.aggregate (once per update)")):
                j = d[k]
                rows.append(["", "", label, "", f"{j.median * 1e3:,.1f}", "", f"{j.median / (d['none'].median / U):+.0%}", f"{spread(j.times):.0%}"])
            j = d["none"]
            rows.append(["", "", "for scale: one whole none update (timed call / U)", fmt_rate(j.rate), f"{j.median / U * 1e3:,.0f}", "", "100%", f"{spread(j.times):.0%}"])
        print_table(rows, ["env", "num_envs", "rollout", "steps/s", "ms", "vs none", "added, % of none update", "noise"])
        print("   added, % of none update: (t - t_collect_none) / (none ms per update) for rollouts, t / (none ms per update) for the extras.")
    sys.stdout.flush()
    return per_env


# ---------------------------------------------------------------------------------------------
# Section 3: vmapped seeds vs sequential seeds


def section_seeds(args, log) -> dict:
    env = be.make(DOORKEY)
    n, U, S = args.seed_envs, args.seed_updates, args.seeds
    train = make_train(_config(args, n), env)
    run = _bidijax_run(train, U)
    if args.vmap_init:
        run_seeds = jax.vmap(run)
    else:
        # jit(vmap(train.init)) deadlocks on jax 0.10.2 CPU (batched QR of the orthogonal initialisers
        # running concurrently): seeds are initialised one after the other (lax.map) inside the
        # same program and the updates are vmapped.
        upd = _bidijax_updates(train, U)
        run_seeds = lambda keys, tables: jax.vmap(upd)(jax.lax.map(train.init, keys), tables)
    table = hn.empty(64, num_actions(env))
    tables = jax.tree.map(lambda x: jnp.stack([x] * S), table)
    keys = jax.random.split(jax.random.key(11), S)
    res = {"vmapped": [], "sequential": [], "separate": []}  # (compile s, run s) per repeat

    def vmapped():
        t0 = time.perf_counter()
        c = jax.jit(run_seeds).lower(keys, tables).compile()
        t1 = time.perf_counter()
        out = jax.block_until_ready(c(keys, tables))
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, out

    def sequential():
        t0 = time.perf_counter()
        c = jax.jit(run).lower(keys[0], table).compile()
        t1 = time.perf_counter()
        outs = [jax.block_until_ready(c(keys[s], table)) for s in range(S)]
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, outs

    def separate():
        # S independent runs, as S launches of a single-seed script: each builds and compiles its own
        comp = wall = 0.0
        outs = []
        for s in range(S):
            jax.clear_caches()
            t0 = time.perf_counter()
            c = jax.jit(_bidijax_run(make_train(_config(args, n), env), U)).lower(keys[s], table).compile()
            t1 = time.perf_counter()
            outs.append(jax.block_until_ready(c(keys[s], table)))
            comp, wall = comp + t1 - t0, wall + time.perf_counter() - t1
        return comp, wall, outs

    outs = {}
    for r in range(args.seed_repeats):
        order = [("vmapped", vmapped), ("sequential", sequential), ("separate", separate)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            jax.clear_caches()
            log(f"seeds: {name} (repeat {r + 1}) ...")
            comp, wall, out = fn()
            res[name].append((comp, wall))
            outs[name] = out
            log(f"  {name}: compile {comp:.1f}s + run {wall:.1f}s")
    # the same seeds give the same training whichever way they run
    v = np.asarray(outs["vmapped"][1][0]["value_loss"])  # [S, U]
    diff = max(
        float(np.max(np.abs(v - np.stack([np.asarray(o[1][0]["value_loss"]) for o in outs[k]]))))
        for k in ("sequential", "separate")
    )

    print()
    print(f"== 3. {S} seeds vmapped (one program) vs {S} sequential single-seed runs, {DOORKEY}")
    print(
        f"   per seed: init + {U} updates (hint_mode=none, num_envs={n}, num_steps={args.num_steps}); "
        "wall time includes trace + compile; medians over "
        f"{args.seed_repeats} repeat(s)"
    )
    (comp_v, run_v, tot_v), (comp_s, run_s, tot_s), (comp_x, run_x, tot_x) = (
        (median([c for c, _ in v]), median([w for _, w in v]), median([c + w for c, w in v])) for v in res.values()
    )
    frames = S * U * n * args.num_steps
    ok = lambda r: "yes" if r <= AIM_SEEDS else "NO"
    rows = [
        ["vmapped (one program)", f"{comp_v:.1f}", f"{run_v:.1f}", f"{tot_v:.1f}", fmt_rate(frames / run_v), f"{tot_v / tot_s:.2f}", ok(tot_v / tot_s), f"{tot_v / tot_x:.2f}", ok(tot_v / tot_x)],
        ["sequential, one process (compiled once)", f"{comp_s:.1f}", f"{run_s:.1f}", f"{tot_s:.1f}", fmt_rate(frames / run_s), "1.00", "", "", ""],
        [f"sequential, {S} separate runs (each compiles)", f"{comp_x:.1f}", f"{run_x:.1f}", f"{tot_x:.1f}", fmt_rate(frames / run_x), "", "", "1.00", ""],
        ["vmapped, run only (no compile)", "", "", "", "", f"{run_v / run_s:.2f}", "", "", ""],
    ]
    print_table(rows, ["", "compile s", "run s", "wall s", "frames/s (run)", "vs one process", f"<={AIM_SEEDS}?", "vs separate runs", f"<={AIM_SEEDS}?"])
    print(f"   max |value_loss(vmapped) - value_loss(sequential)| over seeds and updates: {diff:.2e}")
    sys.stdout.flush()
    return res


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: small sizes, 1 update per call, 2 repeats")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="what to run (default all)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], help="num_envs for section 1")
    p.add_argument("--frames", type=int, default=65536, help="section 1: frames per timed call, U = frames // (N * T)")
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7, help="section 1: timed calls per function (median)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True, help="time the parts too")
    p.add_argument("--profile-sizes", type=int, nargs="+", default=[1024], help="section 1 sizes profiled")
    p.add_argument("--hint-babyai-envs", type=int, default=16, help="section 2 BabyAI num_envs (0 = skip)")
    p.add_argument("--hint-doorkey-envs", type=int, default=256, help="section 2 DoorKey num_envs (0 = skip)")
    p.add_argument("--hint-updates", type=int, default=1, help="section 2: updates per timed call")
    p.add_argument("--repeats-hints", type=int, default=3, help="section 2: timed calls per function")
    p.add_argument("--capacity", type=int, default=8192, help="section 2: hint table capacity")
    p.add_argument("--table-passes", type=int, default=3, help="section 2: top-up passes with the run's misses")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--seed-envs", type=int, default=64, help="section 3: num_envs per seed")
    p.add_argument("--seed-updates", type=int, default=8, help="section 3: updates per seed")
    p.add_argument("--seed-repeats", type=int, default=1, help="section 3: repeats (order alternates)")
    p.add_argument(
        "--vmap-init",
        action="store_true",
        help="section 3: jit(vmap(init + updates)) as is (hangs on jax 0.10.2 CPU unless XLA_FLAGS="
        "--xla_cpu_enable_concurrency_optimized_scheduler=false)",
    )
    p.add_argument("--workers", type=int, default=2, help="threads compiling in parallel")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.frames, args.repeats, args.profile = [64], 8192, 2, False
        args.hint_babyai_envs, args.hint_doorkey_envs, args.repeats_hints, args.table_passes = 0, 64, 2, 2
        args.seeds, args.seed_updates, args.num_steps = 2, 1, 64
    args.sizes = sorted(set(args.sizes))

    log = Log()
    print_header(
        "PPO throughput: bidijax PPO student vs navix PPO agent; distill vs none; vmapped vs sequential seeds",
        ("navix", "flax", "optax"),
        argv,
    )
    if "navix" in args.sections:
        section_navix(args, log)
    if "hints" in args.sections:
        section_hints(args, log)
    if "seeds" in args.sections:
        section_seeds(args, log)
    log(f"done in {time.perf_counter() - log.start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
