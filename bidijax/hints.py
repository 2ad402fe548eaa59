"""Hint tables: teacher action distributions keyed by situation, looked up inside jit.

A ``HintTable`` holds ``capacity`` rows sorted by key (``uint32[2]``, compared as the 64-bit
number ``hi * 2**32 + lo``); unused rows carry the largest key and ``valid = False``. Lookups
are a vectorised binary search (``searchsorted`` over two words) plus an equality check.
Building and merging happen on the host (numpy) between jitted chunks; a merge that would
exceed the capacity either grows the table to the next power of two (the next jitted call
recompiles once for the new shape) or raises, as the caller chooses. Each row carries a
``stamp`` (the iteration it was last scored or visited, set on the host by ``merge`` and
``touch``); ``make_room`` evicts the least recently stamped rows, so a table with a row limit
stays bounded on levels whose situations rarely repeat.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

SENTINEL = np.uint32(0xFFFFFFFF)


class HintTable(struct.PyTreeNode):
    keys: jax.Array  # uint32[K, 2], sorted; unused rows hold (SENTINEL, SENTINEL)
    probs: jax.Array  # float32[K, A]: the teacher's action distribution per situation
    valid: jax.Array  # bool[K]
    stamp: jax.Array  # int32[K]: iteration the row was last scored or visited (eviction order)

    @property
    def capacity(self) -> int:
        return self.keys.shape[0]

    @property
    def num_actions(self) -> int:
        return self.probs.shape[1]


class TableFullError(ValueError):
    """A merge needs more rows than the table's capacity and growing was not allowed."""


def _as_keys(keys) -> np.ndarray:
    keys = np.asarray(keys)
    if keys.ndim != 2 or keys.shape[1] != 2:
        raise ValueError(f"hint keys must have shape [N, 2] (uint32 pairs), got {keys.shape}")
    return keys.astype(np.uint32)


def key64(keys) -> np.ndarray:
    """The 64-bit numbers ``hi << 32 | lo`` of host keys ``uint32[N, 2]`` (``uint64[N]``)."""
    keys = np.asarray(keys, np.uint32).reshape(-1, 2)
    return (keys[:, 0].astype(np.uint64) << np.uint64(32)) | keys[:, 1].astype(np.uint64)


def empty(capacity: int, num_actions: int) -> HintTable:
    """A table with no rows."""
    if capacity < 1:
        raise ValueError(f"hint table capacity must be >= 1, got {capacity}")
    return HintTable(
        keys=jnp.full((capacity, 2), SENTINEL, jnp.uint32),
        probs=jnp.full((capacity, num_actions), 1.0 / num_actions, jnp.float32),
        valid=jnp.zeros(capacity, bool),
        stamp=jnp.zeros(capacity, jnp.int32),
    )


def from_rows(keys, probs, capacity: int | None = None) -> HintTable:
    """Build a table from host rows (later duplicates of a key win); capacity defaults to a fit."""
    keys = _as_keys(keys)
    probs = np.asarray(probs, np.float32)
    if probs.ndim != 2 or probs.shape[0] != keys.shape[0]:
        raise ValueError(f"hint probs must have shape [{keys.shape[0]}, A], got {probs.shape}")
    table = empty(capacity or max(1, _next_pow2(len(np.unique(key64(keys))))), probs.shape[1])
    return merge(table, keys, probs, grow=capacity is None)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def rows(table: HintTable) -> tuple[np.ndarray, np.ndarray]:
    """The valid (keys, probs) of a table, as host arrays in key order."""
    valid = np.asarray(table.valid)
    return np.asarray(table.keys)[valid], np.asarray(table.probs)[valid]


def merge(table: HintTable, keys, probs, grow: bool = False, stamp: int = 0) -> HintTable:
    """Insert or overwrite rows (host side); keys stay sorted and unique; the given rows get ``stamp``.

    When the merged rows exceed the capacity: with ``grow`` the capacity doubles until they fit,
    otherwise ``TableFullError``.
    """
    keys = _as_keys(keys)
    probs = np.asarray(probs, np.float32)
    if probs.shape != (keys.shape[0], table.num_actions):
        raise ValueError(f"hint probs must have shape [{keys.shape[0]}, {table.num_actions}], got {probs.shape}")
    old_keys, old_probs = rows(table)
    all_keys = np.concatenate([old_keys, keys])
    all_probs = np.concatenate([old_probs, probs])
    all_stamps = np.concatenate([np.asarray(table.stamp)[np.asarray(table.valid)], np.full(len(keys), stamp, np.int32)])
    k64 = key64(all_keys)
    # keep the last occurrence of each key: unique over the reversed arrays
    rev = k64[::-1]
    uniq, first_in_rev = np.unique(rev, return_index=True)
    pick = len(k64) - 1 - first_in_rev  # already in key order
    n = len(uniq)
    capacity = table.capacity
    if n > capacity:
        if not grow:
            raise TableFullError(
                f"hint table capacity {capacity} is too small for {n} situations; "
                "raise the capacity or allow growing"
            )
        capacity = max(capacity, 1)
        while capacity < n:
            capacity *= 2
    out_keys = np.full((capacity, 2), SENTINEL, np.uint32)
    out_probs = np.full((capacity, table.num_actions), 1.0 / table.num_actions, np.float32)
    valid = np.zeros(capacity, bool)
    stamps = np.zeros(capacity, np.int32)
    out_keys[:n], out_probs[:n], valid[:n], stamps[:n] = all_keys[pick], all_probs[pick], True, all_stamps[pick]
    return HintTable(keys=jnp.asarray(out_keys), probs=jnp.asarray(out_probs), valid=jnp.asarray(valid),
                     stamp=jnp.asarray(stamps))  # fmt: skip


def touch(table: HintTable, keys, stamp: int) -> HintTable:
    """The rows of ``keys`` that the table holds get ``stamp`` (host side; others unchanged)."""
    valid = np.asarray(table.valid)
    hit = valid & np.isin(key64(np.asarray(table.keys)), key64(_as_keys(keys)))
    if not hit.any():
        return table
    return table.replace(stamp=jnp.asarray(np.where(hit, np.int32(stamp), np.asarray(table.stamp))))


def make_room(table: HintTable, keys, max_rows: int) -> tuple[HintTable, np.ndarray]:
    """Evict the least recently stamped rows (ties: lower keys first) so that merging ``keys``
    leaves at most ``max_rows`` rows; returns ``(table, evicted keys uint32[E, 2])``. Rows of
    ``keys`` themselves are never evicted; ``max_rows`` 0 means no limit."""
    none = np.zeros((0, 2), np.uint32)
    if max_rows <= 0:
        return table, none
    valid = np.asarray(table.valid)
    old = key64(np.asarray(table.keys)[valid])
    new = np.unique(key64(_as_keys(keys)))
    excess = len(old) + int(np.sum(~np.isin(new, old))) - max_rows
    if excess <= 0:
        return table, none
    stamps = np.asarray(table.stamp)[valid].astype(np.int64)
    stamps[np.isin(old, new)] = np.iinfo(np.int64).max  # being re-scored: keep
    order = np.lexsort((old, stamps))  # oldest first, then by key
    drop = np.zeros(len(old), bool)
    drop[order[:excess]] = True
    k, p, st = np.asarray(table.keys)[valid], np.asarray(table.probs)[valid], np.asarray(table.stamp)[valid]
    kept = empty(table.capacity, table.num_actions)
    kept = merge(kept, k[~drop], p[~drop])
    kept = kept.replace(stamp=kept.stamp.at[: int((~drop).sum())].set(jnp.asarray(st[~drop])))
    return kept, k[drop]


def _less(a: jax.Array, b: jax.Array) -> jax.Array:
    """Lexicographic ``a < b`` on ``uint32[..., 2]`` keys."""
    return (a[..., 0] < b[..., 0]) | ((a[..., 0] == b[..., 0]) & (a[..., 1] < b[..., 1]))


def search(table: HintTable, keys: jax.Array) -> jax.Array:
    """Left insertion index of each query key ``uint32[..., 2]`` (``searchsorted`` on 64 bits)."""
    lo = jnp.zeros(keys.shape[:-1], jnp.int32)
    hi = jnp.full(keys.shape[:-1], table.capacity, jnp.int32)
    for _ in range(int(table.capacity).bit_length()):
        mid = (lo + hi) // 2
        go_right = _less(table.keys[jnp.minimum(mid, table.capacity - 1)], keys) & (mid < hi)
        lo = jnp.where(go_right, mid + 1, lo)
        hi = jnp.where(go_right, hi, mid)
    return lo


def lookup(table: HintTable, keys: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Look keys up inside jit: ``(probs [..., A], hit [...], row [...])``.

    On a miss ``probs`` is uniform and ``row`` is ``capacity`` (one past the last row).
    """
    pos = search(table, keys)
    row = jnp.minimum(pos, table.capacity - 1)
    hit = (pos < table.capacity) & table.valid[row] & jnp.all(table.keys[row] == keys, axis=-1)
    uniform = jnp.full(table.probs.shape[-1:], 1.0 / table.num_actions, table.probs.dtype)
    probs = jnp.where(hit[..., None], table.probs[row], uniform)
    return probs, hit, jnp.where(hit, row, table.capacity)


# ---------------------------------------------------------------------------------------------
# Miss buffer


class MissBuffer(struct.PyTreeNode):
    """Distinct keys looked up and not found, with what is needed to score them on the host."""

    keys: jax.Array  # uint32[M, 2]
    missions: jax.Array  # int32[M, 4]
    percepts: object  # a Percept pytree with leading dimension M
    count: jax.Array  # int32: filled rows (the first ``count``)
    overflow: jax.Array  # int32: distinct missed keys that did not fit
    oracle: object = None  # bool[M, A]: the BFS oracle's optimal actions there, when tracked


def collect_misses(
    keys: jax.Array, missed: jax.Array, missions: jax.Array, percepts, size: int, oracle=None
) -> MissBuffer:
    """The distinct missed keys of a batch of lookups (any leading shape), up to ``size`` of them.

    Each kept key comes with the mission, percept (and, if given, the oracle's optimal actions)
    of its first occurrence in sorted order. Distinct keys beyond ``size`` are counted in
    ``overflow``, never dropped silently. ``oracle`` is either ``bool[..., A]`` per lookup or a
    function ``(src int32[size], filled bool[size]) -> bool[size, A]`` of the flat indices of the
    kept lookups (rows where ``filled`` is False are zeroed whatever it returns): then the
    oracle is computed for the kept rows only.
    """
    batch_ndim = missed.ndim
    flat = lambda x: x.reshape((-1,) + x.shape[batch_ndim:])
    keys, missed, missions = flat(keys), missed.reshape(-1), flat(missions)
    percepts = jax.tree.map(flat, percepts)
    if oracle is not None and not callable(oracle):
        oracle = flat(oracle)
    order = jnp.lexsort((keys[:, 1], keys[:, 0], ~missed))  # misses first, then by key
    sk, sm = keys[order], missed[order]
    new = jnp.concatenate([jnp.ones(1, bool), jnp.any(sk[1:] != sk[:-1], axis=-1)])
    first = sm & new
    distinct = jnp.sum(first)
    (idx,) = jnp.nonzero(first, size=size, fill_value=0)
    src = order[idx]
    filled = jnp.arange(size) < distinct
    pick = lambda x: jnp.where(filled.reshape((-1,) + (1,) * (x.ndim - 1)), x[src], jnp.zeros_like(x[src]))
    return MissBuffer(
        keys=jnp.where(filled[:, None], keys[src], SENTINEL),
        missions=pick(missions),
        percepts=jax.tree.map(pick, percepts),
        count=jnp.minimum(distinct, size).astype(jnp.int32),
        overflow=jnp.maximum(distinct - size, 0).astype(jnp.int32),
        oracle=None if oracle is None else _pick_oracle(oracle, src, filled, pick),
    )


def _pick_oracle(oracle, src, filled, pick):
    if not callable(oracle):
        return pick(oracle)
    return jnp.where(filled[:, None], oracle(src, filled), False)
