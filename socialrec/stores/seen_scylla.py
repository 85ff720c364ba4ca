"""The seen store on ScyllaDB: the production implementation of ``socialrec.stores.seen.SeenStore``.

Schema (created by the migration command ``python -m socialrec.stores.seen_scylla migrate``, never by
the service)::

    CREATE KEYSPACE IF NOT EXISTS <keyspace> WITH replication = {...};
    CREATE TABLE IF NOT EXISTS <keyspace>.seen (
        user_id bigint, post_id bigint, event_type text, ts timestamp,
        PRIMARY KEY (user_id, post_id, event_type)
    ) WITH default_time_to_live = <SOCIALREC_SCYLLA_SEEN_TTL_DAYS * 86400>;
    CREATE TABLE IF NOT EXISTS <keyspace>.blocked_creators (
        user_id bigint, creator_id bigint, ts timestamp,
        PRIMARY KEY (user_id, creator_id)
    ) WITH default_time_to_live = 0;

``PRIMARY KEY (user_id, post_id, event_type)`` is the same key as
``PRIMARY KEY ((user_id), post_id, event_type)``: partition key ``user_id``, clustering columns
``post_id, event_type`` (the short form is the one cqlsh's grammar, used by the contract test,
accepts). One partition per user, so ``seen`` and ``negatives`` are single-partition reads and,
with token-aware routing, go to a replica of that partition. Likewise ``blocked_creators`` is
keyed ``((user_id), creator_id)``: one small partition per user, read whole by
``blocked_creators``. Running ``migrate`` again on a cluster migrated before blocks existed adds
that table and leaves the others as they are.

* Prepared statements only. The statements (two for seen rows, three for blocks) carry every
  value as a bind marker; the only text put into CQL is the keyspace and table names (checked
  against :data:`IDENTIFIER`) and, in the DDL (which cannot be prepared), the replication
  factor, TTL (ints) and datacenter name (checked against :data:`DATACENTER`).
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
  ALLOW FILTERING).
* Blocks (``block`` / ``unblock`` / ``blocked_creators``, see ``socialrec.stores.seen``) have NO TTL:
  a block lasts until it is unblocked, whatever ``SOCIALREC_SCYLLA_SEEN_TTL_DAYS`` is. The table
  is created with ``default_time_to_live = 0`` and its INSERT sets no TTL. ``block`` is an
  ``INSERT`` (an upsert: re-blocking is idempotent) and ``unblock`` a single-row ``DELETE``;
  neither sets a write timestamp, so the driver's client-side monotonic timestamps order them
  and the latest call wins (``ts`` is recorded in the row, not used for ordering; across
  processes the order is that of their clocks). Their three statements are prepared on the
  first block call, apart from the seen statements, so a cluster not yet migrated for blocks
  keeps serving ``seen`` / ``mark`` while block calls fail with a pointer to ``migrate``.
* Consistency: reads at ``SOCIALREC_SCYLLA_READ_CONSISTENCY`` (LOCAL_ONE), writes at
  ``SOCIALREC_SCYLLA_WRITE_CONSISTENCY`` (LOCAL_QUORUM), set on each prepared statement.
  Read-your-writes across replicas needs read replicas + write replicas > RF; with RF 3,
  LOCAL_ONE + LOCAL_QUORUM is not enough, and the store logs a warning (raise reads to
  LOCAL_QUORUM for a guarantee).
* The connection is made on first use (or by :meth:`ScyllaSeenStore.connect`), so building the
  store sends nothing over the network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd
from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.concurrent import execute_concurrent_with_args

from socialrec.settings import EVENT_TYPES, NEGATIVE_EVENTS, Settings
from socialrec.stores.seen import _check_event_type, _check_id, _check_ids, _epoch

log = logging.getLogger(__name__)

# unquoted CQL names: lower case (unquoted names are case-insensitive), at most 48 characters
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,47}")
DATACENTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_TTL_SECONDS = 630_720_000  # 20 years: the largest TTL Scylla and Cassandra accept
DEFAULT_TABLE = "seen"
DEFAULT_BLOCKED_TABLE = "blocked_creators"
WRITE_CHUNK = 5000  # rows per execute_concurrent_with_args call (bounds the result list)

_CL = ConsistencyLevel
_WRITE_ONLY = {_CL.ANY}
_READ_ONLY = {_CL.SERIAL, _CL.LOCAL_SERIAL}


def check_identifier(name: str, what: str = "identifier") -> str:
    """``name`` if it is a plain lower-case CQL name, else ValueError (nothing is quoted)."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid CQL {what} {name!r}: must match {IDENTIFIER.pattern} "
            "(lower case letters, digits, '_'; at most 48 characters)"
        )
    return name


def check_datacenter(name: str) -> str:
    if not isinstance(name, str) or not DATACENTER.fullmatch(name):
        raise ValueError(f"invalid datacenter name {name!r}: must match {DATACENTER.pattern}")
    return name


def consistency_level(name: str, *, write: bool) -> int:
    """The ``cassandra.ConsistencyLevel`` value of a name such as ``"LOCAL_QUORUM"``."""
    value = _CL.name_to_value.get(str(name).strip().upper())
    if value is None:
        raise ValueError(f"unknown consistency level {name!r}; one of {sorted(_CL.name_to_value)}")
    if value in (_READ_ONLY if write else _WRITE_ONLY):
        raise ValueError(
            f"consistency level {name!r} is not valid for {'writes' if write else 'reads'}"
        )
    return value


def _replicas(level: int, rf: int) -> int:
    quorum = rf // 2 + 1
    return {
        _CL.ANY: 0,
        _CL.ONE: 1,
        _CL.LOCAL_ONE: 1,
        _CL.TWO: 2,
        _CL.THREE: 3,
        _CL.QUORUM: quorum,
        _CL.LOCAL_QUORUM: quorum,
        _CL.EACH_QUORUM: quorum,
        _CL.SERIAL: quorum,
        _CL.LOCAL_SERIAL: quorum,
        _CL.ALL: rf,
    }.get(level, 1)


def reads_see_writes(read_level: int, write_level: int, replication_factor: int) -> bool:
    """True when every read overlaps every acknowledged write (R + W > RF, per datacenter)."""
    rf = int(replication_factor)
    return _replicas(read_level, rf) + _replicas(write_level, rf) > rf


def ttl_seconds_of(settings: Settings) -> int:
    return int(settings.scylla_seen_ttl_days) * 86_400


def _check_ttl(ttl_seconds: int) -> int:
    ttl = int(ttl_seconds)
    if not 0 <= ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"TTL must be within 0..{MAX_TTL_SECONDS} seconds, got {ttl}")
    return ttl


def _check_tables(table: str, blocked_table: str) -> tuple[str, str]:
    tb = check_identifier(table, "table")
    bt = check_identifier(blocked_table, "table")
    if tb == bt:
        raise ValueError(f"the seen and blocked-creators tables must differ, both are {tb!r}")
    return tb, bt


def schema_statements(
    keyspace: str,
    table: str = DEFAULT_TABLE,
    *,
    blocked_table: str = DEFAULT_BLOCKED_TABLE,
    replication_factor: int = 1,
    local_dc: str | None = None,
    ttl_seconds: int = 90 * 86_400,
) -> list[str]:
    """The migration's DDL: CREATE KEYSPACE, then the seen and the blocked-creators tables, all
    IF NOT EXISTS. ``ttl_seconds`` is the seen table's; blocks never expire (TTL 0).

    With a datacenter the keyspace uses NetworkTopologyStrategy with ``replication_factor``
    replicas in it (add other datacenters with ALTER KEYSPACE); without one, SimpleStrategy
    (a single-datacenter or development cluster). An existing keyspace or table is left as it
    is: changing replication needs a repair, which is an operator's step.
    """
    ks = check_identifier(keyspace, "keyspace")
    tb, bt = _check_tables(table, blocked_table)
    rf = int(replication_factor)
    if rf < 1:
        raise ValueError(f"replication factor must be >= 1, got {replication_factor!r}")
    ttl = _check_ttl(ttl_seconds)
    if local_dc:
        replication = (
            f"{{'class': 'NetworkTopologyStrategy', '{check_datacenter(local_dc)}': {rf}}}"
        )
    else:
        replication = f"{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"
        " AND durable_writes = true",
        f"CREATE TABLE IF NOT EXISTS {ks}.{tb} ("
        "user_id bigint, post_id bigint, event_type text, ts timestamp, "
        "PRIMARY KEY (user_id, post_id, event_type)"
        f") WITH default_time_to_live = {ttl}",
        # blocks last until unblocked: no TTL, whatever the seen table's is
        f"CREATE TABLE IF NOT EXISTS {ks}.{bt} ("
        "user_id bigint, creator_id bigint, ts timestamp, "
        "PRIMARY KEY (user_id, creator_id)"
        ") WITH default_time_to_live = 0",
    ]


def settings_schema_statements(
    settings: Settings, table: str = DEFAULT_TABLE, blocked_table: str = DEFAULT_BLOCKED_TABLE
) -> list[str]:
    return schema_statements(
        settings.scylla_keyspace,
        table,
        blocked_table=blocked_table,
        replication_factor=settings.scylla_replication_factor,
        local_dc=settings.scylla_local_dc,
        ttl_seconds=ttl_seconds_of(settings),
    )


def migrate(session: Any, statements: Sequence[str]) -> list[str]:
    """Run the DDL statements in order (the driver waits for schema agreement after each)."""
    for statement in statements:
        session.execute(statement)
    return list(statements)


def contact_points(settings: Settings) -> list[str]:
    hosts = [h.strip() for h in str(settings.scylla_hosts or "").split(",") if h.strip()]
    if not hosts:
        raise ValueError("SOCIALREC_SCYLLA_HOSTS is not set (comma separated contact points)")
    return hosts


def build_cluster(settings: Settings):
    """A driver ``Cluster`` (not connected): token-aware over DC-aware round robin.

    Reads default to the read consistency through the execution profile; each prepared
    statement sets its own level as well.
    """
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    local_dc = settings.scylla_local_dc
    if local_dc:
        check_datacenter(local_dc)
    else:
        log.warning(
            "SOCIALREC_SCYLLA_LOCAL_DC is not set: the driver takes the datacenter of the "
            "first contact point as local"
        )
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc or "")),
        consistency_level=consistency_level(settings.scylla_read_consistency, write=False),
    )
    auth = None
    if settings.scylla_username:
        password = settings.scylla_password.get_secret_value() if settings.scylla_password else ""
        auth = PlainTextAuthProvider(username=settings.scylla_username, password=password)
    return Cluster(
        contact_points=contact_points(settings),
        port=int(settings.scylla_port),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
    )


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
        ttl_seconds: int = 90 * 86_400,
        read_consistency: str = "LOCAL_ONE",
        write_consistency: str = "LOCAL_QUORUM",
        replication_factor: int | None = None,
        concurrency: int = 64,
        clock: Callable[[], float] = time.time,
    ):
        if (session is None) == (session_factory is None):
            raise ValueError("give exactly one of session and session_factory")
        self.keyspace = check_identifier(keyspace, "keyspace")
        self.table, self.blocked_table = _check_tables(table, blocked_table)
        self.ttl_seconds = _check_ttl(ttl_seconds)
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
        self._session = session
        self._factory = session_factory
        self._owns_session = session is None
        self._lock = threading.Lock()
        self._insert = None
        self._select = None
        self._blocks = None  # (insert, delete, select) of the blocked table, prepared lazily
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
                        f"{self.table} ({exc}); run `python -m socialrec.stores.seen_scylla migrate`"
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
                        f"{self.blocked_table} ({exc}); run `python -m socialrec.stores.seen_scylla "
                        "migrate`"
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
        event_type = _check_event_type(event_type)
        at = self._epoch(ts)
        return self._write([(int(user_id), int(p), event_type, at) for p in post_ids])

    def mark_seen(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        return self.mark(user_id, post_ids, event_type, ts)

    def mark_events(self, events: Iterable[tuple[int, int, str, object]]) -> int:
        """Record many (user_id, post_id, event_type, ts) tuples (all checked before any write)."""
        rows = [(int(u), int(p), _check_event_type(e), self._epoch(t)) for u, p, e, t in events]
        return self._write(rows)

    def bulk_load(self, frame: pd.DataFrame) -> int:
        """Load a frame with user_id, post_id, event_type and optionally ts (historical data).

        Returns the rows written: events older than the TTL are left out (already expired).
        """
        if frame.empty:
            return 0
        bad = sorted(set(frame["event_type"]) - set(EVENT_TYPES))
        if bad:
            raise ValueError(f"unknown event types {bad}")
        now = self._clock()
        if "ts" in frame:
            ts = pd.to_datetime(frame["ts"], utc=True)
            secs = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().fillna(now)
        else:
            secs = pd.Series(now, index=frame.index)
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

    def _epoch(self, ts) -> float:
        return self._clock() if ts is None else _epoch(ts)

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

    def seen(self, user_id: int) -> set[int]:
        """Every post the user has any (unexpired) event for."""
        return {int(row[0]) for row in self._rows(user_id)}

    def negatives(self, user_id: int) -> set[int]:
        """The posts the user disliked or reported."""
        return {int(row[0]) for row in self._rows(user_id) if row[1] in NEGATIVE_EVENTS}

    # --- blocks (no TTL: a block lasts until unblocked) ----------------------------------------
    def block(self, user_id: int, creator_ids: Iterable[int], ts=None) -> int:
        """Block each creator for ``user_id`` (idempotent); returns the distinct creator count."""
        user_id = _check_id(user_id, "user_id")
        creators = _check_ids(creator_ids, "creator_id")
        at = dt.datetime.fromtimestamp(self._epoch(ts), tz=dt.UTC)
        if not creators:
            return 0
        session, insert, _, _ = self._block_statements()
        self._execute_many(session, insert, [(user_id, c, at) for c in creators])
        return len(creators)

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int:
        """Remove the user's blocks of these creators; returns the distinct creator count."""
        user_id = _check_id(user_id, "user_id")
        creators = _check_ids(creator_ids, "creator_id")
        if not creators:
            return 0
        session, _, delete, _ = self._block_statements()
        self._execute_many(session, delete, [(user_id, c) for c in creators])
        return len(creators)

    def blocked_creators(self, user_id: int) -> set[int]:
        """The creators ``user_id`` blocks (one single-partition read)."""
        user_id = _check_id(user_id, "user_id")
        session, _, _, select = self._block_statements()
        return {int(row[0]) for row in session.execute(select, (user_id,))}

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m socialrec.stores.seen_scylla",
        description="ScyllaDB seen store administration (settings from SOCIALREC_* variables).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser(
        "migrate",
        help="create the keyspace, the seen and the blocked-creators tables if they do not exist",
    )
    mig.add_argument("--table", default=DEFAULT_TABLE)
    mig.add_argument("--blocked-table", default=DEFAULT_BLOCKED_TABLE)
    mig.add_argument(
        "--dry-run", action="store_true", help="print the CQL without connecting to the cluster"
    )
    args = parser.parse_args(argv)

    settings = Settings()
    statements = settings_schema_statements(settings, args.table, args.blocked_table)
    if args.dry_run:
        for statement in statements:
            print(statement + ";")
        return 0
    cluster = build_cluster(settings)
    try:
        session = cluster.connect()
        for statement in migrate(session, statements):
            print(statement + ";")
        if not session.wait_for_schema_agreement():
            print("warning: the cluster did not reach schema agreement in time", file=sys.stderr)
            return 1
    finally:
        cluster.shutdown()
    ks = settings.scylla_keyspace
    print(f"seen store schema ready: {ks}.{args.table}, {ks}.{args.blocked_table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
