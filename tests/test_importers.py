"""Importing a user's own interaction log into the landing layout (socialrec/data/importers):
events from ratings and event maps, ids, times, onboarding categories and creators."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from socialrec.data import importers
from socialrec.data.importers import CREATOR_ID_BASE, ImportOptions, import_interactions
from socialrec.data.landing import LocalLandingBucket
from tests.importing import (
    NOW,
    RATING_OPTS,
    T0,
    landed,
    ratings_csv,
)


def test_rating_rules_give_one_event_per_row_and_rule(tmp_path):
    path = ratings_csv(
        tmp_path,
        [(1, 10, 5.0, T0), (1, 11, 3.0, T0 + 60), (2, 10, 1.5, T0 + 86_400), (2, 12, None, T0)],
    )
    bucket = LocalLandingBucket(tmp_path / "landing")
    report = import_interactions(path, bucket, options=RATING_OPTS, now=NOW)
    events = {
        (e["event_id"], e["user_id"], e["post_id"], e["ts"]) for e in landed(bucket, "events")
    }
    assert events == {
        ("r-0-VIEW", 1, 10, "2026-01-01T00:00:00Z"),
        ("r-0-LIKE", 1, 10, "2026-01-01T00:00:00Z"),
        ("r-1-VIEW", 1, 11, "2026-01-01T00:01:00Z"),
        ("r-2-VIEW", 2, 10, "2026-01-02T00:00:00Z"),
        ("r-2-DISLIKE", 2, 10, "2026-01-02T00:00:00Z"),
    }
    assert report["events_by_type"] == {"VIEW": 3, "LIKE": 1, "DISLIKE": 1}
    assert report["rows_dropped"] == {"missing_rating": 1}
    assert (report["first_day"], report["last_day"], report["event_days"]) == (
        "2026-01-01",
        "2026-01-02",
        2,
    )
    assert sorted(b.key for b in bucket.list("events/")) == [
        "events/dt=2026-01-01/r-events-0000.jsonl.gz",
        "events/dt=2026-01-02/r-events-0000.jsonl.gz",
    ]
    # a re-import writes the same keys and bytes (deterministic ids)
    before = {b.key: bucket.read_bytes(b.key) for b in bucket.list()}
    import_interactions(path, bucket, options=RATING_OPTS, now=NOW)
    assert {b.key: bucket.read_bytes(b.key) for b in bucket.list()} == before
    # the preset name gives the same rules
    opts = ImportOptions.from_dict({**RATING_OPTS, "rating_rules": "five_star"})
    assert opts.rating_rules == [
        {"min": None, "max": None, "event": "VIEW"},
        {"min": 4, "max": None, "event": "LIKE"},
        {"min": None, "max": 2, "event": "DISLIKE"},
    ]


def test_event_map_lists_ignored_and_unmapped_values(tmp_path):
    log = pd.DataFrame(
        {
            "uid": [7, 7, 8, 8, 8],
            "iid": [1, 2, 1, 3, 2],
            "action": ["click", "like", "show", "hover", "teleport"],
            "when": [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4],
            "watch_ms": [1200, None, None, None, 50.4],
        }
    )
    bucket = LocalLandingBucket(tmp_path / "landing")
    report = import_interactions(
        log,
        bucket,
        source="clicks",
        user_col="uid",
        item_col="iid",
        time_col="when",
        event_col="action",
        event_map={"click": "VIEW", "like": ["VIEW", "LIKE"], "show": "IMPRESSION", "hover": None},
        dwell_col="watch_ms",
        now=NOW,
    )
    events = {e["event_id"]: (e["event_type"], e["dwell_ms"]) for e in landed(bucket, "events")}
    assert events == {
        "clicks-0-VIEW": ("VIEW", 1200),
        "clicks-1-VIEW": ("VIEW", None),
        "clicks-1-LIKE": ("LIKE", None),
        "clicks-2-IMPRESSION": ("IMPRESSION", None),
    }
    assert report["rows_dropped"] == {"unmapped_event": 1, "ignored_event": 1}
    # no items table: every post is in the "unknown" category, with a synthetic creator
    assert landed(bucket, "categories") == [{"category_id": 1, "name": "unknown"}]
    assert {p["creator_id"] for p in landed(bucket, "posts")} == {CREATOR_ID_BASE + 1}
    # without event_map the values must already be EVENT_TYPES (any case)
    log2 = log.assign(action=["view", "LIKE", "Bookmark", "nope", "REPORT"])
    report = import_interactions(
        log2,
        LocalLandingBucket(tmp_path / "l2"),
        user_col="uid",
        item_col="iid",
        time_col="when",
        event_col="action",
        now=NOW,
    )
    assert report["events_by_type"] == {"VIEW": 1, "LIKE": 1, "BOOKMARK": 1, "REPORT": 1}


def test_string_ids_get_stable_hashed_ids_and_multi_valued_categories(tmp_path):
    (tmp_path / "log.csv").write_text(
        "user,item,type,time\n"
        "alice,a-1,like,2026-01-01T10:00:00Z\n"
        "bob,b-2,like,2026-01-01T11:00:00+01:00\n"
        "bob,c-3,like,2026-01-02 09:30:00\n"
        "alice,007,like,2026-01-03T00:00:00Z\n"
    )
    (tmp_path / "items.csv").write_text(
        "id,name,blurb,cats\n"
        "a-1,Alpha,first item,Music|Art\n"
        "b-2,Beta,,|Art|Music\n"
        "007,Bond,spy film,Film\n"
        "zzz,Unused,never seen,Other\n"
    )  # c-3 is missing from the items table
    opts = {
        "source": "s",
        "user_col": "user",
        "item_col": "item",
        "time_col": "time",
        "time_unit": "iso",
        "event_col": "type",
        "event_map": {"like": "LIKE"},
        "items_item_col": "id",
        "text_cols": ["name", "blurb"],
        "category_col": "cats",
        "category_sep": "|",
        "creator": "source",
    }
    bucket = LocalLandingBucket(tmp_path / "landing")
    report = import_interactions(
        tmp_path / "log.csv", bucket, items=tmp_path / "items.csv", options=opts, now=NOW
    )
    assert report["user_ids"] == report["post_ids"] == "hashed"
    post_map = report["post_id_map"]
    assert set(post_map) == {"a-1", "b-2", "c-3", "007"}  # "007" kept its leading zeros
    assert post_map["a-1"] == importers.hash_id("post", "a-1") < 2**53
    assert report["user_id_map"]["alice"] == importers.hash_id("user", "alice")
    assert report["catalog_items_without_events"] == 1
    cats = {c["name"]: c["category_id"] for c in landed(bucket, "categories")}
    assert cats == {"Art": 1, "Film": 2, "Music": 3, "unknown": 4}  # sorted names
    posts = {p["post_id"]: p for p in landed(bucket, "posts")}
    assert posts[post_map["a-1"]]["category_id"] == cats["Music"]  # first value
    assert posts[post_map["b-2"]]["category_id"] == cats["Art"]  # first non-empty value
    assert posts[post_map["c-3"]]["category_id"] == cats["unknown"]
    assert posts[post_map["a-1"]]["description"] == "Alpha. first item"
    assert posts[post_map["b-2"]]["description"] == "Beta"
    assert posts[post_map["c-3"]]["description"] == ""
    assert posts[post_map["b-2"]]["created_at"] == "2026-01-01T10:00:00Z"  # +01:00 -> UTC
    assert {p["creator_id"] for p in posts.values()} == {CREATOR_ID_BASE}
    users = {u["user_id"]: u for u in landed(bucket, "users")}
    assert users[CREATOR_ID_BASE]["created_at"] == "2026-01-01T10:00:00Z"
    assert users[CREATOR_ID_BASE]["onboarding_categories"] == []
    # the same ids in another import (another batch, another bucket)
    again = import_interactions(
        tmp_path / "log.csv",
        LocalLandingBucket(tmp_path / "l2"),
        items=tmp_path / "items.csv",
        options=opts,
        now=NOW,
    )
    assert again["post_id_map"] == post_map and again["user_id_map"] == report["user_id_map"]


def test_ms_timestamps_parquet_and_sub_second_times(tmp_path):
    path = tmp_path / "log.parquet"
    pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item_id": [5, 6, 5],
            "timestamp": [T0 * 1000 + 250, T0 * 1000 + 1000, 10**17],  # the last is garbage
            "event": ["VIEW", "LIKE", "VIEW"],
        }
    ).to_parquet(path)
    bucket = LocalLandingBucket(tmp_path / "landing")
    report = import_interactions(path, bucket, time_unit="ms", event_col="event", now=NOW)
    assert sorted(e["ts"] for e in landed(bucket, "events")) == [
        "2026-01-01T00:00:00.250000Z",
        "2026-01-01T00:00:01.000000Z",
    ]
    assert report["rows_dropped"] == {"bad_time": 1}
    assert report["user_ids"] == "kept" and report["user_id_map"] is None


def test_shift_to_and_future_events(tmp_path):
    path = ratings_csv(
        tmp_path, [(1, 10, 5, 946_684_800), (1, 11, 4, 946_684_800 + 3 * 86_400 + 5)]
    )
    bucket = LocalLandingBucket(tmp_path / "landing")
    report = import_interactions(path, bucket, options={**RATING_OPTS, "shift_to": "2026-03-01"})
    assert (report["first_ts"], report["last_ts"]) == (
        "2026-03-01T00:00:00Z",
        "2026-03-04T00:00:05Z",
    )
    # with "now" between the two ratings, the later one is in the future: dropped
    report = import_interactions(
        path,
        LocalLandingBucket(tmp_path / "l2"),
        options={**RATING_OPTS, "shift_to": "2026-03-01"},
        now=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
    )
    assert report["rows_dropped"] == {"future_ts": 1} and report["events"] == 2


def test_onboarding_categories_creators_and_users_table(tmp_path):
    items = pd.DataFrame(
        {"item": [1, 2, 3, 4, 5], "genre": ["A", "A", "B", "C", "C"], "t": list("vwxyz")}
    )
    rows = [
        (1, 4, 1.0, T0),  # disliked: not an onboarding signal
        (1, 5, 1.0, T0 + 1),
        (1, 3, 5.0, T0 + 2),
        (1, 1, 3.0, T0 + 3),
        (1, 2, 4.0, T0 + 4),
        (1, 4, 5.0, T0 + 5),  # past first_n=3 of the non-negative rows
        (2, 4, 3.0, T0 + 9),
    ]
    users = pd.DataFrame({"user": [1, 3], "bio": ["Loves A", "never active"], "h": ["Hi", "x"]})
    bucket = LocalLandingBucket(tmp_path / "landing")
    import_interactions(
        ratings_csv(tmp_path, rows),
        bucket,
        items=items,
        users=users,
        options={
            **RATING_OPTS,
            "items_item_col": "item",
            "category_col": "genre",
            "text_cols": ["t"],
            "headline_col": "h",
            "about_col": "bio",
            "onboarding_first_n": 3,
            "onboarding_top_k": 1,
        },
        now=NOW,
    )
    users_out = {u["user_id"]: u for u in landed(bucket, "users")}
    # user 1: first 3 non-negative rows are items 3 (B), 1 (A), 2 (A) -> A
    assert users_out[1]["onboarding_categories"] == [1]
    assert (users_out[1]["headline"], users_out[1]["about"]) == ("Hi", "Loves A")
    assert users_out[1]["created_at"] == "2026-01-01T00:00:00Z"
    assert users_out[2]["onboarding_categories"] == [3]
    assert (users_out[2]["headline"], users_out[2]["about"]) == ("", "")
    assert 3 not in users_out  # no interactions: no creation time
    # one synthetic creator per category, created at its first post, onboarded on it
    posts = {p["post_id"]: p for p in landed(bucket, "posts")}
    assert posts[4]["creator_id"] == CREATOR_ID_BASE + 3
    assert posts[4]["created_at"] == "2026-01-01T00:00:00Z"
    creator = users_out[CREATOR_ID_BASE + 3]
    assert creator["onboarding_categories"] == [3]
    assert creator["created_at"] == "2026-01-01T00:00:00Z"
    assert creator["headline"] == "r: C"
    assert {p["creator_id"] for p in posts.values()} <= set(users_out)


def test_creator_column_in_the_interactions_table(tmp_path):
    log = pd.DataFrame(
        {
            "user_id": [1, 2, 2],
            "item_id": [10, 11, 10],
            "author": [2, None, 2],  # user 2 is also a creator; item 11 has none
            "category": ["x", "y", "x"],
            "timestamp": [T0 + 100, T0 + 200, T0 + 300],
            "event": ["VIEW", "VIEW", "LIKE"],
        }
    )
    bucket = LocalLandingBucket(tmp_path / "landing")
    import_interactions(
        log, bucket, event_col="event", category_col="category", creator_col="author", now=NOW
    )
    posts = {p["post_id"]: p["creator_id"] for p in landed(bucket, "posts")}
    assert posts == {10: 2, 11: CREATOR_ID_BASE + 2}
    users = {u["user_id"]: u["created_at"] for u in landed(bucket, "users")}
    # user 2 first acted at T0+200 but created post 10 (first seen at T0+100)
    assert users[2] == "2026-01-01T00:01:40Z"
