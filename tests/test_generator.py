"""Unit tests of the synthetic social-network generator (core, no services)."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from socialrec.data.generator import generate_dataset, write_landing
from socialrec.data.landing import LocalLandingBucket
from socialrec.settings import EVENT_TYPES, MEDIA_TYPES


@pytest.fixture(scope="module")
def ds():
    return generate_dataset(n_users=300, n_posts=600, n_events=8000, days=5, seed=7)


def test_same_seed_same_data_other_seed_other_data(ds):
    again = generate_dataset(n_users=300, n_posts=600, n_events=8000, days=5, seed=7)
    for name in ("users", "posts", "events", "categories"):
        pd.testing.assert_frame_equal(getattr(ds, name), getattr(again, name))
    other = generate_dataset(n_users=300, n_posts=600, n_events=8000, days=5, seed=8)
    assert not other.events["post_id"].equals(ds.events["post_id"])


def test_sizes_and_domains(ds):
    assert len(ds.users) == 300 and len(ds.posts) == 600
    assert 0.8 * 8000 <= len(ds.events) <= 1.2 * 8000
    assert set(ds.events["event_type"]) == set(EVENT_TYPES)
    assert set(ds.posts["media_type"]) <= set(MEDIA_TYPES)
    assert ds.events["user_id"].isin(ds.users["user_id"]).all()
    assert ds.events["post_id"].isin(ds.posts["post_id"]).all()
    assert ds.posts["creator_id"].isin(ds.users["user_id"]).all()
    assert all(1 <= len(c) <= 3 for c in ds.users["onboarding_categories"])


def test_causality(ds):
    ev = ds.events.merge(ds.posts[["post_id", "created_at"]], on="post_id")
    assert (ev["ts"] > ev["created_at"]).all(), "no event before its post exists"
    ev = ds.events.merge(ds.users[["user_id", "created_at"]], on="user_id")
    assert (ev["ts"] > ev["created_at"]).all(), "no event before its user signed up"


def test_retries_duplicate_event_ids(ds):
    dup = ds.events[ds.events["event_id"].duplicated(keep=False)]
    assert len(dup) > 0
    # a retry is the very same event, not a different one with a colliding id
    assert dup.groupby("event_id").nunique().max().max() == 1


def test_latent_structure_is_learnable(ds):
    """Users engage more with their onboarding categories, and descriptions carry the category."""
    likes = ds.events[ds.events["event_type"] == "LIKE"].merge(ds.posts, on="post_id")
    onb = ds.users.set_index("user_id")["onboarding_categories"]
    in_onb = [c in onb[u] for u, c in zip(likes["user_id"], likes["category_id"], strict=True)]
    share = float(np.mean(in_onb))
    # random would be about (mean onboarding size) / 12 categories ~ 0.17
    assert share > 0.4, share
    from socialrec.data.generator import CATEGORIES

    names = list(CATEGORIES)
    hits = [
        any(w in d for w in CATEGORIES[names[c - 1]])
        for d, c in zip(ds.posts["description"], ds.posts["category_id"], strict=True)
    ]
    assert all(hits)


def test_landing_layout(tmp_path, ds):
    bucket = LocalLandingBucket(tmp_path)
    keys = write_landing(ds, bucket)
    assert {k.split("/")[0] for k in keys} == {"events", "posts", "users", "categories"}
    event_keys = [k for k in keys if k.startswith("events/")]
    assert all(k.split("/")[1].startswith("dt=") and k.endswith(".jsonl.gz") for k in event_keys)
    lines = []
    for k in event_keys:
        day = k.split("/")[1].removeprefix("dt=")
        for line in gzip.decompress(bucket.read_bytes(k)).decode().splitlines():
            rec = json.loads(line)
            assert rec["ts"].startswith(day)
            lines.append(rec)
    assert len(lines) == len(ds.events)
    assert set(lines[0]) == {"event_id", "user_id", "post_id", "event_type", "ts", "dwell_ms"}
    # deterministic bytes: writing again changes nothing
    before = {k: bucket.read_bytes(k) for k in keys}
    write_landing(ds, bucket)
    assert all(bucket.read_bytes(k) == v for k, v in before.items())
