"""Online features follow edits (socialrec.features.build, "Edits"): an edited post or profile
gets a row at its ``updated_at``, so the next incremental materialization carries the edit into
the online store, in both profiles (SQLite; Redis, which keeps only newer rows), while the
point-in-time reads of earlier instants keep their counts.

The end-to-end test edits a post through the landing bucket in the session's materialized
deployment (``e2e_materialized``), re-materializes only the assets the edit reaches, and checks
that the Feast online store, the Milvus index and the ranker's features of the post agree."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from pathlib import Path

import duckdb
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
    POST_CONTENT,
    POST_FEATURES,
    TIMESTAMP,
    USER_FEATURES,
    USER_HISTORY,
    USER_PROFILE,
    write_feature_tables,
)
from socialrec.settings import Settings
from socialrec.timeutil import iso
from tests.conftest import materialize_assets
from tests.test_features import (
    DIM_POSTS,
    DIM_USERS,
    INTERACTIONS,
    POST_DAILY,
    USER_DAILY,
    _ts,
    _unit,
)

FIRST_END = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)  # the first materialization
EDITED_AT = _ts("2026-01-12T09:30")  # post 10 and user 1 are edited then
SECOND_END = dt.datetime(2026, 1, 15, tzinfo=dt.UTC)  # the incremental one after the edit


def _tables(dim_users, dim_posts, user_emb, post_emb) -> dict[str, pd.DataFrame]:
    return {
        USER_FEATURES: build_user_features(dim_users, USER_DAILY),
        USER_PROFILE: build_user_profile(dim_users, user_emb),
        USER_HISTORY: build_user_history(INTERACTIONS, dim_posts, post_emb),
        POST_FEATURES: build_post_features(dim_posts, POST_DAILY),
        POST_CONTENT: build_post_content(dim_posts, post_emb),
    }


def _emb(id_col: str, vectors: dict[int, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({id_col: list(vectors), "embedding": list(vectors.values())})


@pytest.fixture(params=["local", pytest.param("gcp", marks=pytest.mark.gcp)])
def edit_settings(request, tmp_path, monkeypatch) -> Settings:
    """A fresh store of each profile: local (SQLite, parquet) or gcp (the stand-ins: Redis,
    BigQuery, the registry on GCS; a Redis database, datasets and registry of its own)."""
    if request.param == "gcp":
        standins = request.getfixturevalue("gcp_standins")
        for key, value in standins.items():
            monkeypatch.setenv(key, value)
        run = uuid.uuid4().hex[:8]
        monkeypatch.setenv("SOCIALREC_BIGQUERY_DATASET", f"online_edits_{run}")
        bucket = standins["SOCIALREC_GCS_BUCKET"]
        monkeypatch.setenv("SOCIALREC_FEAST_REGISTRY", f"gs://{bucket}/edits-{run}/registry.pb")
        redis = standins["SOCIALREC_REDIS_CONNECTION_STRING"]
        monkeypatch.setenv("SOCIALREC_REDIS_CONNECTION_STRING", f"{redis},db=5")
    settings = Settings(data_dir=tmp_path)
    settings.ensure_dirs()
    return settings


@pytest.mark.integration
def test_an_edit_reaches_the_online_store_and_keeps_the_past(edit_settings):
    settings = edit_settings
    user_emb = {1: _unit(1), 2: _unit(2)}
    post_emb = {10: _unit(10), 11: _unit(11), 12: _unit(12)}
    before = _tables(DIM_USERS, DIM_POSTS, _emb("user_id", user_emb), _emb("post_id", post_emb))
    write_feature_tables(settings, before)
    store = fs.feature_store(settings)
    fs.apply_definitions(store, feature_repo.all_definitions(settings))
    fs.materialize(store, FIRST_END)
    assert online_post_features(store, [10]).loc[10, "category_id"] == 3

    # the warehouse after the edit (dbt's dim_*: the latest version and its updated_at)
    dim_posts = DIM_POSTS.assign(updated_at=DIM_POSTS["created_at"])
    dim_posts.loc[dim_posts["post_id"] == 10, ["category_id", "updated_at"]] = [5, EDITED_AT]
    dim_users = DIM_USERS.assign(updated_at=DIM_USERS["created_at"])
    dim_users.loc[dim_users["user_id"] == 1, ["onboarding_categories", "updated_at"]] = [
        "4",
        EDITED_AT,
    ]
    user_emb[1], post_emb[10] = _unit(101), _unit(110)
    after = _tables(dim_users, dim_posts, _emb("user_id", user_emb), _emb("post_id", post_emb))
    # one more row per edited entity; nothing else moves
    for name in (POST_CONTENT, USER_PROFILE):
        assert len(after[name]) == len(before[name]) + 1, name
    edit = after[POST_FEATURES][after[POST_FEATURES][TIMESTAMP] == EDITED_AT]
    assert edit["post_id"].tolist() == [10] and edit["category_id"].tolist() == [5]
    assert edit["n_positives"].tolist() == [5]  # as of the edit: the Jan 5 daily row
    write_feature_tables(settings, after)
    written = fs.materialize(store, SECOND_END)  # incremental: (FIRST_END, SECOND_END]
    assert written[POST_CONTENT] == 1 and written[USER_PROFILE] == 1

    # Feast's own online read and the service's reader show the edit
    online = store.get_online_features(
        features=[
            "post_features:category_id",
            "post_features:n_positives",
            "post_content:description_embedding",
        ],
        entity_rows=[{"post_id": 10}, {"post_id": 11}],
    ).to_dict()
    assert online["category_id"] == [5, 7] and online["n_positives"] == [5, 0]
    np.testing.assert_allclose(online["description_embedding"][0], _unit(110), atol=1e-6)
    np.testing.assert_allclose(online["description_embedding"][1], _unit(11), atol=1e-6)
    posts = online_post_features(store, [10, 11])
    assert posts["category_id"].tolist() == [5, 7]
    users = online_user_features(store, [1, 2])
    assert users["onboarding_categories"].tolist() == ["4", "1"]
    np.testing.assert_allclose(users.loc[1, "profile_embedding"], _unit(101), atol=1e-6)

    # point in time: before the edit the counts are those of their day, the post still exists
    past = fs.historical_features(
        store,
        pd.DataFrame(
            {
                "post_id": [10, 10, 10],
                TIMESTAMP: [_ts("2026-01-01T12:00"), _ts("2026-01-04"), _ts("2026-01-13")],
            }
        ),
        ["post_features:n_positives", "post_features:category_id"],
    )
    assert past["n_positives"].tolist() == [0, 2, 5]
    assert past["category_id"].notna().all()


# --- end to end: the landing bucket -> dbt -> features -> Feast, Milvus, the ranker -----------
EDIT_ASSETS = (
    "raw_posts",
    "stg_posts",
    "dim_posts",
    "post_text_embeddings",
    "feature_tables",
    "feast_online_store",
    "post_index",
    # the ML sets follow dim_posts in the same dbt build (a post the session deleted, e.g. by
    # the fuzzer's /posts/delete, must leave them too: dbt's assert_ml_sets_exclude_deleted_posts)
    "ml_ranking_samples",
    "ml_retrieval_positives",
)
NEW_DESCRIPTION = "A slow braised lamb shoulder with preserved lemon and green olives"


def _post(env: dict) -> tuple[dict, int, int]:
    """A live post of the warehouse (its columns), another category of the data and the
    most active user."""
    path = Path(env["SOCIALREC_DATA_DIR"]) / "warehouse.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        posts = con.sql(
            "select post_id, creator_id, category_id, media_type, description, created_at "
            "from dim_posts where not is_deleted order by post_id"
        ).df()
        (user_id,) = con.execute(
            "select user_id from dim_users order by n_events desc limit 1"
        ).fetchone()
    post = posts.iloc[len(posts) // 2].to_dict()
    others = sorted(set(posts["category_id"]) - {post["category_id"]})
    return post, int(others[0]), int(user_id)


@contextlib.contextmanager
def _milvus(data_dir: Path):
    """The data dir's local Milvus server: the running one (the session's bento), else one
    started here and stopped after (the materialization's steps use it meanwhile)."""
    from socialrec.stores.milvus_server import LocalMilvusServer, running_uri

    uri = running_uri(data_dir)
    if uri is not None:
        yield uri
        return
    with LocalMilvusServer(data_dir) as server:
        yield server.uri


@pytest.mark.e2e
@pytest.mark.integration
@pytest.mark.timeout(900)
def test_an_edited_post_agrees_online_in_the_index_and_in_the_ranker(e2e_materialized):
    from socialrec.data.landing import encode_jsonl, landing_key, open_bucket
    from socialrec.features.ranking import ranking_features
    from socialrec.features.text import TextEncoder
    from socialrec.stores.index import PostIndex

    env = e2e_materialized
    data_dir = Path(env["SOCIALREC_DATA_DIR"])
    settings = Settings(data_dir=data_dir)
    post, category, user_id = _post(env)
    post_id = int(post["post_id"])
    now = dt.datetime.now(dt.UTC)
    line = {
        "post_id": post_id,
        "creator_id": None if pd.isna(post["creator_id"]) else int(post["creator_id"]),
        "category_id": category,
        "media_type": post["media_type"],
        "description": NEW_DESCRIPTION,
        "created_at": iso(post["created_at"]),
        "updated_at": iso(now),  # what POST /posts writes: the time of the edit
    }
    key = landing_key("posts", now.date(), f"edit-{now:%Y%m%dT%H%M%S%f}-{post_id}.jsonl.gz")
    open_bucket(str(settings.landing_uri)).write_bytes(key, encode_jsonl([line]))

    with _milvus(data_dir) as uri:
        seconds = materialize_assets(env, EDIT_ASSETS)
        print(f"re-materialized {len(EDIT_ASSETS)} assets in {seconds:.0f}s")
        with PostIndex(uri, settings.milvus_token) as index:
            indexed = index.fetch(settings.collection_alias, [post_id])
            indexed_text = index.fetch(settings.text_collection_alias, [post_id])
            text_vector = index.vectors(settings.text_collection_alias, [post_id])[post_id]

    expected = TextEncoder().encode([NEW_DESCRIPTION])[0]
    # the index
    assert [int(r["category_id"]) for r in indexed + indexed_text] == [category, category]
    np.testing.assert_allclose(text_vector, expected, atol=1e-4)
    # the online store: Feast's own read and the service's reader
    store = fs.feature_store(settings)
    online = store.get_online_features(
        features=["post_features:category_id", "post_content:description_embedding"],
        entity_rows=[{"post_id": post_id}],
    ).to_dict()
    assert online["category_id"] == [category]
    np.testing.assert_allclose(online["description_embedding"][0], expected, atol=1e-4)
    posts = online_post_features(store, [post_id])
    # the ranker's features of the post, from what the service reads
    assert posts["category_id"].tolist() == [category]
    users = online_user_features(store, [user_id])
    pairs = pd.DataFrame({"user_id": [user_id], "post_id": [post_id]})
    features = ranking_features(users, posts, pairs, now)
    assert features["post_category_id"].tolist() == [str(category)]
    for column, vector in (
        ("text_cosine", "profile_embedding"),
        ("history_cosine", "history_embedding"),
    ):
        user = np.asarray(users.loc[user_id, vector], np.float32)
        norm = np.linalg.norm(user) * np.linalg.norm(expected)
        want = float(user @ expected / norm) if norm > 0 else 0.0
        assert features[column].iloc[0] == pytest.approx(want, abs=1e-4), column
