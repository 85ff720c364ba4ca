"""The seen store's Bloom filter (socialrec/stores/seen/bloom.py): no false negatives, the
false-positive rate it was sized for, serialisation, the same bits in every process, growth;
and the set-like helpers of socialrec/stores/seen/base.py (contains_many, ExcludedPosts)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from socialrec.stores.seen.base import (
    ExcludedPosts,
    PostSet,
    SeenState,
    as_post_set,
    contains_many,
)
from socialrec.stores.seen.bloom import (
    BloomFilter,
    add_in_place,
    capacity_for,
    size_for,
    updated_filter,
)

INT64 = np.iinfo(np.int64)


def _ids(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(INT64.min, INT64.max, n, dtype=np.int64)


@pytest.mark.parametrize("fp_rate", [0.01, 0.001])
def test_no_false_negatives_and_the_false_positive_rate(fp_rate):
    bloom = BloomFilter.for_capacity(2_000, fp_rate)
    added = _ids(1, 2_000)
    assert bloom.add_many(added) == 2_000 and len(bloom) == 2_000
    assert bloom.contains_many(added).all()  # vectorised
    assert all(int(p) in bloom for p in added)  # one id at a time (plain Python hashing)
    unseen = np.setdiff1d(_ids(2, 20_000), added)
    rate = bloom.contains_many(unseen).mean()
    assert rate <= 2 * fp_rate, rate
    # the scalar and vectorised paths compute the same positions
    assert [int(p) in bloom for p in unseen[:3_000]] == bloom.contains_many(unseen[:3_000]).tolist()


def test_sizing_and_small_ids():
    m, k = size_for(2_000, 0.01)
    assert m % 8 == 0 and 19_000 < m < 19_300 and k == 7  # 2.4 kB for 2,000 ids at 1%
    bloom = BloomFilter.for_capacity(100, 0.01)
    ids = [0, 1, -1, INT64.min, INT64.max, *range(1_000, 1_090)]
    bloom.add_many(ids)
    assert bloom.contains_many(ids).all() and all(i in bloom for i in ids)
    assert np.int64(1_005) in bloom and "1005" not in bloom and None not in bloom
    assert bloom.add_many([1_000, 1_000, 1_001]) == 0 and len(bloom) == len(ids)  # no recount
    assert bloom.contains_many([]).shape == (0,)
    assert capacity_for(0, 16) == 16 and capacity_for(3_000) == 8_192
    assert capacity_for(10, 1_024) == 1_024
    with pytest.raises(ValueError):
        size_for(100, 0.0)


def test_serialisation_round_trip():
    bloom = BloomFilter.for_capacity(500, 0.01)
    bloom.add_many(_ids(3, 400))
    data = bloom.to_bytes()
    assert data[:4] == b"SRBF" and len(data) == 32 + bloom.m // 8
    back = BloomFilter.from_bytes(data)
    assert (back.m, back.k, back.capacity, len(back)) == (bloom.m, bloom.k, 500, len(bloom))
    assert back.to_bytes() == data and back.contains_many(_ids(3, 400)).all()
    for bad in (b"", data[:-1], b"XXXX" + data[4:]):
        with pytest.raises(ValueError):
            BloomFilter.from_bytes(bad)
    copy = bloom.copy()
    copy.add_many([42])
    assert 42 in copy and bloom.to_bytes() == data  # a copy does not share the bits


def test_the_same_bits_in_another_process():
    """No Python hash(): a worker, the seen_history asset and a test compute the same filter."""
    ids = [int(i) for i in _ids(4, 300)] + [5, -5]
    bloom = BloomFilter.for_capacity(512, 0.01)
    bloom.add_many(ids)
    code = (
        "import sys; from socialrec.stores.seen.bloom import BloomFilter; "
        "b = BloomFilter.for_capacity(512, 0.01); "
        f"b.add_many({ids!r}); sys.stdout.write(b.to_bytes().hex())"
    )
    env_hash = {"PYTHONHASHSEED": "12345"}  # a different str/bytes hash seed changes nothing
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env_hash
    )
    assert out.returncode == 0, out.stderr
    assert bytes.fromhex(out.stdout) == bloom.to_bytes()


def test_growth_rebuilds_at_twice_the_capacity():
    rows: list[int] = []
    bloom = None
    for start in range(0, 5_000, 250):
        batch = list(range(start, start + 250))
        rows += batch
        bloom = updated_filter(bloom, batch, lambda r=rows: r, 0.01, 64)
        assert len(bloom) <= bloom.capacity
    assert bloom.capacity >= 5_000 and bloom.contains_many(rows).all()
    assert bloom.contains_many(np.arange(10**6, 10**6 + 20_000)).mean() <= 0.02


def test_contains_many_and_excluded_posts():
    bloom = BloomFilter.build([1, 2, 3], 0.01, 64)
    assert isinstance(bloom, PostSet) and isinstance(frozenset(), PostSet)
    ids = np.array([1, 2, 3, 4, 5, 6], dtype=np.int64)
    assert contains_many(frozenset({2, 5}), ids).tolist() == [0, 1, 0, 0, 1, 0]
    assert contains_many([5, 2], ids.tolist()).tolist() == [0, 1, 0, 0, 1, 0]  # a list
    assert contains_many(frozenset(), ids).tolist() == [0] * 6
    assert contains_many(bloom, ids)[:3].all()
    excluded = ExcludedPosts(bloom, frozenset({3, 6}))  # 6: a negative not in the filter
    assert 6 in excluded and 1 in excluded and len(excluded) == 4
    assert contains_many(excluded, ids)[[0, 1, 2, 5]].all()
    assert as_post_set((7, 8)) == {7, 8} and as_post_set(bloom) is bloom
    # SeenState: exact sets give a frozenset union, a filter gives the union object
    assert SeenState(frozenset({1}), frozenset({2})).excluded == {1, 2}
    state = SeenState(bloom, frozenset({3}))
    assert isinstance(state.excluded, ExcludedPosts) and not state.exact
    assert SeenState(frozenset({1})).exact


def test_a_few_ids_at_a_time_set_the_same_bits_as_an_array():
    """add_many of a few ids (a write's posts) hashes in plain Python: the same positions."""
    ids = [int(i) for i in _ids(5, 200)]
    one = BloomFilter.for_capacity(256, 0.01)
    one.add_many(np.asarray(ids, dtype=np.int64))
    few = BloomFilter.for_capacity(256, 0.01)
    for start in range(0, len(ids), 5):
        few.add_many(ids[start : start + 5] + ids[start : start + 1])  # a repeat: counted once
    assert few.to_bytes() == one.to_bytes() and len(few) == len(one) == 200


def test_add_in_place_touches_the_same_bits():
    """The SQLite store's small writes set bits in the stored blob: the same bytes as
    add_many; a bad blob is left alone, a full filter reports it (the store rebuilds it)."""
    base = BloomFilter.for_capacity(64, 0.01)
    base.add_many(range(50))
    blob = bytearray(base.to_bytes())
    assert add_in_place(blob, [100, 101, 101, 3])  # 3 is already in: 2 new
    base.add_many([100, 101, 3])
    assert bytes(blob) == base.to_bytes() and len(BloomFilter.from_bytes(bytes(blob))) == 52
    assert not add_in_place(blob, range(200, 220))  # past its capacity of 64
    assert BloomFilter.from_bytes(bytes(blob)).contains_many(range(200, 220)).all()
    bad = bytearray(b"XXXX" + bytes(blob[4:]))
    assert not add_in_place(bad, [1]) and bad[4:] == blob[4:]
    assert not add_in_place(bytearray(b"SRBF"), [1])
