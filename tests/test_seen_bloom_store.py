"""The seen stores' per-user Bloom filters (socialrec/stores/seen/sqlite.py, memory.py): written
with the seen rows by every writer, read by ``state`` in one statement instead of the seen rows;
two workers on one file, growth, an old file without filters, filters off."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from socialrec.settings import Settings
from socialrec.stores.seen import InMemorySeenStore, SeenState, SQLiteSeenStore, open_seen_store
from socialrec.stores.seen.base import contains_many
from socialrec.stores.seen.bloom import BloomFilter


@pytest.fixture(params=["sqlite", "memory"])
def any_store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteSeenStore(tmp_path / "seen.sqlite", bloom_capacity=64)
    else:
        s = InMemorySeenStore(bloom_capacity=64)
    yield s
    s.close()


def _unseen_rate(state: SeenState, start: int = 10**9, n: int = 20_000) -> float:
    return float(contains_many(state.seen, np.arange(start, start + n)).mean())


def test_state_answers_every_marked_post_and_is_exact_on_negatives_and_blocks(any_store):
    store = any_store
    posts = list(range(1_000, 4_000))  # past the first filter's capacity (64): it grows
    for start in range(0, len(posts), 500):
        store.mark(7, posts[start : start + 500], "IMPRESSION")
    store.mark_events([(7, 5, "DISLIKE", None), (7, 6, "REPORT", None), (8, 5, "LIKE", None)])
    store.bulk_load(pd.DataFrame({"user_id": [7, 7], "post_id": [9, 10], "event_type": "VIEW"}))
    store.block(7, [70, 71])
    state = store.state(7)
    assert not state.exact and isinstance(state.seen, BloomFilter)
    every = [*posts, 5, 6, 9, 10]
    assert contains_many(state.seen, every).all() and all(p in state.seen for p in every[::97])
    assert contains_many(state.excluded, every).all()
    assert abs(len(state.seen) - len(every)) <= 0.02 * len(every)  # an estimate
    assert state.seen.capacity >= len(every)
    assert state.negatives == {5, 6} and state.blocked == {70, 71}
    assert _unseen_rate(state) <= 0.02  # 1% sized, still bounded after the growth
    assert 5 in store.state(8).seen and store.state(8).negatives == set()
    assert store.state(9) == SeenState()  # no rows: exact and empty


def test_two_workers_on_one_file_see_each_others_marks(tmp_path):
    """No per-process cache: a mark through one store object (a worker, the seen_history
    asset) is in the other's very next state()."""
    path = tmp_path / "seen.sqlite"
    with SQLiteSeenStore(path, bloom_capacity=32) as a, SQLiteSeenStore(path) as b:
        a.mark(1, [10], "VIEW")
        assert 10 in b.state(1).seen
        b.mark_events([(1, 11, "LIKE", None)])
        a.bulk_load(pd.DataFrame({"user_id": [1], "post_id": [12], "event_type": ["DISLIKE"]}))
        for store in (a, b):
            state = store.state(1)
            assert all(p in state.seen for p in (10, 11, 12)) and state.negatives == {12}

        # concurrent writers of the same user: the read-modify-write of the filter is inside
        # the write transaction (a's batches of 10 update the stored blob in place, b's of 100
        # rewrite it), so neither loses the other's bits
        def write(store, first, step):
            for start in range(first, first + 2_000, step):
                store.mark(2, range(start, start + step), "IMPRESSION")

        threads = [
            threading.Thread(target=write, args=(a, 0, 10)),
            threading.Thread(target=write, args=(b, 100_000, 100)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        every = [*range(2_000), *range(100_000, 102_000)]
        for store in (a, b):
            assert contains_many(store.state(2).seen, every).all()


def test_state_is_one_statement_that_skips_the_seen_rows(tmp_path):
    path = tmp_path / "seen.sqlite"
    with SQLiteSeenStore(path) as store:
        store.mark(1, range(100, 600), "IMPRESSION")
        store.mark(1, [101], "DISLIKE")
        store.block(1, [9])
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        state = store.state(1)
        store._conn.set_trace_callback(None)
        assert len(statements) == 1 and statements[0].lstrip().startswith("SELECT 0")
        assert state.negatives == {101} and state.blocked == {9} and not state.exact
        # a seen row written behind the store's back (no filter update) is not read for a user
        # with a filter: state() reads the filter, not the user's seen rows
        raw = sqlite3.connect(path)
        raw.execute("INSERT INTO seen VALUES (1, 999999, 'VIEW', 0), (2, 5, 'VIEW', 0)")
        raw.commit()
        raw.close()
        assert 999999 not in store.state(1).seen
        assert store.state(2) == SeenState(frozenset({5}))  # no filter: the exact read
        store.mark(2, [6], "VIEW")  # the next write builds user 2's filter from all their rows
        user2 = store.state(2)
        assert 5 in user2.seen and 6 in user2.seen and not user2.exact


def test_an_old_file_without_filters_stays_exact(tmp_path):
    path = tmp_path / "seen.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(SQLiteSeenStore._DDL)
    conn.executemany(
        "INSERT INTO seen VALUES (?, ?, ?, 0)",
        [(1, 5, "VIEW"), (1, 6, "DISLIKE"), (1, 7, "LIKE"), (2, 5, "VIEW")],
    )
    conn.commit()
    conn.close()
    with SQLiteSeenStore(path) as store:
        assert store.state(1) == SeenState(frozenset({5, 6, 7}), frozenset({6}))
        store.mark(1, [8], "VIEW")
        state = store.state(1)
        assert not state.exact and all(p in state.seen for p in (5, 6, 7, 8))
        assert len(state.seen) == 4 and state.negatives == {6}
        assert store.state(2) == SeenState(frozenset({5}))  # untouched: still exact


@pytest.mark.parametrize("backend", ["sqlite", "memory"])
def test_filters_off_gives_exact_sets(tmp_path, backend):
    settings = Settings(data_dir=tmp_path, seen_bloom_fp_rate=0)
    with open_seen_store(settings, backend) as store:
        store.mark(1, [5, 6], "VIEW")
        store.mark(1, [6], "REPORT")
        assert store.state(1) == SeenState(frozenset({5, 6}), frozenset({6}))
        assert store.state(1).excluded == {5, 6}
    if backend == "memory":
        return
    # on by default; a write while off drops the user's filter, so it never misses that write
    with open_seen_store(Settings(data_dir=tmp_path)) as on:
        on.mark(1, [7], "VIEW")
        assert not on.state(1).exact
    with SQLiteSeenStore(tmp_path / "seen.sqlite", bloom_fp_rate=0) as off:
        off.mark(1, [8], "VIEW")
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as on:
        assert on.state(1) == SeenState(frozenset({5, 6, 7, 8}), frozenset({6}))


def test_bad_bloom_settings_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        SQLiteSeenStore(tmp_path / "seen.sqlite", bloom_fp_rate=0.7)
    with pytest.raises(ValueError):
        InMemorySeenStore(bloom_fp_rate=-0.1)
    with pytest.raises(ValueError):
        Settings(seen_bloom_fp_rate=0.5)
