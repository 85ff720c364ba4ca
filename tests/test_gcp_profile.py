"""The ``gcp`` profile end to end (``make test-gcp``; ``make test`` runs it too).

Against the stand-ins of orchestration/standins.py on loopback (the BigQuery and GCS
emulators, a metadata server for the Google clients' credentials, Redis, the Milvus server,
an MLflow server with its artifacts on GCS): tiny demo data lands in the bucket, the whole
asset graph runs with ``SOCIALREC_PROFILE=gcp`` through the real job, the built bento is served
against the same stand-ins, and the app's calls go through it. ScyllaDB has no local server: the
seen store is the SQLite one (its contract tests: tests/test_seen_scylla*.py).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest

from tests.conftest import E2E_TINY, materialize_graph, served_bento

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.gcp, pytest.mark.e2e, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def gcp_env(gcp_standins, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gcp-profile")
    import os

    env = {
        **os.environ,
        **E2E_TINY,
        **gcp_standins,
        "SOCIALREC_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster"),
        "BENTOML_HOME": str(data_dir / "bentoml"),
        # the /events spool flushes to the bucket within a second (the test looks for it)
        "SOCIALREC_SPOOL_FLUSH_SECONDS": "0.5",
    }
    (data_dir / "dagster").mkdir()
    return env


@pytest.fixture(scope="module")
def gcp_materialized(gcp_env):
    return materialize_graph(gcp_env, timeout=1200)


@pytest.fixture(scope="module")
def gcp_settings(gcp_materialized, monkeypatch_module):
    for key, value in gcp_materialized.items():
        if key.startswith(("SOCIALREC_", "GOOGLE_", "STORAGE_", "BIGQUERY_", "GCE_", "CLOUDSDK")):
            monkeypatch_module.setenv(key, value)
    from socialrec.settings import Settings

    return Settings()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def gcp_service(gcp_materialized):
    with served_bento(gcp_materialized) as client:
        yield client


def _query(settings, sql: str) -> list[tuple]:
    from socialrec.data import bigquery

    rows = bigquery.client(settings).query(sql).result()
    return [tuple(r.values()) for r in rows]


def _blobs(settings, prefix: str) -> list[str]:
    from google.cloud import storage

    client = storage.Client(project=settings.bigquery_project)
    return [b.name for b in client.list_blobs(settings.gcs_bucket, prefix=prefix)]


def test_the_warehouse_is_bigquery(gcp_settings):
    s = gcp_settings
    ds = f"{s.bigquery_project}.{s.bigquery_dataset}"
    ((raw,),) = _query(s, f"SELECT count(*) FROM `{ds}_raw.events`")
    ((fct,),) = _query(s, f"SELECT count(*) FROM `{ds}.fct_interactions`")
    ((posts,),) = _query(s, f"SELECT count(*) FROM `{ds}.dim_posts`")
    assert raw > 0 and fct > 0 and posts > 0
    assert fct <= raw
    # nothing local stands in for it
    assert not (Path(s.data_dir) / "warehouse.duckdb").exists()


def test_feast_registry_is_on_gcs_and_online_rows_in_redis(gcp_settings):
    import redis

    s = gcp_settings
    assert s.feast_registry.startswith(f"gs://{s.gcs_bucket}/")
    key = s.feast_registry.removeprefix(f"gs://{s.gcs_bucket}/")
    assert key in _blobs(s, key)
    host, port = s.redis_connection_string.split(":")
    assert redis.Redis(host=host, port=int(port)).dbsize() > 0
    # another process ("pod") sees the same feature views
    from socialrec.features.store import feature_store

    views = {v.name for v in feature_store(s).list_feature_views()}
    assert views, views


def test_models_are_on_the_mlflow_server_with_artifacts_on_gcs(gcp_settings):
    from mlflow import MlflowClient

    from socialrec.models import registry

    s = gcp_settings
    client = MlflowClient(s.mlflow_tracking_uri, s.mlflow_tracking_uri)
    for name in (registry.TWO_TOWER, registry.RANKER):
        mv = client.get_model_version_by_alias(name, registry.CHAMPION)
        assert int(mv.version) >= 1
    assert any(b.startswith("mlflow/") for b in _blobs(s, "mlflow/"))


def test_the_index_is_the_milvus_server(gcp_settings):
    from pymilvus import MilvusClient

    s = gcp_settings
    client = MilvusClient(s.milvus_uri)
    try:
        aliases = {
            alias for c in client.list_collections() for alias in client.list_aliases(c)["aliases"]
        }
    finally:
        client.close()
    assert {s.collection_alias, s.text_collection_alias} <= aliases


def _top_user(settings) -> int:
    ds = f"{settings.bigquery_project}.{settings.bigquery_dataset}"
    ((user_id,),) = _query(
        settings, f"SELECT user_id FROM `{ds}.dim_users` ORDER BY n_events DESC LIMIT 1"
    )
    return int(user_id)


def test_the_served_bento_answers_the_app(gcp_service, gcp_settings):
    s = gcp_settings
    token = {"Authorization": f"Bearer {s.api_token.get_secret_value()}"}
    user_id = _top_user(s)
    r = gcp_service.post("/recommend", json={"user_id": user_id, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "personalized" and len(body["items"]) == 5
    first = [it["post_id"] for it in body["items"]]

    # /events: spooled, then appended to the landing bucket; the posts leave the feed
    event_ids = [f"gcp-e2e-{user_id}-{p}" for p in first[:2]]
    events = [
        {
            "event_id": e,
            "user_id": user_id,
            "post_id": p,
            "event_type": "VIEW",
            "ts": "2026-01-06T12:00:00Z",
        }
        for e, p in zip(event_ids, first[:2], strict=True)
    ]
    r = gcp_service.post("/events", json={"events": events})
    assert r.status_code == 401  # a write: the bearer token is required
    r = gcp_service.post("/events", json={"events": events}, headers=token)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    after = [
        it["post_id"]
        for it in gcp_service.post("/recommend", json={"user_id": user_id, "k": 5}).json()["items"]
    ]
    assert not set(first[:2]) & set(after)
    from socialrec.data.landing import open_bucket

    bucket = open_bucket(str(s.landing_uri))
    deadline = time.time() + 30
    landed: set[str] = set()
    while time.time() < deadline and not set(event_ids) <= landed:
        for blob in bucket.list("events/"):
            if "spool-" in blob.key:
                for line in gzip.decompress(bucket.read_bytes(blob.key)).decode().splitlines():
                    if line.strip():
                        landed.add(json.loads(line)["event_id"])
        time.sleep(0.5)
    assert set(event_ids) <= landed

    # /posts: landing file in the bucket, vectors in Milvus, features in Redis
    ds = f"{s.bigquery_project}.{s.bigquery_dataset}"
    ((max_post, category_id),) = _query(
        s, f"SELECT max(post_id), any_value(category_id) FROM `{ds}.dim_posts`"
    )
    post_id = int(max_post) + 1000
    description = "A red canoe on a still lake under northern lights"
    post = {
        "post_id": post_id,
        "creator_id": user_id,
        "category_id": int(category_id),
        "media_type": "image",
        "description": description,
    }
    r = gcp_service.post("/posts", json=post, headers=token)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["landing_key"].startswith("posts/dt=")
    line = json.loads(gzip.decompress(bucket.read_bytes(out["landing_key"])).decode().strip())
    assert {k: line[k] for k in post} == post
    deadline = time.time() + 5
    while time.time() < deadline:
        r = gcp_service.post("/search", json={"query": description, "k": 3})
        if r.status_code == 200 and r.json()["items"][0]["post_id"] == post_id:
            break
        time.sleep(0.2)
    assert r.json()["items"][0]["post_id"] == post_id, r.text
    r = gcp_service.post("/similar", json={"post_id": post_id, "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3, r.text
    cold = gcp_service.post("/recommend", json={"user_id": 10_000_001, "k": 200}).json()
    by_id = {it["post_id"]: it for it in cold["items"]}
    assert post_id in by_id and by_id[post_id]["ranker_score"] is not None
