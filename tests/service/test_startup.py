"""Issue 13, point 8: the service starts and answers (fallbacks, ``/readyz`` 503 with the reason)
while a dependency is down at start, and picks the dependency up when it is back, without a
restart; ``/readyz`` reports every degraded dependency.

Real parts only: the Milvus the service opens (``socialrec.serving.app.open_index``) points at
a loopback port where no server runs yet, then a real local Milvus server is started on it; the
Feast SQLite online store (``open_features``) is missing at start (its file moved away), then
put back. The served bento is started with Milvus unreachable (one test: ~2 min to build)."""

from __future__ import annotations

import datetime as dt
import os
import time

import numpy as np
import pytest

from socialrec.serving.errors import DependencyError, respond
from tests.service.conftest import (
    TWO_TOWER_ONLY,
    AnsweringIndex,
    FakeEncoder,
    FakeFeatures,
    FakeTwoTower,
    ScoringRanker,
    fallbacks,
    known_posts,
    make_catalog,
    make_endpoints,
    make_settings,
)
from tests.service.test_outages import free_port


def wait_until(check, timeout: float = 30.0):
    """``check()``'s first truthy value, polled every 0.2 s; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s")
        time.sleep(0.2)


def write_posts(uri: str) -> None:
    """The catalog's 30 posts behind both aliases (two-tower vectors of ``FakeTwoTower``'s
    dimension, 384-d text vectors), written by another client (the ``post_index`` asset)."""
    from socialrec.stores.index import PostIndex

    ids = np.arange(1, 31)
    rng = np.random.default_rng(0)
    meta = (ids, ids % 3, ids % 5, 1_767_225_600 + ids)
    with PostIndex(uri) as writer:
        vectors = rng.random((30, 4), dtype=np.float32)
        writer.swap_alias("posts", writer.write_version(1, *meta, vectors))
        texts = rng.random((30, 384), dtype=np.float32)
        writer.swap_alias("post_texts", writer.write_text_version(1, *meta, texts))


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_milvus_down_at_start_answers_fallbacks_and_is_used_once_it_runs(
    tmp_path, metrics, seen_store
):
    from socialrec.serving.app import open_index
    from socialrec.stores.milvus_server import LocalMilvusServer

    port = free_port()
    settings = make_settings(milvus_uri=f"http://127.0.0.1:{port}", **TWO_TOWER_ONLY)
    index = open_index(settings)  # nothing listens on the port: opening it must not fail
    endpoints = make_endpoints(
        metrics,
        seen_store,
        index,
        settings=settings,
        features=FakeFeatures({2}, posts=known_posts()),
        two_tower=FakeTwoTower(),
        ranker=ScoringRanker(),
        catalog=make_catalog(),
        text_encoder=FakeEncoder(),
    )
    server = LocalMilvusServer(tmp_path / "milvus", port=port, die_with_parent=True)
    try:
        # the only candidate source is Milvus: /recommend answers the cold-start fallback
        out = respond("/recommend", metrics, endpoints.recommend, 2, 5)
        assert out.source == "fallback" and len(out.items) == 5, out
        assert "milvus unavailable" in out.reason
        assert fallbacks(metrics, "milvus") == 1
        # /similar needs Milvus: a 503 naming it, not a 500
        similar = respond("/similar", metrics, endpoints.similar, 3, 5)
        assert similar.status_code == 503 and similar.error == "milvus_unavailable"
        # not ready, and the reason and the degraded dependencies name Milvus (only)
        reason, degraded = endpoints.readiness_report()
        assert reason is not None and "milvus" in reason and "unavailable" in reason
        assert set(degraded) == {"milvus"}, degraded
        started = time.monotonic()
        with pytest.raises(DependencyError):  # while it waits to reopen: at once
            index.ping("posts")
        assert time.monotonic() - started < 1

        write_posts(server.start())
        # no restart: the same endpoints pick the server up (after the reopen back-off)
        wait_until(lambda: endpoints.readiness_report() == (None, {}))
        out = respond("/recommend", metrics, endpoints.recommend, 2, 5)
        assert out.source == "personalized" and not out.reason, out
        assert len(out.items) == 5
        assert fallbacks(metrics, "milvus") == 1  # no new fallback
        similar = respond("/similar", metrics, endpoints.similar, 3, 5)
        assert [it.post_id for it in similar.items] and 3 not in {
            it.post_id for it in similar.items
        }
    finally:
        index.close()
        server.stop()


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_missing_feature_store_is_reported_and_used_once_it_is_back(tmp_path, metrics):
    import feature_repo
    from socialrec.features import store as fs
    from socialrec.features.online import online_post_features
    from socialrec.serving.app import open_features
    from socialrec.serving.posts import OnlinePostWriter
    from socialrec.settings import Settings
    from socialrec.stores.seen import SQLiteSeenStore

    settings = Settings(data_dir=tmp_path)
    settings.ensure_dirs()
    store = fs.feature_store(settings)
    fs.apply_definitions(store, feature_repo.all_definitions(settings))
    post = {
        "post_id": 5,
        "creator_id": 3,
        "category_id": 2,
        "media_type": "image",
        "created_at": dt.datetime(2026, 1, 6, tzinfo=dt.UTC),
        "description_embedding": np.zeros(384, np.float32),
    }
    OnlinePostWriter(store).write(post)
    online = settings.feast_dir / "online.db"
    away = tmp_path / "online-away.db"
    os.replace(online, away)  # the online store is gone when the service starts

    features, writer = open_features(settings)
    plain = fs.FeatureStore(repo_path=str(settings.feast_dir), config=fs.repo_config(settings))
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as seen_store:
        endpoints = make_endpoints(
            metrics,
            seen_store,
            settings=make_settings(**TWO_TOWER_ONLY),
            index=AnsweringIndex(),  # Milvus answers: the feature store is the one down
            features=features,
            ranker=ScoringRanker(),
            text_encoder=FakeEncoder(),
            post_writer=writer,
        )
        out = respond("/recommend", metrics, endpoints.recommend, 2, 5)
        assert out.source == "fallback" and "feature_store unavailable" in out.reason, out
        assert fallbacks(metrics, "feature_store") == 1
        reason, degraded = endpoints.readiness_report()
        assert reason is not None and "feature_store unavailable" in reason
        assert set(degraded) == {"feature_store"}, degraded
        with pytest.raises(Exception, match="no such table"):  # what Feast alone does
            online_post_features(plain, [5])  # a client opened while the file is missing

        os.replace(away, online)  # the online store is back
        wait_until(lambda: endpoints.readiness_report() == (None, {}))
        assert bool(features.posts([5])["found"].iloc[0])
        out = respond("/recommend", metrics, endpoints.recommend, 2, 5)
        # the store answers: user 2 has no online features there, a cold start, no fallback
        assert out.source == "cold_start" and "unavailable" not in (out.reason or ""), out
        assert fallbacks(metrics, "feature_store") == 1
        # Feast's own client, opened while the file was missing, still reads the empty file
        # it created then: without the reopen the service would stay in fallback
        with pytest.raises(Exception, match="no such table"):
            online_post_features(plain, [5])
    features.close()
    writer.close()


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_the_bento_starts_with_milvus_unreachable_and_says_why_it_is_not_ready(
    e2e_materialized, e2e_warehouse
):
    from tests.conftest import served_bento

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with served_bento(e2e_materialized, {"SOCIALREC_MILVUS_URI": closed}, ready=False) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["ready"] is False and "milvus" in body["reason"]
        assert "milvus unavailable" in body["degraded"]["milvus"], body
        # it answers: /recommend from the fallback, /similar a 503 naming Milvus
        _, users = e2e_warehouse
        user_id = int(users["user_id"].iloc[0])  # a known user: the two-tower source is tried
        rec = client.post("/recommend", json={"user_id": user_id, "k": 5})
        assert rec.status_code == 200 and len(rec.json()["items"]) == 5, rec.text
        assert "milvus unavailable" in rec.json()["reason"], rec.text
        similar = client.post("/similar", json={"post_id": 1, "k": 5})
        assert similar.status_code == 503 and similar.json()["error"] == "milvus_unavailable"


def test_readyz_lists_every_degraded_dependency():
    import json

    from socialrec.serving import asgi
    from tests.service.conftest import asgi_call, ok_app

    async def not_ready(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"Service is not ready"})

    degraded = {"milvus": "milvus unavailable: down", "feature_store": "feature_store gone"}
    asgi.set_readiness("milvus unavailable: down; feature_store gone", None, degraded)
    status, _, body = asgi_call(asgi.ReadinessReason(not_ready), "/readyz")
    assert status == 503 and json.loads(body) == {
        "ready": False,
        "reason": "milvus unavailable: down; feature_store gone",
        "degraded": degraded,
    }
    # ready with a failing spool: reported, still 200; nothing degraded: no "degraded" key
    asgi.set_readiness(None, "event spool: down", {"spool": "event spool: down"})
    status, _, body = asgi_call(asgi.ReadinessReason(ok_app), "/readyz")
    assert status == 200 and json.loads(body)["degraded"] == {"spool": "event spool: down"}
    asgi.set_readiness(None)
    status, _, body = asgi_call(asgi.ReadinessReason(ok_app), "/readyz")
    assert json.loads(body) == {"ready": True, "reason": None}
