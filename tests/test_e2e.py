"""End to end: generate tiny data, materialize the whole graph with the real job (as
`make materialize` does), serve the BUILT bento on loopback, and call it like the app would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {
    "SOCIALREC_DEMO_USERS": "150",
    "SOCIALREC_DEMO_POSTS": "300",
    "SOCIALREC_DEMO_EVENTS": "8000",
    "SOCIALREC_DEMO_DAYS": "6",
    "SOCIALREC_TWO_TOWER_EPOCHS": "3",
    "SOCIALREC_RANKER_ITERATIONS": "60",
    "SOCIALREC_RETRIEVAL_TOP_N": "100",
}

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("e2e")
    env = {
        **os.environ,
        **TINY,
        "SOCIALREC_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster"),
        "BENTOML_HOME": str(data_dir / "bentoml"),
    }
    (data_dir / "dagster").mkdir()
    return env


@pytest.fixture(scope="module")
def materialized(env):
    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "orchestration.materialize", "--generate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(f"materialize took {time.time() - t0:.0f}s")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-6000:]
    return env


@pytest.fixture(scope="module")
def warehouse(materialized):
    import duckdb

    path = Path(materialized["SOCIALREC_DATA_DIR"]) / "warehouse.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        posts = con.sql("select post_id, creator_id, category_id from dim_posts").df()
        users = con.sql("select user_id, n_events from dim_users order by n_events desc").df()
    return posts, users


@pytest.fixture(scope="module")
def service(materialized):
    code = "from orchestration.demo import built_bento_tag; print(built_bento_tag())"
    tag = (
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=materialized,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    # serve from a neutral directory: the bento must carry its own code and models
    proc = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
        cwd=Path(materialized["SOCIALREC_DATA_DIR"]),
        env=materialized,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=60)
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"bentoml serve exited:\n{proc.stdout.read()[-5000:]}")
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail("service did not become healthy")
    yield client
    client.close()
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def _recommend(client, user_id, k):
    r = client.post("/recommend", json={"user_id": int(user_id), "k": k})
    assert r.status_code == 200, r.text
    return r.json()


def test_recommend_returns_k_existing_posts_sorted_by_score(service, warehouse):
    posts, users = warehouse
    user_id = int(users["user_id"].iloc[0])
    body = _recommend(service, user_id, 5)
    items = body["items"]
    assert len(items) == 5
    ids = [it["post_id"] for it in items]
    assert len(set(ids)) == 5
    assert set(ids) <= set(posts["post_id"])
    scores = [it["score"] for it in items]
    assert scores == sorted(scores, reverse=True)
    assert body["source"] == "personalized"
    own = set(posts.loc[posts["creator_id"] == user_id, "post_id"])
    assert not own & set(ids)


def test_events_exclude_posts_on_the_very_next_request(service, warehouse):
    _, users = warehouse
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
    r = service.post("/events", json={"events": events})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3
    second = [it["post_id"] for it in _recommend(service, user_id, 5)["items"]]
    assert len(second) == 5
    assert not set(first[:3]) & set(second)


def test_unknown_user_gets_a_cold_start_answer(service, warehouse):
    posts, _ = warehouse
    body = _recommend(service, 10_000_000, 5)
    assert body["source"] == "cold_start"
    assert len(body["items"]) == 5
    assert {it["post_id"] for it in body["items"]} <= set(posts["post_id"])


@pytest.mark.parametrize(
    "payload",
    [{"user_id": "abc", "k": 5}, {"user_id": 1, "k": 0}, {"k": 5}, {"user_id": 1, "k": 10_000}],
)
def test_malformed_recommend_is_a_4xx_with_a_reason(service, payload):
    r = service.post("/recommend", json=payload)
    assert r.status_code == 422, (r.status_code, r.text)
    assert r.json()["detail"], r.text


def test_malformed_events_are_rejected_whole(service):
    r = service.post(
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
    )
    assert r.status_code == 422, (r.status_code, r.text)
    assert "event_type" in r.text


def test_a_body_that_is_not_json_is_a_4xx(service):
    r = service.post(
        "/recommend", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


def test_offline_evaluation_compares_the_pipeline_with_the_baselines(materialized):
    code = (
        "import dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        "    e = i.get_latest_materialization_event(dg.AssetKey('offline_evaluation'))\n"
        "    print(e.asset_materialization.metadata['results'].value)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=materialized,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"socialrec", "popularity", "recent_popularity", "als"} <= set(rows), out
    ndcg = {m: float(rows[m].split("|")[5]) for m in ("socialrec", "popularity", "als")}
    assert all(0 <= v <= 1 for v in ndcg.values()), ndcg
