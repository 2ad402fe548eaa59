"""Where the student's throughput saturates: frames/s and memory against environments and seeds.

Two sweeps of the PPO student alone (``hint_mode="none"``, the ``default`` network, 4 epochs of 8
minibatches, ``--env``), each point one compiled program timed after a warm-up call:

- ``num_envs`` (``--envs``, default 64 .. 8192) for one seed, ``--num-steps`` steps per env;
- seeds (``--seeds``, default 1 .. 32), vmapped in one program, at ``--seed-envs`` envs each.

For each point: frames per second of whole updates (rollout, GAE and epochs; best of
``--repeats`` calls of the jitted update), and the program's memory as XLA plans it
(``compiled.memory_analysis()``: arguments + outputs + temporaries, in MiB; on a GPU this is
what must fit in device memory; on this CPU the process RSS adds the runtime). ``--device gpu``
(or any platform name) runs on that platform. Compile times are excluded and printed apart.

    python benchmarks/scaling.py [--envs 64,256,1024,4096,8192] [--seeds 1,2,4,8,16,32] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

from bidijax import envs, hints
from bidijax.student import PPOConfig, make_train, vmap_seeds


def measure(env, num_envs: int, seeds: int, num_steps: int, repeats: int, device) -> dict:
    """Frames/s, compile seconds and planned MiB of one vmapped update of ``seeds`` students."""
    config = PPOConfig(num_envs=num_envs, num_steps=num_steps, num_minibatches=8, update_epochs=4, hint_mode="none")
    init, update = vmap_seeds(make_train(config, env))
    with jax.default_device(device):
        keys = jnp.stack([jax.random.PRNGKey(s) for s in range(seeds)])
        tables = jax.tree.map(lambda x: jnp.stack([x] * seeds), hints.empty(1, int(env.action_space.n)))
        runners = init(keys)
        t0 = time.perf_counter()
        compiled = jax.jit(update).lower(runners, tables).compile()
        compile_s = time.perf_counter() - t0
        mem = compiled.memory_analysis()
        mib = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / 2**20 if mem else float("nan")
        runners = jax.block_until_ready(compiled(runners, tables)[0])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            runners = jax.block_until_ready(compiled(runners, tables)[0])
            best = min(best, time.perf_counter() - t0)
    frames = num_envs * num_steps * seeds
    return dict(frames=frames, fps=frames / best, compile_s=compile_s, mib=mib)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="BabyAI-GoToRedBallNoDists-v0")
    ap.add_argument("--envs", default="64,256,1024,4096,8192")
    ap.add_argument("--seeds", default="1,2,4,8,16,32")
    ap.add_argument("--seed-envs", type=int, default=64)
    ap.add_argument("--num-steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="platform: cpu, gpu, tpu")
    args = ap.parse_args(argv)
    try:
        device = jax.devices(args.device)[0]
    except RuntimeError as err:
        print(f"scaling: no {args.device!r} device here ({str(err).splitlines()[0]})", file=sys.stderr)
        return 2
    env = envs.make(args.env)
    print(f"{args.env}, {args.num_steps} steps per env, PPO student alone, on {device.platform} ({device.device_kind})")
    for title, points in (
        ("environments (1 seed)", [(int(n), 1) for n in args.envs.split(",")]),
        (f"seeds ({args.seed_envs} envs each, vmapped)", [(args.seed_envs, int(s)) for s in args.seeds.split(",")]),
    ):
        print(f"\n{title}\n\n| envs x seeds | frames per update | frames/s | / first | compile (s) | program memory (MiB) |")
        print("|---|---|---|---|---|---|")
        first = None
        for n, s in points:
            r = measure(env, n, s, args.num_steps, args.repeats, device)
            first = first or r["fps"]
            print(f"| {n} x {s} | {r['frames']:,} | {r['fps']:,.0f} | {r['fps'] / first:.2f}x | {r['compile_s']:.1f} | {r['mib']:,.1f} |",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
