"""End to end: generate tiny data, materialize the whole graph with the real job (as
`make materialize` does), serve the BUILT bento on loopback, and call it like the app would.

The materialized data and the server are the session fixtures of tests/conftest.py
(``e2e_materialized``, ``e2e_service``), shared with tests/service/test_http.py."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from socialrec.settings import LOCAL_READ_TOKEN
from tests.conftest import (
    E2E_SPOOL_FLUSH_SECONDS,
    bearer,
    published_post_ids,
    spool_pending_when_drained,
)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _recommend(client, user_id, k):
    r = client.post("/recommend", json={"user_id": int(user_id), "k": k})
    assert r.status_code == 200, r.text
    return r.json()


def _known_posts(posts, env) -> set[int]:
    """The warehouse's posts and those published through /posts by other tests."""
    return set(posts["post_id"]) | published_post_ids(env)


def test_recommend_returns_k_existing_posts_sorted_by_score(
    e2e_service, e2e_warehouse, e2e_materialized
):
    service = e2e_service
    posts, users = e2e_warehouse
    user_id = int(users["user_id"].iloc[0])
    body = _recommend(service, user_id, 5)
    items = body["items"]
    assert len(items) == 5
    ids = [it["post_id"] for it in items]
    assert len(set(ids)) == 5
    assert set(ids) <= _known_posts(posts, e2e_materialized)
    scores = [it["score"] for it in items]
    assert scores == sorted(scores, reverse=True)
    assert body["source"] == "personalized"
    # never their own posts, by the service's catalog (see the blocking test below)
    assert all(it["creator_id"] != user_id for it in items)
    # every candidate source of the bento answered for this (most active) user, the
    # co-engagement neighbours included
    # the debug answer is per-user detail: a read token (without one: 401)
    r = service.post("/recommend", json={"user_id": user_id, "k": 5, "debug": True})
    assert r.status_code == 401, r.text
    r = service.post(
        "/recommend",
        json={"user_id": user_id, "k": 5, "debug": True},
        headers=bearer(LOCAL_READ_TOKEN),
    )
    assert r.status_code == 200, r.text
    retrieval = r.json()["debug"]["stages"]["retrieval"]
    assert set(retrieval["sources"]) == {"two_tower", "neighbours", "trending", "popular", "fresh"}
    assert all(n > 0 for n in retrieval["sources"].values()), retrieval
    assert retrieval["skipped"] == {}


def test_events_exclude_posts_on_the_very_next_request(e2e_service, e2e_warehouse):
    service = e2e_service
    _, users = e2e_warehouse
    user_id = int(users["user_id"].iloc[1])
    first = [it["post_id"] for it in _recommend(service, user_id, 5)["items"]]
    events = [
        {
            "event_id": f"e2e-{user_id}-{p}",
            "user_id": user_id,
            "post_id": p,
            "event_type": "VIEW",
            "ts": "2026-01-06T12:00:00Z",
        }
        for p in first[:3]
    ]
    r = service.post("/events", json={"events": events}, headers=bearer())
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 3, "spooled": 3}
    second = [it["post_id"] for it in _recommend(service, user_id, 5)["items"]]
    assert len(second) == 5
    assert not set(first[:3]) & set(second)


def test_blocking_a_creator_filters_their_posts_on_the_next_request(e2e_service, e2e_warehouse):
    service = e2e_service
    _, users = e2e_warehouse
    user_id = int(users["user_id"].iloc[2])
    first = _recommend(service, user_id, 10)["items"]
    creator = first[0]["creator_id"]
    r = service.post("/blocks", json={"user_id": user_id, "creator_ids": [creator]})
    assert r.status_code == 401, r.text  # a write: the bearer token is required
    r = service.post(
        "/blocks", json={"user_id": user_id, "creator_ids": [creator]}, headers=bearer()
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"user_id": user_id, "blocked_creators": [creator]}
    after = _recommend(service, user_id, 10)["items"]
    # the creators by the service's catalog, not the warehouse's: the session's service is
    # shared, and the fuzz test (tests/service/test_schemathesis.py) republishes existing
    # posts through /posts under other creators
    assert after and all(it["creator_id"] != creator for it in after)
    r = service.post(
        "/blocks",
        json={"user_id": user_id, "creator_ids": [creator], "blocked": False},
        headers=bearer(),
    )
    assert r.status_code == 200 and r.json()["blocked_creators"] == []
    r = service.post(
        "/blocks", json={"user_id": user_id, "creator_ids": ["8 or 1"]}, headers=bearer()
    )
    assert r.status_code == 422, r.text


def _spooled_events(landing: Path, day: str) -> dict[str, dict]:
    """event_id -> event of the spool files of one landing partition."""
    out = {}
    for path in sorted((landing / "events" / f"dt={day}").glob("spool-*.jsonl.gz")):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            if line.strip():
                event = json.loads(line)
                out[event["event_id"]] = event
    return out


def test_events_reach_the_landing_bucket_through_the_spool(
    e2e_service, e2e_warehouse, e2e_materialized
):
    _, users = e2e_warehouse
    user_id = int(users["user_id"].iloc[3])
    run = uuid.uuid4().hex[:8]
    events = [
        {
            "event_id": f"spool-{run}-{i}",
            "user_id": user_id,
            "post_id": 100 + i,
            "event_type": "LIKE" if i % 2 else "VIEW",
            "ts": f"2026-01-07T08:30:0{i}Z",
            "dwell_ms": 1000 + i,
        }
        for i in range(5)
    ]
    t0 = time.perf_counter()
    r = e2e_service.post("/events", json={"events": events}, headers=bearer())
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 5, "spooled": 5}

    # flushed by time (SOCIALREC_SPOOL_FLUSH_SECONDS of the server) into events/dt=<ts day>/
    landing = Path(e2e_materialized["SOCIALREC_DATA_DIR"]) / "landing"
    wanted = {e["event_id"] for e in events}
    landed: dict[str, dict] = {}
    while time.perf_counter() - t0 < 20 * E2E_SPOOL_FLUSH_SECONDS + 10:
        landed = _spooled_events(landing, "2026-01-07")
        if wanted <= set(landed):
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    assert wanted <= set(landed), (elapsed, sorted(landed))
    print(f"/events -> in the landing bucket after {elapsed:.2f}s")
    for event in events:
        assert landed[event["event_id"]] == event  # every field, ts as ISO-8601 UTC
    # and the spool is empty again (other tests' services share it: their left-overs are
    # flushed by this one's flusher within seconds)
    pending = spool_pending_when_drained(e2e_service, 20 * E2E_SPOOL_FLUSH_SECONDS + 10)
    assert pending and float(pending[0].split()[-1]) == 0, pending


def test_unknown_user_gets_a_cold_start_answer(e2e_service, e2e_warehouse, e2e_materialized):
    service = e2e_service
    posts, _ = e2e_warehouse
    body = _recommend(service, 10_000_000, 5)
    assert body["source"] == "cold_start"
    assert len(body["items"]) == 5
    assert {it["post_id"] for it in body["items"]} <= _known_posts(posts, e2e_materialized)


@pytest.mark.parametrize(
    "payload",
    [{"user_id": "abc", "k": 5}, {"user_id": 1, "k": 0}, {"k": 5}, {"user_id": 1, "k": 10_000}],
)
def test_malformed_recommend_is_a_4xx_with_a_reason(e2e_service, payload):
    r = e2e_service.post("/recommend", json=payload)
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.json()["detail"], r.text


def test_malformed_events_are_rejected_whole(e2e_service):
    r = e2e_service.post(
        "/events",
        json={
            "events": [
                {
                    "event_id": "x",
                    "user_id": 1,
                    "post_id": 2,
                    "event_type": "NOPE",
                    "ts": "2026-01-06T12:00:00Z",
                }
            ]
        },
        headers=bearer(),
    )
    assert r.status_code == 422, (r.status_code, r.text)
    assert "event_type" in r.text


def test_a_body_that_is_not_json_is_a_4xx(e2e_service):
    r = e2e_service.post(
        "/recommend", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


_READ_METADATA = """
import json
import dagster as dg

with dg.DagsterInstance.get() as i:
    def md(name):
        e = i.get_latest_materialization_event(dg.AssetKey(name))
        return {k: v.value for k, v in e.asset_materialization.metadata.items()}

    key = dg.AssetCheckKey(
        dg.AssetKey("offline_evaluation"), "shipped_pipeline_beats_best_baseline_on_warm_users"
    )
    check = i.event_log_storage.get_asset_check_execution_history(key, limit=1)
    data = check[0].event.dagster_event.event_specific_data
    print(json.dumps({
        "evaluation": {
            k: v for k, v in md("offline_evaluation").items() if k not in ("plots", "results")
        },
        "results": [dict(r.data) for r in md("offline_evaluation")["results"].records],
        "bento": md("recommender_bento")["models"],
        "neighbours": md("post_neighbours"),
        "check": {"severity": str(data.severity), "description": data.description},
    }, default=str))
"""


def test_offline_evaluation_compares_the_pipeline_with_the_baselines(e2e_materialized):
    out = subprocess.run(
        [sys.executable, "-c", _READ_METADATA],
        cwd=ROOT,
        env=e2e_materialized,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    evaluation = got["evaluation"]
    methods = {
        "popularity", "recent_popularity", "als", "itemknn", "ease",
        "socialrec", "socialrec_plain", "retrieval",
    }  # fmt: skip
    for segment in ("all", "warm", "cold"):
        table = evaluation[f"results_{segment}"]
        header = table.splitlines()[0]
        assert header.startswith("| method | ndcg@10 | recall@10 | recall@100 |"), table
        rows = {ln.split("|")[1].strip(): ln for ln in table.splitlines()[2:]}
        if segment != "cold" or evaluation["users_cold"]:
            assert methods <= set(rows), (segment, table)
        for method, line in rows.items():
            ndcg, recall100 = float(line.split("|")[2]), float(line.split("|")[4])
            assert 0 <= ndcg <= 1 and 0 <= recall100 <= 1, (segment, method)
    # the same results as one sortable table: a row per (segment, method)
    rows = {(r["segment"], r["method"]): r for r in got["results"]}
    assert {(seg, m) for seg in ("all", "warm") for m in methods} <= set(rows)
    assert all(r["ndcg@10"] is None or 0 <= r["ndcg@10"] <= 1 for r in rows.values())
    assert evaluation["users_warm"] > 0 and 0 <= evaluation["warm_ndcg@10"] <= 1
    assert "Global temporal split" in evaluation["protocol"]
    # the non-blocking check compares the shipped pipeline with the best baseline (warm users)
    assert got["check"]["severity"].endswith("WARN")
    assert got["check"]["description"].startswith("warm users: socialrec NDCG@10")
    # the neighbours were fitted (their signal chosen on validation) and packed into the bento
    assert got["neighbours"]["pairs"] > 0 and got["neighbours"]["signal"] in (
        "positive",
        "exposure",
    )
    assert any(k.startswith("validation_ndcg@10.") for k in got["neighbours"])
    assert set(got["bento"]) == {
        "socialrec_two_tower", "socialrec_ranker", "socialrec_catalog", "socialrec_neighbours",
    }  # fmt: skip
