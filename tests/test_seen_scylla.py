"""ScyllaSeenStore: integration tests against a real cluster, and a contract test without one.

(a) Integration (``SCYLLA_HOSTS=host1,host2``; optional ``SCYLLA_PORT``, ``SCYLLA_LOCAL_DC``):
    the migration, mark / seen / negatives / mark_events / bulk_load and TTL expiry on a fresh
    keyspace ``socialrec_it_<random>``, dropped afterwards. Without ``SCYLLA_HOSTS`` they are
    SKIPPED, and ``pytest -ra`` prints why.

(b) Contract, no server: the store runs against ``FakeSession``, a recording fake of the part of
    the driver's ``Session`` the store uses (``prepare``, ``execute``, and ``execute_async``,
    which the driver's real ``execute_concurrent_with_args`` calls). ``prepare`` returns the
    driver's real ``PreparedStatement`` with bind metadata for our schema, so binding goes
    through the driver's real type serialisers (a str bound to a bigint or a timestamp fails as
    it would in production) and the real routing-key computation (token-aware routing needs
    ``user_id`` as the routing key). The fake asserts that every value is a bind
    marker (no literal in DML), that DML is never sent unprepared, that every marker is bound;
    the tests check the consistency level and idempotence of each statement, the TTL and write
    timestamp bound per row, which statement runs for which method, and the chunked writes
    through ``execute_concurrent_with_args``. Every CQL text the store produces (the DDL of the
    migration and both prepared statements) is parsed with a real CQL grammar: cqlsh's
    (``cqlshlib.cql3handling``, PyPI package ``cqlsh``, installed with ``--no-deps`` because
    it requires cassandra-driver, which would clash with scylla-driver's ``cassandra``
    module). That grammar has no bind markers, so each ``?`` is replaced by a literal before
    parsing; it does not accept ``PRIMARY KEY ((user_id), ...)`` (the schema uses the
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

import socialrec.seen_scylla as seen_scylla
from socialrec.bloom import BloomFilteredSeenStore
from socialrec.seen import SeenStore, open_seen_store
from socialrec.seen_scylla import (
    ScyllaSeenStore,
    build_cluster,
    consistency_level,
    migrate,
    reads_see_writes,
    schema_statements,
    settings_schema_statements,
)
from socialrec.settings import Settings

DAY = 86_400
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KS = "socialrec_test"

# --- the fake driver session ----------------------------------------------------------------
COLUMN_TYPES = {"user_id": LongType, "post_id": LongType, "event_type": UTF8Type, "ts": DateType}
PRIMARY_KEY = ("user_id", "post_id", "event_type")
USING_TYPES = {"TTL": ("[ttl]", Int32Type), "TIMESTAMP": ("[timestamp]", LongType)}
PROTOCOL = 4

INSERT_RE = re.compile(
    r"INSERT INTO (\w+)\.(\w+) \(([^)]*)\) VALUES \(([^)]*)\)(?: USING (.+))?", re.I | re.S
)
SELECT_RE = re.compile(r"SELECT (.+?) FROM (\w+)\.(\w+) WHERE (.+)", re.I | re.S)
CREATE_TABLE_RE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) .* default_time_to_live = (\d+)", re.I | re.S
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


class FakeSession:
    """Records everything; keeps rows like one replica would (last write wins, TTL expiry)."""

    def __init__(self, clock=lambda: NOW, tables: set[tuple[str, str]] | None = None):
        self.clock = clock
        self.cluster = FakeCluster()
        self.tables: set[tuple[str, str]] = set(tables or ())
        self.ddl: list[str] = []
        self.prepared: list[PreparedStatement] = []
        self.calls: list[tuple[str, BoundStatement]] = []  # (execute | execute_async, bound)
        self.rows: dict[tuple[int, int, str], dict] = {}

    # prepare: what a server would say about our statements, plus the no-literal rule
    def prepare(self, query: str) -> PreparedStatement:
        query = " ".join(query.split())
        if m := INSERT_RE.fullmatch(query):
            ks, table, cols, vals, using = m.groups()
            cols = [c.strip() for c in cols.split(",")]
            vals = [v.strip() for v in vals.split(",")]
            assert all(v == "?" for v in vals), f"a literal value in prepared DML: {query}"
            if len(cols) != len(vals):
                raise InvalidRequest("Unmatched column names/values")
            markers = [(c, self._type(c)) for c in cols]
            if missing := set(PRIMARY_KEY) - set(cols):
                raise InvalidRequest(f"Some partition/clustering key parts are missing: {missing}")
            for option in re.split(r"\s+AND\s+", using or "", flags=re.I):
                if option:
                    word, value = option.split()
                    assert value == "?", f"a literal USING value in prepared DML: {query}"
                    markers.append(USING_TYPES[word.upper()])
            result = None
        elif m := SELECT_RE.fullmatch(query):
            selected, ks, table, where = m.groups()
            result = [(c.strip(), self._type(c.strip())) for c in selected.split(",")]
            markers = []
            for relation in re.split(r"\s+AND\s+", where, flags=re.I):
                col, op, value = relation.split()
                assert value == "?", f"a literal value in prepared DML: {query}"
                assert op == "="
                markers.append((col, self._type(col)))
            if "user_id" not in [c for c, _ in markers]:
                raise InvalidRequest("Cannot execute this query as it might involve filtering")
        else:
            raise AssertionError(f"unexpected statement prepared: {query}")
        if (ks, table) not in self.tables:
            raise InvalidRequest(f"unconfigured table {table}")
        meta = [ColumnMetadata(ks, table, name, typ) for name, typ in markers]
        prepared = PreparedStatement.from_message(
            uuid.uuid4().bytes,
            meta,
            [i for i, (name, _) in enumerate(markers) if name == "user_id"],
            None,
            query,
            ks,
            PROTOCOL,
            [ColumnMetadata(ks, table, n, t) for n, t in result] if result else None,
            None,
            False,
        )
        self.prepared.append(prepared)
        return prepared

    @staticmethod
    def _type(column: str):
        if column not in COLUMN_TYPES:
            raise InvalidRequest(f"Undefined column name {column}")
        return COLUMN_TYPES[column]

    def execute(self, query, parameters=None, timeout=None, execution_profile=None, **_):
        return self._run("execute", query, parameters)

    def execute_async(self, query, parameters=None, timeout=None, execution_profile=None, **_):
        try:
            return FakeFuture(rows=self._run("execute_async", query, parameters))
        except Exception as exc:  # delivered through the errback, as the driver does
            return FakeFuture(error=exc)

    def _run(self, how: str, query, parameters):
        if isinstance(query, str):
            assert parameters is None, f"values formatted into a simple statement: {query}"
            assert re.match(r"(CREATE|DROP|ALTER) ", query), f"unprepared DML: {query}"
            self.ddl.append(query)
            if m := CREATE_TABLE_RE.match(query):
                self.tables.add((m.group(1), m.group(2)))
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
        text = bound.prepared_statement.query_string
        if text.startswith("INSERT"):
            key = (values["user_id"], values["post_id"], values["event_type"])
            old = self.rows.get(key)
            if old is None or old["write_ts"] <= values["[timestamp]"]:
                ttl = values["[ttl]"]
                self.rows[key] = {
                    "ts": values["ts"],
                    "write_ts": values["[timestamp]"],
                    "expires": self.clock() + ttl if ttl else None,
                }
            return []
        now = self.clock()
        return [
            (p, e)
            for (u, p, e), row in sorted(self.rows.items())
            if u == values["user_id"] and (row["expires"] is None or row["expires"] > now)
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
        "CREATE TABLE IF NOT EXISTS socialrec.seen (user_id bigint, post_id bigint, "
        "event_type text, ts timestamp, PRIMARY KEY (user_id, post_id, event_type)) "
        "WITH default_time_to_live = 7776000",
    ]
    nts = schema_statements(
        "ks_2", "seen_v2", replication_factor=3, local_dc="europe-west1", ttl_seconds=0
    )
    assert "{'class': 'NetworkTopologyStrategy', 'europe-west1': 3}" in nts[0]
    assert nts[1].startswith("CREATE TABLE IF NOT EXISTS ks_2.seen_v2 (")
    assert nts[1].endswith("default_time_to_live = 0")
    s = Settings(scylla_keyspace="prod", scylla_replication_factor=3, scylla_seen_ttl_days=30)
    from_settings = settings_schema_statements(s)
    assert "'replication_factor': 3" in from_settings[0]
    assert from_settings[1].endswith(f"default_time_to_live = {30 * DAY}")

    session = FakeSession()
    assert migrate(session, simple) == simple
    assert session.ddl == simple and session.tables == {("socialrec", "seen")}


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
    with caplog.at_level(logging.WARNING, logger="socialrec.seen_scylla"):
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
        s = FakeSession(tables={(KS, "seen")})
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
    assert len(out) == 2 and all(line.endswith(";") for line in out)
    assert "'dc-east': 3" in out[0] and out[1].endswith(f"default_time_to_live = {7 * DAY};")
    # the module entry point, as an operator runs it
    env = {**os.environ, "SOCIALREC_SCYLLA_KEYSPACE": "feed_prod"}
    done = subprocess.run(
        [sys.executable, "-m", "socialrec.seen_scylla", "migrate", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE IF NOT EXISTS feed_prod.seen" in done.stdout


def test_every_cql_text_parses_with_a_real_cql_grammar(monkeypatch, capsys):
    """The DDL of the migration (every replication form), both prepared statements and the
    migrate command's output, parsed by cqlsh's CQL grammar."""
    if CQL_PARSES is None:
        pytest.skip(NO_GRAMMAR)
    for broken in (  # the check is not vacuous: it rejects broken statements
        "SELEC post_id FROM ks.seen WHERE user_id = ?",
        "SELECT post_id FROM ks.seen WHERE user_id = ? AND",
        "INSERT INTO ks.seen (user_id, post_id) VALUES (?, ?) USING TTL",
        "INSERT INTO ks.seen (user_id, post_id) VALUES (?, ?) USING TTL ? TIMESTAMP ?",
        "CREATE TABLE ks.seen (user_id bigint, PRIMARY KEY (user_id)",
        "CREATE KEYSPACE ks WITH replication = {'class': 'SimpleStrategy'",
    ):
        assert not CQL_PARSES(broken), broken
    texts = schema_statements("socialrec") + schema_statements(
        "ks_2", "seen_v2", replication_factor=3, local_dc="europe-west1", ttl_seconds=0
    )
    store, session = make_store()
    store.connect()
    texts += [p.query_string for p in session.prepared]
    monkeypatch.setenv("SOCIALREC_SCYLLA_LOCAL_DC", "dc-east")
    assert seen_scylla.main(["migrate", "--dry-run"]) == 0
    texts += capsys.readouterr().out.strip().splitlines()
    assert len(texts) == 8
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
        [sys.executable, "-m", "socialrec.seen_scylla", "migrate"],
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
