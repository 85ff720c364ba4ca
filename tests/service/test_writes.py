"""The write endpoints' logic: ``/events`` through the seen store and a real event spool on a
local landing bucket that can go down, ``/posts`` writing the post's online features before
it is indexed (and the Feast write path for real)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import numpy as np
import pandas as pd
import pytest

from socialrec.serving.endpoints import SPOOL_FAILING_AFTER
from socialrec.serving.errors import respond
from socialrec.serving.posts import OnlinePostWriter
from tests.service.conftest import (
    FakeEncoder,
    FakeFeatures,
    FakeIndex,
    FlakyBucket,
    RaisingSeenStore,
    RecordingWriter,
    landed_events,
    make_endpoints,
    make_events,
    metric_value,
)


# --- /events: seen store first, then the durable spool --------------------------------------
def test_events_are_marked_seen_then_spooled_to_the_landing_bucket(
    spooled, seen_store, metrics, tmp_path
):
    endpoints, spool, _ = spooled
    out = endpoints.events(make_events(3))
    assert (out.accepted, out.spooled) == (3, 3)
    assert seen_store.seen(2) == {10, 11, 12}  # read-your-writes at once
    assert metric_value(metrics, "socialrec_spool_pending") == 3
    assert spool.flush() == 3
    landed = landed_events(tmp_path / "landing")
    assert [e["event_id"] for e in landed] == ["u-0", "u-1", "u-2"]
    assert landed[1] == {
        "event_id": "u-1",
        "user_id": 2,
        "post_id": 11,
        "event_type": "VIEW",
        "ts": "2026-01-06T12:00:00Z",
        "dwell_ms": 100,
    }
    assert list((tmp_path / "landing" / "events").iterdir())[0].name == "dt=2026-01-06"
    endpoints.observe_spool()
    assert metric_value(metrics, "socialrec_spool_pending") == 0
    stage = {"endpoint": "/events", "stage": "spool"}
    assert metric_value(metrics, "socialrec_stage_duration_seconds_count", **stage) == 1


def test_a_bucket_outage_is_reported_by_readiness_but_never_makes_it_unready(
    spooled, metrics, tmp_path
):
    endpoints, spool, bucket = spooled
    bucket.down = True
    assert endpoints.events(make_events(4)).spooled == 4  # accepted: durable on local disk
    for _ in range(SPOOL_FAILING_AFTER):
        assert endpoints.spool_note() is None  # a failure or two is not worth reporting
        assert spool.flush() == 0
    note = endpoints.spool_note()
    assert note.startswith("event spool: 3 flushes to the landing bucket failed in a row")
    assert "4 events kept on local disk" in note and "ConnectionError" in note
    assert endpoints.readiness() is None  # still ready: the spool rides the outage out
    assert metric_value(metrics, "socialrec_spool_pending") == 4
    assert metric_value(metrics, "socialrec_spool_failures") == 3
    assert metric_value(metrics, "socialrec_spool_consecutive_failures") == 3
    assert metric_value(metrics, "socialrec_spool_oldest_pending_seconds") >= 0

    bucket.down = False
    assert spool.flush() == 4
    assert endpoints.spool_note() is None
    assert metric_value(metrics, "socialrec_spool_pending") == 0
    assert metric_value(metrics, "socialrec_spool_consecutive_failures") == 0
    assert len(landed_events(tmp_path / "landing")) == 4


def test_events_are_a_503_when_the_spool_fails_and_nothing_is_marked_seen(
    spooled, seen_store, metrics
):
    endpoints, spool, _ = spooled
    spool.close()  # appends now raise
    r = respond("/events", metrics, endpoints.events, make_events(2))
    assert r.status_code == 503
    assert json.loads(r.body)["error"] == "spool_unavailable"
    # a rejected request wrote nothing: the posts stay in the user's feed
    assert seen_store.seen(2) == set()
    assert metric_value(metrics, "socialrec_errors_total", endpoint="/events", kind="spool") == 1


def test_events_are_a_503_but_kept_when_the_seen_store_fails(metrics, tmp_path):
    from socialrec.serving.spool import EventSpool

    with EventSpool(tmp_path / "spool", FlakyBucket(tmp_path / "landing")) as spool:
        endpoints = make_endpoints(metrics, RaisingSeenStore(), spool=spool)
        r = respond("/events", metrics, endpoints.events, make_events(2))
        assert r.status_code == 503
        assert json.loads(r.body)["error"] == "seen_store_unavailable"
        # the events were spooled first: nothing is lost, the app's retry dedups by event_id
        assert spool.stats()["pending"] == 2


# --- /posts: online features ------------------------------------------------------------------
def test_a_new_post_gets_online_features_before_it_is_indexed(metrics, seen_store, tmp_path):
    from socialrec.data.landing import LocalLandingBucket

    log: list = []
    endpoints = make_endpoints(
        metrics,
        seen_store,
        FakeIndex(log),
        text_encoder=FakeEncoder(),
        bucket=LocalLandingBucket(tmp_path / "landing"),
        post_writer=RecordingWriter(log),
    )
    now = dt.datetime(2026, 1, 6, 12, tzinfo=dt.UTC)
    created = now - dt.timedelta(hours=1)
    out = endpoints.add_post(77, 4, 2, "image", "a kayak", created, now=now)
    assert out.online_features is True
    assert [entry[0] for entry in log] == ["features", "index"]
    _, post, counts, at = log[0]
    assert counts is None  # a new post: zero engagement counts
    assert at == now
    assert {k: post[k] for k in ("post_id", "creator_id", "category_id", "media_type")} == {
        "post_id": 77,
        "creator_id": 4,
        "category_id": 2,
        "media_type": "image",
    }
    assert post["created_at"] == created
    assert np.allclose(post["description_embedding"], FakeEncoder().encode(["x"])[0])
    assert endpoints.catalog.creators([77]) == {77: 4}


def test_an_edited_post_keeps_its_online_counts(metrics, seen_store, tmp_path):
    from socialrec.data.landing import LocalLandingBucket

    log: list = []
    known = {5: {"n_impressions": 40, "n_positives": 7, "positive_rate": 0.175}}
    endpoints = make_endpoints(
        metrics,
        seen_store,
        FakeIndex(log),
        features=FakeFeatures({2}, posts=known),
        text_encoder=FakeEncoder(),
        bucket=LocalLandingBucket(tmp_path / "landing"),
        post_writer=RecordingWriter(log),
    )
    endpoints.add_post(5, 4, 2, "text", "edited")
    counts = log[0][2]
    assert counts["n_impressions"] == 40 and counts["n_positives"] == 7


def test_a_feature_store_that_fails_is_a_503_and_the_post_is_not_indexed(
    metrics, seen_store, tmp_path
):
    from socialrec.data.landing import LocalLandingBucket

    log: list = []
    endpoints = make_endpoints(
        metrics,
        seen_store,
        FakeIndex(log),
        text_encoder=FakeEncoder(),
        bucket=LocalLandingBucket(tmp_path / "landing"),
        post_writer=RecordingWriter(log, fail=True),
    )
    r = respond("/posts", metrics, endpoints.add_post, 78, 4, 2, "text", "hi")
    assert r.status_code == 503 and json.loads(r.body)["error"] == "feature_store_unavailable"
    assert log == []  # not in the index: retrieval never returns a post ranking cannot score


class _UnreadableFeatures(FakeFeatures):
    """An online store whose reads fail the way SQLite's do when its file is gone."""

    def posts(self, post_ids):
        raise sqlite3.OperationalError("unable to open database file")


def test_a_feature_store_read_that_fails_writes_nothing(metrics, seen_store, tmp_path):
    """Every read /posts needs comes before its first write: a failed read leaves no landing
    file, no online row and no index entry behind."""
    from socialrec.data.landing import LocalLandingBucket

    log: list = []
    endpoints = make_endpoints(
        metrics,
        seen_store,
        FakeIndex(log),
        features=_UnreadableFeatures({2}),
        text_encoder=FakeEncoder(),
        bucket=LocalLandingBucket(tmp_path / "landing"),
        post_writer=RecordingWriter(log),
    )
    r = respond("/posts", metrics, endpoints.add_post, 79, 4, 2, "text", "hi")
    assert r.status_code == 503 and json.loads(r.body)["error"] == "feature_store_unavailable"
    assert log == []
    assert not (tmp_path / "landing").exists() or not any((tmp_path / "landing").rglob("*.gz"))


@pytest.mark.integration
def test_write_online_post_makes_the_post_readable_online(tmp_path):
    """The Feast write path for real: FeatureStore.write_to_online_store on the SQLite online
    store, read back by the same one-call online reader the ranking stage uses."""
    import feature_repo
    from socialrec.features import store as fs
    from socialrec.features.online import POST_COUNT_COLUMNS, online_post_features
    from socialrec.settings import Settings

    settings = Settings(data_dir=tmp_path)
    settings.ensure_dirs()
    store = fs.feature_store(settings)
    fs.apply_definitions(store, feature_repo.all_definitions(settings))
    assert not online_post_features(store, [5])["found"].iloc[0]
    vector = np.random.default_rng(0).normal(size=384).astype(np.float32)
    created = dt.datetime(2026, 1, 6, 11, tzinfo=dt.UTC)
    post = {
        "post_id": 5,
        "creator_id": 3,
        "category_id": 2,
        "media_type": "image",
        "created_at": created,
        "description_embedding": vector,
    }
    writer = OnlinePostWriter(store)
    assert writer.write(post) == {"post_features": 1, "post_content": 1}
    row = online_post_features(store, [5]).iloc[0]
    assert bool(row["found"])
    assert (row["creator_id"], row["category_id"], row["media_type"]) == (3, 2, "image")
    assert row["created_at_ts"] == int(created.timestamp())
    assert all(row[c] == 0 for c in POST_COUNT_COLUMNS)
    assert np.allclose(row["description_embedding"], vector)
    # an edit with counts keeps them
    writer.write({**post, "category_id": 4}, counts={"n_impressions": 9, "n_positives": pd.NA})
    row = online_post_features(store, [5]).iloc[0]
    assert (row["category_id"], row["n_impressions"], row["n_positives"]) == (4, 9, 0)


def test_a_post_from_the_future_is_a_422(metrics, seen_store):
    endpoints = make_endpoints(metrics, seen_store)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    r = respond("/posts", endpoints.metrics, endpoints.add_post, 1, 2, 3, "text", "hi", later)
    assert r.status_code == 422 and "future" in json.loads(r.body)["detail"]


@pytest.mark.parametrize(
    "ts, settings, why",
    [
        ("2099-01-01T00:00:00Z", {}, "future ts"),
        ("2020-01-01T00:00:00+05:00", {"event_retention_days": 365}, "past retention"),
        ("1970-01-01T00:00:00Z", {}, "before the first event partition"),
    ],
)
def test_events_outside_the_window_are_a_422_and_nothing_is_written(
    spooled, seen_store, metrics, ts, settings, why
):
    """Rejected at the door, not parked in a dt=<far day> folder the loader would never load."""
    endpoints, spool, _ = spooled
    endpoints.settings = endpoints.settings.model_copy(update=settings)
    events = make_events(3)
    events[1] = events[1].model_copy(update={"ts": dt.datetime.fromisoformat(ts)})
    r = respond("/events", metrics, endpoints.events, events)
    assert r.status_code == 422
    body = json.loads(r.body)
    assert body["error"] == "invalid_request" and why in body["detail"]
    assert "'u-1'" in body["detail"] and "'u-0'" not in body["detail"]
    assert spool.stats()["pending"] == 0 and seen_store.seen(2) == set()
    # inside the window: accepted
    assert endpoints.events(make_events(3)).spooled == 3
