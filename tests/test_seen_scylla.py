"""ScyllaSeenStore: integration tests against a real cluster, and a contract test without one.

The tests are in three files: this one (the migration's DDL and the seen rows' statements),
``test_seen_scylla_blocks.py`` (the blocks' statements, the cluster, the migrate command and
the CQL grammar) and ``test_seen_scylla_integration.py`` (a real cluster); the fake session and
the grammar are in ``tests/scylla_fake.py``.

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
import re

import pandas as pd
import pytest
from cassandra import ConsistencyLevel
from cassandra.cqltypes import LongType

import socialrec.stores.seen.scylla.schema as schema
import socialrec.stores.seen.scylla.store as scylla_store
from socialrec.settings import Settings
from socialrec.stores.seen import SeenStore
from socialrec.stores.seen.scylla.schema import (
    consistency_level,
    migrate,
    reads_see_writes,
    schema_statements,
    settings_schema_statements,
)
from socialrec.stores.seen.scylla.store import ScyllaSeenStore
from tests.scylla_fake import DAY, KS, NOW, PROTOCOL, FakeSession, make_store


# --- (b) contract tests, no server ----------------------------------------------------------
def test_migration_ddl():
    simple = schema_statements("socialrec", ttl_seconds=90 * DAY)
    assert simple == [
        "CREATE KEYSPACE IF NOT EXISTS socialrec WITH replication = "
        "{'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true",
        "CREATE TABLE IF NOT EXISTS socialrec.seen (user_id bigint, post_id bigint, "
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
        {"ttl_seconds": schema.MAX_TTL_SECONDS + 1},
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
    with caplog.at_level(logging.WARNING, logger="socialrec.stores.seen.scylla"):
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
    real = scylla_store.execute_concurrent_with_args

    def spy(session, statement, parameters, **kwargs):
        calls.append((statement.query_string, len(parameters), kwargs))
        return real(session, statement, parameters, **kwargs)

    monkeypatch.setattr(scylla_store, "execute_concurrent_with_args", spy)
    monkeypatch.setattr(scylla_store, "WRITE_CHUNK", 3)
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
    with pytest.raises(RuntimeError, match="seen.scylla migrate"):
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
