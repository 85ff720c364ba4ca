"""The unit-level parts of the service's tests: fakes of the stores and models, a real SQLite
seen store and a real event spool, wired by the service's composition root
(``socialrec.serving.app.compose``); the metrics on a registry of their own."""

from __future__ import annotations

import gzip
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from socialrec.serving.app import compose
from socialrec.serving.metrics import ServiceMetrics
from socialrec.serving.schemas import EventIn

DIM = 4


class FakeFeatures:
    """Online features: users in ``known``; posts in ``posts`` ({post_id: {column: value}})."""

    def __init__(self, known: set[int], categories: str = "1,2", posts: dict | None = None):
        self.known = known
        self.categories = categories
        self.known_posts = posts or {}

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
        ids = [int(p) for p in post_ids]
        rows = [{**self.known_posts.get(p, {}), "found": p in self.known_posts} for p in ids]
        return pd.DataFrame(rows, index=pd.Index(ids, name="post_id"))


class FakeTwoTower:
    def user_embeddings(self, users_df):
        return np.tile(np.asarray([1, 0, 0, 0], np.float32), (len(users_df), 1))

    def post_embeddings(self, posts_df):
        return np.tile(np.asarray([0, 1, 0, 0], np.float32), (len(posts_df), 1))


class FakeEncoder:
    def encode(self, texts):
        return np.full((len(texts), 384), 1 / np.sqrt(384), np.float32)


class FakeIndex:
    """Milvus that answers: pings, and upserts recorded in ``log``."""

    def __init__(self, log: list | None = None):
        self.log = log if log is not None else []

    def ping(self, alias):
        return f"{alias}_v1"

    def upsert_post(self, post_id, *args, alias="posts", text_alias="post_texts"):
        self.log.append(("index", post_id))
        return {alias: f"{alias}_v1", text_alias: f"{text_alias}_v1"}


class AnsweringIndex(FakeIndex):
    """Milvus that answers searches: the catalog's posts (``make_catalog``), lower ids closer."""

    def search(self, alias, vectors, top_n, category_ids=None):
        hits = [
            (p, 1.0 - p / 100)
            for p in range(1, 31)
            if category_ids is None or p % 3 in set(category_ids)
        ]
        return [hits[:top_n] for _ in range(len(np.atleast_2d(vectors)))]


class RecordingWriter:
    """An online feature writer that records its calls in ``log``; ``fail``: it raises."""

    def __init__(self, log: list | None = None, fail: bool = False):
        self.log = log if log is not None else []
        self.fail = fail

    def write(self, post, counts=None, at=None):
        if self.fail:
            raise sqlite3.OperationalError("unable to open database file")
        self.log.append(("features", post, counts, at))


class RaisingIndex:
    """Milvus that is down: every call raises what pymilvus raises for a dead server."""

    def __init__(self):
        self.calls = 0

    def search(self, *args, **kwargs):
        from pymilvus.client.types import Status
        from pymilvus.exceptions import MilvusException

        self.calls += 1
        raise MilvusException(
            code=Status.CONNECT_FAILED,  # what pymilvus 3 raises (tests/service/test_outages.py)
            message="Fail connecting to server on 127.0.0.1:19530, illegal connection params "
            "or server unavailable",
        )

    similar = search_hits = vectors = ping = list_versions = search


class RaisingSeenStore:
    def seen(self, user_id):
        raise sqlite3.OperationalError("database is locked")

    negatives = mark_events = state = seen


class FakeRanker:
    def predict(self, frame):
        raise AssertionError("not reached in these tests")


class ScoringRanker:
    """A ranker that agrees with the merged source order."""

    def predict(self, frame):
        return frame["merged_score"].to_numpy(dtype=float)


def known_posts() -> dict:
    """The online features of the catalog's posts (``make_catalog``)."""
    return {p: {"category_id": p % 3, "creator_id": p % 5} for p in range(1, 31)}


def make_catalog():
    from socialrec.stores.catalog import Catalog

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


def samples(registry) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
    }


@pytest.fixture
def metrics():
    """The service's metrics on a registry of their own. Once BentoML has been imported in
    this process, prometheus_client is in multiprocess mode and same-named series of every
    registry share one value: ``metric_value`` reads a counter's change since the fixture was made.
    The baseline then comes from this process's metric files, so it also holds the series an
    earlier test created and this registry has not touched yet."""
    import glob
    import os

    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    out = ServiceMetrics(CollectorRegistry())
    out.baseline = samples(out.registry)
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if shared:
        files = glob.glob(os.path.join(shared, f"*_{os.getpid()}.db"))
        for metric in MultiProcessCollector.merge(files):
            for sample in metric.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                out.baseline[key] = sample.value
    return out


@pytest.fixture
def seen_store(tmp_path):
    from socialrec.stores.seen import SQLiteSeenStore

    with SQLiteSeenStore(tmp_path / "seen.sqlite") as store:
        yield store


def make_settings(**kwargs):
    from socialrec.settings import Settings

    return Settings(data_dir=Path("/nonexistent"), **kwargs)


TWO_TOWER_ONLY = {"candidate_sources": ["two_tower"]}  # the ANN is the only candidate source


def make_endpoints(metrics, seen_store, index=None, settings=None, **kwargs):
    parts = {
        "features": FakeFeatures({2}),
        "two_tower": FakeTwoTower(),
        "index": index or RaisingIndex(),
        "seen_store": seen_store,
        "ranker": FakeRanker(),
        "catalog": make_catalog(),
        "text_encoder": None,
        "bucket": None,
        "metrics": metrics,
        **kwargs,
    }
    return compose(settings or make_settings(), **parts)


def metric_value(metrics, name, **labels):
    value = metrics.registry.get_sample_value(name, labels)
    if value is None or not name.endswith(("_total", "_count", "_sum", "_bucket")):
        return value  # a gauge is set, not added to
    return value - getattr(metrics, "baseline", {}).get((name, tuple(sorted(labels.items()))), 0)


def fallbacks(metrics, dependency):
    return metric_value(
        metrics, "socialrec_fallback_total", endpoint="/recommend", dependency=dependency
    )


def asgi_call(app, path, headers=()):
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


async def ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class FlakyBucket:
    """A local landing bucket whose writes raise while ``down``."""

    def __init__(self, root):
        from socialrec.data.landing import LocalLandingBucket

        self.inner = LocalLandingBucket(root)
        self.uri = self.inner.uri
        self.down = False

    def list(self, prefix=""):
        return self.inner.list(prefix)

    def read_bytes(self, key):
        return self.inner.read_bytes(key)

    def write_bytes(self, key, data):
        if self.down:
            raise ConnectionError("landing bucket unreachable")
        self.inner.write_bytes(key, data)


def make_events(n: int, user_id: int = 2, prefix: str = "u") -> list:
    return [
        EventIn(
            event_id=f"{prefix}-{i}",
            user_id=user_id,
            post_id=10 + i,
            event_type="VIEW",
            ts="2026-01-06T12:00:00Z",
            dwell_ms=100 * i or None,
        )
        for i in range(n)
    ]


def landed_events(root: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(root.glob("events/dt=*/spool-*.jsonl.gz"))
        for line in gzip.decompress(path.read_bytes()).decode().splitlines()
        if line.strip()
    ]


@pytest.fixture
def spooled(tmp_path, seen_store, metrics):
    """(endpoints, spool, bucket) with a real EventSpool (no background flusher) on a local
    bucket that can go down."""
    from socialrec.serving.spool import EventSpool

    bucket = FlakyBucket(tmp_path / "landing")
    spool = EventSpool(tmp_path / "spool", bucket, flush_seconds=60, retry_seconds=60)
    endpoints = make_endpoints(
        metrics, seen_store, FakeIndex(), text_encoder=FakeEncoder(), spool=spool
    )
    yield endpoints, spool, bucket
    spool.close()
