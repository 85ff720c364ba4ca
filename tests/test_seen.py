"""SQLiteSeenStore: marks, negatives, bulk loads, a second process reading (WAL); blocks and the
one read of a request (``state``) on the SQLite and in-memory stores; the backends' registry."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from socialrec.settings import Settings
from socialrec.stores.seen import (
    InMemorySeenStore,
    SeenState,
    SeenStore,
    SQLiteSeenStore,
    backends,
    open_seen_store,
    register,
)
from socialrec.stores.seen.base import contains_many


@pytest.fixture
def store(tmp_path):
    s = SQLiteSeenStore(tmp_path / "seen.sqlite")
    yield s
    s.close()


def test_mark_seen_and_negatives(store):
    assert isinstance(store, SeenStore)
    assert store.seen(1) == set() and store.negatives(1) == set()
    store.mark(1, [10, 11], "IMPRESSION")
    store.mark(1, [11], "LIKE", ts="2026-01-03T10:11:12Z")
    store.mark_seen(1, [12], "DISLIKE")
    store.mark(1, [13], "REPORT", ts=1_767_225_600)
    store.mark(2, [10], "VIEW")
    assert store.seen(1) == {10, 11, 12, 13}
    assert store.negatives(1) == {12, 13}
    assert store.seen(2) == {10} and store.negatives(2) == set()
    store.mark(1, [10], "IMPRESSION")  # idempotent
    assert store.count() == 6


def test_unknown_event_type_is_rejected(store):
    with pytest.raises(ValueError):
        store.mark(1, [1], "HACK")
    with pytest.raises(ValueError):
        store.bulk_load(pd.DataFrame({"user_id": [1], "post_id": [2], "event_type": ["NOPE"]}))


def test_bulk_load(store):
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 2],
            "post_id": [5, 6, 5, 7, 7],
            "event_type": ["VIEW", "REPORT", "LIKE", "IMPRESSION", "IMPRESSION"],
            "ts": pd.to_datetime(["2026-01-01"] * 4 + ["2026-01-02"], utc=True),
        }
    )
    assert store.bulk_load(frame) == 5
    assert store.seen(1) == {5, 6} and store.negatives(1) == {6}
    assert store.seen(2) == {5, 7}
    assert store.count() == 4
    assert store.bulk_load(frame.iloc[:0]) == 0


def test_wal_and_second_process_reads(store, tmp_path):
    store.mark(3, [1, 2, 3], "VIEW")
    mode = sqlite3.connect(tmp_path / "seen.sqlite").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"
    code = (
        "from socialrec.stores.seen import SQLiteSeenStore; "
        f"s = SQLiteSeenStore({str(tmp_path / 'seen.sqlite')!r}); print(sorted(s.seen(3)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1, 2, 3]"
    store.mark(3, [4], "VIEW")  # the writer is not blocked by the reader having been there
    assert 4 in store.seen(3)


def test_open_seen_store(tmp_path, monkeypatch):
    s = open_seen_store(Settings(data_dir=tmp_path))
    try:
        assert isinstance(s, SQLiteSeenStore) and s.path == tmp_path / "seen.sqlite"
    finally:
        s.close()
    from socialrec.stores.seen.scylla.store import ScyllaSeenStore

    # SCYLLA_HOSTS switches to ScyllaDB; the store connects lazily (no connection made here)
    s = open_seen_store(Settings(data_dir=tmp_path, scylla_hosts="127.0.0.1"))
    assert isinstance(s, ScyllaSeenStore) and s._session is None


def test_backends_register_themselves(tmp_path, monkeypatch):
    import socialrec.stores.seen.base as base

    assert {"sqlite", "memory", "scylla"} <= set(backends())
    memory = open_seen_store(Settings(data_dir=tmp_path), "memory")
    assert isinstance(memory, InMemorySeenStore) and isinstance(memory, SeenStore)
    with pytest.raises(ValueError, match="unknown seen store backend 'nope'"):
        open_seen_store(Settings(data_dir=tmp_path), "nope")
    monkeypatch.setattr(base, "_OPENERS", dict(base._OPENERS))  # the registration is undone
    made = InMemorySeenStore()
    register("custom")(lambda settings: made)
    assert open_seen_store(Settings(data_dir=tmp_path), "custom") is made


def test_the_interface_imports_no_backend():
    import ast

    import socialrec.stores.seen.base as base

    tree = ast.parse(open(base.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("socialrec.stores.seen")}
    # the package registers every backend without loading the ScyllaDB driver
    code = "import sys, socialrec.stores.seen; print('cassandra' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- blocks -----------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "memory"])
def any_store(request, tmp_path):
    s = (
        SQLiteSeenStore(tmp_path / "seen.sqlite")
        if request.param == "sqlite"
        else InMemorySeenStore()
    )
    yield s
    s.close()


def test_block_unblock_and_blocked_creators(any_store):
    store = any_store
    assert isinstance(store, SeenStore)
    assert store.blocked_creators(1) == set()
    assert store.block(1, [100, 101]) == 2
    assert store.blocked_creators(1) == {100, 101}
    # idempotent re-block (with a ts, in every accepted form): still one block per creator
    assert store.block(1, [101, 101, 102], ts="2026-01-03T10:11:12Z") == 2  # distinct ids
    assert store.block(1, (c for c in [100]), ts=1_767_225_600) == 1  # a generator
    assert store.blocked_creators(1) == {100, 101, 102}
    # users are independent
    assert store.block(2, np.array([101, 200], dtype=np.int64)) == 2  # numpy ints are fine
    assert store.blocked_creators(2) == {101, 200}
    assert store.unblock(1, [101, 999]) == 2  # 999 was never blocked: a no-op
    assert store.blocked_creators(1) == {100, 102}
    assert store.blocked_creators(2) == {101, 200}  # user 2's block of 101 is untouched
    assert store.unblock(2, [101, 200]) == 2 and store.blocked_creators(2) == set()
    assert store.unblock(2, [101]) == 1 and store.blocked_creators(2) == set()
    assert store.block(2, [101]) == 1 and store.blocked_creators(2) == {101}  # blocked again
    assert store.block(1, []) == 0 and store.unblock(1, []) == 0
    assert store.blocked_creators(1) == {100, 102}
    assert store.blocked_creators(3) == set()
    # blocks and seen rows are separate state
    store.mark(1, [100], "VIEW")
    assert store.seen(1) == {100} and store.negatives(1) == set()
    assert store.blocked_creators(1) == {100, 102}


def test_state_is_one_read_of_seen_negatives_and_blocks(any_store):
    store = any_store
    assert store.state(1) == SeenState()
    store.mark(1, [10, 11], "IMPRESSION")
    store.mark(1, [11], "DISLIKE")
    store.mark(1, [12], "REPORT")
    store.mark(2, [10], "VIEW")
    store.block(1, [100, 101])
    state = store.state(1)
    # seen: the user's Bloom filter (in, len, contains_many), exact on these posts
    assert store.seen(1) == {10, 11, 12}
    assert all(p in state.seen for p in (10, 11, 12)) and len(state.seen) == 3
    assert state.negatives == store.negatives(1) == {11, 12}
    assert state.blocked == store.blocked_creators(1) == {100, 101}
    assert len(state.excluded) == 3 and contains_many(state.excluded, [10, 11, 12]).all()
    assert store.count() == 5  # rows: (user, post, event type)
    other = store.state(np.int64(2))
    assert 10 in other.seen and len(other.seen) == 1 and other.negatives == other.blocked == set()
    with pytest.raises(ValueError):
        store.state("1")


BAD_BLOCK_CALLS = {
    "str user_id": lambda s: s.block("1", [2]),
    "float user_id": lambda s: s.block(1.0, [2]),
    "None user_id": lambda s: s.block(None, [2]),
    "bool user_id": lambda s: s.block(True, [2]),  # a bool is not an id
    "str creator_id": lambda s: s.block(1, [2, "3"]),  # nothing of a bad batch is written
    "float creator_id": lambda s: s.block(1, [2, 3.5]),
    "None creator_id": lambda s: s.block(1, [2, None]),
    "past int64": lambda s: s.block(1, [2, 2**63]),  # SQLite INTEGER, CQL bigint
    "not an iterable": lambda s: s.block(1, 2),
    "a str of digits": lambda s: s.block(1, "23"),  # not a list of ids
    "bad ts": lambda s: s.block(1, [2], ts="not a time"),
    "unblock str user_id": lambda s: s.unblock("1", [2]),
    "unblock str creator_id": lambda s: s.unblock(1, [2, "3"]),
    "unblock not an iterable": lambda s: s.unblock(1, 2),
    "blocked_creators str": lambda s: s.blocked_creators("1"),
    "blocked_creators float": lambda s: s.blocked_creators(1.5),
}


@pytest.mark.parametrize("call", BAD_BLOCK_CALLS.values(), ids=BAD_BLOCK_CALLS.keys())
def test_block_ids_are_validated(any_store, call):
    assert any_store.block(1, [2, 3]) == 2
    with pytest.raises(ValueError):
        call(any_store)
    assert any_store.blocked_creators(1) == {2, 3}  # unchanged
    assert any_store.blocked_creators(np.int64(1)) == {2, 3}
    assert any_store.block(-(2**63), [2**63 - 1]) == 1  # the int64 bounds themselves are fine
    assert any_store.blocked_creators(-(2**63)) == {2**63 - 1}


def test_blocks_survive_reopening(tmp_path):
    path = tmp_path / "seen.sqlite"
    with SQLiteSeenStore(path) as store:
        store.block(1, [100, 101], ts=1_767_225_600)
        store.block(1, [101], ts=1_767_312_000)  # re-block: one row, the later ts
        store.block(2, [100])
        store.unblock(2, [100])
        store.mark(1, [5], "LIKE")
    with SQLiteSeenStore(path) as store:
        assert store.blocked_creators(1) == {100, 101} and store.blocked_creators(2) == set()
        assert store.seen(1) == {5}
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT user_id, creator_id, ts FROM blocked ORDER BY 1, 2").fetchall()
        assert rows == [(1, 100, 1_767_225_600.0), (1, 101, 1_767_312_000.0)]
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'blocked'").fetchone()[0]
        assert "WITHOUT ROWID" in sql and "PRIMARY KEY (user_id, creator_id)" in sql
    finally:
        conn.close()


def test_blocks_table_is_added_to_an_existing_database(tmp_path):
    """A seen.sqlite written before blocks existed gets the table on its next open."""
    path = tmp_path / "seen.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(SQLiteSeenStore._DDL)
    conn.execute("INSERT INTO seen VALUES (1, 5, 'VIEW', 0)")
    conn.commit()
    conn.close()
    with SQLiteSeenStore(path) as store:
        assert store.seen(1) == {5} and store.blocked_creators(1) == set()
        assert store.block(1, [7]) == 1 and store.blocked_creators(1) == {7}


def test_a_second_process_sees_blocks(tmp_path):
    path = tmp_path / "seen.sqlite"
    with SQLiteSeenStore(path) as store:
        store.block(4, [40, 41])
        code = (
            "from socialrec.stores.seen import SQLiteSeenStore; "
            f"s = SQLiteSeenStore({str(path)!r}); print(sorted(s.blocked_creators(4)))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[40, 41]"
