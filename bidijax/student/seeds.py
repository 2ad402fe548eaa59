"""Independent seeds as one program: vmap over a leading seed axis, optionally sharded.

``vmap_seeds`` vmaps ``init`` / ``update`` over seeds; with a ``mesh`` (``seed_mesh()``) the seed
axis of every input is placed with ``NamedSharding(mesh, P("seed"))`` and jit partitions the
vmapped program over the devices. Sharding changes where seeds run, not their numbers.
``lane_devices`` chooses how many devices a run's lanes are split over.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def lane_devices(lanes: int, requested: int, available: int) -> int:
    """How many devices ``lanes`` lanes are split over: ``requested``, or with ``requested=0`` the
    largest count up to ``available`` that divides ``lanes`` (3 lanes on 4 devices: 3; 5 on 4: 1).
    One-line ``ValueError`` when ``requested`` exceeds ``available`` or does not divide ``lanes``."""
    if requested < 0:
        raise ValueError(f"devices={requested} must be >= 0 (0: every local device that divides the lanes)")
    if requested == 0:
        return max(n for n in range(1, max(1, min(lanes, available)) + 1) if lanes % n == 0)
    if requested > available:
        raise ValueError(f"devices={requested} but this machine has {available} local device(s); use 0 (all) or 1..{available}")
    if lanes % requested:
        raise ValueError(f"devices={requested} does not divide the {lanes} lanes (seeds x cells); use a divisor of {lanes} or 0")
    return requested


def seed_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh named ``"seed"`` over the first ``num_devices`` local devices (all by default)."""
    devices = jax.local_devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={num_devices} must be between 1 and {len(devices)} (devices available)")
    return Mesh(devices[:n], ("seed",))


def shard_seeds(tree, mesh: Mesh):
    """Place every leaf's leading (seed) axis across ``mesh``; it must divide evenly."""
    n = mesh.devices.size

    def put(x):
        if x.shape[0] % n:
            raise ValueError(f"{x.shape[0]} seeds cannot be split evenly over {n} devices")
        return jax.device_put(x, NamedSharding(mesh, P("seed")))

    return jax.tree.map(put, tree)


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
