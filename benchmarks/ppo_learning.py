"""Sample efficiency of the PPO student on BabyAI-GoToRedBallNoDists-v0 (not a test).

For hint mode ``none`` and for ``distill`` with an oracle-built hint table, S seeds are trained
as one vmapped program; after every update the success rate over each seed's last
``--window`` episodes is computed, and the script reports the frames (per seed) at which the
mean over seeds first exceeds ``--target``.

The oracle-built table: a long uniform-random rollout visits the situations; for each situation
key the teacher's distribution is the average, over the states seen with that key, of the
uniform distribution on the BFS oracle's optimal actions (one text can stand for several states).

    python benchmarks/ppo_learning.py            # 8 seeds, up to 3M frames per seed and mode
    python benchmarks/ppo_learning.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import collections
import time

import jax
import jax.numpy as jnp
import numpy as np

from bidijax import envs, hints
from bidijax.envs import constants as C
from bidijax.student import PPOConfig, make_train, vmap_seeds

ENV_ID = "BabyAI-GoToRedBallNoDists-v0"


def oracle_table(env, num_envs: int, steps: int, capacity: int, seed: int = 123) -> hints.HintTable:
    """Hint table of the BFS oracle over the situations a random policy visits."""

    @jax.jit
    def visit(key):
        ts = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def body(ts, k):
            p = jax.vmap(envs.percept)(ts.state)
            keys = jax.vmap(envs.situation_key)(jax.vmap(envs.mission_of)(ts.state), p)
            best = jax.vmap(envs.oracle_actions)(ts.state).astype(jnp.float32)
            probs = best / jnp.maximum(best.sum(-1, keepdims=True), 1.0)
            ts = jax.vmap(env.step)(ts, jax.random.randint(k, (num_envs,), 0, C.NUM_ACTIONS))
            return ts, (keys, probs, best.sum(-1) > 0)

        _, out = jax.lax.scan(body, ts, jax.random.split(key, steps))
        return out

    keys, probs, ok = (np.asarray(x) for x in visit(jax.random.PRNGKey(seed)))
    keys, probs = keys[ok].reshape(-1, 2), probs[ok].reshape(-1, C.NUM_ACTIONS)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    sums = np.zeros((len(uniq), C.NUM_ACTIONS))
    np.add.at(sums, inverse.reshape(-1), probs)
    table_probs = (sums / sums.sum(-1, keepdims=True)).astype(np.float32)
    return hints.from_rows(uniq, table_probs, capacity=max(capacity, 1 << int(len(uniq)).bit_length()))


def frames_to_target(config: PPOConfig, table, seeds: int, max_frames: int, window: int, target: float):
    env = envs.make(ENV_ID)
    train = make_train(config, env)
    init, update = vmap_seeds(train)
    tables = jax.tree.map(lambda x: jnp.stack([x] * seeds), table)
    runners = init(jax.random.split(jax.random.PRNGKey(0), seeds))
    recent = [collections.deque() for _ in range(seeds)]  # (episodes, successes) per update
    start, curve = time.perf_counter(), []
    frames = 0
    while frames < max_frames:
        runners, metrics, _ = update(runners, tables)
        m = jax.device_get(metrics)
        frames += config.frames_per_update
        rates = []
        for s in range(seeds):
            eps = float(m["episodes"][s])
            recent[s].append((eps, eps * float(m["behaviour_success"][s])))
            while sum(e for e, _ in recent[s]) - recent[s][0][0] >= window:
                recent[s].popleft()
            n = sum(e for e, _ in recent[s])
            rates.append(sum(x for _, x in recent[s]) / max(n, 1))
        mean_rate = float(np.mean(rates))
        curve.append((frames, mean_rate))
        if mean_rate > target and all(sum(e for e, _ in r) >= window for r in recent):
            return frames, curve, time.perf_counter() - start
    return None, curve, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, small budget (smoke run)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=64)
    parser.add_argument("--max-frames", type=int, default=3_000_000, help="per seed and mode")
    parser.add_argument("--window", type=int, default=1000, help="episodes per seed in the success window")
    parser.add_argument("--target", type=float, default=0.9)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_frames, args.window = 2, 100_000, 100

    base = PPOConfig(num_envs=args.num_envs, num_steps=args.num_steps, num_minibatches=4, update_epochs=4, lr=5e-4)
    env = envs.make(ENV_ID)
    t0 = time.perf_counter()
    table = oracle_table(env, num_envs=256, steps=400, capacity=4096)
    print(f"oracle table: {int(table.valid.sum())} situations ({time.perf_counter() - t0:.0f} s)")
    runs = {
        "none": (base, hints.empty(table.capacity, C.NUM_ACTIONS)),
        "distill (oracle table)": (
            base.replace(hint_mode="distill", beta_start=1.0, beta_end=0.0, beta_anneal_frac=1.0, num_updates=200),
            table,
        ),
    }
    results = {}
    for name, (cfg, tab) in runs.items():
        frames, curve, secs = frames_to_target(cfg, tab, args.seeds, args.max_frames, args.window, args.target)
        results[name] = frames
        last = curve[-1][1] if curve else float("nan")
        shown = f"{frames:,}" if frames else f"not reached within {args.max_frames:,} (last {last:.3f})"
        print(f"{name:24s} frames per seed to mean success > {args.target} over the last {args.window} episodes: {shown} ({secs:.0f} s)")
    if results["none"] and results["distill (oracle table)"]:
        print(f"speed-up of distill over none: {results['none'] / results['distill (oracle table)']:.2f}x")


if __name__ == "__main__":
    main()
