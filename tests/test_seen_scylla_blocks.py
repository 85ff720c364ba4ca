"""ScyllaSeenStore contract tests without a server (see tests/test_seen_scylla.py): the blocked
creators' statements, the cluster built from the settings, the migrate command and every CQL text
parsed by a real grammar."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys

import pytest
from cassandra import ConsistencyLevel
from cassandra.cqltypes import LongType

import socialrec.stores.seen.scylla.__main__ as migrate_command
import socialrec.stores.seen.scylla.store as scylla_store
from socialrec.settings import Settings
from socialrec.stores.seen import SeenState, SeenStore, open_seen_store
from socialrec.stores.seen.scylla.schema import (
    build_cluster,
    migrate,
    schema_statements,
)
from socialrec.stores.seen.scylla.store import ScyllaSeenStore
from tests.scylla_fake import (
    CQL_PARSES,
    DAY,
    KS,
    NO_GRAMMAR,
    NOW,
    PROTOCOL,
    FakeSession,
    make_store,
)

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
    real = scylla_store.execute_concurrent_with_args

    def spy(session, statement, parameters, **kwargs):
        calls.append((statement.query_string, len(parameters), kwargs))
        return real(session, statement, parameters, **kwargs)

    monkeypatch.setattr(scylla_store, "execute_concurrent_with_args", spy)
    monkeypatch.setattr(scylla_store, "WRITE_CHUNK", 2)
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
        with pytest.raises(RuntimeError, match="blocked_creators.*seen.scylla migrate"):
            call()
    migrate(session, statements)  # running migrate again adds the table
    assert store.block(1, [3]) == 1 and store.blocked_creators(1) == {3}
    assert store.seen(1) == {2}
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.blocked_creators(1)


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


def test_migrate_command_dry_run(monkeypatch, capsys):
    monkeypatch.setenv("SOCIALREC_SCYLLA_KEYSPACE", "feed_prod")
    monkeypatch.setenv("SOCIALREC_SCYLLA_LOCAL_DC", "dc-east")
    monkeypatch.setenv("SOCIALREC_SCYLLA_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("SOCIALREC_SCYLLA_SEEN_TTL_DAYS", "7")
    assert migrate_command.main(["migrate", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(line.endswith(";") for line in out)
    assert "'dc-east': 3" in out[0] and out[1].endswith(f"default_time_to_live = {7 * DAY};")
    assert out[2].startswith("CREATE TABLE IF NOT EXISTS feed_prod.blocked_creators (")
    assert out[2].endswith("default_time_to_live = 0;")  # blocks never expire
    assert migrate_command.main(["migrate", "--dry-run", "--blocked-table", "blocks_v2"]) == 0
    assert "feed_prod.blocks_v2 (" in capsys.readouterr().out
    # the module entry point, as an operator runs it
    env = {**os.environ, "SOCIALREC_SCYLLA_KEYSPACE": "feed_prod"}
    done = subprocess.run(
        [sys.executable, "-m", "socialrec.stores.seen.scylla", "migrate", "--dry-run"],
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
    assert migrate_command.main(["migrate", "--dry-run"]) == 0
    texts += capsys.readouterr().out.strip().splitlines()
    assert len(texts) == 14
    for text in texts:
        assert CQL_PARSES(text), text


def test_state_reads_the_seen_partition_once_and_the_blocks_once():
    store, session = make_store()
    assert isinstance(store, SeenStore)
    store.mark(1, [10, 11], "VIEW")
    store.mark(1, [11], "DISLIKE")
    store.mark(2, [12], "REPORT")
    store.block(1, [100])
    before = len(session.calls)
    state = store.state(1)
    assert state == SeenState(frozenset({10, 11}), frozenset({11}), frozenset({100}))
    reads = [b.prepared_statement.query_string for _, b in session.calls[before:]]
    assert reads == [store.select_cql, store.blocked_cql]
    assert store.state(2) == SeenState(frozenset({12}), frozenset({12}))
    assert store.count() is None  # a full scan: not offered
