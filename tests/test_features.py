"""The Feast layer for real: point-in-time feature histories -> apply -> materialize -> online
reads, and the training frames (DuckDB offline store over parquet, SQLite online store)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import feature_repo
from socialrec.features import store as fs
from socialrec.features.build import (
    build_post_content,
    build_post_features,
    build_user_features,
    build_user_history,
    build_user_profile,
)
from socialrec.features.online import online_post_features, online_user_features
from socialrec.features.tables import (
    ENTITY_SERVICES,
    POST_CONTENT,
    POST_FEATURES,
    POST_SERVICE,
    SCHEMAS,
    TIMESTAMP,
    USER_FEATURES,
    USER_HISTORY,
    USER_PROFILE,
    USER_SERVICE,
    feature_refs,
    read_feature_table,
    write_feature_tables,
)
from socialrec.settings import TEXT_EMBEDDING_DIM, Settings
from socialrec.training import retrieval as training

pytestmark = pytest.mark.integration


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=TEXT_EMBEDDING_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


DIM_USERS = pd.DataFrame(
    {
        "user_id": [1, 2],
        "created_at": [_ts("2026-01-01T08:00"), _ts("2026-01-03T00:00")],
        "onboarding_categories": ["3,7", "1"],
    }
)
# what dbt's user_daily_activity holds: cumulative counts up to each day's end
USER_DAILY = pd.DataFrame(
    {
        "user_id": [1, 1, 2],
        "day": pd.to_datetime(["2026-01-02", "2026-01-05", "2026-01-04"]).date,
        "valid_from": [_ts("2026-01-03"), _ts("2026-01-06"), _ts("2026-01-05")],
        "n_events": [5, 9, 2],
        "n_impressions": [4, 6, 2],
        "n_positives": [1, 3, 0],
        "n_negatives": [0, 0, 0],
        "positive_rate": [0.25, 0.5, 0.0],
    }
)
DIM_POSTS = pd.DataFrame(
    {
        "post_id": [10, 11, 12],
        "creator_id": [2, 2, 1],
        "category_id": [3, 7, 1],
        "media_type": ["video", "text", "image"],
        "created_at": [_ts("2026-01-01"), _ts("2026-01-02"), _ts("2026-01-04")],
    }
)
POST_DAILY = pd.DataFrame(
    {
        "post_id": [10, 10],
        "day": pd.to_datetime(["2026-01-02", "2026-01-04"]).date,
        "valid_from": [_ts("2026-01-03"), _ts("2026-01-05")],
        "n_events": [7, 12],
        "n_impressions": [5, 8],
        "n_positives": [2, 5],
        "n_negatives": [0, 1],
        "positive_rate": [0.4, 0.625],
    }
)


# fct_interactions rows behind USER_HISTORY (user 1 likes post 10 on day 2, post 11 on day 5)
INTERACTIONS = pd.DataFrame(
    {
        "user_id": [1, 1, 1, 1, 2],
        "post_id": [10, 10, 12, 11, 12],
        "ts": [
            _ts("2026-01-02T09:00"),
            _ts("2026-01-02T09:01"),
            _ts("2026-01-02T10:00"),
            _ts("2026-01-05T12:00"),
            _ts("2026-01-04T12:00"),
        ],
        "is_positive": [0, 1, 0, 1, 0],
    }
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("feast"))
    settings.ensure_dirs()
    user_emb = pd.DataFrame({"user_id": [1, 2], "embedding": [_unit(1), _unit(2)]})
    post_emb = pd.DataFrame(
        {"post_id": [10, 11, 12], "embedding": [_unit(i) for i in (10, 11, 12)]}
    )
    tables = {
        USER_FEATURES: build_user_features(DIM_USERS, USER_DAILY),
        USER_PROFILE: build_user_profile(DIM_USERS, user_emb),
        USER_HISTORY: build_user_history(INTERACTIONS, DIM_POSTS, post_emb),
        POST_FEATURES: build_post_features(DIM_POSTS, POST_DAILY),
        POST_CONTENT: build_post_content(DIM_POSTS, post_emb),
    }
    written = write_feature_tables(settings, tables)
    store = fs.feature_store(settings)
    names = fs.apply_definitions(store, feature_repo.all_definitions(settings))
    materialized = fs.materialize(store, dt.datetime(2026, 1, 10, tzinfo=dt.UTC))
    return {
        "settings": settings,
        "store": store,
        "names": names,
        "tables": tables,
        "written": written,
        "materialized": materialized,
    }


def test_histories_start_at_creation_and_follow_the_daily_activity(store):
    users = store["tables"][USER_FEATURES]
    u1 = users[users["user_id"] == 1].sort_values(TIMESTAMP)
    assert u1[TIMESTAMP].tolist() == [
        _ts("2026-01-01T08:00"),
        _ts("2026-01-03"),
        _ts("2026-01-06"),
    ]
    assert u1["n_events"].tolist() == [0, 5, 9]
    assert set(u1["onboarding_categories"]) == {"3,7"}
    posts = store["tables"][POST_FEATURES]
    assert len(posts[posts["post_id"] == 11]) == 1  # no activity: the creation row only
    assert store["written"] == {
        USER_FEATURES: 5,
        USER_PROFILE: 2,
        USER_HISTORY: 3,
        POST_FEATURES: 9,  # 5 + the rows where post 10's 1- and 7-day windows empty
        POST_CONTENT: 3,
    }
    again = read_feature_table(store["settings"], POST_CONTENT)
    np.testing.assert_allclose(again["description_embedding"].iloc[0], _unit(10), atol=1e-6)


def test_user_history_is_cumulative_per_day_and_point_in_time(store):
    hist = store["tables"][USER_HISTORY]
    u1 = hist[hist["user_id"] == 1].sort_values(TIMESTAMP)
    assert u1[TIMESTAMP].tolist() == [_ts("2026-01-03"), _ts("2026-01-06")]
    # day 2: 2 events (1 positive) on post 10 (category 3), 1 on post 12 (category 1)
    assert u1["category_counts"].tolist() == ["1:0:1,3:1:2", "1:0:1,3:1:2,7:1:1"]
    assert u1["creator_positives"].tolist() == ["2:1", "2:2"]  # posts 10 and 11: creator 2
    np.testing.assert_allclose(u1["history_embedding"].iloc[0], _unit(10), atol=1e-6)
    np.testing.assert_allclose(
        u1["history_embedding"].iloc[1], (_unit(10) + _unit(11)) / 2, atol=1e-6
    )
    # the latest distinct posts, newest first: of any event, and of the positive ones
    assert u1["recent_post_ids"].tolist() == ["12,10", "11,12,10"]
    assert u1["recent_positive_ids"].tolist() == ["10", "11,10"]
    u2 = hist[hist["user_id"] == 2]
    assert u2["creator_positives"].tolist() == [""] and not u2["history_embedding"].iloc[0].any()
    assert (u2["recent_post_ids"].tolist(), u2["recent_positive_ids"].tolist()) == (["12"], [""])
    # read back through Feast as of a moment: day 5's like is not visible on day 5
    entity = pd.DataFrame(
        {"user_id": [1, 1], TIMESTAMP: [_ts("2026-01-05T23:00"), _ts("2026-01-06")]}
    )
    out = fs.historical_features(
        store["store"],
        entity,
        ["user_history:creator_positives", "user_history:recent_positive_ids"],
    )
    assert out["creator_positives"].tolist() == ["2:1", "2:2"]
    assert out["recent_positive_ids"].tolist() == ["10", "11,10"]


def test_recent_posts_keep_the_latest_distinct_ones():
    ts = [_ts("2026-01-02T09:00") + pd.Timedelta(minutes=i) for i in range(6)]
    events = pd.DataFrame(
        {
            "user_id": [1] * 6,
            "post_id": [10, 11, 10, 12, 11, 10],
            "ts": ts,
            "is_positive": [1, 0, 0, 1, 1, 0],
        }
    )
    hist = build_user_history(events, DIM_POSTS, None, recent_posts=2)
    assert hist["recent_post_ids"].tolist() == ["10,11"]  # 10 (latest), 11; 12 is third
    assert hist["recent_positive_ids"].tolist() == ["11,12"]


def test_post_windows_count_recent_events_and_empty_later(store):
    posts = store["tables"][POST_FEATURES]
    p10 = posts[posts["post_id"] == 10].set_index(TIMESTAMP).sort_index()
    # cumulative events: 7 valid from 01-03, 12 valid from 01-05
    assert p10.loc[_ts("2026-01-03"), "n_events_1d"] == 7
    assert p10.loc[_ts("2026-01-05"), "n_events_1d"] == 5  # 12 - 7 (the 01-04 row)
    assert p10.loc[_ts("2026-01-05"), "n_events_7d"] == 12
    assert p10.loc[_ts("2026-01-05"), "positive_rate_7d"] == pytest.approx(5 / 12)
    assert p10.loc[_ts("2026-01-06"), "n_events_1d"] == 0  # the window emptied
    assert p10.loc[_ts("2026-01-12"), "n_events_7d"] == 0
    assert p10.loc[_ts("2026-01-12"), "n_positives"] == 5  # cumulative counts stay


def test_apply_registers_the_repo(store):
    s = store["store"]
    assert {"user", "post", "ranking_v1", "retrieval_v1"} <= set(store["names"])
    assert {v.name for v in s.list_feature_views()} == set(SCHEMAS)
    assert {f.name for f in s.list_feature_services()} == {
        "ranking_v1",
        "retrieval_v1",
        USER_SERVICE,
        POST_SERVICE,
    }
    # an entity's service holds every feature of its views (what its reads return)
    for entity, name in ENTITY_SERVICES.items():
        service = s.get_feature_service(name)
        refs = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
        assert refs == feature_refs(entity)


def test_online_reads_the_latest_values_of_both_views_in_one_call(store):
    assert store["materialized"][USER_FEATURES] == 2
    counts = fs.online_row_counts(store["settings"])
    assert counts == {
        USER_FEATURES: 2,
        USER_PROFILE: 2,
        USER_HISTORY: 2,
        POST_FEATURES: 3,
        POST_CONTENT: 3,
    }
    feast_store = store["store"]
    calls = []
    provider = feast_store._get_provider()  # the store's provider: its online store
    real = provider.online_read
    provider.online_read = lambda **kw: calls.append(kw) or real(**kw)
    try:
        users = online_user_features(feast_store, [1, 999, 2])
        posts = online_post_features(feast_store, [12, 10])
    finally:
        del provider.online_read
    # one online-store read per feature view of each entity's named feature service, for the
    # whole batch at once (what get_online_features does per view)
    views = {
        name: [p.name for p in feast_store.get_feature_service(name).feature_view_projections]
        for name in (USER_SERVICE, POST_SERVICE)
    }
    assert [c["table"].name for c in calls] == views[USER_SERVICE] + views[POST_SERVICE]
    assert [len(c["entity_keys"]) for c in calls] == [3] * len(views[USER_SERVICE]) + [2] * len(
        views[POST_SERVICE]
    )
    # the same values and the same found/missing as Feast's get_online_features
    for frame, service, key, ids in (
        (users, USER_SERVICE, "user_id", [1, 999, 2]),
        (posts, POST_SERVICE, "post_id", [12, 10]),
    ):
        expected = feast_store.get_online_features(
            features=feast_store.get_feature_service(service),
            entity_rows=[{key: i} for i in ids],
        ).to_dict()
        for column, values in expected.items():
            if column == key:
                continue
            for got, want in zip(frame[column].tolist(), values, strict=True):
                if isinstance(want, list) or isinstance(got, np.ndarray):
                    np.testing.assert_allclose(
                        np.asarray(got, np.float32), np.asarray(want or np.zeros_like(got))
                    )
                elif want is None:
                    assert got is None or pd.isna(got), (column, got)
                else:
                    assert got == pytest.approx(want), (column, got, want)
    assert users.index.tolist() == [1, 999, 2]
    assert users["found"].tolist() == [True, False, True]
    assert users.loc[1, "n_events"] == 9 and users.loc[1, "onboarding_categories"] == "3,7"
    # the neighbours source's history columns are served online too
    assert users.loc[1, "recent_post_ids"] == "11,12,10"
    assert users.loc[1, "recent_positive_ids"] == "11,10"
    np.testing.assert_allclose(users.loc[2, "profile_embedding"], _unit(2), atol=1e-6)
    assert not users.loc[999, "profile_embedding"].any()
    assert posts.loc[10, "n_positives"] == 5 and posts.loc[12, "category_id"] == 1
    assert posts.loc[10, "media_type"] == "video" and posts.index.tolist() == [12, 10]


def test_point_in_time_join_never_reads_the_future(store):
    entity = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2],
            TIMESTAMP: [
                _ts("2026-01-01T07:00"),  # before the user existed
                _ts("2026-01-02T23:00"),  # day 2's events are not over yet
                _ts("2026-01-03T00:00"),  # day 2 ended
                _ts("2026-01-09T12:00"),
                _ts("2026-01-04T12:00"),
            ],
        }
    )
    out = fs.historical_features(store["store"], entity, ["user_features:n_events"])
    assert pd.isna(out["n_events"].iloc[0])
    assert out["n_events"].iloc[1:].tolist() == [0, 5, 9, 0]


def test_training_frames_are_point_in_time(store):
    calls = []
    real = store["store"].get_historical_features
    store["store"].get_historical_features = lambda **kw: calls.append(kw) or real(**kw)
    try:
        posts = training.latest_features(store["store"], "post", [12, 10, 10, 77])
    finally:
        del store["store"].get_historical_features
    assert calls[0]["features"].name == POST_SERVICE  # through the post's feature service
    assert posts["post_id"].tolist() == [12, 10, 77]
    by_id = posts.set_index("post_id")
    assert by_id.loc[10, "n_positives"] == 5 and pd.isna(by_id.loc[77, "category_id"])
    np.testing.assert_allclose(
        np.asarray(by_id.loc[10, "description_embedding"], dtype=np.float32), _unit(10), atol=1e-6
    )
    early = training.latest_features(store["store"], "post", [10], as_of=_ts("2026-01-04"))
    assert early["n_positives"].tolist() == [2]

    samples = pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "post_id": [10, 10, 12],
            "ts": [_ts("2026-01-02T10:00"), _ts("2026-01-06T10:00"), _ts("2026-01-04T10:00")],
        }
    )
    users, posts = training.ranker_frames(store["store"], samples)
    assert users["user_id"].tolist() == [1, 1, 2] and posts["post_id"].tolist() == [10, 10, 12]
    assert users["n_events"].tolist() == [0, 9, 0]
    assert posts["n_positives"].tolist() == [0, 5, 0]
    from socialrec.features.ranking import ranking_features

    feats = ranking_features(users, posts, samples, samples["ts"], aligned=True)
    assert feats["post_positive_rate"].tolist() == pytest.approx([0.0, 0.625, 0.0])
    assert feats["category_in_onboarding"].tolist() == [1, 1, 1]
