"""Hint tables at a million situations: merges keep every row right, lookups find them."""

import jax
import numpy as np
import pytest

from bidijax import hints as hn

A = 7
N = 1_000_000


def _distinct_keys(rng, n, avoid=None):
    k64 = np.unique(rng.integers(0, 2**64 - 2, size=int(n * 1.1), dtype=np.uint64))
    if avoid is not None:
        k64 = np.setdiff1d(k64, avoid)
    k64 = rng.permutation(k64)[:n]
    assert len(k64) == n
    return k64, np.stack([(k64 >> np.uint64(32)).astype(np.uint32), (k64 & np.uint64(0xFFFFFFFF)).astype(np.uint32)], 1)


def _probs(rng, n):
    p = rng.random((n, A), dtype=np.float32) + 1e-3
    return p / p.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def big():
    rng = np.random.default_rng(0)
    k64, keys = _distinct_keys(rng, N)
    probs = _probs(rng, N)
    table = hn.from_rows(keys, probs, capacity=2**20)
    # 20,000 rows merged: 10,000 overwrite existing situations, 10,000 are new
    over = rng.choice(N, 10_000, replace=False)
    new64, new_keys = _distinct_keys(rng, 10_000, avoid=k64)
    add_keys = np.concatenate([keys[over], new_keys])
    add_probs = _probs(rng, 20_000)
    merged = hn.merge(table, add_keys, add_probs, stamp=7)
    return rng, k64, keys, probs, over, new64, new_keys, add_probs, merged


def test_merge_at_a_million_rows_keeps_every_row(big):
    rng, k64, keys, probs, over, new64, new_keys, add_probs, merged = big
    assert merged.capacity == 2**20
    valid = np.asarray(merged.valid)
    assert valid.sum() == N + 10_000 and valid[: N + 10_000].all() and not valid[N + 10_000 :].any()
    stored = hn.key64(np.asarray(merged.keys)[valid])
    assert np.all(np.diff(stored.astype(np.uint64)) > 0)  # sorted, unique
    assert set(stored.tolist()) == set(k64.tolist()) | set(new64.tolist())
    stamps = dict(zip(stored.tolist(), np.asarray(merged.stamp)[valid].tolist()))
    assert stamps[int(k64[over[0]])] == 7 and stamps[int(new64[0])] == 7
    untouched = np.setdiff1d(np.arange(N), over)[0]
    assert stamps[int(k64[untouched])] == 0


def test_lookup_at_a_million_rows(big):
    rng, k64, keys, probs, over, new64, new_keys, add_probs, merged = big
    untouched = rng.choice(np.setdiff1d(np.arange(N), over), 5_000, replace=False)
    absent64, absent = _distinct_keys(rng, 5_000, avoid=np.concatenate([k64, new64]))
    query = np.concatenate([keys[untouched], keys[over[:5_000]], new_keys[:5_000], absent])
    want = np.concatenate([probs[untouched], add_probs[:5_000], add_probs[10_000:15_000], np.full((5_000, A), 1 / A, np.float32)])
    got, hit, row = jax.jit(hn.lookup)(merged, query)
    hit = np.asarray(hit)
    assert hit[:15_000].all() and not hit[15_000:].any()
    np.testing.assert_array_equal(np.asarray(got), want)
    assert np.all(np.asarray(row)[15_000:] == merged.capacity)
    np.testing.assert_array_equal(np.asarray(merged.keys)[np.asarray(row)[:15_000]], query[:15_000])


def test_merge_past_a_million_grows_once(big):
    rng, k64, keys, probs, over, new64, new_keys, add_probs, merged = big
    more64, more = _distinct_keys(rng, 2**20 - (N + 10_000) + 1, avoid=np.concatenate([k64, new64]))
    with pytest.raises(hn.TableFullError, match="capacity 1048576 is too small for 1048577"):
        hn.merge(merged, more, _probs(rng, len(more)))
    grown = hn.merge(merged, more, _probs(rng, len(more)), grow=True)
    assert grown.capacity == 2**21 and int(np.asarray(grown.valid).sum()) == 2**20 + 1
