"""Independent seeds as one program: vmap over a leading seed axis, optionally sharded.

``vmap_seeds`` vmaps ``init`` / ``update`` over seeds; with a ``mesh`` (``seed_mesh()``) the seed
axis of every input is placed with ``NamedSharding(mesh, P("seed"))`` and jit partitions the
vmapped program over the devices. Sharding changes where seeds run, not their numbers.
``device_grid`` chooses how many devices a run's lanes, and then each lane's environments, are
split over; ``shard_runners`` places a runner state so.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def device_grid(lanes: int, envs: int, requested: int, available: int) -> tuple[int, int]:
    """How a run is split over devices: ``(lane_devices, env_devices)``, their product the devices
    used. Lanes are split first (they are independent); when they are fewer than the devices, each
    lane's environments are split too. ``requested=0``: the most devices up to ``available``, then
    the most lane devices (3 lanes x 64 envs on 4 devices: (1, 4); 4 lanes: (4, 1); 2 lanes: (2, 2);
    5 lanes x 6 envs: (1, 3)); ``requested=N``: exactly ``N`` devices, the most of them on lanes.
    A count is valid when ``lane_devices`` divides ``lanes`` and ``env_devices`` divides ``envs``
    (no padding). One-line ``ValueError`` for a count that is negative, exceeds ``available``, or
    cannot be split so."""
    if requested < 0:
        raise ValueError(f"devices={requested} must be >= 0 (0: as many local devices as the lanes and envs divide)")
    if requested > available:
        raise ValueError(f"devices={requested} but this machine has {available} local device(s); use 0 (all) or 1..{available}")
    grids = [(l, e) for l in _divisors(lanes) for e in _divisors(envs) if l * e <= available]
    if requested:
        grids = [g for g in grids if g[0] * g[1] == requested]
        if not grids:
            valid = sorted({l * e for l in _divisors(lanes) for e in _divisors(envs) if l * e <= available})
            raise ValueError(
                f"devices={requested} cannot split {lanes} lanes x {envs} envs evenly "
                f"(lanes, then envs, over devices); use 0 or one of {', '.join(map(str, valid))}"
            )
    return max(grids, key=lambda g: (g[0] * g[1], g[0]))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, max(n, 1) + 1) if n % d == 0]


def seed_mesh(num_devices: int | None = None, env_devices: int = 1) -> Mesh:
    """A ``("seed", "env")`` mesh of ``num_devices`` x ``env_devices`` local devices (by default
    every device on the seed axis)."""
    devices = jax.local_devices()
    n = len(devices) // env_devices if num_devices is None else num_devices
    if not 1 <= n * env_devices <= len(devices):
        many = f" x env_devices={env_devices}" if env_devices != 1 else ""
        raise ValueError(f"num_devices={num_devices}{many} must be between 1 and {len(devices)} (devices available)")
    return Mesh(np.array(devices[: n * env_devices]).reshape(n, env_devices), ("seed", "env"))


def shard_seeds(tree, mesh: Mesh):
    """Place every leaf's leading (seed) axis across the mesh's ``seed`` axis (replicated along
    ``env``); it must divide evenly."""
    n = mesh.shape["seed"]

    def put(x):
        if x.shape[0] % n:
            raise ValueError(f"{x.shape[0]} seeds cannot be split evenly over {n} devices")
        return jax.device_put(x, NamedSharding(mesh, P("seed")))

    return jax.tree.map(put, tree)


def shard_runners(runners, mesh: Mesh):
    """``shard_seeds`` for a ``RunnerState`` with a leading seed axis, whose environment states
    (``timestep``, ``[S, E, ...]``) are also split along their env axis over the mesh's ``env``
    axis; parameters, optimiser state and keys are replicated along it."""
    placed = shard_seeds(runners, mesh)
    if mesh.shape["env"] == 1:
        return placed
    spec = NamedSharding(mesh, P("seed", "env"))
    return placed.replace(timestep=jax.tree.map(lambda x: jax.device_put(x, spec), runners.timestep))


def vmap_seeds(train):
    """``(init, update)`` over a leading seed axis: ``init(keys[S], hypers=None)`` (``hypers``: a
    ``Hyper`` with a leading axis, one per seed; default the config's), ``update(runners, tables)``.

    Seeds are initialised one after another (``lax.map``) inside one program: vmapping the
    orthogonal initialisers' QR decompositions can deadlock XLA's CPU scheduler (seen with
    jax 0.10.2). Updates are vmapped.
    """

    def init(keys, hypers=None):
        if hypers is None:
            return jax.lax.map(train.init, keys)
        return jax.lax.map(lambda kh: train.init(*kh), (keys, hypers))

    return jax.jit(init), jax.jit(jax.vmap(train.update))
