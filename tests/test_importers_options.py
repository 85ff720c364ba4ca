"""Importer options (socialrec/data/importers): wide logs with flag columns, several files,
creation times, the creator modes and the validation of the options."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from socialrec.data import importers, warehouse
from socialrec.data.importers import CREATOR_ID_BASE, ImportOptions, import_interactions
from socialrec.data.landing import LocalLandingBucket
from socialrec.settings import Settings
from tests.importing import (
    NOW,
    RATING_OPTS,
    T0,
    WIDE_OPTS,
    assert_loads_cleanly,
    landed,
    ratings_csv,
    wide_log,
)


def test_wide_log_row_event_and_flag_columns(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    report = import_interactions(wide_log(), bucket, options=WIDE_OPTS, now=NOW)
    events = {e["event_id"]: e["dwell_ms"] for e in landed(bucket, "events")}
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
    assert_loads_cleanly(settings, bucket, report)

    # without row_event, a row with no true flag has no event
    flags_only = {**WIDE_OPTS, "row_event": None}
    report = import_interactions(
        wide_log(), LocalLandingBucket(tmp_path / "l2"), options=flags_only, now=NOW
    )
    assert report["rows_dropped"] == {"no_flag": 2} and report["rows_imported"] == 3
    assert report["events_by_type"] == {"VIEW": 2, "VIEW_FULL": 1, "LIKE": 2, "DISLIKE": 1}
    # row_event alone: one event per row
    report = import_interactions(
        wide_log(),
        LocalLandingBucket(tmp_path / "l3"),
        options={**WIDE_OPTS, "event_flags": None},
        now=NOW,
    )
    assert report["events_by_type"] == {"IMPRESSION": 5}


def test_several_interaction_files_are_one_log(tmp_path):
    log = wide_log()
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
            wide_log(), bucket, options={**WIDE_OPTS, "event_flags": {"is_follow": "LIKE"}}
        )
    with pytest.raises(ValueError, match="'liked': 'maybe' is not a flag"):
        import_interactions(
            wide_log().assign(liked=["maybe", "", "", "", ""]), bucket, options=WIDE_OPTS
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
        ratings_csv(tmp_path, rows), bucket, items=items, options=opts, now=NOW
    )
    created = {p["post_id"]: p["created_at"] for p in landed(bucket, "posts")}
    assert created == {
        10: "2025-12-30T00:00:00Z",  # the upload day
        11: "2026-01-01T00:03:20Z",  # uploaded after its first event: the first event
        12: "2026-01-01T00:05:00Z",  # missing
        13: "2026-01-01T00:00:00Z",  # unparseable = missing
    }
    assert report["created_at_fallback"] == {"missing": 2, "after_first_event": 1}
    assert_loads_cleanly(settings, bucket, report, created_col=True)
    users = {u["user_id"]: u["created_at"] for u in landed(bucket, "users")}
    assert users[CREATOR_ID_BASE + 1] == "2025-12-30T00:00:00Z"  # created with its first post

    # epoch units, and shift_to moves the creation times with the events
    items = pd.DataFrame({"item": [10, 11, 12, 13], "up": [T0 - 86_400] * 4})
    opts = {**opts, "created_col": "up", "created_unit": "s", "shift_to": "2026-02-01"}
    report = import_interactions(
        ratings_csv(tmp_path, rows),
        LocalLandingBucket(tmp_path / "l2"),
        items=items,
        options=opts,
        now=NOW,
    )
    posts = landed(LocalLandingBucket(tmp_path / "l2"), "posts")
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
    assert {p["creator_id"] for p in landed(bucket, "posts")} == {None}
    assert {u["user_id"] for u in landed(bucket, "users")} == {1, 2, 3}  # no creator users
    assert (report["creators"], report["synthetic_creators"]) == (0, 0)
    assert report["posts_without_creator"] == 3
    assert_loads_cleanly(settings, bucket, report)
    assert warehouse.read_table(settings, "raw.posts")["creator_id"].isna().all()

    settings = Settings(data_dir=tmp_path / "item")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    report = import_interactions(
        log, bucket, items=items, options={**opts, "creator": "item"}, now=NOW
    )
    posts = {p["post_id"]: p["creator_id"] for p in landed(bucket, "posts")}
    assert posts == {k: importers.hash_id("item-creator", str(k)) for k in (10, 11, 12)}
    users = {u["user_id"]: u for u in landed(bucket, "users")}
    assert users[posts[12]]["headline"] == "import: item 12"
    assert users[posts[12]]["onboarding_categories"] == [1]  # its item's category (x)
    assert (report["creators"], report["synthetic_creators"]) == (3, 3)
    assert_loads_cleanly(settings, bucket, report)


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
    posts = {p["post_id"]: p["creator_id"] for p in landed(bucket, "posts")}
    assert posts == {10: author["2"], 11: author["7"], 12: None}
    users = {u["user_id"]: u["created_at"] for u in landed(bucket, "users")}
    assert set(users) == {1, 2, 3, author["2"], author["7"]}  # written as users, apart
    assert users[2] == "2026-01-01T00:03:20Z"  # user 2 is not author 2: own first event
    assert users[author["2"]] == "2026-01-01T00:01:40Z"  # created with its first post
    assert_loads_cleanly(settings, bucket, report)
    # default "users": the same numbers are user ids
    report = import_interactions(
        log,
        LocalLandingBucket(tmp_path / "l2"),
        items=items,
        options={**opts, "creator_ids": "users"},
    )
    assert report["creator_id_map"] is None
    posts = {
        p["post_id"]: p["creator_id"] for p in landed(LocalLandingBucket(tmp_path / "l2"), "posts")
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
            ratings_csv(tmp_path, [(1, 1, 5, T0)]),
            LocalLandingBucket(tmp_path / "l"),
            options={**RATING_OPTS, "time_col": "when"},
        )
    with pytest.raises(ValueError, match="nothing to import"):
        import_interactions(
            ratings_csv(tmp_path, [(1, 1, 5, T0)]),
            LocalLandingBucket(tmp_path / "l"),
            options={**RATING_OPTS, "time_unit": "iso"},  # epoch ints are not ISO strings
        )
