"""``POST /forget`` and ``POST /posts/delete`` through the composed Endpoints: a real SQLite
seen store, a local landing bucket and a real post index (Milvus Lite, two versions of both
kinds of collection); a Milvus outage is a 503; the door (bad ids: 422) and the bearer scope
(401 without a token, 403 with the read token) of both routes."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import numpy as np
import pytest

from socialrec.data.landing import LocalLandingBucket
from socialrec.data.raw_records import PARSERS
from socialrec.serving import asgi
from socialrec.serving.errors import ErrorAnswer, respond
from socialrec.serving.schemas import DeletionResponse
from tests.service.conftest import (
    DIM,
    FakeEncoder,
    RaisingIndex,
    asgi_call,
    make_endpoints,
    metric_value,
    ok_app,
)
from tests.service.test_door import INT64_MAX, call

NOW = dt.datetime(2026, 1, 6, 12, tzinfo=dt.UTC)
POSTS = np.arange(1, 31)  # the posts of make_catalog
VERSIONS = ["post_texts_1", "post_texts_2", "posts_1", "posts_2"]


@pytest.fixture
def index(tmp_path):
    """Both kinds of collection in two versions (the serving one and the rollback one)."""
    from socialrec.stores.index import PostIndex

    rng = np.random.default_rng(0)
    idx = PostIndex(str(tmp_path / "milvus" / "posts.db"))
    meta = (POSTS, POSTS % 3, POSTS % 5, 1_767_225_600 + POSTS)
    for version in (1, 2):
        vectors = rng.normal(size=(len(POSTS), DIM)).astype(np.float32)
        idx.write_version(version, *meta, vectors / np.linalg.norm(vectors, axis=1)[:, None])
        idx.write_text_version(version, *meta, rng.normal(size=(len(POSTS), 384)))
        idx.swap_alias("posts", f"posts_{version}")  # version 1 is kept for a rollback
        idx.swap_alias("post_texts", f"post_texts_{version}")
    yield idx
    idx.close()


def _landed(bucket: LocalLandingBucket, key: str) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(bucket.read_bytes(key)).splitlines()]


def test_forget_lands_a_tombstone_and_drops_the_users_seen_rows_and_blocks(
    metrics, seen_store, index, tmp_path
):
    bucket = LocalLandingBucket(tmp_path / "landing")
    endpoints = make_endpoints(metrics, seen_store, index, bucket=bucket)
    seen_store.mark(2, [1, 2], "VIEW", ts=NOW)
    seen_store.mark(2, [3], "DISLIKE", ts=NOW)
    seen_store.block(2, [4])
    seen_store.mark(3, [1], "LIKE", ts=NOW)
    out = respond("/forget", metrics, endpoints.forget, "user", 2)
    assert isinstance(out, DeletionResponse), out
    assert (out.kind, out.id, out.seen_rows_deleted, out.collections) == ("user", 2, 3, [])
    assert out.landing_key.startswith("users/dt=") and "/forget-" in out.landing_key
    (row,) = _landed(bucket, out.landing_key)
    assert PARSERS["users"](row)["is_deleted"] is True and row["user_id"] == 2
    assert seen_store.seen(2) == set() and seen_store.blocked_creators(2) == set()
    assert not seen_store.state(2).negatives
    assert seen_store.seen(3) == {1}  # another user keeps everything
    again = respond("/forget", metrics, endpoints.forget, "user", 2)  # idempotent
    assert again.seen_rows_deleted == 0 and again.landing_key != out.landing_key


def test_a_deleted_post_leaves_every_index_version_and_this_workers_catalog(
    metrics, seen_store, index, tmp_path
):
    bucket = LocalLandingBucket(tmp_path / "landing")
    endpoints = make_endpoints(
        metrics, seen_store, index, bucket=bucket, text_encoder=FakeEncoder()
    )
    catalog = endpoints.catalog
    assert 7 in catalog.posts.index
    assert 7 in [p for p, _ in catalog.cold_start(30)]
    out = respond("/posts/delete", metrics, endpoints.forget, "post", 7)
    assert isinstance(out, DeletionResponse), out
    assert (out.kind, out.id, out.collections) == ("post", 7, VERSIONS)
    assert out.landing_key.startswith("posts/dt=")
    (row,) = _landed(bucket, out.landing_key)
    assert PARSERS["posts"](row)["is_deleted"] is True and row["post_id"] == 7
    for name in VERSIONS:  # the serving versions and the rollback ones
        assert index.client.query(name, filter="post_id == 7", output_fields=["post_id"]) == []
        assert len(index.client.query(name, filter="post_id == 8", output_fields=["post_id"]))
    # /similar and /search no longer know it
    gone = respond("/similar", metrics, endpoints.similar, 7, 5)
    assert isinstance(gone, ErrorAnswer) and gone.status_code == 404
    near = endpoints.similar(8, 29)
    assert len(near.items) == 28 and 7 not in [it.post_id for it in near.items]
    hits = endpoints.search("anything", 30)
    assert 7 not in [it.post_id for it in hits.items] and len(hits.items) == 29
    # this worker's catalog: no candidate source returns it, it is never adopted again
    assert 7 not in catalog.posts.index and 7 in catalog.deleted
    assert 7 not in [p for p, _ in catalog.cold_start(30)]
    for name in ("popular", "trending", "fresh"):
        assert 7 not in [p for p, _ in catalog.top(name, 30)]
        assert 7 not in [p for p, _ in catalog.top(name, 30, categories=[1])]
    assert catalog.adopt(np.asarray([7, 8])) == 0
    rec = endpoints.recommend(99, 30)  # an unknown user: the catalog's cold-start list
    assert 7 not in [it.post_id for it in rec.items] and len(rec.items) == 29


def test_a_milvus_outage_on_delete_is_a_503_after_the_tombstone_landed(
    metrics, seen_store, tmp_path
):
    bucket = LocalLandingBucket(tmp_path / "landing")
    endpoints = make_endpoints(metrics, seen_store, RaisingIndex(), bucket=bucket)
    out = respond("/posts/delete", metrics, endpoints.forget, "post", 7)
    assert isinstance(out, ErrorAnswer) and out.status_code == 503, out
    assert out.error == "milvus_unavailable"
    assert metric_value(metrics, "socialrec_errors_total", endpoint="/posts/delete", kind="milvus")
    # the tombstone is durable: the deletion_job deletes the post from the index later
    assert [b for b in bucket.list("posts/") if "/forget-" in b.key]
    assert 7 in endpoints.catalog.posts.index  # the client retries; the view is untouched


@pytest.fixture(scope="module")
def gate():
    from bentos.service import Recommender
    from socialrec.serving.gate import RequestGate

    async def echo(scope, receive, send):
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message.get("body", b"")})

    return RequestGate(echo, models={a.route: a.input_spec for a in Recommender.apis.values()})


@pytest.mark.parametrize(
    "path, body",
    [
        ("/forget", {}),
        ("/forget", {"user_id": -1}),
        ("/forget", {"user_id": INT64_MAX + 1}),
        ("/forget", {"user_id": "7"}),
        ("/forget", {"user_id": 7.5}),
        ("/forget", {"user_id": True}),
        ("/forget", {"user_id": None}),
        ("/posts/delete", {"post_id": 2**64}),
        ("/posts/delete", {"post_id": -3}),
        ("/posts/delete", {"post_id": [1]}),
        ("/posts/delete", {"user_id": 1}),
    ],
)
def test_a_bad_id_is_a_422_at_the_door(gate, path, body):
    status, answer = call(gate, path, json.dumps(body).encode())
    assert status == 422, answer
    assert json.loads(answer)["error"] == "invalid_request"


@pytest.mark.parametrize("path, body", [("/forget", "user_id"), ("/posts/delete", "post_id")])
def test_the_largest_id_passes_the_door(gate, path, body):
    data = json.dumps({body: INT64_MAX}).encode()
    assert call(gate, path, data) == (200, data)


@pytest.mark.parametrize("path", ["/forget", "/posts/delete"])
def test_both_routes_need_the_write_token(path):
    from socialrec.settings import Settings

    settings = Settings(api_token="w-new", read_token="r-new", auth_read_endpoints=True)
    app = asgi.BearerAuth(ok_app, settings=settings)
    assert asgi_call(app, path)[0] == 401
    assert asgi_call(app, path, [("Authorization", "Bearer wrong")])[0] == 401
    status, _, body = asgi_call(app, path, [("Authorization", "Bearer r-new")])
    assert status == 403 and json.loads(body)["error"] == "forbidden"
    assert asgi_call(app, path, [("Authorization", "Bearer w-new")])[0] == 200
