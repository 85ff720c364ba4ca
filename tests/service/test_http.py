"""The service over HTTP: the BUILT bento on loopback, with real Milvus Lite, SQLite and Feast;
the session fixtures of tests/conftest.py (materialized once, shared with tests/test_e2e.py)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
from pathlib import Path

import pytest

from socialrec.serving.endpoints import SEARCH_USER_WEIGHT
from tests.conftest import bearer


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_readyz_is_200_when_models_milvus_and_the_seen_store_answer(e2e_service):
    r = e2e_service.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"ready": True, "reason": None}  # the spool flushes: nothing to report


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
    w = SEARCH_USER_WEIGHT
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

    # the catalog view knows it: an unknown user's cold start (the trending, popular and fresh
    # lists through the ranker) has it, from the fresh list, boosted as a new post ...
    cold = e2e_service.post("/recommend", json={"user_id": 10_000_001, "k": 200}).json()
    assert cold["source"] == "cold_start"
    by_id = {it["post_id"]: it for it in cold["items"]}
    assert post_id in by_id, sorted(by_id)
    assert by_id[post_id]["creator_id"] == creator_id and by_id[post_id]["boosted"] is True
    assert by_id[post_id]["ranker_score"] is not None
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


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_a_new_post_is_ranked_by_recommend_for_a_new_user_of_its_category(
    e2e_service, e2e_warehouse
):
    posts, users = e2e_warehouse
    post_id = int(posts["post_id"].max()) + 3000
    # the smallest category: its posts all fit in the category-filtered retrieval
    category_id = int(posts["category_id"].value_counts().index[-1])
    creator_id = int(users["user_id"].iloc[-2])
    body = {
        "post_id": post_id,
        "creator_id": creator_id,
        "category_id": category_id,
        "media_type": "video",
        "description": "Night market dumplings, steam rising under paper lanterns",
    }
    r = e2e_service.post("/posts", json=body, headers=bearer())
    assert r.status_code == 200, r.text
    assert r.json()["online_features"] is True

    # a new user (no features, no history) whose onboarding choice is the post's category
    new_user = 10_000_002
    r = e2e_service.post(
        "/recommend",
        json={"user_id": new_user, "k": 200, "categories": [category_id], "debug": True},
        headers=bearer(),  # the write token reads too
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["source"] == "personalized"  # embedded from its categories: the 4 stages
    assert out["debug"]["categories"] == [category_id]
    assert out["debug"]["stages"]["features"]["new_user"] is True
    by_id = {it["post_id"]: it for it in out["items"]}
    assert post_id in by_id, sorted(by_id)  # retrieved from Milvus AND scored by the ranker
    item = by_id[post_id]
    assert item["ranker_score"] is not None and item["category_id"] == category_id
    assert item["boosted"] is True  # created just now: the new-post boost
    assert all(isinstance(it["promoted"], bool) for it in out["items"])
    # every item says why, in at most 8 reasons: the sources first, the ranker's own score
    for it in out["items"]:
        assert 1 <= len(it["reasons"]) <= 8 and it["reasons"][0]["code"] == "source"
        assert all(set(r) == {"code", "text", "value"} and r["text"] for r in it["reasons"])
        ranker = [r["value"] for r in it["reasons"] if r["code"] == "ranker"]
        assert ranker == [it["ranker_score"]]
    # the real ranker's predicted outcomes (the first ones an item drops beyond 8 reasons)
    outcomes = [r["text"] for it in out["items"] for r in it["reasons"] if r["code"] == "outcome"]
    assert any(t.startswith("p(positive) ") for t in outcomes), outcomes[:5]
    # a similarity exactly for the posts the two-tower retrieval found
    for it in out["items"]:
        texts = [r["text"] for r in it["reasons"]]
        tower = any(t.startswith("found by two_tower retrieval") for t in texts)
        assert tower == any(t.startswith("retrieval similarity") for t in texts), texts
    # the new post: found by the fresh list (Milvus may not search it yet) or the two-tower
    # retrieval, and the new-post boost
    texts = [r["text"] for r in item["reasons"]]
    assert any(
        t.startswith(("found by fresh posts (#", "found by two_tower retrieval")) for t in texts
    ), texts
    assert any(t.startswith("new post boost") for t in texts), texts
    # without categories the same user is a cold start, which says so on every item
    r = e2e_service.post("/recommend", json={"user_id": new_user, "k": 5})
    assert r.json()["source"] == "cold_start"
    for it in r.json()["items"]:
        assert it["reasons"][-1]["text"] == "fallback: cold start for a new user", it


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
        ("/recommend", {"user_id": 1, "categories": [-1]}),
        ("/recommend", {"user_id": 1, "categories": list(range(21))}),
        ("/recommend", {"user_id": 1, "categories": ["food"]}),
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
        "socialrec_spool_pending",
        "socialrec_spool_failures",
        "socialrec_spool_consecutive_failures",
        "socialrec_spool_oldest_pending_seconds",
    ):
        assert name in text, name
    for series in (
        'socialrec_requests_total{endpoint="/recommend",outcome="ok"}',
        'socialrec_requests_total{endpoint="/similar",outcome="not_found"}',
        'socialrec_requests_total{endpoint="/events",outcome="unauthorized"}',
        'socialrec_fallback_total{dependency="milvus",endpoint="/recommend"}',
        'socialrec_post_feature_cache_total{result="miss"}',  # the ranking stage's first fetch
    ):
        assert _has_series(text, series), series
    for stage in ("features", "retrieval", "ranking", "reranking"):
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


INJECTIONS = [
    "1] or post_id >= 0 or category_id in [1",
    "1 or 1 == 1",
    '1"; drop collection posts; --',
    1.5,
    True,
    None,
    [1],
    {"$gt": 0},
]


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize("payload", INJECTIONS, ids=repr)
def test_no_expression_is_built_from_unchecked_input(e2e_service, payload):
    """Every request field that reaches a Milvus expression (categories and user_id of
    /recommend, post_id of /similar and /posts, category_id and creator_id of /posts, user_id of
    /search) refuses anything but an integer with a 4xx and a reason, never a 5xx."""
    from tests.conftest import bearer

    requests = [
        ("/recommend", {"user_id": 1, "k": 5, "categories": [payload]}),
        ("/recommend", {"user_id": payload, "k": 5}),
        ("/similar", {"post_id": payload, "k": 5}),
        *[
            (
                "/posts",
                {
                    "post_id": 900_001,
                    "creator_id": 1,
                    "category_id": 1,
                    "media_type": "text",
                    "description": "x",
                }
                | {field: payload},
            )
            for field in ("post_id", "category_id", "creator_id")
        ],
    ]
    if payload is not None and payload != [1]:  # both are valid values of these fields
        requests += [
            ("/recommend", {"user_id": 1, "k": 5, "categories": payload}),
            ("/search", {"query": "cats", "k": 5, "user_id": payload}),
        ]
    for path, body in requests:
        r = e2e_service.post(path, json=body, headers=bearer())
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        assert r.json(), r.text  # a JSON reason


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_door_answers_bad_bodies_and_the_document_says_so(e2e_service):
    """Issue 13's fuzz findings against the served bento: every one a 4xx with a reason, and
    ``/docs.json`` lists those answers and the bearer scheme."""
    event = {"event_id": "e", "user_id": 1, "post_id": 2, "event_type": "VIEW"}
    post = {"post_id": 1, "creator_id": 1, "category_id": 1, "media_type": "text"}
    cases = [
        ("/recommend", {"user_id": 2**70, "k": 5}, 422),
        ("/recommend", {"user_id": 1, "k": "5"}, 422),
        ("/blocks", {"user_id": 1, "creator_ids": [2**70]}, 422),
        ("/events", {"events": [{**event, "event_id": "   ", "ts": "2026-01-06T12:00:00Z"}]}, 422),
        ("/events", {"events": [{**event, "ts": "0001-01-01T00:00:00+05:00"}]}, 422),
        ("/events", {"events": [{**event, "ts": "2026-01-06T12:00:00Z", "dwell_ms": 2**63}]}, 422),
        ("/posts", {**post, "description": "d", "created_at": "1500-01-01T00:00:00Z"}, 422),
        ("/posts", {**post, "category_id": 274877906943, "description": "d"}, 422),
        ("/recommend", {"user_id": 1, "pad": "x" * 2_000_000}, 413),
    ]
    for path, body, status in cases:
        r = e2e_service.post(path, json=body, headers=bearer())
        assert r.status_code == status, (path, r.status_code, r.text[:300])
        assert r.json()["error"] in ("invalid_request", "body_too_large") and r.json()["detail"]
    for path in ("/recommend", "/similar", "/search", "/events", "/posts", "/blocks"):
        headers = {**bearer(), "content-type": "multipart/form-data"}
        r = e2e_service.post(path, content=b'{"user_id": 1}', headers=headers)
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type", r.text
    spec = e2e_service.get("/docs.json").json()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path in ("/recommend", "/events"):
        responses = spec["paths"][path]["post"]["responses"]
        assert {"200", "401", "413", "415", "422", "503"} <= set(responses), path
    assert e2e_service.get("/readyz").status_code == 200
