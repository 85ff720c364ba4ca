"""The service's endpoints.

* Unit level (no server): the endpoints' logic (``bentos.service.Endpoints``) over fakes and a
  real SQLite seen store — the fallback when Milvus or the seen store raises, the error
  answers, the personalized search formula — and the ASGI middlewares (bearer auth, readiness
  reason) over a dummy app.
* HTTP (``e2e``): the BUILT bento on loopback, with real Milvus Lite, SQLite and Feast; the
  session fixtures of tests/conftest.py (materialized once, shared with tests/test_e2e.py).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import bearer

SERVICE = pytest.importorskip("bentos.service")

# --- unit level: fakes ----------------------------------------------------------------------
DIM = 4


class FakeFeatures:
    def __init__(self, known: set[int], categories: str = "1,2"):
        self.known = known
        self.categories = categories

    def users(self, user_ids):
        ids = [int(u) for u in user_ids]
        return pd.DataFrame(
            {
                "onboarding_categories": [self.categories] * len(ids),
                "found": [u in self.known for u in ids],
            },
            index=pd.Index(ids, name="user_id"),
        )

    def posts(self, post_ids):
        raise AssertionError("not reached in these tests")


class FakeTwoTower:
    def user_embeddings(self, users_df):
        return np.tile(np.asarray([1, 0, 0, 0], np.float32), (len(users_df), 1))


class RaisingIndex:
    """Milvus that is down: every call raises what pymilvus raises for a dead server."""

    def __init__(self):
        self.calls = 0

    def search(self, *args, **kwargs):
        from pymilvus.exceptions import MilvusException

        self.calls += 1
        raise MilvusException(message="failed to connect to all addresses")

    similar = search_hits = vectors = ping = search


class RaisingSeenStore:
    def seen(self, user_id):
        raise sqlite3.OperationalError("database is locked")

    negatives = seen


class FakeRanker:
    def predict(self, frame):
        raise AssertionError("not reached in these tests")


def _catalog():
    from socialrec.catalog import Catalog

    ids = np.arange(1, 31)
    return Catalog(
        pd.DataFrame(
            {
                "post_id": ids,
                "category_id": ids % 3,
                "creator_id": ids % 5,
                "created_at": 1_767_225_600 + ids,
                "popularity": (ids % 7).astype(float),
            }
        )
    )


@pytest.fixture
def metrics():
    """The service's metrics on a registry of their own."""
    from prometheus_client import CollectorRegistry

    return SERVICE.ServiceMetrics(CollectorRegistry())


@pytest.fixture
def seen_store(tmp_path):
    from socialrec.seen import SQLiteSeenStore

    with SQLiteSeenStore(tmp_path / "seen.sqlite") as store:
        yield store


def _endpoints(metrics, seen_store, index=None):
    from socialrec.settings import Settings

    return SERVICE.Endpoints.create(
        Settings(data_dir=Path("/nonexistent")),
        features=FakeFeatures({2}),
        two_tower=FakeTwoTower(),
        index=index or RaisingIndex(),
        seen_store=seen_store,
        ranker=FakeRanker(),
        catalog=_catalog(),
        text_encoder=None,
        bucket=None,
        metrics=metrics,
    )


def _value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels)


def _fallbacks(metrics, dependency):
    return _value(metrics, "socialrec_fallback_total", endpoint="/recommend", dependency=dependency)


def test_recommend_falls_back_to_the_cold_start_list_when_milvus_raises(metrics, seen_store):
    index = RaisingIndex()
    endpoints = _endpoints(metrics, seen_store, index)
    seen_store.mark(2, [1, 3, 4], "VIEW")
    assert _fallbacks(metrics, "milvus") == 0
    out = endpoints.recommend(2, 5)
    assert index.calls == 1  # user 2 is known: the personalized path was tried first
    assert out.source == "fallback"
    assert "milvus unavailable" in out.reason and "failed to connect" in out.reason
    ids = [it.post_id for it in out.items]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert not {1, 3, 4} & set(ids)  # the seen store still answers: seen posts stay out
    assert all(it.creator_id != 2 for it in out.items)  # nor the user's own posts
    assert all(it.ranker_score is None for it in out.items)
    scores = [it.score for it in out.items]
    assert scores == sorted(scores, reverse=True)
    assert _fallbacks(metrics, "milvus") == 1
    assert _value(metrics, "socialrec_errors_total", endpoint="/recommend", kind="milvus") == 1


def test_recommend_falls_back_when_the_seen_store_raises(metrics):
    endpoints = _endpoints(metrics, RaisingSeenStore())
    out = endpoints.recommend(7, 4)
    assert out.source == "fallback" and len(out.items) == 4
    assert "seen_store unavailable" in out.reason and "locked" in out.reason
    # the user's own posts (creator 2 for user 2) are never in the answer
    assert all(it.creator_id != 2 for it in endpoints.recommend(2, 10).items)
    assert _fallbacks(metrics, "seen_store") == 2


def test_a_fallback_answer_is_200_through_respond_and_a_bug_is_not_a_fallback(metrics, seen_store):
    endpoints = _endpoints(metrics, seen_store)
    out = SERVICE.respond("/recommend", metrics, endpoints.recommend, 2, 3)
    assert isinstance(out, SERVICE.RecommendResponse) and out.source == "fallback"

    class BuggyIndex:
        def search(self, *args, **kwargs):
            raise ValueError("a bug, not an outage")

    buggy = _endpoints(metrics, seen_store, index=BuggyIndex())
    with pytest.raises(ValueError):
        SERVICE.respond("/recommend", metrics, buggy.recommend, 2, 3)
    assert _value(metrics, "socialrec_errors_total", endpoint="/recommend", kind="internal") == 1
    assert _fallbacks(metrics, "milvus") == 1


def test_errors_are_json_answers_with_a_reason(metrics, seen_store):
    endpoints = _endpoints(metrics, seen_store)
    # Milvus down: /similar is a 503 naming the dependency (no fallback for it)
    r = SERVICE.respond("/similar", endpoints.metrics, endpoints.similar, 1, 5)
    assert r.status_code == 503
    assert json.loads(r.body)["error"] == "milvus_unavailable"

    class NoSuchPost:
        def similar(self, alias, post_id, k):
            return None

    r = SERVICE.respond(
        "/similar", metrics, _endpoints(metrics, seen_store, NoSuchPost()).similar, 5, 3
    )
    assert r.status_code == 404
    assert json.loads(r.body) == {"error": "unknown_post", "detail": "post 5 is not in the index"}


def test_a_post_from_the_future_is_a_422(metrics, seen_store):
    endpoints = _endpoints(metrics, seen_store)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    r = SERVICE.respond(
        "/posts", endpoints.metrics, endpoints.add_post, 1, 2, 3, "text", "hi", later
    )
    assert r.status_code == 422 and "future" in json.loads(r.body)["detail"]


def test_personalized_search_blends_text_and_user_scores():
    hit = SERVICE.SearchHit
    items = [
        hit(post_id=1, score=0.9, text_score=0.9, category_id=0, creator_id=0),
        hit(post_id=2, score=0.8, text_score=0.8, category_id=0, creator_id=0),
        hit(post_id=3, score=0.7, text_score=0.7, category_id=0, creator_id=0),
    ]
    user = np.asarray([1, 0], np.float32)
    vectors = {1: np.asarray([-1, 0], np.float32), 2: np.asarray([1, 0], np.float32)}
    SERVICE.personalize(items, user, vectors)
    w = SERVICE.SEARCH_USER_WEIGHT
    by_id = {it.post_id: it for it in items}
    assert by_id[2].score == pytest.approx((1 - w) * 0.8 + w * 1.0)
    assert by_id[1].score == pytest.approx((1 - w) * 0.9 - w)
    assert by_id[3].score == 0.7 and by_id[3].user_score is None  # no post vector: text only
    assert [it.post_id for it in items] == [2, 3, 1]


def _asgi_call(app, path, headers=()):
    """Run one GET through an ASGI app; (status, headers, body)."""
    import asyncio

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("read_auth", [False, True])
def test_bearer_auth_guards_write_endpoints_and_read_ones_when_configured(read_auth):
    from socialrec.settings import Settings

    app = SERVICE.BearerAuth(
        _ok_app, settings=Settings(api_token="s3cret", auth_read_endpoints=read_auth)
    )
    for path in ("/events", "/posts"):
        status, headers, body = _asgi_call(app, path)
        assert status == 401 and b"www-authenticate" in headers
        assert json.loads(body) == {
            "error": "unauthorized",
            "detail": "missing 'Authorization: Bearer <token>' header",
        }
        status, _, body = _asgi_call(app, path, [("Authorization", "Bearer wrong")])
        assert status == 401 and json.loads(body)["detail"] == "invalid bearer token"
        status, _, body = _asgi_call(app, path, [("Authorization", "Basic s3cret")])
        assert status == 401 and "Bearer" in json.loads(body)["detail"]
        assert _asgi_call(app, path, [("Authorization", "Bearer s3cret")])[0] == 200
    for path in ("/recommend", "/similar", "/search"):
        assert _asgi_call(app, path)[0] == (401 if read_auth else 200)
        assert _asgi_call(app, path, [("Authorization", "bearer s3cret")])[0] == 200
    for path in ("/readyz", "/healthz", "/metrics", "/docs"):
        assert _asgi_call(app, path)[0] == 200


def test_readiness_reason_turns_bentomls_503_into_json():
    async def not_ready(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"Service is not ready"})

    SERVICE._READINESS["reason"] = "milvus alias 'posts': gone"
    status, headers, body = _asgi_call(SERVICE.ReadinessReason(not_ready), "/readyz")
    assert status == 503 and headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"ready": False, "reason": "milvus alias 'posts': gone"}
    assert _asgi_call(SERVICE.ReadinessReason(_ok_app), "/readyz")[:1] == (200,)


# --- HTTP against the served bento ----------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_readyz_is_200_when_models_milvus_and_the_seen_store_answer(e2e_service):
    r = e2e_service.get("/readyz")
    assert r.status_code == 200, r.text


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_similar_returns_the_nearest_other_posts(e2e_service, e2e_warehouse):
    posts, _ = e2e_warehouse
    post_id = int(posts["post_id"].iloc[0])
    r = e2e_service.post("/similar", json={"post_id": post_id, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["post_id"] == post_id
    ids = [it["post_id"] for it in body["items"]]
    assert len(ids) == 5 and post_id not in ids and set(ids) <= set(posts["post_id"])
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1.01 <= s <= 1.01 for s in scores)
    creators = dict(zip(posts["post_id"], posts["creator_id"], strict=True))
    assert all(it["creator_id"] == creators[it["post_id"]] for it in body["items"])


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_similar_of_an_unknown_post_is_a_404_with_a_reason(e2e_service):
    r = e2e_service.post("/similar", json={"post_id": 987_654_321, "k": 5})
    assert r.status_code == 404, r.text
    assert r.json() == {"error": "unknown_post", "detail": "post 987654321 is not in the index"}


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_search_finds_the_post_whose_description_is_the_query(e2e_service, e2e_warehouse):
    posts, _ = e2e_warehouse
    row = posts[posts["description"].str.len().between(10, 500)].iloc[3]
    r = e2e_service.post("/search", json={"query": row["description"], "k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["personalized"] is False and body["user_id"] is None
    items = body["items"]
    assert len(items) == 10
    assert items[0]["text_score"] == pytest.approx(1.0, abs=1e-3)
    exact = {it["post_id"] for it in items if it["text_score"] > 0.999}
    assert int(row["post_id"]) in exact
    assert [it["score"] for it in items] == sorted((it["score"] for it in items), reverse=True)
    assert all(it["user_score"] is None for it in items)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_search_for_a_user_is_reranked_by_the_documented_blend(e2e_service, e2e_warehouse):
    posts, users = e2e_warehouse
    user_id = int(users["user_id"].iloc[0])
    query = str(posts["description"].iloc[5])
    r = e2e_service.post("/search", json={"query": query, "k": 8, "user_id": user_id})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["personalized"] is True and body["reason"] is None
    items = body["items"]
    assert len(items) == 8
    w = SERVICE.SEARCH_USER_WEIGHT
    for it in items:
        assert it["user_score"] is not None
        assert it["score"] == pytest.approx((1 - w) * it["text_score"] + w * it["user_score"])
    assert [it["score"] for it in items] == sorted((it["score"] for it in items), reverse=True)
    # an unknown user: the text ranking, not personalized, with the reason
    r = e2e_service.post("/search", json={"query": query, "k": 3, "user_id": 10_000_000})
    assert r.status_code == 200, r.text
    assert r.json()["personalized"] is False and "no online features" in r.json()["reason"]


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_new_post_is_found_by_similar_search_and_cold_start_within_2s(
    e2e_service, e2e_warehouse, e2e_materialized
):
    posts, users = e2e_warehouse
    post_id = int(posts["post_id"].max()) + 1000
    creator_id = int(users["user_id"].iloc[-1])
    category_id = int(posts["category_id"].iloc[0])
    description = "A bright orange kayak drifting past glaciers at sunrise in a quiet fjord"
    body = {
        "post_id": post_id,
        "creator_id": creator_id,
        "category_id": category_id,
        "media_type": "image",
        "description": description,
    }
    t0 = time.perf_counter()
    r = e2e_service.post("/posts", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["post_id"] == post_id and set(out["collections"]) == {"posts", "post_texts"}

    found_similar = found_search = False
    while time.perf_counter() - t0 < 2.0 and not (found_similar and found_search):
        r = e2e_service.post("/similar", json={"post_id": post_id, "k": 5})
        found_similar = r.status_code == 200 and len(r.json()["items"]) == 5
        r = e2e_service.post("/search", json={"query": description, "k": 3})
        found_search = r.status_code == 200 and r.json()["items"][0]["post_id"] == post_id
    elapsed = time.perf_counter() - t0
    assert found_similar and found_search, (elapsed, r.text)
    print(f"/posts -> found by /similar and /search after {elapsed:.2f}s")
    assert r.json()["items"][0]["text_score"] == pytest.approx(1.0, abs=1e-3)
    # it is a neighbour of its own nearest post (symmetric space)
    nearest = e2e_service.post("/similar", json={"post_id": post_id, "k": 1}).json()["items"][0]
    assert nearest["post_id"] != post_id

    # the catalog view knows it: the freshest post opens an unknown user's cold start ...
    cold = e2e_service.post("/recommend", json={"user_id": 10_000_001, "k": 5}).json()
    assert cold["source"] == "cold_start" and cold["items"][0]["post_id"] == post_id
    assert cold["items"][0]["creator_id"] == creator_id
    # ... and never its own creator's
    own = e2e_service.post("/recommend", json={"user_id": creator_id, "k": 20}).json()
    assert post_id not in {it["post_id"] for it in own["items"]}

    # and it landed as a posts upsert file (docs/contracts.md)
    landing = Path(e2e_materialized["SOCIALREC_DATA_DIR"]) / "landing"
    path = landing / out["landing_key"]
    assert out["landing_key"].startswith("posts/dt=") and path.exists()
    line = json.loads(gzip.decompress(path.read_bytes()).decode().strip())
    assert {k: line[k] for k in body} == body
    assert dt.datetime.fromisoformat(line["created_at"]) <= dt.datetime.now(dt.UTC)
    assert line["updated_at"]


def _event(user_id=1, post_id=2):
    return {
        "event_id": f"auth-{user_id}-{post_id}",
        "user_id": user_id,
        "post_id": post_id,
        "event_type": "VIEW",
        "ts": "2026-01-06T12:00:00Z",
    }


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_write_endpoints_need_the_bearer_token(e2e_service, e2e_warehouse):
    posts, _ = e2e_warehouse
    new_post = {
        "post_id": int(posts["post_id"].max()) + 2000,
        "creator_id": 1,
        "category_id": int(posts["category_id"].iloc[0]),
        "media_type": "text",
        "description": "auth check",
    }
    for path, body in (("/events", {"events": [_event()]}), ("/posts", new_post)):
        r = e2e_service.post(path, json=body)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"] == "unauthorized" and "Authorization" in r.json()["detail"]
        r = e2e_service.post(path, json=body, headers=bearer("not-the-token"))
        assert r.status_code == 401 and r.json()["detail"] == "invalid bearer token"
        r = e2e_service.post(path, json=body, headers=bearer())
        assert r.status_code == 200, (path, r.text)
    # read endpoints are open by default (SOCIALREC_AUTH_READ_ENDPOINTS=false)
    assert e2e_service.post("/recommend", json={"user_id": 1, "k": 2}).status_code == 200


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "path, body",
    [
        ("/similar", {"post_id": -1, "k": 5}),
        ("/similar", {"post_id": 1, "k": 0}),
        ("/similar", {"post_id": 1, "k": 10_000}),
        ("/similar", {"k": 5}),
        ("/search", {"query": "", "k": 5}),
        ("/search", {"query": "   ", "k": 5}),
        ("/search", {"query": "x" * 513, "k": 5}),
        ("/search", {"query": "food", "k": 0}),
        ("/search", {"query": "food", "user_id": "me"}),
        ("/posts", {"post_id": 1, "creator_id": 1, "category_id": 1, "media_type": "gif"}),
        ("/posts", {"post_id": 1, "creator_id": 1, "category_id": 1, "media_type": "text"}),
        (
            "/posts",
            {
                "post_id": 1,
                "creator_id": 1,
                "category_id": 1,
                "media_type": "text",
                "description": "from the future",
                "created_at": "2999-01-01T00:00:00Z",
            },
        ),
        ("/events", {"events": []}),
    ],
)
def test_bad_bodies_are_4xx_with_a_reason(e2e_service, path, body):
    r = e2e_service.post(path, json=body, headers=bearer())
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.json()["detail"], r.text


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_metrics_expose_the_custom_metrics(e2e_service, e2e_warehouse):
    _, users = e2e_warehouse
    r = e2e_service.post("/recommend", json={"user_id": int(users["user_id"].iloc[2]), "k": 3})
    assert r.status_code == 200, r.text
    e2e_service.post("/similar", json={"post_id": 987_654_321, "k": 3})  # a 404
    e2e_service.post("/events", json={"events": [_event()]})  # a 401
    r = e2e_service.get("/metrics")
    assert r.status_code == 200
    text = r.text
    for name in (
        "socialrec_requests_total",
        "socialrec_errors_total",
        "socialrec_fallback_total",
        "socialrec_stage_duration_seconds_bucket",
    ):
        assert name in text, name
    for series in (
        'socialrec_requests_total{endpoint="/recommend",outcome="ok"}',
        'socialrec_requests_total{endpoint="/similar",outcome="not_found"}',
        'socialrec_requests_total{endpoint="/events",outcome="unauthorized"}',
        'socialrec_fallback_total{dependency="milvus",endpoint="/recommend"}',
    ):
        assert _has_series(text, series), series
    for stage in ("retrieval", "filtering", "ranking", "reranking"):
        assert _has_series(
            text, f'socialrec_stage_duration_seconds_count{{endpoint="/recommend",stage="{stage}"}}'
        ), stage


def _has_series(text: str, series: str) -> bool:
    """Whether the exposition has the series (labels in any order)."""
    name, _, labels = series.partition("{")
    wanted = set(labels.rstrip("}").split(","))
    for line in text.splitlines():
        if line.startswith(name + "{"):
            have = set(line.split("{", 1)[1].split("}", 1)[0].split(","))
            if wanted <= have:
                return True
    return False
