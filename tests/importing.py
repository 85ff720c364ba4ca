"""Shared by the importer tests (tests/test_importers*.py): the fixed times, option sets,
small logs, and the check that an import loads into the warehouse with zero quarantine."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import numpy as np
import pandas as pd

from socialrec.data import warehouse
from socialrec.data.landing import LocalLandingBucket

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def landed(bucket: LocalLandingBucket, dataset: str) -> list[dict]:
    out = []
    for blob in bucket.list(f"{dataset}/"):
        out += [json.loads(x) for x in gzip.decompress(bucket.read_bytes(blob.key)).splitlines()]
    return out


def ratings_csv(tmp_path, rows) -> str:
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


def wide_log() -> pd.DataFrame:
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


def write_fake_movielens(d):
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


def assert_loads_cleanly(settings, bucket, report, created_col: bool = False) -> None:
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
