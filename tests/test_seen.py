"""SQLiteSeenStore: marks, negatives, bulk loads, a second process reading (WAL)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from socialrec.seen import SeenStore, SQLiteSeenStore, open_seen_store
from socialrec.settings import Settings


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
        "from socialrec.seen import SQLiteSeenStore; "
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
    from socialrec.seen_scylla import ScyllaSeenStore

    # SCYLLA_HOSTS switches to ScyllaDB; the store connects lazily (no connection made here)
    s = open_seen_store(Settings(data_dir=tmp_path, scylla_hosts="127.0.0.1"))
    assert isinstance(s, ScyllaSeenStore) and s._session is None
