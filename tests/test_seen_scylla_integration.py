"""ScyllaSeenStore against a real cluster (``SCYLLA_HOSTS=host1,host2``; optional ``SCYLLA_PORT``,
``SCYLLA_LOCAL_DC``), on a fresh keyspace ``socialrec_it_<random>`` dropped afterwards; SKIPPED
without ``SCYLLA_HOSTS`` (``pytest -ra`` prints why). See tests/test_seen_scylla.py."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest

from socialrec.settings import Settings
from socialrec.stores.seen.scylla.schema import (
    build_cluster,
    migrate,
    settings_schema_statements,
)
from socialrec.stores.seen.scylla.store import ScyllaSeenStore
from tests.scylla_fake import DAY

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
        [sys.executable, "-m", "socialrec.stores.seen.scylla", "migrate"],
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
