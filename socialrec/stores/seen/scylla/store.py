"""``ScyllaSeenStore``: the production implementation of
``socialrec.stores.seen.base.SeenStore`` (schema and connection: :mod:`.schema`).

* Prepared statements only. The statements (two for seen rows, three for blocks) carry every
  value as a bind marker.
* Seen writes are ``INSERT ... USING TTL ? AND TIMESTAMP ?`` sent with
  ``execute_concurrent_with_args`` (no batches: rows of different users are different
  partitions). The write timestamp is the EVENT time (microseconds, capped at now), so an older
  event never overwrites a newer ``ts`` of the same (user, post, event type) -- the SQLite
  store's ``max(ts)`` upsert -- and replays and backfills are idempotent. The TTL is the
  configured one minus the event's age, so a row expires ``ttl`` after its event whenever it was
  written; events already older than the TTL are not written (TTL 0 would mean "never").
  ``SOCIALREC_SCYLLA_SEEN_TTL_DAYS=0`` turns expiry off. The table's ``default_time_to_live`` is
  a backstop for other writers; this store always sets the TTL itself.
* ``negatives`` reads the same partition and keeps the DISLIKE/REPORT rows client side
  (``event_type`` is the last clustering column: filtering it server side would need
  ALLOW FILTERING); ``state`` reads the partition once for both, plus the user's blocks.
* No Bloom filter: ``state`` returns exact frozensets (the SQLite store's per-user filter is a
  read-modify-write of one blob by every writer; concurrent writers on a cluster would need a
  lightweight transaction (LWT) per write to not lose each other's bits, and seen rows expire
  by TTL, which a filter cannot forget). Frozensets are what the stages need of a seen set
  (``in``, ``len``, ``socialrec.stores.seen.base.contains_many``).
* Blocks (``block`` / ``unblock`` / ``blocked_creators``, see ``socialrec.stores.seen.base``)
  have NO TTL: a block lasts until it is unblocked, whatever ``SOCIALREC_SCYLLA_SEEN_TTL_DAYS``
  is. The table is created with ``default_time_to_live = 0`` and its INSERT sets no TTL.
  ``block`` is an ``INSERT`` (an upsert: re-blocking is idempotent) and ``unblock`` a
  single-row ``DELETE``; neither sets a write timestamp, so the driver's client-side monotonic
  timestamps order them and the latest call wins (``ts`` is recorded in the row, not used for
  ordering; across processes the order is that of their clocks). Their three statements are
  prepared on the first block call, apart from the seen statements, so a cluster not yet
  migrated for blocks keeps serving ``seen`` / ``mark`` while block calls fail with a pointer
  to ``migrate``.
* Consistency: reads at ``SOCIALREC_SCYLLA_READ_CONSISTENCY`` (LOCAL_ONE), writes at
  ``SOCIALREC_SCYLLA_WRITE_CONSISTENCY`` (LOCAL_QUORUM), set on each prepared statement.
  Read-your-writes across replicas needs read replicas + write replicas > RF; with RF 3,
  LOCAL_ONE + LOCAL_QUORUM is not enough, and the store logs a warning (raise reads to
  LOCAL_QUORUM for a guarantee).
* The connection is made on first use (or by :meth:`ScyllaSeenStore.connect`), so building the
  store sends nothing over the network.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd
from cassandra import InvalidRequest
from cassandra.concurrent import execute_concurrent_with_args

from socialrec.settings import NEGATIVE_EVENTS, Settings
from socialrec.stores.seen.base import (
    SeenState,
    check_event_type,
    check_event_types,
    check_id,
    check_ids,
)
from socialrec.stores.seen.scylla.schema import (
    DEFAULT_BLOCKED_TABLE,
    DEFAULT_TABLE,
    build_cluster,
    check_identifier,
    check_tables,
    check_ttl,
    consistency_level,
    contact_points,
    reads_see_writes,
    ttl_seconds_of,
)
from socialrec.timeutil import DAY_SECONDS, epoch_seconds, seconds

log = logging.getLogger(__name__)

WRITE_CHUNK = 5000  # rows per execute_concurrent_with_args call (bounds the result list)
MIGRATE = "python -m socialrec.stores.seen.scylla migrate"


class ScyllaSeenStore:
    """``SeenStore`` on a ScyllaDB table (see the module docstring for the schema).

    ``session``: a connected driver ``Session`` (the caller keeps owning it), or
    ``session_factory``: called once on first use; the store then owns the session's cluster
    and shuts it down on :meth:`close`. :meth:`from_settings` builds the usual one.
    """

    def __init__(
        self,
        session: Any = None,
        keyspace: str = "socialrec",
        table: str = DEFAULT_TABLE,
        *,
        blocked_table: str = DEFAULT_BLOCKED_TABLE,
        session_factory: Callable[[], Any] | None = None,
        ttl_seconds: int = 90 * DAY_SECONDS,
        read_consistency: str = "LOCAL_ONE",
        write_consistency: str = "LOCAL_QUORUM",
        replication_factor: int | None = None,
        concurrency: int = 64,
        clock: Callable[[], float] = time.time,
    ):
        if (session is None) == (session_factory is None):
            raise ValueError("give exactly one of session and session_factory")
        self.keyspace = check_identifier(keyspace, "keyspace")
        self.table, self.blocked_table = check_tables(table, blocked_table)
        self.ttl_seconds = check_ttl(ttl_seconds)
        self.read_consistency = consistency_level(read_consistency, write=False)
        self.write_consistency = consistency_level(write_consistency, write=True)
        self.concurrency = max(1, int(concurrency))
        self._clock = clock
        if replication_factor and not reads_see_writes(
            self.read_consistency, self.write_consistency, replication_factor
        ):
            log.warning(
                "seen store: reads at %s and writes at %s with replication factor %s may miss "
                "a just-written mark (read-your-writes needs R + W > RF)",
                read_consistency,
                write_consistency,
                replication_factor,
            )
        name = f"{self.keyspace}.{self.table}"
        self.insert_cql = (
            f"INSERT INTO {name} (user_id, post_id, event_type, ts) VALUES (?, ?, ?, ?) "
            "USING TTL ? AND TIMESTAMP ?"
        )
        self.select_cql = f"SELECT post_id, event_type FROM {name} WHERE user_id = ?"
        blocked = f"{self.keyspace}.{self.blocked_table}"
        # no USING TTL (blocks never expire) and no USING TIMESTAMP (latest call wins)
        self.block_cql = f"INSERT INTO {blocked} (user_id, creator_id, ts) VALUES (?, ?, ?)"
        self.unblock_cql = f"DELETE FROM {blocked} WHERE user_id = ? AND creator_id = ?"
        self.blocked_cql = f"SELECT creator_id FROM {blocked} WHERE user_id = ?"
        # forget_user: partition deletes (client-side timestamp: every row written before wins)
        self.forget_cql = tuple(f"DELETE FROM {t} WHERE user_id = ?" for t in (name, blocked))
        self._session = session
        self._factory = session_factory
        self._owns_session = session is None
        self._lock = threading.Lock()
        self._insert = None
        self._select = None
        self._blocks = None  # (insert, delete, select) of the blocked table, prepared lazily
        self._forget = None  # the two partition deletes of forget_user, prepared lazily
        self._closed = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        table: str = DEFAULT_TABLE,
        blocked_table: str = DEFAULT_BLOCKED_TABLE,
    ) -> ScyllaSeenStore:
        contact_points(settings)  # fail now on an empty host list, not on first use

        def connect():
            return build_cluster(settings).connect()

        return cls(
            keyspace=settings.scylla_keyspace,
            table=table,
            blocked_table=blocked_table,
            session_factory=connect,
            ttl_seconds=ttl_seconds_of(settings),
            read_consistency=settings.scylla_read_consistency,
            write_consistency=settings.scylla_write_consistency,
            replication_factor=settings.scylla_replication_factor,
        )

    # --- connection ---------------------------------------------------------------------------
    def connect(self) -> Any:
        """Connect (if not yet) and prepare the statements; returns the session."""
        if self._select is not None:
            return self._session
        with self._lock:
            if self._closed:
                raise RuntimeError("the seen store is closed")
            if self._select is None:
                if self._session is None:
                    self._session = self._factory()
                try:
                    insert = self._session.prepare(self.insert_cql)
                    select = self._session.prepare(self.select_cql)
                except InvalidRequest as exc:
                    raise RuntimeError(
                        f"cannot prepare the seen store's statements on {self.keyspace}."
                        f"{self.table} ({exc}); run `{MIGRATE}`"
                    ) from exc
                insert.consistency_level = self.write_consistency
                insert.is_idempotent = True  # explicit write timestamp: safe to retry
                select.consistency_level = self.read_consistency
                select.is_idempotent = True
                self._insert = insert
                self._select = select  # published last: connect()'s fast path checks it
        return self._session

    def _block_statements(self) -> tuple[Any, Any, Any, Any]:
        """The session and the blocked table's (insert, delete, select), prepared once."""
        session = self.connect()
        blocks = self._blocks
        if blocks is not None:
            return (session, *blocks)
        with self._lock:
            if self._closed:
                raise RuntimeError("the seen store is closed")
            if self._blocks is None:
                try:
                    insert = session.prepare(self.block_cql)
                    delete = session.prepare(self.unblock_cql)
                    select = session.prepare(self.blocked_cql)
                except InvalidRequest as exc:
                    raise RuntimeError(
                        f"cannot prepare the blocked-creators statements on {self.keyspace}."
                        f"{self.blocked_table} ({exc}); run `{MIGRATE}`"
                    ) from exc
                for statement in (insert, delete):
                    statement.consistency_level = self.write_consistency
                    statement.is_idempotent = True  # an upsert / a single-row delete
                select.consistency_level = self.read_consistency
                select.is_idempotent = True
                self._blocks = (insert, delete, select)
            return (session, *self._blocks)

    # --- writes -------------------------------------------------------------------------------
    def mark(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        """Record that ``user_id`` had ``event_type`` on each post; returns the rows written."""
        event_type = check_event_type(event_type)
        at = self._seconds(ts)
        return self._write([(int(user_id), int(p), event_type, at) for p in post_ids])

    def mark_seen(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        return self.mark(user_id, post_ids, event_type, ts)

    def mark_events(self, events: Iterable[tuple[int, int, str, object]]) -> int:
        """Record many (user_id, post_id, event_type, ts) tuples (all checked before any write)."""
        rows = [(int(u), int(p), check_event_type(e), self._seconds(t)) for u, p, e, t in events]
        return self._write(rows)

    def bulk_load(self, frame: pd.DataFrame) -> int:
        """Load a frame with user_id, post_id, event_type and optionally ts (historical data).

        Returns the rows written: events older than the TTL are left out (already expired).
        """
        if frame.empty:
            return 0
        check_event_types(frame)
        now = self._clock()
        if "ts" in frame:
            secs = epoch_seconds(frame["ts"], fill=now, dtype=float).tolist()
        else:
            secs = [now] * len(frame)
        rows = list(
            zip(
                frame["user_id"].astype("int64").tolist(),
                frame["post_id"].astype("int64").tolist(),
                frame["event_type"].astype(str).tolist(),
                secs,
                strict=True,
            )
        )
        return self._write(rows)

    def _seconds(self, ts) -> float:
        return self._clock() if ts is None else seconds(ts)

    def _bind_values(self, user_id: int, post_id: int, event_type: str, at: float, now: float):
        """The INSERT's values, or None for an event already past its TTL."""
        if self.ttl_seconds:
            ttl = min(self.ttl_seconds, math.ceil(self.ttl_seconds - max(0.0, now - at)))
            if ttl <= 0:
                return None
        else:
            ttl = 0  # CQL: no expiry
        write_us = int(min(at, now) * 1_000_000)
        ts = dt.datetime.fromtimestamp(at, tz=dt.UTC)
        return (user_id, post_id, event_type, ts, ttl, write_us)

    def _write(self, rows: list[tuple[int, int, str, float]]) -> int:
        if not rows:
            return 0
        now = self._clock()
        values = [v for v in (self._bind_values(*row, now) for row in rows) if v is not None]
        if not values:
            return 0
        session = self.connect()
        self._execute_many(session, self._insert, values)
        return len(values)

    def _execute_many(self, session: Any, statement: Any, values: list[tuple]) -> None:
        for start in range(0, len(values), WRITE_CHUNK):
            execute_concurrent_with_args(
                session,
                statement,
                values[start : start + WRITE_CHUNK],
                concurrency=self.concurrency,
                raise_on_first_error=True,
            )

    # --- reads --------------------------------------------------------------------------------
    def _rows(self, user_id: int):
        session = self.connect()
        return session.execute(self._select, (int(user_id),))  # pages through the partition

    def state(self, user_id: int) -> SeenState:
        """The user's seen posts and negatives (one read of their partition) and blocked
        creators (one read of theirs)."""
        user_id = check_id(user_id, "user_id")
        rows = [(row[0], row[1]) for row in self._rows(user_id)]
        session, _, _, select = self._block_statements()
        return SeenState.from_rows(rows, (row[0] for row in session.execute(select, (user_id,))))

    def seen(self, user_id: int) -> set[int]:
        """Every post the user has any (unexpired) event for."""
        return {int(row[0]) for row in self._rows(user_id)}

    def negatives(self, user_id: int) -> set[int]:
        """The posts the user disliked or reported."""
        return {int(row[0]) for row in self._rows(user_id) if row[1] in NEGATIVE_EVENTS}

    # --- blocks (no TTL: a block lasts until unblocked) ----------------------------------------
    def block(self, user_id: int, creator_ids: Iterable[int], ts=None) -> int:
        """Block each creator for ``user_id`` (idempotent); returns the distinct creator count."""
        user_id = check_id(user_id, "user_id")
        creators = check_ids(creator_ids, "creator_id")
        at = dt.datetime.fromtimestamp(self._seconds(ts), tz=dt.UTC)
        if not creators:
            return 0
        session, insert, _, _ = self._block_statements()
        self._execute_many(session, insert, [(user_id, c, at) for c in creators])
        return len(creators)

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int:
        """Remove the user's blocks of these creators; returns the distinct creator count."""
        user_id = check_id(user_id, "user_id")
        creators = check_ids(creator_ids, "creator_id")
        if not creators:
            return 0
        session, _, delete, _ = self._block_statements()
        self._execute_many(session, delete, [(user_id, c) for c in creators])
        return len(creators)

    def blocked_creators(self, user_id: int) -> set[int]:
        """The creators ``user_id`` blocks (one single-partition read)."""
        user_id = check_id(user_id, "user_id")
        session, _, _, select = self._block_statements()
        return {int(row[0]) for row in session.execute(select, (user_id,))}

    def forget_user(self, user_id: int) -> int:
        """Delete the user's seen and blocked partitions (two partition deletes at the write
        consistency). The tombstones carry the client's time: seen rows are written with their
        EVENT time, so a later replay of the user's older events stays shadowed (forgotten).
        Returns 0: a partition delete does not count its rows."""
        user_id = check_id(user_id, "user_id")
        session = self.connect()
        with self._lock:
            if self._forget is None:
                statements = tuple(session.prepare(cql) for cql in self.forget_cql)
                for statement in statements:
                    statement.consistency_level = self.write_consistency
                    statement.is_idempotent = True
                self._forget = statements
        for statement in self._forget:
            session.execute(statement, (user_id,))
        return 0

    def count(self) -> None:
        """None: counting the rows would be a full scan of the table."""
        return None

    # --- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            session, self._insert, self._select = self._session, None, None
            self._blocks = None
        if self._owns_session and session is not None:
            cluster = getattr(session, "cluster", None)
            if cluster is not None:
                cluster.shutdown()
            else:
                session.shutdown()

    def __enter__(self) -> ScyllaSeenStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
