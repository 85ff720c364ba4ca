"""The seen store: which posts a user has already been shown or reacted to.

Filtering (stage 2) drops every post the user has any event for, and the write path marks
events here at once, so a user never gets a post again right after reacting to it
(read-your-writes). ``negatives`` are the posts the user disliked or reported.

Embedded default: ``SQLiteSeenStore`` (WAL mode: the service writes while another process,
e.g. the ``seen_history`` asset or a benchmark, reads). Production: ScyllaDB
(``socialrec.stores.seen_scylla.ScyllaSeenStore``), behind the same ``SeenStore`` protocol;
``open_seen_store`` is the one place that chooses. ``socialrec.stores.bloom.BloomFilteredSeenStore``
wraps any of them with per-user Bloom filters.

Blocks: the same store keeps which creators each user blocked (a second, small table), so
filtering also drops the posts of blocked creators. The ``SeenStore`` protocol's block methods:

* ``block(user_id, creator_ids, ts=None) -> int``: block each creator for the user. Idempotent:
  blocking an already blocked creator keeps one block (its ``ts`` becomes this call's). ``ts``
  (None: now; a number, datetime or ISO string, as for ``mark``) is recorded, not used for
  ordering: the latest ``block`` / ``unblock`` call wins.
* ``unblock(user_id, creator_ids) -> int``: remove those blocks (unblocking a creator that is
  not blocked is a no-op).
* ``blocked_creators(user_id) -> set[int]``: the creators the user currently blocks.

Both writes return the number of distinct creator ids in the call (whether or not each one
changed state: a ScyllaDB write cannot tell without a read). A block lasts until it is
unblocked: unlike seen rows, blocks never expire (no TTL on ScyllaDB). User and creator ids must
be integers within int64 (``int``, numpy integers; not bools, floats or strings), else
ValueError, and a call with any bad id writes nothing.
"""

from __future__ import annotations

import operator
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd

from socialrec.settings import EVENT_TYPES, NEGATIVE_EVENTS, Settings


@runtime_checkable
class SeenStore(Protocol):
    def mark(
        self, user_id: int, post_ids: Iterable[int], event_type: str, ts: float | None = None
    ) -> int: ...

    def seen(self, user_id: int) -> set[int]: ...

    def negatives(self, user_id: int) -> set[int]: ...

    def bulk_load(self, frame: pd.DataFrame) -> int: ...

    def block(self, user_id: int, creator_ids: Iterable[int], ts=None) -> int: ...

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int: ...

    def blocked_creators(self, user_id: int) -> set[int]: ...

    def close(self) -> None: ...


def _epoch(ts) -> float:
    """Epoch seconds from None (now), a number, a datetime/Timestamp or an ISO string."""
    if ts is None:
        return time.time()
    if isinstance(ts, int | float):
        return float(ts)
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.timestamp()


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _check_id(value, what: str = "id") -> int:
    """``value`` as an int if it is an integer within int64 (SQLite INTEGER, CQL bigint).

    Accepts ints and numpy integers; anything else (bool, float, str, None...) is a ValueError.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if not _INT64_MIN <= out <= _INT64_MAX:
        raise ValueError(f"{what} {out} is out of the int64 range")
    return out


def _check_ids(values: Iterable[int], what: str = "id") -> list[int]:
    """The distinct ids of ``values`` (first-seen order), all checked before any is used."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{what}s must be an iterable of integers, got {values!r}")
    return list(dict.fromkeys(_check_id(v, what) for v in values))


def _check_event_type(event_type: str) -> str:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event_type {event_type!r}")
    return event_type


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
        event_type = _check_event_type(event_type)
        at = _epoch(ts)
        rows = [(int(user_id), int(p), event_type, at) for p in post_ids]
        return self._write(rows)

    # the name docs/contracts.md uses
    def mark_seen(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        return self.mark(user_id, post_ids, event_type, ts)

    def mark_events(self, events: Iterable[tuple[int, int, str, object]]) -> int:
        """Record many (user_id, post_id, event_type, ts) tuples in one transaction."""
        rows = [(int(u), int(p), _check_event_type(e), _epoch(t)) for u, p, e, t in events]
        return self._write(rows)

    def bulk_load(self, frame: pd.DataFrame) -> int:
        """Load a frame with user_id, post_id, event_type and optionally ts (historical data)."""
        if frame.empty:
            return 0
        if "ts" in frame:
            ts = pd.to_datetime(frame["ts"], utc=True)
            secs = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().fillna(time.time())
        else:
            secs = pd.Series(time.time(), index=frame.index)
        bad = sorted(set(frame["event_type"]) - set(EVENT_TYPES))
        if bad:
            raise ValueError(f"unknown event types {bad}")
        rows = list(
            zip(
                frame["user_id"].astype("int64").tolist(),
                frame["post_id"].astype("int64").tolist(),
                frame["event_type"].astype(str).tolist(),
                secs.astype(float).tolist(),
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

    def seen(self, user_id: int) -> set[int]:
        """Every post the user has any event for."""
        with self._lock:
            cur = self._conn.execute(
                "SELECT DISTINCT post_id FROM seen WHERE user_id = ?", (int(user_id),)
            )
            return {r[0] for r in cur.fetchall()}

    def negatives(self, user_id: int) -> set[int]:
        """The posts the user disliked or reported."""
        marks = ", ".join("?" for _ in NEGATIVE_EVENTS)
        with self._lock:
            cur = self._conn.execute(
                f"SELECT DISTINCT post_id FROM seen WHERE user_id = ? AND event_type IN ({marks})",
                (int(user_id), *NEGATIVE_EVENTS),
            )
            return {r[0] for r in cur.fetchall()}

    # --- blocks ---------------------------------------------------------------------------------
    def block(self, user_id: int, creator_ids: Iterable[int], ts=None) -> int:
        """Block each creator for ``user_id`` (idempotent); returns the distinct creator count."""
        user_id = _check_id(user_id, "user_id")
        creators = _check_ids(creator_ids, "creator_id")
        at = _epoch(ts)
        if not creators:
            return 0
        with self._lock, self._conn:
            self._conn.executemany(self._BLOCK, [(user_id, c, at) for c in creators])
        return len(creators)

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int:
        """Remove the user's blocks of these creators; returns the distinct creator count."""
        user_id = _check_id(user_id, "user_id")
        creators = _check_ids(creator_ids, "creator_id")
        if not creators:
            return 0
        with self._lock, self._conn:
            self._conn.executemany(self._UNBLOCK, [(user_id, c) for c in creators])
        return len(creators)

    def blocked_creators(self, user_id: int) -> set[int]:
        """The creators ``user_id`` blocks."""
        user_id = _check_id(user_id, "user_id")
        with self._lock:
            cur = self._conn.execute("SELECT creator_id FROM blocked WHERE user_id = ?", (user_id,))
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


class InMemorySeenStore:
    """A seen store in a dict (offline evaluation, tests): same contract as the SQLite one."""

    def __init__(self) -> None:
        self._rows: dict[int, dict[int, set[str]]] = {}
        self._blocked: dict[int, set[int]] = {}  # user_id -> blocked creator ids

    def mark(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        event_type = _check_event_type(event_type)
        posts = self._rows.setdefault(int(user_id), {})
        n = 0
        for p in post_ids:
            posts.setdefault(int(p), set()).add(event_type)
            n += 1
        return n

    def mark_events(self, events: Iterable[tuple[int, int, str, object]]) -> int:
        return sum(self.mark(u, [p], e) for u, p, e, _ in events)

    def bulk_load(self, frame: pd.DataFrame) -> int:
        bad = sorted(set(frame["event_type"]) - set(EVENT_TYPES))
        if bad:
            raise ValueError(f"unknown event types {bad}")
        for u, p, e in zip(frame["user_id"], frame["post_id"], frame["event_type"], strict=True):
            self._rows.setdefault(int(u), {}).setdefault(int(p), set()).add(str(e))
        return len(frame)

    def seen(self, user_id: int) -> set[int]:
        return set(self._rows.get(int(user_id), {}))

    def negatives(self, user_id: int) -> set[int]:
        return {
            p
            for p, types in self._rows.get(int(user_id), {}).items()
            if types & set(NEGATIVE_EVENTS)
        }

    def block(self, user_id: int, creator_ids: Iterable[int], ts=None) -> int:
        user_id = _check_id(user_id, "user_id")
        creators = _check_ids(creator_ids, "creator_id")
        _epoch(ts)  # validated like the other stores, not kept
        if creators:
            self._blocked.setdefault(user_id, set()).update(creators)
        return len(creators)

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int:
        user_id = _check_id(user_id, "user_id")
        creators = _check_ids(creator_ids, "creator_id")
        blocked = self._blocked.get(user_id)
        if blocked is not None:
            blocked.difference_update(creators)
            if not blocked:
                del self._blocked[user_id]
        return len(creators)

    def blocked_creators(self, user_id: int) -> set[int]:
        return set(self._blocked.get(_check_id(user_id, "user_id"), ()))

    def close(self) -> None:
        pass


def open_seen_store(settings: Settings, *, bloom: bool = False) -> SeenStore:
    """The seen store of these settings: SQLite (embedded default) or ScyllaDB.

    With ``SOCIALREC_SCYLLA_HOSTS`` set: a ``socialrec.stores.seen_scylla.ScyllaSeenStore`` (it
    connects on first use; the schema comes from ``python -m socialrec.stores.seen_scylla migrate``).
    ``bloom=True`` puts a ``socialrec.stores.bloom.BloomFilteredSeenStore`` (per-user Bloom filters,
    ``SOCIALREC_SEEN_BLOOM_*``) in front of either.
    """
    if settings.scylla_hosts:
        from socialrec.stores.seen_scylla import ScyllaSeenStore

        store: SeenStore = ScyllaSeenStore.from_settings(settings)
    else:
        store = SQLiteSeenStore(settings.seen_store_path)
    if bloom:
        from socialrec.stores.bloom import BloomFilteredSeenStore

        return BloomFilteredSeenStore.from_settings(store, settings)
    return store
