"""The Feast layer for real: feature tables -> apply -> materialize -> online reads, and the
point-in-time training frames (DuckDB offline store over parquet, SQLite online store)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import feature_repo
from socialrec import features as fs
from socialrec import training
from socialrec.settings import TEXT_EMBEDDING_DIM, Settings

pytestmark = pytest.mark.integration

T1 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 1, 9, tzinfo=dt.UTC)


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=TEXT_EMBEDDING_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _dim_users(n_events: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [1, 2],
            "onboarding_categories": ["3,7", "1"],
            "n_events": n_events,
            "n_impressions": [10, 4],
            "n_positives": [3, 1],
            "positive_rate": [0.3, 0.25],
        }
    )


def _dim_posts(n_positives: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "post_id": [10, 11, 12],
            "creator_id": [2, 2, 1],
            "category_id": [3, 7, 1],
            "media_type": ["video", "text", "image"],
            "created_at": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
            "n_impressions": [20, 5, 0],
            "n_positives": n_positives,
            "positive_rate": [0.25, 0.2, 0.0],
        }
    )


def _emb(ids: list[int], col: str) -> pd.DataFrame:
    return pd.DataFrame({col: ids, "embedding": [_unit(i) for i in ids]})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two snapshots: T1, and T2 where user 1 and post 10 changed (the others did not)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("feast"))
    settings.ensure_dirs()
    user_emb, post_emb = _emb([1, 2], "user_id"), _emb([10, 11, 12], "post_id")
    first = fs.write_feature_tables(
        settings,
        fs.build_user_features(_dim_users([5, 2]), user_emb, T1),
        fs.build_post_features(_dim_posts([5, 1, 0]), post_emb, T1),
    )
    second = fs.write_feature_tables(
        settings,
        fs.build_user_features(_dim_users([9, 2]), user_emb, T2),
        fs.build_post_features(_dim_posts([8, 1, 0]), post_emb, T2),
    )
    store = fs.feature_store(settings)
    names = fs.apply_definitions(store, feature_repo.all_definitions(settings))
    written = fs.materialize(store, dt.datetime(2026, 1, 10, tzinfo=dt.UTC))
    return {
        "settings": settings,
        "store": store,
        "names": names,
        "first": first,
        "second": second,
        "written": written,
    }


def test_snapshots_append_only_changed_rows(store):
    assert store["first"] == {
        fs.USER_FEATURES: {"rows": 2, "appended": 2},
        fs.POST_FEATURES: {"rows": 3, "appended": 3},
    }
    assert store["second"] == {
        fs.USER_FEATURES: {"rows": 3, "appended": 1},
        fs.POST_FEATURES: {"rows": 4, "appended": 1},
    }


def test_apply_registers_the_repo(store):
    s = store["store"]
    assert {"user", "post", "user_features", "post_features", "ranking_v1"} <= set(store["names"])
    assert {v.name for v in s.list_feature_views()} == {"user_features", "post_features"}
    assert {f.name for f in s.list_feature_services()} == {"ranking_v1", "retrieval_v1"}


def test_online_reads_latest_values_in_one_call(store):
    assert store["written"] == {fs.USER_FEATURES: 2, fs.POST_FEATURES: 3}
    assert fs.online_row_counts(store["settings"]) == {fs.USER_FEATURES: 2, fs.POST_FEATURES: 3}
    users = fs.online_user_features(store["store"], [1, 999, 2])
    assert users.index.tolist() == [1, 999, 2]
    assert users["found"].tolist() == [True, False, True]
    assert users.loc[1, "n_events"] == 9  # the T2 snapshot
    assert users.loc[1, "onboarding_categories"] == "3,7"
    np.testing.assert_allclose(users.loc[2, "profile_embedding"], _unit(2), atol=1e-6)
    assert not users.loc[999, "profile_embedding"].any()
    posts = fs.online_post_features(store["store"], [12, 10])
    assert posts.loc[10, "n_positives"] == 8 and posts.loc[12, "category_id"] == 1
    assert posts.loc[10, "media_type"] == "video" and posts.index.tolist() == [12, 10]


def test_point_in_time_join_never_reads_the_future(store):
    entity = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2],
            fs.TIMESTAMP: pd.to_datetime(
                ["2026-01-04T00:00", "2026-01-06T00:00", "2026-01-09T12:00", "2026-01-06T00:00"],
                utc=True,
            ),
        }
    )
    out = fs.historical_features(store["store"], entity, ["user_features:n_events"])
    # before any snapshot: nothing; between: T1's value; after T2: T2's value
    assert pd.isna(out["n_events"].iloc[0])
    assert out["n_events"].iloc[1:].tolist() == [5, 9, 2]


def test_latest_features_are_the_training_frames(store):
    posts = training.latest_features(store["store"], fs.POST_FEATURES, [12, 10, 10, 77])
    assert posts["post_id"].tolist() == [12, 10, 77]
    assert posts.set_index("post_id").loc[10, "n_positives"] == 8
    assert pd.isna(posts.set_index("post_id").loc[77, "category_id"])
    early = training.latest_features(store["store"], fs.POST_FEATURES, [10], as_of=T1)
    assert early["n_positives"].tolist() == [5]
    np.testing.assert_allclose(
        np.asarray(early["description_embedding"].iloc[0], dtype=np.float32), _unit(10), atol=1e-6
    )
