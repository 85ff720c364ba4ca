"""Importing a user's own interaction log into the landing layout (socialrec/data/importers.py)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from socialrec.data import importers, warehouse
from socialrec.data.importers import CREATOR_ID_BASE, ImportOptions, import_interactions
from socialrec.data.landing import LocalLandingBucket
from socialrec.settings import Settings

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def _lines(bucket: LocalLandingBucket, dataset: str) -> list[dict]:
    out = []
    for blob in bucket.list(f"{dataset}/"):
        out += [json.loads(x) for x in gzip.decompress(bucket.read_bytes(blob.key)).splitlines()]
    return out


def _ratings(tmp_path, rows) -> str:
    path = tmp_path / "ratings.csv"
    pd.DataFrame(rows, columns=["user", "item", "rating", "ts"]).to_csv(path, index=False)
    return str(path)


RATING_OPTS = {
    "source": "r",
    "user_col": "user",
    "item_col": "item",
    "time_col": "ts",
    "rating_col": "rating",
    "rating_rules": [
        {"min": None, "max": None, "event": "VIEW"},
        {"min": 4, "event": "LIKE"},
        {"max": 2, "event": "DISLIKE"},
    ],
}


def test_rating_rules_give_one_event_per_row_and_rule(tmp_path):
    path = _ratings(
        tmp_path,
        [(1, 10, 5.0, T0), (1, 11, 3.0, T0 + 60), (2, 10, 1.5, T0 + 86_400), (2, 12, None, T0)],
    )
    bucket = LocalLandingBucket(tmp_path / "landing")
    report = import_interactions(path, bucket, options=RATING_OPTS, now=NOW)
    events = {
        (e["event_id"], e["user_id"], e["post_id"], e["ts"]) for e in _lines(bucket, "events")
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
    events = {e["event_id"]: (e["event_type"], e["dwell_ms"]) for e in _lines(bucket, "events")}
    assert events == {
        "clicks-0-VIEW": ("VIEW", 1200),
        "clicks-1-VIEW": ("VIEW", None),
        "clicks-1-LIKE": ("LIKE", None),
        "clicks-2-IMPRESSION": ("IMPRESSION", None),
    }
    assert report["rows_dropped"] == {"unmapped_event": 1, "ignored_event": 1}
    # no items table: every post is in the "unknown" category, with a synthetic creator
    assert _lines(bucket, "categories") == [{"category_id": 1, "name": "unknown"}]
    assert {p["creator_id"] for p in _lines(bucket, "posts")} == {CREATOR_ID_BASE + 1}
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
    cats = {c["name"]: c["category_id"] for c in _lines(bucket, "categories")}
    assert cats == {"Art": 1, "Film": 2, "Music": 3, "unknown": 4}  # sorted names
    posts = {p["post_id"]: p for p in _lines(bucket, "posts")}
    assert posts[post_map["a-1"]]["category_id"] == cats["Music"]  # first value
    assert posts[post_map["b-2"]]["category_id"] == cats["Art"]  # first non-empty value
    assert posts[post_map["c-3"]]["category_id"] == cats["unknown"]
    assert posts[post_map["a-1"]]["description"] == "Alpha. first item"
    assert posts[post_map["b-2"]]["description"] == "Beta"
    assert posts[post_map["c-3"]]["description"] == ""
    assert posts[post_map["b-2"]]["created_at"] == "2026-01-01T10:00:00Z"  # +01:00 -> UTC
    assert {p["creator_id"] for p in posts.values()} == {CREATOR_ID_BASE}
    users = {u["user_id"]: u for u in _lines(bucket, "users")}
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
    assert sorted(e["ts"] for e in _lines(bucket, "events")) == [
        "2026-01-01T00:00:00.250000Z",
        "2026-01-01T00:00:01.000000Z",
    ]
    assert report["rows_dropped"] == {"bad_time": 1}
    assert report["user_ids"] == "kept" and report["user_id_map"] is None


def test_shift_to_and_future_events(tmp_path):
    path = _ratings(tmp_path, [(1, 10, 5, 946_684_800), (1, 11, 4, 946_684_800 + 3 * 86_400 + 5)])
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
        _ratings(tmp_path, rows),
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
    users_out = {u["user_id"]: u for u in _lines(bucket, "users")}
    # user 1: first 3 non-negative rows are items 3 (B), 1 (A), 2 (A) -> A
    assert users_out[1]["onboarding_categories"] == [1]
    assert (users_out[1]["headline"], users_out[1]["about"]) == ("Hi", "Loves A")
    assert users_out[1]["created_at"] == "2026-01-01T00:00:00Z"
    assert users_out[2]["onboarding_categories"] == [3]
    assert (users_out[2]["headline"], users_out[2]["about"]) == ("", "")
    assert 3 not in users_out  # no interactions: no creation time
    # one synthetic creator per category, created at its first post, onboarded on it
    posts = {p["post_id"]: p for p in _lines(bucket, "posts")}
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
    posts = {p["post_id"]: p["creator_id"] for p in _lines(bucket, "posts")}
    assert posts == {10: 2, 11: CREATOR_ID_BASE + 2}
    users = {u["user_id"]: u["created_at"] for u in _lines(bucket, "users")}
    # user 2 first acted at T0+200 but created post 10 (first seen at T0+100)
    assert users[2] == "2026-01-01T00:01:40Z"


WIDE_OPTS = {
    "source": "w",
    "user_col": "uid",
    "item_col": "vid",
    "time_col": "t",
    "time_unit": "ms",
    "row_event": "IMPRESSION",
    "event_flags": {
        "is_click": "VIEW",
        "long_view": ["VIEW_FULL", "VIEW"],  # VIEW twice for a row: one event
        "liked": "LIKE",
        "hate": "DISLIKE",
    },
    "dwell_col": "play_ms",
}


def _wide_log() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": [1, 1, 2, 2, 3],
            "vid": [10, 11, 10, 12, 11],
            "t": [T0 * 1000 + i * 60_000 for i in range(5)],
            "is_click": pd.array([1, 0, None, 1, 0], dtype="Int64"),
            "long_view": [1.0, 0.0, 0.0, np.nan, 0.0],
            "liked": ["yes", "", None, "TRUE", "0"],
            "hate": [False, False, True, False, False],
            "play_ms": [5000, 0, None, 1200, 0],
        }
    )


def test_wide_log_row_event_and_flag_columns(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    report = import_interactions(_wide_log(), bucket, options=WIDE_OPTS, now=NOW)
    events = {e["event_id"]: e["dwell_ms"] for e in _lines(bucket, "events")}
    assert events == {
        "w-0-IMPRESSION": 5000,
        "w-0-VIEW": 5000,
        "w-0-VIEW_FULL": 5000,
        "w-0-LIKE": 5000,
        "w-1-IMPRESSION": 0,
        "w-2-IMPRESSION": None,
        "w-2-DISLIKE": None,
        "w-3-IMPRESSION": 1200,
        "w-3-VIEW": 1200,
        "w-3-LIKE": 1200,
        "w-4-IMPRESSION": 0,
    }
    assert report["rows_dropped"] == {}
    assert report["events_by_type"]["VIEW"] == 2
    _assert_loads_cleanly(settings, bucket, report)

    # without row_event, a row with no true flag has no event
    flags_only = {**WIDE_OPTS, "row_event": None}
    report = import_interactions(
        _wide_log(), LocalLandingBucket(tmp_path / "l2"), options=flags_only, now=NOW
    )
    assert report["rows_dropped"] == {"no_flag": 2} and report["rows_imported"] == 3
    assert report["events_by_type"] == {"VIEW": 2, "VIEW_FULL": 1, "LIKE": 2, "DISLIKE": 1}
    # row_event alone: one event per row
    report = import_interactions(
        _wide_log(),
        LocalLandingBucket(tmp_path / "l3"),
        options={**WIDE_OPTS, "event_flags": None},
        now=NOW,
    )
    assert report["events_by_type"] == {"IMPRESSION": 5}


def test_several_interaction_files_are_one_log(tmp_path):
    log = _wide_log()
    log.iloc[:2].to_csv(tmp_path / "a.csv", index=False)
    log.iloc[2:].to_parquet(tmp_path / "b.parquet")
    one = LocalLandingBucket(tmp_path / "one")
    two = LocalLandingBucket(tmp_path / "two")
    import_interactions(log, one, options=WIDE_OPTS, now=NOW)
    report = import_interactions(
        [tmp_path / "a.csv", tmp_path / "b.parquet"], two, options=WIDE_OPTS, now=NOW
    )
    assert report["interaction_files"] == 2 and report["rows_read"] == 5
    # the row numbers continue across the files: the same ids and bytes as one table
    assert {b.key: two.read_bytes(b.key) for b in two.list()} == {
        b.key: one.read_bytes(b.key) for b in one.list()
    }
    log.iloc[2:].drop(columns="play_ms").to_parquet(tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"interactions\[1\] \(.*c.parquet\) table lacks"):
        import_interactions([tmp_path / "a.csv", tmp_path / "c.parquet"], two, options=WIDE_OPTS)


def test_wide_log_validation(tmp_path):
    bucket = LocalLandingBucket(tmp_path / "l")
    with pytest.raises(ValueError, match="exactly one"):
        ImportOptions.from_dict({**WIDE_OPTS, "event_col": "e"})
    with pytest.raises(ValueError, match="exactly one"):
        ImportOptions.from_dict(
            {"rating_col": "r", "rating_rules": "five_star", "row_event": "VIEW"}
        )
    with pytest.raises(ValueError, match="row_event: not in EVENT_TYPES"):
        ImportOptions.from_dict({"row_event": "SHOWN"})
    with pytest.raises(ValueError, match=r"event_flags\['is_follow'\]: not in EVENT_TYPES"):
        ImportOptions.from_dict({"event_flags": {"is_follow": "FOLLOW"}})
    with pytest.raises(ValueError, match="gives no event type"):
        ImportOptions.from_dict({"event_flags": {"is_follow": []}})
    with pytest.raises(ValueError, match="non-empty"):
        ImportOptions.from_dict({"event_flags": {}})
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['is_follow'\]"):
        import_interactions(
            _wide_log(), bucket, options={**WIDE_OPTS, "event_flags": {"is_follow": "LIKE"}}
        )
    with pytest.raises(ValueError, match="'liked': 'maybe' is not a flag"):
        import_interactions(
            _wide_log().assign(liked=["maybe", "", "", "", ""]), bucket, options=WIDE_OPTS
        )
    opts = ImportOptions.from_dict(WIDE_OPTS)
    assert opts.event_flags["is_click"] == ["VIEW"]  # normalised to lists
    assert ImportOptions.from_dict(json.loads(json.dumps(opts.to_dict()))) == opts


def test_created_col_gives_the_post_creation_time(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    rows = [(1, 10, 5, T0 + 100), (1, 11, 5, T0 + 200), (2, 12, 5, T0 + 300), (2, 13, 4, T0)]
    items = pd.DataFrame(
        {
            "item": [10, 11, 12, 13],
            "uploaded": ["2025-12-30", "2026-01-02T00:00:00Z", None, "soon"],
        }
    )
    opts = {**RATING_OPTS, "items_item_col": "item", "created_col": "uploaded"}
    report = import_interactions(
        _ratings(tmp_path, rows), bucket, items=items, options=opts, now=NOW
    )
    created = {p["post_id"]: p["created_at"] for p in _lines(bucket, "posts")}
    assert created == {
        10: "2025-12-30T00:00:00Z",  # the upload day
        11: "2026-01-01T00:03:20Z",  # uploaded after its first event: the first event
        12: "2026-01-01T00:05:00Z",  # missing
        13: "2026-01-01T00:00:00Z",  # unparseable = missing
    }
    assert report["created_at_fallback"] == {"missing": 2, "after_first_event": 1}
    _assert_loads_cleanly(settings, bucket, report, created_col=True)
    users = {u["user_id"]: u["created_at"] for u in _lines(bucket, "users")}
    assert users[CREATOR_ID_BASE + 1] == "2025-12-30T00:00:00Z"  # created with its first post

    # epoch units, and shift_to moves the creation times with the events
    items = pd.DataFrame({"item": [10, 11, 12, 13], "up": [T0 - 86_400] * 4})
    opts = {**opts, "created_col": "up", "created_unit": "s", "shift_to": "2026-02-01"}
    report = import_interactions(
        _ratings(tmp_path, rows),
        LocalLandingBucket(tmp_path / "l2"),
        items=items,
        options=opts,
        now=NOW,
    )
    posts = _lines(LocalLandingBucket(tmp_path / "l2"), "posts")
    assert {p["created_at"] for p in posts} == {"2026-01-31T00:00:00Z"}
    assert report["first_ts"] == "2026-02-01T00:00:00Z"
    assert report["created_at_fallback"] == {"missing": 0, "after_first_event": 0}
    with pytest.raises(ValueError, match="created_unit"):
        ImportOptions.from_dict({**opts, "created_unit": "days"})


def _creator_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    log = pd.DataFrame(
        {
            "user_id": [1, 2, 2, 3],
            "item_id": [10, 11, 10, 12],
            "timestamp": [T0 + 100, T0 + 200, T0 + 300, T0 + 400],
            "event": ["VIEW", "VIEW", "LIKE", "VIEW"],
        }
    )
    # author ids share numbers with user ids (author 2 is not user 2); item 12 has none
    items = pd.DataFrame({"item_id": [10, 11, 12], "author": [2, 7, None], "cat": list("xyx")})
    return log, items


def test_creator_none_and_item_modes(tmp_path):
    log, items = _creator_log()
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    opts = {"event_col": "event", "category_col": "cat", "creator": "none"}
    report = import_interactions(log, bucket, items=items, options=opts, now=NOW)
    assert {p["creator_id"] for p in _lines(bucket, "posts")} == {None}
    assert {u["user_id"] for u in _lines(bucket, "users")} == {1, 2, 3}  # no creator users
    assert (report["creators"], report["synthetic_creators"]) == (0, 0)
    assert report["posts_without_creator"] == 3
    _assert_loads_cleanly(settings, bucket, report)
    assert warehouse.read_table(settings, "raw.posts")["creator_id"].isna().all()

    settings = Settings(data_dir=tmp_path / "item")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    report = import_interactions(
        log, bucket, items=items, options={**opts, "creator": "item"}, now=NOW
    )
    posts = {p["post_id"]: p["creator_id"] for p in _lines(bucket, "posts")}
    assert posts == {k: importers.hash_id("item-creator", str(k)) for k in (10, 11, 12)}
    users = {u["user_id"]: u for u in _lines(bucket, "users")}
    assert users[posts[12]]["headline"] == "import: item 12"
    assert users[posts[12]]["onboarding_categories"] == [1]  # its item's category (x)
    assert (report["creators"], report["synthetic_creators"]) == (3, 3)
    _assert_loads_cleanly(settings, bucket, report)


def test_creator_column_in_its_own_id_space(tmp_path):
    log, items = _creator_log()
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    opts = {
        "event_col": "event",
        "category_col": "cat",
        "creator_col": "author",
        "creator_ids": "separate",
        "creator": "none",
    }
    report = import_interactions(log, bucket, items=items, options=opts, now=NOW)
    author = {k: importers.hash_id("creator", k) for k in ("2", "7")}
    assert report["creator_id_map"] == author
    posts = {p["post_id"]: p["creator_id"] for p in _lines(bucket, "posts")}
    assert posts == {10: author["2"], 11: author["7"], 12: None}
    users = {u["user_id"]: u["created_at"] for u in _lines(bucket, "users")}
    assert set(users) == {1, 2, 3, author["2"], author["7"]}  # written as users, apart
    assert users[2] == "2026-01-01T00:03:20Z"  # user 2 is not author 2: own first event
    assert users[author["2"]] == "2026-01-01T00:01:40Z"  # created with its first post
    _assert_loads_cleanly(settings, bucket, report)
    # default "users": the same numbers are user ids
    report = import_interactions(
        log,
        LocalLandingBucket(tmp_path / "l2"),
        items=items,
        options={**opts, "creator_ids": "users"},
    )
    assert report["creator_id_map"] is None
    posts = {
        p["post_id"]: p["creator_id"] for p in _lines(LocalLandingBucket(tmp_path / "l2"), "posts")
    }
    assert posts == {10: 2, 11: 7, 12: None}
    with pytest.raises(ValueError, match="needs creator_col"):
        ImportOptions.from_dict({"event_col": "e", "creator_ids": "separate"})
    with pytest.raises(ValueError, match="creator_ids must be one of"):
        ImportOptions.from_dict({"event_col": "e", "creator_col": "a", "creator_ids": "own"})
    with pytest.raises(ValueError, match="creator must be one of"):
        ImportOptions.from_dict({"event_col": "e", "creator": "author"})


def test_options_are_validated_data(tmp_path):
    with pytest.raises(ValueError, match="unknown import option"):
        ImportOptions.from_dict({"user_column": "u"})
    with pytest.raises(ValueError, match="exactly one"):
        ImportOptions.from_dict({"event_col": "e", "rating_col": "r", "rating_rules": "five_star"})
    with pytest.raises(ValueError, match="EVENT_TYPES"):
        ImportOptions.from_dict({"event_col": "e", "event_map": {"click": "CLICK"}})
    with pytest.raises(ValueError, match="needs rating_rules"):
        ImportOptions.from_dict({"rating_col": "r"})
    with pytest.raises(ValueError, match="media_type"):
        ImportOptions.from_dict({"event_col": "e", "media_type": "gif"})
    round_trip = ImportOptions.from_dict(json.loads(json.dumps(RATING_OPTS)))
    assert ImportOptions.from_dict(round_trip.to_dict()) == round_trip
    with pytest.raises(ValueError, match="lacks column"):
        import_interactions(
            _ratings(tmp_path, [(1, 1, 5, T0)]),
            LocalLandingBucket(tmp_path / "l"),
            options={**RATING_OPTS, "time_col": "when"},
        )
    with pytest.raises(ValueError, match="nothing to import"):
        import_interactions(
            _ratings(tmp_path, [(1, 1, 5, T0)]),
            LocalLandingBucket(tmp_path / "l"),
            options={**RATING_OPTS, "time_unit": "iso"},  # epoch ints are not ISO strings
        )


def _write_fake_movielens(d):
    d.mkdir()
    (d / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "21,Nothing (2000),(no genres listed)\n"
        "31,Never Rated (2001),Drama\n"
    )
    (d / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,11,2.5,964981247\n"
        "2,1,2.0,1445714994\n"
        "2,21,4.5,1445715000\n"
        "3,11,0.5,1500000000\n"
    )
    (d / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "2,1,pixar,1445714994\n"
        "3,1,Pixar,1445714995\n"
        "3,1,fun,1445714996\n"
        "2,11,politics,1445714997\n"
    )


def test_movielens_mapping_on_a_fake_dataset_loads_without_quarantine(tmp_path):
    d = tmp_path / "ml"
    _write_fake_movielens(d)
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    report = importers.import_movielens(d, bucket, now=NOW)
    assert report["events_by_type"] == {"VIEW": 5, "LIKE": 2, "DISLIKE": 2}
    assert (report["posts"], report["catalog_items_without_events"]) == (3, 1)
    assert report["users"] == 3 + 3  # 3 raters + one creator per first genre
    cats = {c["name"]: c["category_id"] for c in _lines(bucket, "categories")}
    assert set(cats) == {"Adventure", "Comedy", "(no genres listed)"}
    posts = {p["post_id"]: p for p in _lines(bucket, "posts")}
    assert posts[1]["description"] == (
        "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. "
        "Tags: pixar, fun"
    )
    assert posts[11]["description"].startswith("American President, The (1995). Genres: Comedy")
    assert posts[21]["description"] == "Nothing (2000)"
    assert posts[11]["category_id"] == cats["Comedy"] and posts[1]["media_type"] == "video"
    assert posts[1]["created_at"] == "2000-07-30T18:45:03Z"
    assert {e["event_id"] for e in _lines(bucket, "events") if e["user_id"] == 3} == {
        "movielens-4-VIEW",
        "movielens-4-DISLIKE",
    }
    _assert_loads_cleanly(settings, bucket, report)


def test_landing_files_load_into_the_warehouse_with_zero_quarantine(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    log = pd.DataFrame(
        {
            "u": [f"user-{i % 7}" for i in range(60)],
            "i": [f"item-{i % 11}" for i in range(60)],
            "t": [T0 * 1000 + i * 3_600_000 + 7 for i in range(60)],
            "e": ["click", "like", "skip", "report"] * 15,
            "d": [float(i * 100) if i % 3 else None for i in range(60)],
        }
    )
    items = pd.DataFrame(
        {
            "i": [f"item-{k}" for k in range(11)],
            "title": [f'Item {k} about "quotes", commas\nand newlines é' for k in range(11)],
            "tags": ["a;b", "b", None, "c;a", ";", "a", "b", "c", "a", "b", "c"],
        }
    )
    report = import_interactions(
        log,
        bucket,
        items=items,
        options={
            "source": "app",
            "user_col": "u",
            "item_col": "i",
            "time_col": "t",
            "time_unit": "ms",
            "event_col": "e",
            "event_map": {
                "click": ["IMPRESSION", "VIEW"],
                "like": "LIKE",
                "skip": "IMPRESSION",
                "report": ["DISLIKE", "REPORT"],
            },
            "dwell_col": "d",
            "text_cols": ["title", "tags"],
            "category_col": "tags",
            "category_sep": ";",
            "media_type": "image",
            "rows_per_file": 20,
        },
        now=NOW,
    )
    assert report["events"] == 15 * (2 + 1 + 1 + 2) and report["event_days"] == 3
    _assert_loads_cleanly(settings, bucket, report)
    users = warehouse.read_table(settings, "raw.users")
    assert users["onboarding_categories"].str.len().gt(0).sum() >= 7


def _assert_loads_cleanly(settings, bucket, report, created_col: bool = False) -> None:
    days = sorted({b.partition for b in bucket.list("events/")})
    loaded = warehouse.load_event_partitions(settings, bucket, days)
    assert (loaded.rows_loaded, loaded.rows_quarantined) == (report["events"], 0)
    for dataset, expected in (
        ("posts", report["posts"]),
        ("users", report["users"]),
        ("categories", report["categories"]),
    ):
        r = warehouse.load_dimension(settings, bucket, dataset)
        assert (r.rows_loaded, r.rows_quarantined) == (expected, 0), dataset
    assert warehouse.quarantine_rate(settings, "events")["quarantined"] == 0
    events = warehouse.read_table(settings, "raw.events")
    posts = warehouse.read_table(settings, "raw.posts")
    users = warehouse.read_table(settings, "raw.users")
    cats = warehouse.read_table(settings, "raw.categories")
    # referential integrity: what dbt would check
    assert set(events["user_id"]) <= set(users["user_id"])
    assert set(events["post_id"]) <= set(posts["post_id"])
    assert set(posts["creator_id"].dropna()) <= set(users["user_id"])  # null: unknown
    assert set(posts["category_id"]) <= set(cats["category_id"])
    assert events["event_id"].is_unique
    first_event = events.groupby("post_id")["ts"].min()
    created = posts.set_index("post_id")["created_at"]
    if created_col:  # the given creation time, never after the first event
        assert (created <= first_event).all()
    else:
        assert (created == first_event).all()


def test_cli_generic_and_movielens(tmp_path, capsys):
    path = _ratings(tmp_path, [(1, 10, 5, T0), (2, 10, 1, T0 + 5)])
    options = tmp_path / "opts.json"
    options.write_text(json.dumps({**RATING_OPTS, "rating_rules": "five_star"}))
    importers.main(
        [
            "--interactions",
            path,
            "--options",
            str(options),
            "--landing",
            str(tmp_path / "a"),
            "--source",
            "cli",
            "--report",
            str(tmp_path / "report.json"),
        ]
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["source"] == "cli" and report["events"] == 4
    assert '"events": 4' in capsys.readouterr().out
    importers.main(
        [
            "--interactions",
            path,
            "--user-col",
            "user",
            "--item-col",
            "item",
            "--time-col",
            "ts",
            "--rating-col",
            "rating",
            "--rating-rules",
            '[{"min": 3, "event": "LIKE"}]',
            "--landing",
            str(tmp_path / "b"),
        ]
    )
    assert [e["event_id"] for e in _lines(LocalLandingBucket(tmp_path / "b"), "events")] == [
        "import-0-LIKE"
    ]
    assert importers._parse_event_map("click=VIEW,like=VIEW+LIKE,hover=") == {
        "click": ["VIEW"],
        "like": ["VIEW", "LIKE"],
        "hover": None,
    }
    _write_fake_movielens(tmp_path / "ml")
    importers.main(
        ["movielens", "--dataset-dir", str(tmp_path / "ml"), "--landing", str(tmp_path / "c")]
    )
    assert len(_lines(LocalLandingBucket(tmp_path / "c"), "posts")) == 3


def test_cli_wide_log_from_two_files(tmp_path):
    log = _wide_log()
    log.iloc[:2].to_parquet(tmp_path / "a.parquet")
    log.iloc[2:].to_parquet(tmp_path / "b.parquet")
    importers.main(
        ["--interactions", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
        + ["--user-col", "uid", "--item-col", "vid", "--time-col", "t", "--time-unit", "ms"]
        + ["--row-event", "IMPRESSION", "--event-flags", "is_click=VIEW,hate=DISLIKE"]
        + ["--creator", "none", "--landing", str(tmp_path / "l")]
    )
    lines = _lines(LocalLandingBucket(tmp_path / "l"), "events")
    assert sorted(e["event_id"] for e in lines if e["event_type"] != "IMPRESSION") == [
        "import-0-VIEW",
        "import-2-DISLIKE",
        "import-3-VIEW",
    ]
    assert {p["creator_id"] for p in _lines(LocalLandingBucket(tmp_path / "l"), "posts")} == {None}


def _dataset_folder(root, config: dict):
    root.mkdir(parents=True, exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    log = _wide_log()
    log.iloc[:3].to_parquet(root / "data" / "part-0.parquet")
    log.iloc[3:].to_csv(root / "data" / "part-1.csv", index=False)
    pd.DataFrame(
        {"vid": [10, 11, 12], "title": ["Ten", "", "Twelve"], "up": ["2025-12-31"] * 3}
    ).to_csv(root / "items.csv", index=False)
    (root / importers.CONFIG_FILE).write_text(json.dumps(config))
    return root


DATASET = {
    "name": "tiny-feed",
    "interactions": ["data/part-0.parquet", "data/part-1.csv"],
    "items": "items.csv",
    "options": {
        **{k: v for k, v in WIDE_OPTS.items() if k != "source"},
        "items_item_col": "vid",
        "text_cols": ["title"],
        "created_col": "up",
        "creator": "none",
        "onboarding_first_n": 0,
    },
}


def test_import_dataset_folder(tmp_path):
    folder = _dataset_folder(tmp_path / "tiny", DATASET)
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    report = importers.import_dataset(folder, bucket, now=NOW)
    assert report["name"] == report["source"] == "tiny-feed"  # no source option: the name
    assert (report["first_day"], report["last_day"]) == ("2026-01-01", "2026-01-01")
    assert report["interaction_files"] == 2 and report["events"] == 11
    assert report["created_at_fallback"] == {"missing": 0, "after_first_event": 0}
    assert all(u["onboarding_categories"] == [] for u in _lines(bucket, "users"))
    _assert_loads_cleanly(settings, bucket, report, created_col=True)
    # the same log as import_interactions on the tables: the same files
    same = LocalLandingBucket(tmp_path / "same")
    import_interactions(
        _wide_log(),
        same,
        items=folder / "items.csv",
        options={**DATASET["options"], "source": "tiny-feed"},
        now=NOW,
    )
    assert {b.key: same.read_bytes(b.key) for b in same.list()} == {
        b.key: bucket.read_bytes(b.key) for b in bucket.list()
    }
    # absolute paths, an options override, and the CLI
    absolute = {**DATASET, "items": str(folder / "items.csv"), "name": "abs"}
    other = _dataset_folder(tmp_path / "abs", absolute)
    importers.main(
        ["dataset", "--dir", str(other), "--landing", str(tmp_path / "cli")]
        + ["--shift-to", "2026-02-01", "--report", str(tmp_path / "r.json")]
    )
    cli_report = json.loads((tmp_path / "r.json").read_text())
    assert (cli_report["name"], cli_report["first_day"]) == ("abs", "2026-02-01")


def test_import_dataset_errors(tmp_path):
    bucket = LocalLandingBucket(tmp_path / "l")
    with pytest.raises(FileNotFoundError, match="has no import.json"):
        importers.import_dataset(tmp_path, bucket)
    cases = [
        ({**DATASET, "interactions": ["data/part-0.parquet", "data/gone.csv"]}, FileNotFoundError,
         r"interactions\[1\] file 'data/gone.csv' not found"),
        ({**DATASET, "items": "nope.parquet"}, FileNotFoundError, "items file 'nope.parquet'"),
        ({**DATASET, "ratings": "r.csv"}, ValueError, r"unknown key\(s\) \['ratings'\]"),
        ({k: v for k, v in DATASET.items() if k != "name"}, ValueError, "'name' must be"),
        ({**DATASET, "interactions": []}, ValueError, "non-empty list"),
        ({**DATASET, "options": {**DATASET["options"], "colour": 1}}, ValueError,
         "unknown import option"),
        ({**DATASET, "name": "tiny feed"}, ValueError, "source must match"),
    ]  # fmt: skip
    for i, (config, error, message) in enumerate(cases):
        folder = _dataset_folder(tmp_path / f"case{i}", config)
        with pytest.raises(error, match=message):
            importers.import_dataset(folder, bucket, now=NOW)


def test_committed_benchmark_dataset_folders_are_valid():
    """benchmarks/datasets/*/import.json: known keys, valid options, relative data paths (the
    data itself is not in the repository, so it is not read here)."""
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "datasets"
    folders = sorted(p.parent for p in root.glob(f"*/{importers.CONFIG_FILE}"))
    assert [f.name for f in folders] == ["kuairand-pure-log-0425-0508", "movielens-latest-small"]
    for folder in folders:
        config = json.loads((folder / importers.CONFIG_FILE).read_text())
        assert set(config) <= {"name", "interactions", "items", "users", "options"}
        assert config["name"] == folder.name and (folder / "README.md").is_file()
        opts = ImportOptions.from_dict({"source": config["name"], **config["options"]})
        assert opts.onboarding_first_n == 0  # no onboarding leakage in a temporal benchmark
        files = config["interactions"] if isinstance(config["interactions"], list) else []
        for path in [*files, config.get("items")]:
            assert path is None or path.startswith("../../../../shared/datasets/")
    kuai = ImportOptions.from_dict(
        json.loads((root / "kuairand-pure-log-0425-0508" / importers.CONFIG_FILE).read_text())[
            "options"
        ]
    )
    # only id, creator, tag and upload date of the item table: never its statistics (leakage)
    item_cols = {kuai.items_item_col, kuai.creator_col, kuai.category_col, kuai.created_col}
    assert item_cols == {"video_id", "author_id", "tag", "upload_dt"} and not kuai.text_cols
    assert "is_follow" not in kuai.event_flags
