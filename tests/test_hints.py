"""Hint tables: lookup against a dict, merge invariants, capacity policy, miss buffer."""

import jax
import numpy as np
import pytest

from bidijax import hints
from bidijax.envs.perception import Percept

A = 7


def random_keys(rng, n):
    keys = rng.integers(0, 2**32, size=(n, 2), dtype=np.uint64).astype(np.uint32)
    keys[: n // 10, 0] = 12345  # many keys sharing the high word exercise the low-word compare
    return keys


@pytest.fixture(scope="module")
def lookup():
    return jax.jit(hints.lookup)


def test_lookup_matches_dict(lookup):
    rng = np.random.default_rng(0)
    keys = random_keys(rng, 600)
    probs = rng.dirichlet(np.ones(A), size=600).astype(np.float32)
    table = hints.from_rows(keys, probs, capacity=1024)
    queries = np.concatenate([keys[::3], random_keys(rng, 300)])
    p, hit, row = lookup(table, queries)
    ref = {tuple(k): pr for k, pr in zip(keys.tolist(), probs)}
    for q, pq, h, r in zip(queries.tolist(), np.asarray(p), np.asarray(hit), np.asarray(row)):
        assert h == (tuple(q) in ref)
        if h:
            np.testing.assert_allclose(pq, ref[tuple(q)])
            assert np.asarray(table.keys)[r].tolist() == q
        else:
            np.testing.assert_allclose(pq, np.full(A, 1 / A))
            assert r == table.capacity


def test_sentinel_key_is_not_a_false_hit(lookup):
    table = hints.from_rows(np.array([[1, 2]], np.uint32), np.eye(A, dtype=np.float32)[:1], capacity=4)
    _, hit, _ = lookup(table, np.array([[0xFFFFFFFF, 0xFFFFFFFF], [1, 2]], np.uint32))
    assert hit.tolist() == [False, True]


def test_merge_sorted_unique_and_overwrites():
    rng = np.random.default_rng(1)
    keys = random_keys(rng, 50)
    table = hints.from_rows(keys, np.full((50, A), 1 / A, np.float32), capacity=128)
    new_probs = np.eye(A, dtype=np.float32)[rng.integers(0, A, 30)]
    more = np.concatenate([keys[:20], random_keys(rng, 10)])  # 20 re-scored, 10 new
    table = hints.merge(table, more, new_probs)
    k, p = hints.rows(table)
    assert len(k) == 60 and table.capacity == 128
    k64 = (k[:, 0].astype(np.uint64) << np.uint64(32)) | k[:, 1]
    assert (np.diff(k64.astype(np.float64)) > 0).all() or (np.diff(k64) > 0).all()
    got = {tuple(a): b for a, b in zip(k.tolist(), p)}
    for key, pr in zip(more.tolist(), new_probs):
        np.testing.assert_array_equal(got[tuple(key)], pr)


def test_capacity_grow_or_fail():
    rng = np.random.default_rng(2)
    table = hints.empty(8, A)
    keys = random_keys(rng, 20)
    probs = np.full((20, A), 1 / A, np.float32)
    with pytest.raises(hints.TableFullError, match="capacity 8 is too small for 20 situations"):
        hints.merge(table, keys, probs)
    grown = hints.merge(table, keys, probs, grow=True)
    assert grown.capacity == 32 and int(grown.valid.sum()) == 20
    with pytest.raises(ValueError, match=r"shape \[20, 7\]"):
        hints.merge(table, keys, probs[:, :3])


def test_miss_buffer_distinct_and_overflow():
    rng = np.random.default_rng(3)
    distinct = random_keys(rng, 40)
    idx = rng.integers(0, 40, size=(16, 25))  # [T, E] lookups, many repeats
    keys = distinct[idx]
    missed = (idx % 2 == 0)  # even-indexed keys are misses
    missions = np.broadcast_to(idx[..., None], idx.shape + (4,)).astype(np.int32)
    per = Percept(
        walls=np.broadcast_to(idx[..., None], idx.shape + (3,)).astype(np.int32),
        objects=np.zeros(idx.shape + (2, 5), np.int32),
        carrying=np.zeros(idx.shape + (2,), np.int32),
        overflow=np.zeros(idx.shape, bool),
    )
    want = {tuple(distinct[i]) for i in np.unique(idx[missed])}
    collect = jax.jit(hints.collect_misses, static_argnames="size")
    buf = collect(keys, missed, missions, per, size=64)
    n = int(buf.count)
    assert n == len(want) and int(buf.overflow) == 0
    got = {tuple(k) for k in np.asarray(buf.keys)[:n].tolist()}
    assert got == want
    for k, m, w in zip(np.asarray(buf.keys)[:n], np.asarray(buf.missions)[:n], np.asarray(buf.percepts.walls)[:n]):
        i = m[0]  # the mission/percept rows travel with their key
        assert tuple(distinct[i]) == tuple(k) and (w == i).all()
    small = collect(keys, missed, missions, per, size=5)
    assert int(small.count) == 5 and int(small.overflow) == len(want) - 5
    assert {tuple(k) for k in np.asarray(small.keys).tolist()} <= want


def _keys(ids):
    return np.stack([np.zeros(len(ids), np.uint32), np.asarray(ids, np.uint32)], 1)


def test_stamps_and_least_recently_used_eviction():
    a = 3
    probs = lambda n: np.full((n, a), 1 / a, np.float32)
    t = hints.merge(hints.empty(4, a), _keys([10, 20, 30]), probs(3), stamp=1)
    t = hints.merge(t, _keys([40]), probs(1), stamp=2)
    t = hints.touch(t, _keys([10, 99]), 5)  # 99 is not in the table: ignored
    stamps = dict(zip(hints.key64(hints.rows(t)[0]).tolist(), np.asarray(t.stamp)[np.asarray(t.valid)].tolist()))
    assert stamps == {10: 5, 20: 1, 30: 1, 40: 2}
    # two new keys into a 4-row limit: the two least recently used go (20 and 30, stamp 1)
    t2, gone = hints.make_room(t, _keys([50, 60]), max_rows=4)
    assert hints.key64(gone).tolist() == [20, 30]
    t2 = hints.merge(t2, _keys([50, 60]), probs(2), stamp=6)
    assert hints.key64(hints.rows(t2)[0]).tolist() == [10, 40, 50, 60] and t2.capacity == 4
    # re-scoring a key the table holds needs no room, and that key is never the one evicted
    t3, gone = hints.make_room(t2, _keys([40, 70]), max_rows=4)
    assert hints.key64(gone).tolist() == [10]  # stamp 5 < 6; 40 (stamp 2) is being re-scored
    assert hints.make_room(t2, _keys([70]), max_rows=0)[1].shape == (0, 2)  # no limit
    # a long stream of new keys stays within the limit and the capacity never grows past it
    rng = np.random.default_rng(0)
    t = hints.empty(2, a)
    for it in range(50):
        new = _keys(rng.choice(10**6, 8, replace=False))
        t, _ = hints.make_room(t, new, max_rows=32)
        t = hints.merge(t, new, probs(8), grow=True, stamp=it)
        assert int(np.sum(np.asarray(t.valid))) <= 32 and t.capacity <= 32
    assert sorted(set(np.asarray(t.stamp)[np.asarray(t.valid)].tolist())) == list(range(46, 50))
