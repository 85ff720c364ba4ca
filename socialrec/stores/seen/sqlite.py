"""The embedded seen store: SQLite in WAL mode (the service writes while another process, e.g.
the ``seen_history`` asset or a benchmark, reads)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from socialrec.settings import NEGATIVE_EVENTS, Settings
from socialrec.stores.seen.base import (
    SeenState,
    check_event_type,
    check_event_types,
    check_id,
    check_ids,
    register,
)
from socialrec.timeutil import epoch_seconds, seconds


class SQLiteSeenStore:
    """One row per (user_id, post_id, event_type), keyed by user_id first (the lookup path)."""

    _DDL = """
        CREATE TABLE IF NOT EXISTS seen (
            user_id    INTEGER NOT NULL,
            post_id    INTEGER NOT NULL,
            event_type TEXT    NOT NULL,
            ts         REAL    NOT NULL,
            PRIMARY KEY (user_id, post_id, event_type)
        ) WITHOUT ROWID
    """
    _UPSERT = """
        INSERT INTO seen (user_id, post_id, event_type, ts) VALUES (?, ?, ?, ?)
        ON CONFLICT (user_id, post_id, event_type) DO UPDATE SET ts = max(ts, excluded.ts)
    """
    # blocks: one row per (user_id, creator_id), no expiry; created with the seen table (and
    # added to an existing database file on its next open)
    _BLOCKED_DDL = """
        CREATE TABLE IF NOT EXISTS blocked (
            user_id    INTEGER NOT NULL,
            creator_id INTEGER NOT NULL,
            ts         REAL    NOT NULL,
            PRIMARY KEY (user_id, creator_id)
        ) WITHOUT ROWID
    """
    _BLOCK = """
        INSERT INTO blocked (user_id, creator_id, ts) VALUES (?, ?, ?)
        ON CONFLICT (user_id, creator_id) DO UPDATE SET ts = excluded.ts
    """
    _UNBLOCK = "DELETE FROM blocked WHERE user_id = ? AND creator_id = ?"
    _SEEN = "SELECT DISTINCT post_id FROM seen WHERE user_id = ?"
    _NEGATIVES = (
        "SELECT DISTINCT post_id FROM seen WHERE user_id = ? AND event_type IN "
        f"({', '.join('?' for _ in NEGATIVE_EVENTS)})"
    )
    _BLOCKED = "SELECT creator_id FROM blocked WHERE user_id = ?"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection shared by the service's worker threads, serialised by a lock
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(self._DDL)
            self._conn.execute(self._BLOCKED_DDL)
            self._conn.commit()

    def mark(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        """Record that ``user_id`` had ``event_type`` on each post; returns the row count."""
        event_type = check_event_type(event_type)
        at = seconds(ts)
        rows = [(int(user_id), int(p), event_type, at) for p in post_ids]
        return self._write(rows)

    # the name docs/contracts.md uses
    def mark_seen(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        return self.mark(user_id, post_ids, event_type, ts)

    def mark_events(self, events: Iterable[tuple[int, int, str, object]]) -> int:
        """Record many (user_id, post_id, event_type, ts) tuples in one transaction."""
        rows = [(int(u), int(p), check_event_type(e), seconds(t)) for u, p, e, t in events]
        return self._write(rows)

    def bulk_load(self, frame: pd.DataFrame) -> int:
        """Load a frame with user_id, post_id, event_type and optionally ts (historical data)."""
        if frame.empty:
            return 0
        now = seconds()
        if "ts" in frame:
            secs = epoch_seconds(frame["ts"], fill=now, dtype=float)
        else:
            secs = [now] * len(frame)
        check_event_types(frame)
        rows = list(
            zip(
                frame["user_id"].astype("int64").tolist(),
                frame["post_id"].astype("int64").tolist(),
                frame["event_type"].astype(str).tolist(),
                [float(s) for s in secs],
                strict=True,
            )
        )
        return self._write(rows)

    def _write(self, rows: list[tuple]) -> int:
        if not rows:
            return 0
        with self._lock, self._conn:
            self._conn.executemany(self._UPSERT, rows)
        return len(rows)

    def state(self, user_id: int) -> SeenState:
        """The user's seen posts, negatives and blocked creators, read together (one lock: a
        consistent view; the same statements as ``seen``, ``negatives``, ``blocked_creators``)."""
        user_id = check_id(user_id, "user_id")
        with self._lock:
            seen = self._conn.execute(self._SEEN, (user_id,)).fetchall()
            negatives = self._conn.execute(self._NEGATIVES, (user_id, *NEGATIVE_EVENTS)).fetchall()
            blocked = self._conn.execute(self._BLOCKED, (user_id,)).fetchall()
        return SeenState(
            frozenset(r[0] for r in seen),
            frozenset(r[0] for r in negatives),
            frozenset(r[0] for r in blocked),
        )

    def seen(self, user_id: int) -> set[int]:
        """Every post the user has any event for."""
        with self._lock:
            return {r[0] for r in self._conn.execute(self._SEEN, (int(user_id),)).fetchall()}

    def negatives(self, user_id: int) -> set[int]:
        """The posts the user disliked or reported."""
        with self._lock:
            cur = self._conn.execute(self._NEGATIVES, (int(user_id), *NEGATIVE_EVENTS))
            return {r[0] for r in cur.fetchall()}

    # --- blocks ---------------------------------------------------------------------------------
    def block(self, user_id: int, creator_ids: Iterable[int], ts=None) -> int:
        """Block each creator for ``user_id`` (idempotent); returns the distinct creator count."""
        user_id = check_id(user_id, "user_id")
        creators = check_ids(creator_ids, "creator_id")
        at = seconds(ts)
        if not creators:
            return 0
        with self._lock, self._conn:
            self._conn.executemany(self._BLOCK, [(user_id, c, at) for c in creators])
        return len(creators)

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int:
        """Remove the user's blocks of these creators; returns the distinct creator count."""
        user_id = check_id(user_id, "user_id")
        creators = check_ids(creator_ids, "creator_id")
        if not creators:
            return 0
        with self._lock, self._conn:
            self._conn.executemany(self._UNBLOCK, [(user_id, c) for c in creators])
        return len(creators)

    def blocked_creators(self, user_id: int) -> set[int]:
        """The creators ``user_id`` blocks."""
        user_id = check_id(user_id, "user_id")
        with self._lock:
            cur = self._conn.execute(self._BLOCKED, (user_id,))
            return {r[0] for r in cur.fetchall()}

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteSeenStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@register("sqlite")
def open_sqlite(settings: Settings) -> SQLiteSeenStore:
    return SQLiteSeenStore(settings.seen_store_path)
