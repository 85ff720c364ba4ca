"""ScyllaSeenStore: integration tests against a real cluster, and a contract test without one.

(a) Integration (``SCYLLA_HOSTS=host1,host2``; optional ``SCYLLA_PORT``, ``SCYLLA_LOCAL_DC``):
    the migration, mark / seen / negatives / mark_events / bulk_load and TTL expiry, and
    block / unblock / blocked_creators (blocks outliving a short seen TTL) on a fresh keyspace
    ``socialrec_it_<random>``, dropped afterwards. Without ``SCYLLA_HOSTS`` they are
    SKIPPED, and ``pytest -ra`` prints why.

(b) Contract, no server: the store runs against ``FakeSession``, a recording fake of the part of
    the driver's ``Session`` the store uses (``prepare``, ``execute``, and ``execute_async``,
    which the driver's real ``execute_concurrent_with_args`` calls). Its tables (columns, types,
    partition and primary keys, default TTL) are parsed from the migration's CREATE TABLE
    statements, so a statement naming a column or table the migration does not create fails.
    ``prepare`` returns the driver's real ``PreparedStatement`` with bind metadata for that
    schema, so binding goes
    through the driver's real type serialisers (a str bound to a bigint or a timestamp fails as
    it would in production) and the real routing-key computation (token-aware routing needs
    ``user_id`` as the routing key). The fake asserts that every value is a bind
    marker (no literal in DML), that DML is never sent unprepared, that every marker is bound;
    the tests check the consistency level and idempotence of each statement, the TTL and write
    timestamp bound per row (and their absence from the block INSERT), which statement runs for
    which method, and the chunked writes through ``execute_concurrent_with_args``. Writes
    without ``USING TIMESTAMP`` (blocks, unblocks) get a monotonic client timestamp, as the
    driver's default timestamp generator gives them; a DELETE leaves a row tombstone that wins
    ties, as on the server. Every CQL text the store produces (the DDL of the migration and all
    five prepared statements) is parsed with a real CQL grammar: cqlsh's
    (``cqlshlib.cql3handling``, PyPI package ``cqlsh``, installed with ``--no-deps`` because
    it requires cassandra-driver, which would clash with scylla-driver's ``cassandra``
    module). That grammar has no bind markers, so each ``?`` is replaced by a literal before
    parsing; it does not accept ``PRIMARY KEY ((user_id), ...)`` (both tables use the
    equivalent ``PRIMARY KEY (user_id, ...)``), and it does not check column/value counts
    (``FakeSession.prepare`` does). Without cqlshlib only that test
    (``test_every_cql_text_parses_with_a_real_cql_grammar``) is skipped, with the reason.

    What (b) cannot catch (only a server can): server-side semantics -- actual TTL expiry and
    tombstones, consistency behaviour across replicas (what LOCAL_ONE / LOCAL_QUORUM return
    under failures or lag), schema agreement after the migration, paging over large
    partitions, type coercion and validation by Scylla (the fake's bind types are our reading
    of the schema, not the server's), write-timestamp conflict resolution (the fake models
    last-write-wins), CQL that cqlsh's grammar accepts but Scylla rejects (or the reverse),
    authentication, and the driver's networking (connection pools, shard awareness, retries).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest
from cassandra import ConsistencyLevel, InvalidRequest
from cassandra.cqltypes import DateType, Int32Type, LongType, UTF8Type
from cassandra.protocol import ColumnMetadata
from cassandra.query import UNSET_VALUE, BoundStatement, PreparedStatement

import socialrec.stores.seen_scylla as seen_scylla
from socialrec.settings import Settings
from socialrec.stores.bloom import BloomFilteredSeenStore
from socialrec.stores.seen import SeenStore, open_seen_store
from socialrec.stores.seen_scylla import (
    ScyllaSeenStore,
    build_cluster,
    consistency_level,
    migrate,
    reads_see_writes,
    schema_statements,
    settings_schema_statements,
)

DAY = 86_400
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KS = "socialrec_test"

# --- the fake driver session ----------------------------------------------------------------
CQL_TYPES = {"bigint": LongType, "text": UTF8Type, "timestamp": DateType}
USING_TYPES = {"TTL": ("[ttl]", Int32Type), "TIMESTAMP": ("[timestamp]", LongType)}
PROTOCOL = 4

INSERT_RE = re.compile(
    r"INSERT INTO (\w+)\.(\w+) \(([^)]*)\) VALUES \(([^)]*)\)(?: USING (.+))?", re.I | re.S
)
SELECT_RE = re.compile(r"SELECT (.+?) FROM (\w+)\.(\w+) WHERE (.+)", re.I | re.S)
DELETE_RE = re.compile(r"DELETE FROM (\w+)\.(\w+) WHERE (.+)", re.I | re.S)
CREATE_TABLE_RE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) \((.*), PRIMARY KEY \((.*)\)\) "
    r"WITH default_time_to_live = (\d+)",
    re.I | re.S,
)


class FakeFuture:
    """What ``execute_concurrent`` needs of a ResponseFuture: callbacks, run at once."""

    _col_names = None
    _col_types = None
    has_more_pages = False

    def __init__(self, rows=None, error=None):
        self.rows, self.error = rows, error

    def add_callbacks(
        self, callback, errback, callback_args=(), callback_kwargs=None, errback_args=(), **_
    ):
        if self.error is not None:
            errback(self.error, *errback_args)
        else:
            callback(self.rows, *callback_args, **(callback_kwargs or {}))

    def clear_callbacks(self):
        pass

    def result(self):
        if self.error is not None:
            raise self.error
        return self.rows


class FakeCluster:
    def __init__(self):
        self.shutdowns = 0

    def shutdown(self):
        self.shutdowns += 1


class FakeTable:
    """A table as the migration's DDL defines it, with its rows and row tombstones."""

    def __init__(self, ddl: str):
        m = CREATE_TABLE_RE.fullmatch(ddl)
        assert m, f"unexpected CREATE TABLE: {ddl}"
        self.keyspace, self.name, columns, key, ttl = m.groups()
        self.columns = {}
        for column in columns.split(","):
            name, typ = column.split()
            self.columns[name] = CQL_TYPES[typ]
        if key.startswith("("):  # ((partition, key), clustering...)
            partition, clustering = key[1:].split(")", 1)
        else:  # (partition, clustering...)
            partition, _, clustering = key.partition(",")
        self.partition_key = tuple(c.strip() for c in partition.split(",") if c.strip())
        self.primary_key = self.partition_key + tuple(
            c.strip() for c in clustering.split(",") if c.strip()
        )
        assert set(self.primary_key) <= set(self.columns), ddl
        self.default_ttl = int(ttl)
        self.rows: dict[tuple, dict] = {}
        self.tombstones: dict[tuple, int] = {}

    def type_of(self, column: str):
        if column not in self.columns:
            raise InvalidRequest(f"Undefined column name {column}")
        return self.columns[column]


class FakeSession:
    """Records everything; keeps rows like one replica would (last write wins, TTL expiry,
    row deletes). Its tables come from the CREATE TABLE statements it executes (the
    migration's DDL), so statements are checked against the schema the migration makes."""

    def __init__(self, clock=lambda: NOW):
        self.clock = clock
        self.cluster = FakeCluster()
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.ddl: list[str] = []
        self.prepared: list[PreparedStatement] = []
        self.calls: list[tuple[str, BoundStatement]] = []  # (execute | execute_async, bound)
        self._last_client_ts = 0

    def table(self, name: str) -> FakeTable:
        (found,) = [t for (_, n), t in self.tables.items() if n == name]
        return found

    @property
    def rows(self) -> dict[tuple, dict]:
        return self.table("seen").rows

    def _table(self, ks: str, name: str) -> FakeTable:
        if (ks, name) not in self.tables:
            raise InvalidRequest(f"unconfigured table {name}")
        return self.tables[(ks, name)]

    @staticmethod
    def _where(table: FakeTable, where: str, query: str) -> list[tuple[str, object]]:
        markers = []
        for relation in re.split(r"\s+AND\s+", where, flags=re.I):
            col, op, value = relation.split()
            assert value == "?", f"a literal value in prepared DML: {query}"
            assert op == "="
            markers.append((col, table.type_of(col)))
        return markers

    # prepare: what a server would say about our statements, plus the no-literal rule
    def prepare(self, query: str) -> PreparedStatement:
        query = " ".join(query.split())
        result = None
        if m := INSERT_RE.fullmatch(query):
            ks, name, cols, vals, using = m.groups()
            table = self._table(ks, name)
            cols = [c.strip() for c in cols.split(",")]
            vals = [v.strip() for v in vals.split(",")]
            assert all(v == "?" for v in vals), f"a literal value in prepared DML: {query}"
            if len(cols) != len(vals):
                raise InvalidRequest("Unmatched column names/values")
            markers = [(c, table.type_of(c)) for c in cols]
            if missing := set(table.primary_key) - set(cols):
                raise InvalidRequest(f"Some partition/clustering key parts are missing: {missing}")
            for option in re.split(r"\s+AND\s+", using or "", flags=re.I):
                if option:
                    word, value = option.split()
                    assert value == "?", f"a literal USING value in prepared DML: {query}"
                    markers.append(USING_TYPES[word.upper()])
        elif m := SELECT_RE.fullmatch(query):
            selected, ks, name, where = m.groups()
            table = self._table(ks, name)
            result = [(c.strip(), table.type_of(c.strip())) for c in selected.split(",")]
            markers = self._where(table, where, query)
            if set(table.partition_key) - {c for c, _ in markers}:
                raise InvalidRequest("Cannot execute this query as it might involve filtering")
        elif m := DELETE_RE.fullmatch(query):
            ks, name, where = m.groups()
            table = self._table(ks, name)
            assert " USING " not in query.upper(), f"unexpected USING in {query}"
            markers = self._where(table, where, query)
            # the store deletes single rows only (no range or partition deletes)
            assert sorted(c for c, _ in markers) == sorted(table.primary_key), query
        else:
            raise AssertionError(f"unexpected statement prepared: {query}")
        meta = [ColumnMetadata(ks, name, col, typ) for col, typ in markers]
        names = [col for col, _ in markers]
        routing = (
            [names.index(c) for c in table.partition_key]
            if set(table.partition_key) <= set(names)
            else None
        )
        prepared = PreparedStatement.from_message(
            uuid.uuid4().bytes,
            meta,
            routing,
            None,
            query,
            ks,
            PROTOCOL,
            [ColumnMetadata(ks, name, n, t) for n, t in result] if result else None,
            None,
            False,
        )
        self.prepared.append(prepared)
        return prepared

    def execute(self, query, parameters=None, timeout=None, execution_profile=None, **_):
        return self._run("execute", query, parameters)

    def execute_async(self, query, parameters=None, timeout=None, execution_profile=None, **_):
        try:
            return FakeFuture(rows=self._run("execute_async", query, parameters))
        except Exception as exc:  # delivered through the errback, as the driver does
            return FakeFuture(error=exc)

    def _client_timestamp(self) -> int:
        """The driver's default write timestamp: client-side, microseconds, monotonic."""
        self._last_client_ts = max(int(self.clock() * 1_000_000), self._last_client_ts + 1)
        return self._last_client_ts

    def _run(self, how: str, query, parameters):
        if isinstance(query, str):
            assert parameters is None, f"values formatted into a simple statement: {query}"
            assert re.match(r"(CREATE|DROP|ALTER) ", query), f"unprepared DML: {query}"
            self.ddl.append(query)
            if query.startswith("CREATE TABLE"):
                table = FakeTable(query)
                self.tables.setdefault((table.keyspace, table.name), table)  # IF NOT EXISTS
            return []
        bound = query.bind(parameters) if isinstance(query, PreparedStatement) else query
        assert isinstance(bound, BoundStatement), f"not a prepared statement: {query!r}"
        meta = bound.prepared_statement.column_metadata
        assert len(bound.raw_values) == len(meta), "a bind marker left unbound"
        assert all(v is not None and v is not UNSET_VALUE for v in bound.values), bound
        self.calls.append((how, bound))
        values = {
            col.name: col.type.deserialize(raw, PROTOCOL)
            for col, raw in zip(meta, bound.values, strict=True)
        }
        table = self._table(meta[0].keyspace_name, meta[0].table_name)
        text = bound.prepared_statement.query_string
        now = self.clock()
        if text.startswith("INSERT"):
            key = tuple(values[c] for c in table.primary_key)
            write_ts = values.get("[timestamp]", None)
            if write_ts is None:
                write_ts = self._client_timestamp()
            if table.tombstones.get(key, -1) >= write_ts:
                return []  # shadowed by a newer (or same-time) delete
            old = table.rows.get(key)
            if old is None or old["[write_ts]"] <= write_ts:
                ttl = values.get("[ttl]", table.default_ttl)
                table.rows[key] = {
                    **{c: v for c, v in values.items() if c in table.columns},
                    "[write_ts]": write_ts,
                    "[expires]": now + ttl if ttl else None,
                }
            return []
        if text.startswith("DELETE"):
            key = tuple(values[c] for c in table.primary_key)
            delete_ts = self._client_timestamp()
            table.tombstones[key] = max(table.tombstones.get(key, -1), delete_ts)
            if key in table.rows and table.rows[key]["[write_ts]"] <= delete_ts:
                del table.rows[key]
            return []
        selected = [c.name for c in bound.prepared_statement.result_metadata]
        return [
            tuple(row[c] for c in selected)
            for _, row in sorted(table.rows.items())
            if all(row[c] == v for c, v in values.items())
            and (row["[expires]"] is None or row["[expires]"] > now)
        ]

    def bound(self, kind: str) -> list[BoundStatement]:
        return [b for _, b in self.calls if b.prepared_statement.query_string.startswith(kind)]


def make_store(clock=lambda: NOW, **kwargs) -> tuple[ScyllaSeenStore, FakeSession]:
    session = FakeSession(clock)
    migrate(session, schema_statements(KS, ttl_seconds=kwargs.get("ttl_seconds", 90 * DAY)))
    kwargs.setdefault("clock", clock)
    return ScyllaSeenStore(session, KS, **kwargs), session


# --- the CQL grammar (cqlsh's) --------------------------------------------------------------
def _load_grammar():
    """A ``parses(text) -> bool`` over cqlsh's CQL grammar, or the reason it is unavailable."""
    try:
        from cqlshlib.cql3handling import CqlRuleSet
    except ImportError as exc:
        return None, (
            f"cqlshlib is not installed ({exc}): the CQL grammar check is skipped; install it "
            "with `uv pip install --no-deps cqlsh` (its cassandra-driver requirement would "
            "clash with scylla-driver)"
        )

    def parses(text: str) -> bool:
        # the grammar knows no bind markers: a literal for each ? outside string literals
        parts = re.split(r"('(?:[^']|'')*')", text)
        literal = "".join(p if i % 2 else p.replace("?", "0") for i, p in enumerate(parts))
        literal = literal.strip().removesuffix(";") + ";"
        try:
            tokens = CqlRuleSet.cql_massage_tokens(CqlRuleSet.lex(literal))
        except Exception:
            return False
        return CqlRuleSet.cql_whole_parse_tokens(tokens, srcstr=literal) is not None

    return parses, None


CQL_PARSES, NO_GRAMMAR = _load_grammar()


# --- (b) contract tests, no server ----------------------------------------------------------
def test_migration_ddl():
    simple = schema_statements("socialrec", ttl_seconds=90 * DAY)
    assert simple == [
        "CREATE KEYSPACE IF NOT EXISTS socialrec WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true",
        "CREATE TABLE IF NOT EXISTS socialrec.stores.seen (user_id bigint, post_id bigint, "
        "event_type text, ts timestamp, PRIMARY KEY (user_id, post_id, event_type)) "
        "WITH default_time_to_live = 7776000",
        # blocks: partition user_id, clustering creator_id, and never expire
        "CREATE TABLE IF NOT EXISTS socialrec.blocked_creators (user_id bigint, "
        "creator_id bigint, ts timestamp, PRIMARY KEY (user_id, creator_id)) "
        "WITH default_time_to_live = 0",
    ]
    nts = schema_statements(
        "ks_2", "seen_v2", replication_factor=3, local_dc="europe-west1", ttl_seconds=0
    )
    assert "{'class': 'NetworkTopologyStrategy', 'europe-west1': 3}" in nts[0]
    assert nts[1].startswith("CREATE TABLE IF NOT EXISTS ks_2.seen_v2 (")
    assert nts[1].endswith("default_time_to_live = 0")
    assert nts[2].startswith("CREATE TABLE IF NOT EXISTS ks_2.blocked_creators (")
    other = schema_statements("ks", blocked_table="blocks_v2", ttl_seconds=DAY)
    assert other[2].startswith("CREATE TABLE IF NOT EXISTS ks.blocks_v2 (")
    assert other[2].endswith("default_time_to_live = 0")  # whatever the seen TTL is
    for bad in ("seen", "blocks; DROP TABLE x", "Blocks"):  # the seen table's name, or invalid
        with pytest.raises(ValueError):
            schema_statements("ks", blocked_table=bad)
        with pytest.raises(ValueError):
            ScyllaSeenStore(FakeSession(), "ks", blocked_table=bad)
    s = Settings(scylla_keyspace="prod", scylla_replication_factor=3, scylla_seen_ttl_days=30)
    from_settings = settings_schema_statements(s)
    assert "'replication_factor': 3" in from_settings[0]
    assert from_settings[1].endswith(f"default_time_to_live = {30 * DAY}")
    assert from_settings[2].endswith("default_time_to_live = 0")
    assert settings_schema_statements(s, "seen", "blocks_v2")[2].startswith(
        "CREATE TABLE IF NOT EXISTS prod.blocks_v2 ("
    )

    session = FakeSession()
    assert migrate(session, simple) == simple
    assert session.ddl == simple
    assert set(session.tables) == {("socialrec", "seen"), ("socialrec", "blocked_creators")}
    blocked = session.table("blocked_creators")
    assert blocked.partition_key == ("user_id",)
    assert blocked.primary_key == ("user_id", "creator_id")
    assert blocked.default_ttl == 0


@pytest.mark.parametrize(
    "keyspace, table, dc",
    [
        ("socialrec; DROP KEYSPACE x", "seen", None),
        ("SocialRec", "seen", None),  # unquoted names are lower case
        ("1socialrec", "seen", None),
        ("a" * 49, "seen", None),
        ('"quoted"', "seen", None),
        ("socialrec", "seen WHERE 1=1", None),
        ("socialrec", "seen", "dc1': 3, 'dc2"),
        ("socialrec", "seen", "dc 1"),
    ],
)
def test_identifiers_are_validated(keyspace, table, dc):
    with pytest.raises(ValueError):
        schema_statements(keyspace, table, local_dc=dc)
    if dc is None:
        with pytest.raises(ValueError):
            ScyllaSeenStore(FakeSession(), keyspace, table)


def test_bad_parameters_are_rejected():
    for kwargs in (
        {"replication_factor": 0},
        {"ttl_seconds": -1},
        {"ttl_seconds": seen_scylla.MAX_TTL_SECONDS + 1},
    ):
        with pytest.raises(ValueError):
            schema_statements("ks", **kwargs)
    with pytest.raises(ValueError):
        ScyllaSeenStore()  # neither a session nor a factory
    with pytest.raises(ValueError):
        ScyllaSeenStore(FakeSession(), session_factory=FakeSession)


def test_statements_are_prepared_once_with_bind_markers():
    store, session = make_store()
    assert session.prepared == []  # nothing happens before first use
    store.seen(1)
    store.mark(1, [2], "VIEW")
    store.negatives(1)
    insert, select = session.prepared  # exactly two statements, prepared once
    assert insert.query_string == (
        f"INSERT INTO {KS}.seen (user_id, post_id, event_type, ts) VALUES (?, ?, ?, ?) "
        "USING TTL ? AND TIMESTAMP ?"
    )
    assert select.query_string == f"SELECT post_id, event_type FROM {KS}.seen WHERE user_id = ?"
    for prepared in (insert, select):
        text = prepared.query_string
        assert "'" not in text and not re.search(r"\b\d+\b", text), f"a literal in {text}"
        assert prepared.routing_key_indexes == [0]  # user_id: token-aware routing is possible
        assert prepared.is_idempotent
    assert [c.name for c in insert.column_metadata] == [
        "user_id",
        "post_id",
        "event_type",
        "ts",
        "[ttl]",
        "[timestamp]",
    ]
    for _, bound in session.calls:
        assert bound.routing_key == LongType.serialize(1, PROTOCOL)


def test_consistency_levels_are_applied_and_configurable(caplog):
    store, session = make_store()
    store.mark(1, [2], "VIEW")
    store.seen(1)
    insert, select = session.prepared
    assert insert.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert select.consistency_level == ConsistencyLevel.LOCAL_ONE
    assert session.bound("INSERT")[0].consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert session.bound("SELECT")[0].consistency_level == ConsistencyLevel.LOCAL_ONE

    store, session = make_store(read_consistency="quorum", write_consistency="ALL")
    store.mark(1, [2], "VIEW")
    store.negatives(1)
    assert [p.consistency_level for p in session.prepared] == [
        ConsistencyLevel.ALL,
        ConsistencyLevel.QUORUM,
    ]
    for read, write in (("FAST", "ONE"), ("ONE", "SERIAL"), ("ANY", "ONE")):
        with pytest.raises(ValueError):
            ScyllaSeenStore(FakeSession(), read_consistency=read, write_consistency=write)
    assert consistency_level("local_quorum", write=True) == ConsistencyLevel.LOCAL_QUORUM

    one, quorum = ConsistencyLevel.LOCAL_ONE, ConsistencyLevel.LOCAL_QUORUM
    assert reads_see_writes(one, quorum, 1) and reads_see_writes(quorum, quorum, 3)
    assert not reads_see_writes(one, quorum, 3)
    with caplog.at_level(logging.WARNING, logger="socialrec.stores.seen_scylla"):
        ScyllaSeenStore(FakeSession(), replication_factor=1)
        assert "read-your-writes" not in caplog.text
        ScyllaSeenStore(FakeSession(), replication_factor=3)
        assert "read-your-writes" in caplog.text


def test_values_are_bound_with_ttl_and_write_timestamp_per_row():
    store, session = make_store(ttl_seconds=90 * DAY)
    assert store.mark(7, [70], "LIKE") == 1  # ts None: now
    assert store.mark(7, [71], "VIEW", ts=NOW - 10 * DAY) == 1
    assert store.mark(7, [72], "VIEW", ts=NOW - 91 * DAY) == 0  # expired already: not written
    assert store.mark(7, [73], "VIEW", ts=NOW + 3600) == 1  # a clock ahead of ours
    assert store.mark(7, [74], "VIEW", ts="2025-12-31T12:00:00Z") == 1
    rows = [b.raw_values for b in session.bound("INSERT")]
    at = dt.datetime.fromtimestamp
    assert rows == [
        (7, 70, "LIKE", at(NOW, dt.UTC), 90 * DAY, int(NOW * 1e6)),
        (7, 71, "VIEW", at(NOW - 10 * DAY, dt.UTC), 80 * DAY, int((NOW - 10 * DAY) * 1e6)),
        (7, 73, "VIEW", at(NOW + 3600, dt.UTC), 90 * DAY, int(NOW * 1e6)),  # both capped
        (7, 74, "VIEW", at(NOW - 43200, dt.UTC), 90 * DAY - 43200, int((NOW - 43200) * 1e6)),
    ]
    for bound in session.bound("INSERT"):  # the driver serialised them as the schema's types
        assert [len(v) for v in bound.values] == [8, 8, len(bound.raw_values[2]), 8, 4, 8]

    store, session = make_store(ttl_seconds=0)  # SOCIALREC_SCYLLA_SEEN_TTL_DAYS=0
    assert store.mark(7, [72], "VIEW", ts=NOW - 400 * DAY) == 1
    assert session.bound("INSERT")[0].raw_values[4] == 0  # CQL: no expiry
    assert session.ddl[1].endswith("default_time_to_live = 0")


def test_each_method_runs_the_right_statement_and_round_trips():
    now = [NOW]
    store, session = make_store(clock=lambda: now[0], ttl_seconds=30 * DAY)
    assert isinstance(store, SeenStore)
    assert store.seen(1) == set() and store.negatives(1) == set()
    store.mark(1, [10, 11], "IMPRESSION")
    store.mark(1, [11], "LIKE", ts="2025-12-31T10:11:12Z")
    store.mark_seen(1, [12], "DISLIKE")
    store.mark(1, [13], "REPORT", ts=NOW - 60)
    assert store.mark_events([(2, 10, "VIEW", None), (2, 14, "SHARE", pd.Timestamp(NOW, unit="s"))])
    assert store.seen(1) == {10, 11, 12, 13}  # read-your-writes
    assert store.negatives(1) == {12, 13}
    assert store.seen(2) == {10, 14} and store.negatives(2) == set()
    assert {how for how, b in session.calls if b in session.bound("INSERT")} == {"execute_async"}
    assert {how for how, b in session.calls if b in session.bound("SELECT")} == {"execute"}
    assert [b.raw_values for b in session.bound("SELECT")][-1] == (2,)

    frame = pd.DataFrame(
        {
            "user_id": [3, 3, 4, 4],
            "post_id": [5, 6, 5, 7],
            "event_type": ["VIEW", "REPORT", "LIKE", "IMPRESSION"],
            "ts": pd.to_datetime(["2025-12-30", "2025-12-31", "2025-10-01", None], utc=True),
        }
    )
    assert store.bulk_load(frame) == 3  # 2025-10-01 is past the 30-day TTL
    assert store.seen(3) == {5, 6} and store.negatives(3) == {6} and store.seen(4) == {7}
    assert store.bulk_load(frame.iloc[:0]) == 0
    assert store.bulk_load(frame.drop(columns="ts")) == 4  # no ts: now

    with pytest.raises(ValueError):
        store.mark(1, [1], "HACK")
    with pytest.raises(ValueError):  # nothing of a bad batch is written
        store.mark_events([(9, 1, "VIEW", None), (9, 2, "NOPE", None)])
    with pytest.raises(ValueError):
        store.bulk_load(pd.DataFrame({"user_id": [9], "post_id": [2], "event_type": ["NOPE"]}))
    assert store.seen(9) == set()

    # an older event does not overwrite a newer one (write timestamp = event time)
    store.mark(5, [1], "VIEW", ts=NOW - 100)
    store.mark(5, [1], "VIEW", ts=NOW - 5000)
    stored = session.rows[(5, 1, "VIEW")]["ts"]  # the driver decodes naive UTC datetimes
    assert stored == dt.datetime.fromtimestamp(NOW - 100, dt.UTC).replace(tzinfo=None)
    # expiry as modelled by the fake (a server decides it for real: see the integration test)
    now[0] += 30 * DAY - 50
    assert 1 not in store.seen(5) and 10 in store.seen(1)
    now[0] += 100
    assert store.seen(1) == set()


def test_writes_use_execute_concurrent_in_chunks(monkeypatch):
    calls = []
    real = seen_scylla.execute_concurrent_with_args

    def spy(session, statement, parameters, **kwargs):
        calls.append((statement.query_string, len(parameters), kwargs))
        return real(session, statement, parameters, **kwargs)

    monkeypatch.setattr(seen_scylla, "execute_concurrent_with_args", spy)
    monkeypatch.setattr(seen_scylla, "WRITE_CHUNK", 3)
    store, session = make_store(concurrency=8)
    assert store.mark(1, range(7), "VIEW") == 7
    assert [n for _, n, _ in calls] == [3, 3, 1]
    assert all(k == {"concurrency": 8, "raise_on_first_error": True} for _, _, k in calls)
    assert all(q.startswith("INSERT") for q, _, _ in calls)
    assert store.seen(1) == set(range(7))
    assert store.mark(1, [], "VIEW") == 0 and store.mark_events([]) == 0
    assert len(calls) == 3  # nothing sent for nothing


def test_driver_type_errors_surface():
    """The real serialisers run: a value of the wrong type fails as in production."""
    store, session = make_store()
    store.connect()
    insert = session.prepared[0]
    with pytest.raises(TypeError):
        insert.bind((1, "not a bigint", "VIEW", dt.datetime.now(dt.UTC), 1, 1))
    with pytest.raises(TypeError):
        insert.bind((1, 2, "VIEW", "2026-01-01", 1, 1))  # a str for a timestamp


def test_unmigrated_table_and_closing():
    session = FakeSession()  # no migration ran: the table does not exist
    store = ScyllaSeenStore(session, KS)
    with pytest.raises(RuntimeError, match="seen_scylla migrate"):
        store.seen(1)
    store.close()
    assert session.cluster.shutdowns == 0  # a session given in is the caller's

    created = []

    def factory():
        s = FakeSession()
        migrate(s, schema_statements(KS))
        created.append(s)
        return s

    with ScyllaSeenStore(keyspace=KS, session_factory=factory) as owned:
        assert created == []  # lazy: no connection yet
        owned.mark(1, [1], "VIEW")
        assert owned.seen(1) == {1} and len(created) == 1
    assert created[0].cluster.shutdowns == 1  # the store owned it
    owned.close()  # idempotent
    assert created[0].cluster.shutdowns == 1
    with pytest.raises(RuntimeError, match="closed"):
        owned.seen(1)


def test_bloom_wrapper_over_the_scylla_store():
    store, session = make_store()
    wrapped = BloomFilteredSeenStore(store, capacity=50, fp_rate=0.01, max_users=10)
    wrapped.mark(1, [10, 11], "VIEW")
    assert wrapped.might_have_seen(1, [10, 11]) == [True, True]
    n_selects = len(session.bound("SELECT"))
    wrapped.mark_events([(1, 12, "DISLIKE", None)])
    assert wrapped.might_have_seen(1, [12]) == [True]
    assert len(session.bound("SELECT")) == n_selects  # answered by the filter
    assert wrapped.negatives(1) == {12} and wrapped.seen(1) == {10, 11, 12}


BLOCKED = f"{KS}.blocked_creators"


def test_block_statements_prepared_on_first_use_with_bind_markers():
    store, session = make_store()
    store.mark(1, [2], "VIEW")
    assert store.seen(1) == {2}
    assert len(session.prepared) == 2  # the seen path does not prepare the block statements
    assert store.block(1, [100]) == 1
    insert, delete, select = session.prepared[2:]
    assert insert.query_string == (
        f"INSERT INTO {BLOCKED} (user_id, creator_id, ts) VALUES (?, ?, ?)"
    )  # no USING TTL: blocks never expire; no USING TIMESTAMP: the latest call wins
    assert delete.query_string == f"DELETE FROM {BLOCKED} WHERE user_id = ? AND creator_id = ?"
    assert select.query_string == f"SELECT creator_id FROM {BLOCKED} WHERE user_id = ?"
    assert [c.name for c in insert.column_metadata] == ["user_id", "creator_id", "ts"]
    assert [c.name for c in delete.column_metadata] == ["user_id", "creator_id"]
    assert [c.name for c in select.column_metadata] == ["user_id"]
    assert [c.name for c in select.result_metadata] == ["creator_id"]
    for prepared in (insert, delete, select):
        text = prepared.query_string
        assert "'" not in text and not re.search(r"\b\d+\b", text), f"a literal in {text}"
        assert "TTL" not in text.upper() and "TIMESTAMP" not in text.upper()
        assert prepared.routing_key_indexes == [0]  # user_id: token-aware routing
        assert prepared.is_idempotent
    assert store.unblock(1, [100]) == 1 and store.blocked_creators(1) == set()
    store.block(2, [5])
    assert len(session.prepared) == 5  # prepared once
    for _, bound in session.calls:
        assert bound.routing_key == LongType.serialize(bound.raw_values[0], PROTOCOL)


def test_block_consistency_levels():
    store, session = make_store()
    store.block(1, [100])
    store.unblock(1, [100])
    store.blocked_creators(1)
    insert, delete, select = session.prepared[2:]  # after the seen store's two
    assert insert.consistency_level == delete.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    assert select.consistency_level == ConsistencyLevel.LOCAL_ONE
    assert session.bound(f"INSERT INTO {BLOCKED}")[0].consistency_level == (
        ConsistencyLevel.LOCAL_QUORUM
    )
    assert session.bound(f"DELETE FROM {BLOCKED}")[0].consistency_level == (
        ConsistencyLevel.LOCAL_QUORUM
    )
    assert session.bound("SELECT creator_id")[0].consistency_level == ConsistencyLevel.LOCAL_ONE

    store, session = make_store(read_consistency="quorum", write_consistency="ALL")
    store.blocked_creators(1)
    assert [p.consistency_level for p in session.prepared[2:]] == [
        ConsistencyLevel.ALL,
        ConsistencyLevel.ALL,
        ConsistencyLevel.QUORUM,
    ]


def test_block_values_round_trip_and_no_ttl():
    now = [NOW]
    store, session = make_store(clock=lambda: now[0], ttl_seconds=30 * DAY)
    assert store.blocked_creators(1) == set()
    assert store.block(1, [100, 101, 101]) == 2  # distinct creators
    assert store.block(1, [102], ts="2025-12-31T12:00:00Z") == 1
    at = dt.datetime.fromtimestamp
    assert [b.raw_values for b in session.bound(f"INSERT INTO {BLOCKED}")] == [
        (1, 100, at(NOW, dt.UTC)),
        (1, 101, at(NOW, dt.UTC)),
        (1, 102, at(NOW - 43200, dt.UTC)),
    ]
    for bound in session.bound(f"INSERT INTO {BLOCKED}"):  # bigint, bigint, timestamp
        assert [len(v) for v in bound.values] == [8, 8, 8]
    assert store.blocked_creators(1) == {100, 101, 102}  # read-your-writes
    assert session.bound("SELECT creator_id")[-1].raw_values == (1,)
    writes = [b for b in session.bound(f"INSERT INTO {BLOCKED}")]
    writes += session.bound(f"DELETE FROM {BLOCKED}")
    assert {how for how, b in session.calls if b in writes} == {"execute_async"}
    reads = session.bound("SELECT creator_id")
    assert {how for how, b in session.calls if b in reads} == {"execute"}

    # idempotent re-block: still one row per (user, creator)
    assert store.block(1, [101], ts=NOW - 10) == 1
    assert store.blocked_creators(1) == {100, 101, 102}
    assert sorted(session.table("blocked_creators").rows) == [(1, 100), (1, 101), (1, 102)]
    # users are independent
    assert store.block(2, [101, 200]) == 2
    assert store.unblock(1, [101, 999]) == 2  # 999 was never blocked: a no-op
    assert [b.raw_values for b in session.bound(f"DELETE FROM {BLOCKED}")] == [
        (1, 101),
        (1, 999),
    ]
    assert store.blocked_creators(1) == {100, 102}
    assert store.blocked_creators(2) == {101, 200}
    # block again after an unblock: the later call wins
    assert store.block(1, [101]) == 1 and store.blocked_creators(1) == {100, 101, 102}

    # no TTL: years later the seen rows are gone, the blocks are not
    store.mark(1, [7], "VIEW")
    now[0] += 3650 * DAY
    assert store.seen(1) == set()
    assert store.blocked_creators(1) == {100, 101, 102}
    assert all(row["[expires]"] is None for row in session.table("blocked_creators").rows.values())

    # nothing is sent for nothing or for a bad call
    n_calls = len(session.calls)
    assert store.block(1, []) == 0 and store.unblock(1, []) == 0
    for bad in (
        lambda: store.block("1", [2]),
        lambda: store.block(1, [2, "3"]),
        lambda: store.block(1, [2, 2**63]),
        lambda: store.block(True, [2]),
        lambda: store.block(1, 2),
        lambda: store.unblock(1, [2, 1.5]),
        lambda: store.blocked_creators("1"),
    ):
        with pytest.raises(ValueError):
            bad()
    assert len(session.calls) == n_calls


def test_block_writes_use_execute_concurrent_in_chunks(monkeypatch):
    calls = []
    real = seen_scylla.execute_concurrent_with_args

    def spy(session, statement, parameters, **kwargs):
        calls.append((statement.query_string, len(parameters), kwargs))
        return real(session, statement, parameters, **kwargs)

    monkeypatch.setattr(seen_scylla, "execute_concurrent_with_args", spy)
    monkeypatch.setattr(seen_scylla, "WRITE_CHUNK", 2)
    store, _ = make_store(concurrency=8)
    assert store.block(1, range(5)) == 5
    assert store.unblock(1, range(3)) == 3
    assert [(q.split()[0], n) for q, n, _ in calls] == [
        ("INSERT", 2),
        ("INSERT", 2),
        ("INSERT", 1),
        ("DELETE", 2),
        ("DELETE", 1),
    ]
    assert all(k == {"concurrency": 8, "raise_on_first_error": True} for _, _, k in calls)
    assert store.blocked_creators(1) == {3, 4}


def test_blocks_on_a_cluster_migrated_before_blocks_existed():
    """The seen path keeps working; blocks point to the migration until it has run."""
    session = FakeSession()
    statements = schema_statements(KS)
    migrate(session, statements[:2])  # the keyspace and the seen table only
    store = ScyllaSeenStore(session, KS)
    store.mark(1, [2], "VIEW")
    assert store.seen(1) == {2}
    for call in (
        lambda: store.block(1, [3]),
        lambda: store.unblock(1, [3]),
        lambda: store.blocked_creators(1),
    ):
        with pytest.raises(RuntimeError, match="blocked_creators.*seen_scylla migrate"):
            call()
    migrate(session, statements)  # running migrate again adds the table
    assert store.block(1, [3]) == 1 and store.blocked_creators(1) == {3}
    assert store.seen(1) == {2}
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.blocked_creators(1)


def test_bloom_wrapper_passes_blocks_to_the_scylla_store():
    store, session = make_store()
    wrapped = BloomFilteredSeenStore(store, capacity=50, fp_rate=0.01, max_users=10)
    assert wrapped.block(1, [100, 101]) == 2
    assert wrapped.blocked_creators(1) == {100, 101}
    assert wrapped.unblock(1, [100]) == 1 and wrapped.blocked_creators(1) == {101}
    assert len(session.bound(f"INSERT INTO {BLOCKED}")) == 2
    assert len(session.bound("SELECT creator_id")) == 2  # every read goes to the store
    assert wrapped.stats()["builds"] == 0 and session.bound("SELECT post_id") == []


def test_cluster_from_settings():
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    s = Settings(
        scylla_hosts=" 127.0.0.1, 127.0.0.2 ,",
        scylla_port=19042,
        scylla_local_dc="dc1",
        scylla_username="svc",
        scylla_password="secret",
        scylla_read_consistency="LOCAL_QUORUM",
    )
    assert "secret" not in repr(s)
    cluster = build_cluster(s)  # not connected: nothing is sent
    try:
        assert cluster.contact_points == ["127.0.0.1", "127.0.0.2"] and cluster.port == 19042
        profile = cluster.profile_manager.profiles[EXEC_PROFILE_DEFAULT]
        policy = profile.load_balancing_policy
        assert isinstance(policy, TokenAwarePolicy)
        assert isinstance(policy._child_policy, DCAwareRoundRobinPolicy)
        assert policy._child_policy.local_dc == "dc1"
        assert profile.consistency_level == ConsistencyLevel.LOCAL_QUORUM
        assert isinstance(cluster.auth_provider, PlainTextAuthProvider)
        assert cluster.auth_provider.username == "svc"
        assert cluster.auth_provider.password == "secret"
    finally:
        cluster.shutdown()
    defaults = Settings(scylla_hosts="127.0.0.1")
    assert (
        defaults.scylla_port,
        defaults.scylla_local_dc,
        defaults.scylla_replication_factor,
        defaults.scylla_seen_ttl_days,
        defaults.scylla_read_consistency,
        defaults.scylla_write_consistency,
        defaults.scylla_username,
        defaults.scylla_password,
    ) == (9042, None, 1, 90, "LOCAL_ONE", "LOCAL_QUORUM", None, None)
    with pytest.raises(ValueError):
        build_cluster(Settings(scylla_hosts=" , "))


def test_open_seen_store_returns_the_scylla_store(tmp_path):
    s = Settings(data_dir=tmp_path, scylla_hosts="127.0.0.1", scylla_keyspace="ks1")
    store = open_seen_store(s)  # connects on first use only: nothing is sent here
    assert isinstance(store, ScyllaSeenStore) and store._session is None
    assert store.keyspace == "ks1" and store.ttl_seconds == 90 * DAY
    store.close()
    wrapped = open_seen_store(s, bloom=True)
    assert isinstance(wrapped, BloomFilteredSeenStore)
    assert isinstance(wrapped.store, ScyllaSeenStore)
    wrapped.close()


def test_migrate_command_dry_run(monkeypatch, capsys):
    monkeypatch.setenv("SOCIALREC_SCYLLA_KEYSPACE", "feed_prod")
    monkeypatch.setenv("SOCIALREC_SCYLLA_LOCAL_DC", "dc-east")
    monkeypatch.setenv("SOCIALREC_SCYLLA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("SOCIALREC_SCYLLA_SEEN_TTL_DAYS", "7")
    assert seen_scylla.main(["migrate", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(line.endswith(";") for line in out)
    assert "'dc-east': 3" in out[0] and out[1].endswith(f"default_time_to_live = {7 * DAY};")
    assert out[2].startswith("CREATE TABLE IF NOT EXISTS feed_prod.blocked_creators (")
    assert out[2].endswith("default_time_to_live = 0;")  # blocks never expire
    assert seen_scylla.main(["migrate", "--dry-run", "--blocked-table", "blocks_v2"]) == 0
    assert "feed_prod.blocks_v2 (" in capsys.readouterr().out
    # the module entry point, as an operator runs it
    env = {**os.environ, "SOCIALREC_SCYLLA_KEYSPACE": "feed_prod"}
    done = subprocess.run(
        [sys.executable, "-m", "socialrec.stores.seen_scylla", "migrate", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE IF NOT EXISTS feed_prod.seen" in done.stdout
    assert "CREATE TABLE IF NOT EXISTS feed_prod.blocked_creators" in done.stdout


def test_every_cql_text_parses_with_a_real_cql_grammar(monkeypatch, capsys):
    """The DDL of the migration (every replication form), all five prepared statements (seen
    and blocks) and the migrate command's output, parsed by cqlsh's CQL grammar."""
    if CQL_PARSES is None:
        pytest.skip(NO_GRAMMAR)
    for broken in (  # the check is not vacuous: it rejects broken statements
        "SELEC post_id FROM ks.seen WHERE user_id = ?",
        "SELECT post_id FROM ks.seen WHERE user_id = ? AND",
        "INSERT INTO ks.seen (user_id, post_id) VALUES (?, ?) USING TTL",
        "INSERT INTO ks.seen (user_id, post_id) VALUES (?, ?) USING TTL ? TIMESTAMP ?",
        "CREATE TABLE ks.seen (user_id bigint, PRIMARY KEY (user_id)",
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy'",
        "DELETE FROM ks.blocked_creators WHERE user_id = ? AND",
        "DELETE ks.blocked_creators WHERE user_id = ?",
        "SELECT creator_id FROM ks.blocked_creators WHERE",
    ):
        assert not CQL_PARSES(broken), broken
    texts = schema_statements("socialrec") + schema_statements(
        "ks_2", "seen_v2", replication_factor=3, local_dc="europe-west1", ttl_seconds=0
    )
    store, session = make_store()
    store.connect()
    store.blocked_creators(1)  # prepares the three block statements
    texts += [p.query_string for p in session.prepared]
    assert len(session.prepared) == 5
    monkeypatch.setenv("SOCIALREC_SCYLLA_LOCAL_DC", "dc-east")
    assert seen_scylla.main(["migrate", "--dry-run"]) == 0
    texts += capsys.readouterr().out.strip().splitlines()
    assert len(texts) == 14
    for text in texts:
        assert CQL_PARSES(text), text


# --- (a) integration tests: a real ScyllaDB ---------------------------------------------------
SCYLLA_HOSTS = os.environ.get("SCYLLA_HOSTS", "").strip()


@pytest.fixture
def scylla():
    """Settings for a fresh keyspace on the SCYLLA_HOSTS cluster, migrated; dropped after."""
    if not SCYLLA_HOSTS:
        pytest.skip(
            "SCYLLA_HOSTS is not set: no ScyllaDB cluster to run the seen-store integration "
            "tests against (set SCYLLA_HOSTS=host1,host2 and optionally SCYLLA_PORT, "
            "SCYLLA_LOCAL_DC)"
        )
    settings = Settings(
        scylla_hosts=SCYLLA_HOSTS,
        scylla_port=int(os.environ.get("SCYLLA_PORT", "9042")),
        scylla_local_dc=os.environ.get("SCYLLA_LOCAL_DC") or None,
        scylla_keyspace=f"socialrec_it_{uuid.uuid4().hex[:12]}",
        scylla_replication_factor=1,
    )
    cluster = build_cluster(settings)
    session = cluster.connect()
    try:
        migrate(session, settings_schema_statements(settings))
        assert session.wait_for_schema_agreement()
        yield settings, session
    finally:
        session.execute(f"DROP KEYSPACE IF EXISTS {settings.scylla_keyspace}")
        cluster.shutdown()


@pytest.mark.integration
def test_integration_migrate_is_idempotent(scylla):
    settings, session = scylla
    migrate(session, settings_schema_statements(settings))  # a second run changes nothing
    done = subprocess.run(  # the operator's command, against the same cluster
        [sys.executable, "-m", "socialrec.stores.seen_scylla", "migrate"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "SOCIALREC_SCYLLA_HOSTS": settings.scylla_hosts,
            "SOCIALREC_SCYLLA_PORT": str(settings.scylla_port),
            "SOCIALREC_SCYLLA_KEYSPACE": settings.scylla_keyspace,
            **(
                {"SOCIALREC_SCYLLA_LOCAL_DC": settings.scylla_local_dc}
                if settings.scylla_local_dc
                else {}
            ),
        },
    )
    assert done.returncode == 0, done.stderr
    session.cluster.refresh_schema_metadata()
    table = session.cluster.metadata.keyspaces[settings.scylla_keyspace].tables["seen"]
    assert [c.name for c in table.partition_key] == ["user_id"]
    assert [c.name for c in table.clustering_key] == ["post_id", "event_type"]
    assert {n: c.cql_type for n, c in table.columns.items()} == {
        "user_id": "bigint",
        "post_id": "bigint",
        "event_type": "text",
        "ts": "timestamp",
    }
    assert int(table.options["default_time_to_live"]) == 90 * DAY
    blocked = session.cluster.metadata.keyspaces[settings.scylla_keyspace].tables[
        "blocked_creators"
    ]
    assert [c.name for c in blocked.partition_key] == ["user_id"]
    assert [c.name for c in blocked.clustering_key] == ["creator_id"]
    assert {n: c.cql_type for n, c in blocked.columns.items()} == {
        "user_id": "bigint",
        "creator_id": "bigint",
        "ts": "timestamp",
    }
    assert int(blocked.options["default_time_to_live"]) == 0  # blocks never expire


@pytest.mark.integration
def test_integration_round_trip(scylla):
    settings, _ = scylla
    with ScyllaSeenStore.from_settings(settings) as store:
        assert store.seen(1) == set() and store.negatives(1) == set()
        store.mark(1, [10, 11], "IMPRESSION")
        store.mark(1, [11], "LIKE", ts="2026-01-03T10:11:12Z")
        store.mark_seen(1, [12], "DISLIKE")
        store.mark(1, [13], "REPORT", ts=time.time() - 60)
        assert store.mark_events([(2, 10, "VIEW", None), (2, 14, "SHARE", None)]) == 2
        assert store.seen(1) == {10, 11, 12, 13} and store.negatives(1) == {12, 13}
        assert store.seen(2) == {10, 14} and store.negatives(2) == set()
        now = pd.Timestamp.now(tz="UTC")
        frame = pd.DataFrame(
            {
                "user_id": [3, 3, 4],
                "post_id": [5, 6, 5],
                "event_type": ["VIEW", "REPORT", "LIKE"],
                "ts": [now - pd.Timedelta(days=1), now, now - pd.Timedelta(days=400)],
            }
        )
        assert store.bulk_load(frame) == 2  # 400 days is past the 90-day TTL
        assert store.seen(3) == {5, 6} and store.negatives(3) == {6} and store.seen(4) == set()
        # an older event does not overwrite the newer ts of the same key
        store.mark(5, [1], "VIEW", ts=time.time() - 100)
        store.mark(5, [1], "VIEW", ts=time.time() - 5000)
        session = store.connect()
        read = session.prepare(
            f"SELECT ts FROM {settings.scylla_keyspace}.seen "
            "WHERE user_id = ? AND post_id = ? AND event_type = ?"
        )
        ts = session.execute(read, (5, 1, "VIEW")).one()[0]
        assert abs(ts.replace(tzinfo=dt.UTC).timestamp() - (time.time() - 100)) < 30


@pytest.mark.integration
def test_integration_ttl_expiry(scylla):
    settings, session = scylla
    store = ScyllaSeenStore(session, settings.scylla_keyspace, ttl_seconds=6)
    store.connect()
    start = time.time()
    store.mark(1, [1], "VIEW")  # expires 6 s from now
    store.mark(1, [2], "VIEW", ts=start - 4)  # 2 s from now: the TTL counts from the event
    ttl = session.prepare(
        f"SELECT post_id, TTL(ts) FROM {settings.scylla_keyspace}.seen WHERE user_id = ?"
    )
    ttls = dict(session.execute(ttl, (1,)).all())
    assert 4 <= ttls[1] <= 6 and 1 <= ttls[2] <= 2, ttls
    time.sleep(max(0.0, start + 3.5 - time.time()))  # server expiry has 1-second granularity
    assert store.seen(1) == {1}
    time.sleep(max(0.0, start + 7.5 - time.time()))
    assert store.seen(1) == set()


@pytest.mark.integration
def test_integration_blocks(scylla):
    settings, session = scylla
    ks = settings.scylla_keyspace
    with ScyllaSeenStore.from_settings(settings) as store:
        assert store.blocked_creators(1) == set()
        assert store.block(1, [100, 101]) == 2
        assert store.blocked_creators(1) == {100, 101}  # read-your-writes
        assert store.block(1, [101], ts="2026-01-03T10:11:12Z") == 1  # idempotent re-block
        assert store.block(2, [101, 200]) == 2
        assert store.unblock(1, [101, 999]) == 2
        assert store.blocked_creators(1) == {100} and store.blocked_creators(2) == {101, 200}
        assert store.block(1, [101]) == 1  # blocked again right after the unblock
        assert store.blocked_creators(1) == {100, 101}
        with pytest.raises(ValueError):
            store.block(1, ["102"])
        assert store.blocked_creators(1) == {100, 101}
    rows = session.execute(
        session.prepare(
            f"SELECT creator_id, ts, TTL(ts) FROM {ks}.blocked_creators WHERE user_id = ?"
        ),
        (2,),
    ).all()
    assert sorted(r[0] for r in rows) == [101, 200]
    assert all(r[2] is None for r in rows)  # no TTL on a block
    # a store whose seen rows expire in 2 s: its blocks stay
    store = ScyllaSeenStore(session, ks, ttl_seconds=2)
    start = time.time()
    store.mark(3, [1], "VIEW")
    store.block(3, [300])
    time.sleep(max(0.0, start + 3.5 - time.time()))
    assert store.seen(3) == set() and store.blocked_creators(3) == {300}
