"""``bidijax`` command line. ``bidijax demo`` rolls out the BFS oracle and a random policy."""

from __future__ import annotations

import argparse
import sys
import time


def _demo(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from .envs import make
    from .rollout import first_episodes, oracle_policy, random_policy

    try:
        env = make(args.env)
    except ValueError as err:
        print(f"bidijax demo: {err}", file=sys.stderr)
        return 2
    print(f"{args.env}: {args.num_envs} environments, max_steps={env.max_steps}")
    for name, policy in (("oracle", oracle_policy), ("random", random_policy)):
        run = jax.jit(lambda key, p=policy: first_episodes(env, p, args.num_envs, key))
        start = time.perf_counter()
        out = jax.device_get(run(jax.random.PRNGKey(args.seed)))
        secs = time.perf_counter() - start
        print(
            f"  {name:6s} policy: success rate {np.mean(out['success']):.3f}, "
            f"mean return {np.mean(out['return']):.3f}, mean length {np.mean(out['length']):.1f} "
            f"({secs:.1f} s incl. compile)"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bidijax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="roll out the BFS oracle and a random policy on a batch of environments")
    demo.add_argument("--env", default="BabyAI-GoToRedBallNoDists-v0", help="environment id (default: %(default)s)")
    demo.add_argument("--num-envs", type=int, default=1024, help="number of parallel environments (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.num_envs < 1:
            parser.error(f"--num-envs must be >= 1, got {args.num_envs}")
        return _demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
