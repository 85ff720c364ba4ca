"""BloomFilter and BloomFilteredSeenStore: no false negatives, the configured false-positive
rate, LRU eviction and rebuild on a miss, read-your-writes through the wrapper."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from socialrec.settings import EVENT_TYPES, Settings
from socialrec.stores.bloom import BloomFilter, BloomFilteredSeenStore
from socialrec.stores.seen import InMemorySeenStore, SeenStore, SQLiteSeenStore, open_seen_store

INT64 = np.iinfo(np.int64)


class CountingStore(InMemorySeenStore):
    """An in-memory store that counts reads (to see when the wrapper rebuilds a filter)."""

    def __init__(self):
        super().__init__()
        self.seen_calls: list[int] = []

    def seen(self, user_id):
        self.seen_calls.append(int(user_id))
        return super().seen(user_id)


# --- BloomFilter --------------------------------------------------------------------------------
def test_no_false_negatives_random_ids():
    for seed in range(30):
        rng = np.random.default_rng(seed)
        capacity = int(rng.integers(1, 3000))
        bloom = BloomFilter(capacity, float(rng.uniform(0.0005, 0.3)))
        added: list[np.ndarray] = []
        for _ in range(int(rng.integers(1, 6))):
            n = int(rng.integers(0, 3 * capacity))
            ids = rng.integers(INT64.min, INT64.max, size=n, dtype=np.int64, endpoint=True)
            if rng.random() < 0.5:
                ids = np.concatenate([ids, rng.integers(-5, 10_000, size=n // 2)])
            bloom.add(ids if rng.random() < 0.5 else ids.tolist())
            added.append(ids)
            everything = np.concatenate(added)
            assert bloom.contains(everything).all(), f"false negative (seed {seed})"
        sample = np.concatenate(added)[:50].tolist()
        assert all(p in bloom for p in sample)
    assert BloomFilter(10, 0.01).contains([]).shape == (0,)


def test_empty_filter_and_bad_parameters():
    bloom = BloomFilter(100, 0.01)
    assert not bloom.contains(range(1000)).any() and len(bloom) == 0
    assert bloom.add([]) == 0
    assert bloom.add([7, 7, 7, 8]) == 2 and len(bloom) == 2
    assert bloom.add([7]) == 0  # already there: not counted twice
    for capacity, rate in ((0, 0.01), (10, 0.0), (10, 1.0)):
        with pytest.raises(ValueError):
            BloomFilter(capacity, rate)


@pytest.mark.parametrize("fp_rate", [0.001, 0.01, 0.05])
def test_false_positive_rate_close_to_configured(fp_rate):
    capacity = 2000
    bloom = BloomFilter(capacity, fp_rate)
    bloom.add(np.arange(capacity, dtype=np.int64) * 2)  # sequential ids, like post ids
    queries = np.arange(400_000, dtype=np.int64) * 2 + 1  # never added
    measured = float(bloom.contains(queries).mean())
    assert abs(measured - fp_rate) < 0.3 * fp_rate, (measured, fp_rate)
    assert abs(bloom.expected_fp_rate() - fp_rate) < 0.15 * fp_rate
    assert bloom.layers == 1


def test_growth_past_capacity_keeps_the_rate_bounded():
    rng = np.random.default_rng(7)
    bloom = BloomFilter(500, 0.01)
    ids = rng.integers(0, 2**40, size=5000)
    bloom.add(ids)
    assert bloom.layers > 1 and bloom.contains(ids).all()
    queries = rng.integers(2**41, 2**42, size=200_000)
    assert bloom.contains(queries).mean() < 2 * 0.01 * 1.2
    assert bloom.expected_fp_rate() < 2 * 0.01


# --- BloomFilteredSeenStore ---------------------------------------------------------------------
def test_wrapper_is_a_drop_in_seen_store():
    inner = InMemorySeenStore()
    store = BloomFilteredSeenStore(inner, capacity=100, fp_rate=0.01, max_users=10)
    assert isinstance(store, SeenStore) and hasattr(store, "mark_events")
    store.mark(1, [10, 11], "IMPRESSION")
    store.mark_seen(1, [12], "DISLIKE")
    assert store.mark_events([(1, 13, "REPORT", None), (2, 10, "LIKE", "2026-01-01")]) == 2
    assert store.seen(1) == inner.seen(1) == {10, 11, 12, 13}
    assert store.negatives(1) == inner.negatives(1) == {12, 13}
    assert store.might_have_seen(1, [10, 11, 12, 13]) == [True] * 4
    assert store.might_have_seen(2, [10]) == [True]
    with pytest.raises(ValueError):  # the store's checks still apply, and nothing is noted
        store.mark(1, [99], "HACK")
    with store:
        pass  # closes the inner store too


def test_marks_reach_store_and_filter_read_your_writes(tmp_path):
    inner = SQLiteSeenStore(tmp_path / "seen.sqlite")
    store = BloomFilteredSeenStore(inner, capacity=50, fp_rate=0.01, max_users=10)
    try:
        assert store.seen(1) == set()  # builds user 1's (empty) filter
        assert store.stats()["builds"] == 1
        posts = list(range(1000, 1040))
        assert not any(store.might_have_seen(1, posts))  # 40 queries on an empty filter
        store.mark(1, (p for p in posts[:5]), "VIEW")  # a generator is consumed once
        assert store.might_have_seen(1, posts[:5]) == [True] * 5
        assert inner.seen(1) == set(posts[:5])  # the store has them too
        store.mark_events([(1, posts[5], "LIKE", None), (3, 7, "VIEW", None)])
        frame = pd.DataFrame(
            {"user_id": [1, 1, 4], "post_id": posts[6:8] + [9], "event_type": ["VIEW"] * 3}
        )
        assert store.bulk_load(frame) == 3
        assert store.might_have_seen(1, posts[:8]) == [True] * 8
        assert store.stats()["builds"] == 1  # all of it without rebuilding user 1's filter
        assert inner.seen(1) == set(posts[:8]) and store.seen(1) == set(posts[:8])
        assert store.might_have_seen(3, [7]) == [True] and store.might_have_seen(4, [9]) == [True]
        assert store.count() == inner.count() == 10  # other attributes are the store's
    finally:
        store.close()


def test_lru_eviction_and_rebuild_on_miss():
    inner = CountingStore()
    inner.mark(1, [11], "VIEW")
    inner.mark(2, [22], "VIEW")
    inner.mark(3, [33], "VIEW")
    store = BloomFilteredSeenStore(inner, capacity=10, fp_rate=0.01, max_users=2)
    assert store.might_have_seen(1, [11]) == [True]
    assert store.might_have_seen(2, [22]) == [True]
    assert inner.seen_calls == [1, 2]
    assert store.might_have_seen(1, [11]) == [True]  # a hit: no read, 1 becomes most recent
    assert inner.seen_calls == [1, 2] and store.cached_users() == [2, 1]
    assert store.might_have_seen(3, [33]) == [True]  # evicts 2, the least recently used
    assert store.cached_users() == [1, 3] and store.stats()["evictions"] == 1
    store.mark(2, [23], "LIKE")  # user 2 has no filter: the mark goes to the store only
    assert store.might_have_seen(2, [22, 23]) == [True, True]  # rebuilt from the store
    assert inner.seen_calls == [1, 2, 3, 2]
    assert store.cached_users() == [3, 2]
    stats = store.stats()
    assert stats == {**stats, "users": 2, "hits": 1, "misses": 4, "builds": 4, "evictions": 2}
    store.invalidate(3)
    assert store.cached_users() == [2]
    store.invalidate()
    assert store.cached_users() == []


def test_seen_warms_the_filter_without_a_second_read():
    inner = CountingStore()
    inner.mark(5, [1, 2, 3], "IMPRESSION")
    inner.mark(5, [3], "DISLIKE")
    store = BloomFilteredSeenStore(inner, capacity=10, fp_rate=0.01)
    assert store.seen(5) == {1, 2, 3} and inner.seen_calls == [5]
    assert store.negatives(5) == {3}
    assert store.might_have_seen(5, [1, 2, 3]) == [True] * 3
    assert inner.seen_calls == [5]  # might_have_seen answered from the warmed filter
    inner.mark(5, [4], "VIEW")  # written by another process, behind the wrapper's back
    assert store.seen(5) == {1, 2, 3, 4}  # seen is always the store's exact answer ...
    assert store.might_have_seen(5, [4]) == [True]  # ... and refreshes the filter with it


def test_marks_during_a_build_are_not_lost():
    """A mark that lands after the store was read but before the filter is installed."""

    class RacingStore(InMemorySeenStore):
        wrapper: BloomFilteredSeenStore | None = None

        def seen(self, user_id):
            snapshot = super().seen(user_id)
            if self.wrapper is not None:  # another thread marks now, after the read
                wrapper, self.wrapper = self.wrapper, None
                wrapper.mark(user_id, [999], "LIKE")
            return snapshot

    inner = RacingStore()
    inner.mark(1, [1], "VIEW")
    store = BloomFilteredSeenStore(inner, capacity=10, fp_rate=0.01)
    inner.wrapper = store
    assert store.might_have_seen(1, [1, 999]) == [True, True]
    assert inner.seen(1) == {1, 999} and store.stats()["builds"] == 1

    class FailingStore(InMemorySeenStore):
        def seen(self, user_id):
            raise ConnectionError("store down")

    failing = BloomFilteredSeenStore(FailingStore(), capacity=10, fp_rate=0.01)
    with pytest.raises(ConnectionError):
        failing.might_have_seen(1, [1])
    assert failing._pending == {} and failing.cached_users() == []


def test_max_age_rebuilds_from_the_store():
    now = [1000.0]
    inner = CountingStore()
    store = BloomFilteredSeenStore(
        inner, capacity=10, fp_rate=0.01, max_age_seconds=60, clock=lambda: now[0]
    )
    assert store.might_have_seen(1, [5]) == [False]
    inner.mark(1, [5], "VIEW")  # another process's write
    now[0] += 59
    assert store.might_have_seen(1, [5]) == [False]  # still within max_age
    now[0] += 2
    assert store.might_have_seen(1, [5]) == [True]  # rebuilt
    assert inner.seen_calls == [1, 1]


def test_no_false_negatives_under_random_operations():
    """Property-style: whatever marks, loads, reads and evictions happen, every post the store
    holds for a user is reported by might_have_seen."""
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        inner = InMemorySeenStore()
        store = BloomFilteredSeenStore(
            inner, capacity=int(rng.integers(1, 40)), fp_rate=0.05, max_users=3
        )
        users = list(range(6))
        for _ in range(150):
            op = rng.integers(0, 6)
            user = int(rng.choice(users))
            posts = rng.integers(-(2**62), 2**62, size=int(rng.integers(1, 20))).tolist()
            event = str(rng.choice(EVENT_TYPES))
            if op == 0:
                store.mark(user, posts, event)
            elif op == 1:
                store.mark_events([(int(rng.choice(users)), p, event, None) for p in posts])
            elif op == 2:
                frame = pd.DataFrame(
                    {
                        "user_id": rng.choice(users, size=len(posts)),
                        "post_id": posts,
                        "event_type": event,
                    }
                )
                store.bulk_load(frame)
            elif op == 3:
                assert store.seen(user) == inner.seen(user)
            elif op == 4:
                store.invalidate(user if rng.random() < 0.8 else None)
            checked = int(rng.choice(users))
            truth = sorted(inner.seen(checked))
            assert all(store.might_have_seen(checked, truth)), f"false negative, seed {seed}"
            assert len(store.cached_users()) <= 3


def test_concurrent_marks_and_reads():
    inner = InMemorySeenStore()
    store = BloomFilteredSeenStore(inner, capacity=100, fp_rate=0.01, max_users=2)
    lock = threading.Lock()  # InMemorySeenStore itself is not thread-safe
    inner_mark, inner_seen = inner.mark, inner.seen

    def locked_mark(*a, **k):
        with lock:
            return inner_mark(*a, **k)

    def locked_seen(*a, **k):
        with lock:
            return inner_seen(*a, **k)

    inner.mark, inner.seen = locked_mark, locked_seen

    def worker(w: int) -> None:
        for i in range(200):
            user = (w + i) % 4
            store.mark(user, [w * 1000 + i], "VIEW")
            store.might_have_seen((user + 1) % 4, [i])

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for user in range(4):
        truth = sorted(inner_seen(user))
        assert len(truth) == 200 and all(store.might_have_seen(user, truth))


def test_blocks_pass_straight_through_to_the_store(tmp_path, monkeypatch):
    """block / unblock / blocked_creators are the wrapper's own methods, forwarding each call
    unchanged to the store: no filter, no cache, no seen reads."""
    calls = []

    class RecordingStore(CountingStore):
        def block(self, user_id, creator_ids, ts=None):
            calls.append(("block", user_id, creator_ids, ts))
            return super().block(user_id, creator_ids, ts)

        def unblock(self, user_id, creator_ids):
            calls.append(("unblock", user_id, creator_ids))
            return super().unblock(user_id, creator_ids)

        def blocked_creators(self, user_id):
            calls.append(("blocked_creators", user_id))
            return super().blocked_creators(user_id)

    for name in ("block", "unblock", "blocked_creators"):
        assert name in vars(BloomFilteredSeenStore), f"{name} relies on __getattr__"
    # they work without the attribute pass-through at all
    monkeypatch.delattr(BloomFilteredSeenStore, "__getattr__")
    inner = RecordingStore()
    store = BloomFilteredSeenStore(inner, capacity=10, fp_rate=0.01, max_users=2)
    assert isinstance(store, SeenStore)
    creators = [100, 101]
    assert store.block(1, creators, ts="2026-01-01") == 2
    assert store.blocked_creators(1) == {100, 101} == inner.blocked_creators(1)
    assert store.block(1, [101]) == 1  # idempotent
    assert store.block(2, [300]) == 1
    assert store.unblock(1, [100]) == 1
    assert store.blocked_creators(1) == {101}  # an unblock shows at once: nothing is cached
    assert store.blocked_creators(2) == {300}
    assert calls[0] == ("block", 1, creators, "2026-01-01")  # the same arguments
    assert calls[0][2] is creators
    assert [c[0] for c in calls] == [
        "block",
        "blocked_creators",
        "blocked_creators",  # inner's own, above
        "block",
        "block",
        "unblock",
        "blocked_creators",
        "blocked_creators",
    ]
    assert inner.seen_calls == [] and store.cached_users() == []  # no filter for blocks
    assert store.stats()["builds"] == 0
    with pytest.raises(ValueError):  # the store's checks apply
        store.block(1, ["102"])
    assert store.blocked_creators(1) == {101}
    monkeypatch.undo()

    with open_seen_store(Settings(data_dir=tmp_path), bloom=True) as sqlite_backed:
        assert sqlite_backed.block(5, [50]) == 1
        assert sqlite_backed.blocked_creators(5) == {50}
        assert sqlite_backed.store.blocked_creators(5) == {50}
        assert sqlite_backed.unblock(5, [50]) == 1 and sqlite_backed.blocked_creators(5) == set()


def test_settings_and_open_seen_store(tmp_path, monkeypatch):
    s = Settings(data_dir=tmp_path)
    assert (s.seen_bloom_capacity, s.seen_bloom_fp_rate, s.seen_bloom_max_users) == (
        2000,
        0.01,
        100_000,
    )
    monkeypatch.setenv("SOCIALREC_SEEN_BLOOM_CAPACITY", "300")
    monkeypatch.setenv("SOCIALREC_SEEN_BLOOM_MAX_USERS", "7")
    store = open_seen_store(Settings(data_dir=tmp_path), bloom=True)
    try:
        assert isinstance(store, BloomFilteredSeenStore)
        assert isinstance(store.store, SQLiteSeenStore)
        assert (store.capacity, store.fp_rate, store.max_users) == (300, 0.01, 7)
        store.mark(1, [2], "VIEW")
        assert store.seen(1) == {2} and store.path == tmp_path / "seen.sqlite"
    finally:
        store.close()
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, seen_bloom_fp_rate=1.5)
