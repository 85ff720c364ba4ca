"""The embedded seen store: SQLite in WAL mode (the service writes while another process, e.g.
the ``seen_history`` asset or a benchmark, reads).

Each user's seen posts are also kept as a Bloom filter (:mod:`.bloom`) in the ``seen_bloom``
table, updated by every write in the same transaction as the seen rows (``BEGIN IMMEDIATE``:
SQLite's write lock, so two processes or workers writing the same user cannot lose each other's
bits, and no process holds a stale copy). A write of a few posts of a user sets their bits in
the stored blob in place; a larger one rewrites the blob. ``state`` reads the filter, the negatives and the
blocks in one statement instead of every seen row. A user without a filter (rows written
before filters existed, or while they were off) is read exactly, and gets a filter at their next
write. ``bloom_fp_rate=0`` turns the filters off: writes drop the users' filters (so turning them
on later never reads one that missed a write) and ``state`` reads every seen row."""

from __future__ import annotations

import logging
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
from socialrec.stores.seen.bloom import BloomFilter, add_in_place, updated_filter
from socialrec.timeutil import epoch_seconds, seconds

log = logging.getLogger(__name__)
IN_PLACE = 64  # a write of at most this many posts of a user updates their blob in place


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
    # the users' Bloom filters of their seen posts (bloom.BloomFilter.to_bytes)
    _BLOOM_DDL = """
        CREATE TABLE IF NOT EXISTS seen_bloom (
            user_id INTEGER PRIMARY KEY,
            bits    BLOB    NOT NULL
        )
    """
    _BLOOM = "SELECT bits FROM seen_bloom WHERE user_id = ?"
    _HAVE_BLOOM = "SELECT user_id FROM seen_bloom WHERE user_id IN ({})"
    _PUT_BLOOM = "INSERT OR REPLACE INTO seen_bloom (user_id, bits) VALUES (?, ?)"
    _DROP_BLOOM = "DELETE FROM seen_bloom WHERE user_id = ?"
    _NEG = ", ".join(f":n{i}" for i in range(len(NEGATIVE_EVENTS)))
    # state(): one statement (one read transaction, a consistent view). Rows (kind, id, bits):
    # 0 the Bloom filter, 1 a negative, 2 a blocked creator, 3 a seen post -- the seen posts
    # only for a user without a filter (_STATE) or always (_STATE_EXACT, filters off)
    _STATE_PARTS = (
        "SELECT 1, post_id, NULL FROM seen WHERE user_id = :u AND event_type IN (" + _NEG + ")",
        "SELECT 2, creator_id, NULL FROM blocked WHERE user_id = :u",
    )
    _STATE = " UNION ALL ".join(
        (
            "SELECT 0, NULL, bits FROM seen_bloom WHERE user_id = :u",
            *_STATE_PARTS,
            "SELECT 3, post_id, NULL FROM seen WHERE user_id = :u"
            " AND NOT EXISTS (SELECT 1 FROM seen_bloom WHERE user_id = :u)",
        )
    )
    _STATE_EXACT = " UNION ALL ".join(
        (*_STATE_PARTS, "SELECT 3, post_id, NULL FROM seen WHERE user_id = :u")
    )

    def __init__(
        self,
        path: str | Path,
        bloom_fp_rate: float = 0.01,
        bloom_capacity: int = 1024,
    ):
        if not 0.0 <= bloom_fp_rate < 0.5 or bloom_capacity < 1:
            raise ValueError(f"bad Bloom filter settings {bloom_fp_rate}, {bloom_capacity}")
        self.bloom_fp_rate, self.bloom_capacity = float(bloom_fp_rate), int(bloom_capacity)
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
            self._conn.execute(self._BLOOM_DDL)
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
        """Upsert the rows and update their users' Bloom filters, in one write transaction."""
        if not rows:
            return 0
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")  # the write lock first: read-modify-write of filters
            try:
                conn.executemany(self._UPSERT, rows)
                self._update_blooms(rows)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return len(rows)

    def _update_blooms(self, rows: list[tuple]) -> None:
        """Add the rows' posts to their users' filters (inside the write transaction): a user
        without one, or whose filter outgrew its capacity, gets one built from all their rows."""
        by_user: dict[int, list[int]] = {}
        for row in rows:
            by_user.setdefault(row[0], []).append(row[1])
        conn = self._conn
        if self.bloom_fp_rate <= 0:
            conn.executemany(self._DROP_BLOOM, [(u,) for u in by_user])
            return
        users, have = list(by_user), set()
        for start in range(0, len(users), 500):  # SQLite's bound-parameter limit
            part = users[start : start + 500]
            sql = self._HAVE_BLOOM.format(", ".join("?" * len(part)))
            have.update(r[0] for r in conn.execute(sql, part))
        out = []
        for user_id, posts in by_user.items():
            if user_id in have and len(posts) <= IN_PLACE:
                # a few posts: set their bits in the stored blob (header + touched bytes only)
                with conn.blobopen("seen_bloom", "bits", user_id) as blob:
                    if add_in_place(blob, posts):
                        continue
            bloom = None
            if user_id in have:
                try:
                    bloom = BloomFilter.from_bytes(
                        conn.execute(self._BLOOM, (user_id,)).fetchone()[0]
                    )
                except ValueError:
                    log.warning("rebuilding the unreadable Bloom filter of user %s", user_id)
            bloom = updated_filter(
                bloom,
                posts,
                lambda u=user_id: [r[0] for r in conn.execute(self._SEEN, (u,))],
                self.bloom_fp_rate,
                self.bloom_capacity,
            )
            out.append((user_id, bloom.to_bytes()))
        conn.executemany(self._PUT_BLOOM, out)

    def state(self, user_id: int) -> SeenState:
        """The user's seen posts, negatives and blocked creators, read together: one statement
        (a consistent view). ``seen`` is the user's Bloom filter when they have one and filters
        are on, else the exact set of their seen posts."""
        user_id = check_id(user_id, "user_id")
        params = {"u": user_id, **{f"n{i}": e for i, e in enumerate(NEGATIVE_EVENTS)}}
        sql = self._STATE if self.bloom_fp_rate > 0 else self._STATE_EXACT
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        bits, parts = None, ([], [], [])
        for kind, value, blob in rows:
            if kind == 0:
                bits = blob
            else:
                parts[kind - 1].append(value)
        negatives, blocked = frozenset(parts[0]), frozenset(parts[1])
        if bits is None:
            return SeenState(frozenset(parts[2]), negatives, blocked)
        try:
            return SeenState(BloomFilter.from_bytes(bits), negatives, blocked)
        except ValueError:  # unreadable: the exact read (the next write rebuilds the filter)
            log.warning("unreadable Bloom filter of user %s; reading their seen rows", user_id)
            return SeenState(frozenset(self.seen(user_id)), negatives, blocked)

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

    def forget_user(self, user_id: int) -> int:
        """Delete the user's seen rows, Bloom filter and blocks in one transaction."""
        user_id = check_id(user_id, "user_id")
        with self._lock, self._conn:
            n = self._conn.execute("DELETE FROM seen WHERE user_id = ?", (user_id,)).rowcount
            self._conn.execute(self._DROP_BLOOM, (user_id,))
            self._conn.execute("DELETE FROM blocked WHERE user_id = ?", (user_id,))
        return int(n)

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
    return SQLiteSeenStore(
        settings.seen_store_path, settings.seen_bloom_fp_rate, settings.seen_bloom_capacity
    )
