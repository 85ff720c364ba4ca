"""Feast in the gcp profile, against the stand-ins (``gcp_standins``): feature tables in the
BigQuery emulator, the registry on the GCS emulator, materialization to a real Redis, online
reads through the service's reader, and training's point-in-time reads on the BigQuery offline
store, compared with the local profile's stores (DuckDB, SQLite) on the same tables.

The module gets its own Redis database, registry object and BigQuery datasets, so that other
users of the session's stand-ins do not see its rows (nor it theirs)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import feature_repo
from socialrec.data import bigquery
from socialrec.features import gcp
from socialrec.features import store as fs
from socialrec.features.build import (
    build_post_content,
    build_post_features,
    build_user_features,
    build_user_history,
    build_user_profile,
)
from socialrec.features.online import (
    online_post_features,
    online_user_features,
    write_online_post,
)
from socialrec.features.tables import (
    POST_CONTENT,
    POST_FEATURES,
    POST_SERVICE,
    SCHEMAS,
    TIMESTAMP,
    USER_FEATURES,
    USER_HISTORY,
    USER_PROFILE,
    USER_SERVICE,
    read_feature_table,
    write_feature_tables,
)
from socialrec.settings import Settings
from socialrec.training import retrieval as training
from tests.test_features import (
    DIM_POSTS,
    DIM_USERS,
    INTERACTIONS,
    POST_DAILY,
    USER_DAILY,
    _ts,
    _unit,
)

pytestmark = [pytest.mark.gcp, pytest.mark.integration]

END = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
DATASET = "feast_gcp_test"  # the module's BigQuery datasets: feast_gcp_test_features, ..._feast
REGISTRY_OBJECT = "feast-gcp-test/registry.pb"  # the module's registry in the bucket
REDIS_DB = 3  # the module's Redis database
EXPECTED_ONLINE = {
    USER_FEATURES: 2,
    USER_PROFILE: 2,
    USER_HISTORY: 2,
    POST_FEATURES: 3,
    POST_CONTENT: 3,
}


def _tables() -> dict[str, pd.DataFrame]:
    user_emb = pd.DataFrame({"user_id": [1, 2], "embedding": [_unit(1), _unit(2)]})
    post_emb = pd.DataFrame(
        {"post_id": [10, 11, 12], "embedding": [_unit(i) for i in (10, 11, 12)]}
    )
    return {
        USER_FEATURES: build_user_features(DIM_USERS, USER_DAILY),
        USER_PROFILE: build_user_profile(DIM_USERS, user_emb),
        USER_HISTORY: build_user_history(INTERACTIONS, DIM_POSTS, post_emb),
        POST_FEATURES: build_post_features(DIM_POSTS, POST_DAILY),
        POST_CONTENT: build_post_content(DIM_POSTS, post_emb),
    }


@pytest.fixture(scope="module")
def stores(gcp_standins, tmp_path_factory):
    """The same tiny feature tables in a gcp store and in a local one, both materialized."""
    tables = _tables()
    local = Settings(data_dir=tmp_path_factory.mktemp("feast-local"))
    local.ensure_dirs()
    write_feature_tables(local, tables)
    local_store = fs.feature_store(local)
    fs.apply_definitions(local_store, feature_repo.all_definitions(local))
    fs.materialize(local_store, END)

    with pytest.MonkeyPatch.context() as mp:
        for key, value in gcp_standins.items():
            mp.setenv(key, value)
        mp.setenv("SOCIALREC_BIGQUERY_DATASET", DATASET)
        bucket = gcp_standins["SOCIALREC_GCS_BUCKET"]
        mp.setenv("SOCIALREC_FEAST_REGISTRY", f"gs://{bucket}/{REGISTRY_OBJECT}")
        # a Redis database of its own (Feast's connection string: host:port,db=N)
        redis = gcp_standins["SOCIALREC_REDIS_CONNECTION_STRING"]
        mp.setenv("SOCIALREC_REDIS_CONNECTION_STRING", f"{redis},db={REDIS_DB}")
        settings = Settings(data_dir=tmp_path_factory.mktemp("feast-gcp"))
        settings.ensure_dirs()
        written = write_feature_tables(settings, tables)
        store = fs.feature_store(settings)
        names = fs.apply_definitions(store, feature_repo.all_definitions(settings))
        materialized = fs.materialize(store, END)
        yield {
            "settings": settings,
            "store": store,
            "local": local_store,
            "tables": tables,
            "written": written,
            "names": names,
            "materialized": materialized,
            "bucket": bucket,
        }


def _same(got, want, where) -> None:
    """Equal values: arrays close, nulls both null, numbers approximately."""
    if isinstance(want, (list, np.ndarray)) or isinstance(got, (list, np.ndarray)):
        np.testing.assert_allclose(
            np.asarray(got, np.float32), np.asarray(want, np.float32), atol=1e-6, err_msg=where
        )
    elif want is None or (not isinstance(want, str) and pd.isna(want)):
        assert got is None or pd.isna(got), (where, got)
    elif isinstance(want, (int, float, np.number)):
        assert got == pytest.approx(want), (where, got, want)
    else:
        assert got == want, (where, got, want)


def _same_frames(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert len(got) == len(want)
    for column in want.columns:
        for i, (g, w) in enumerate(zip(got[column], want[column], strict=True)):
            _same(g, w, f"{column}[{i}]")


def test_the_gcp_config_is_bigquery_redis_and_a_gcs_registry(stores):
    s = stores["settings"]
    config = stores["store"].config
    assert config.registry.path == s.feast_registry == f"gs://{stores['bucket']}/{REGISTRY_OBJECT}"
    assert config.online_store.connection_string.endswith(f",db={REDIS_DB}")
    assert config.online_store.type == "redis"
    assert config.offline_store.project_id == s.bigquery_project
    assert config.offline_store.dataset == f"{DATASET}_feast"
    view = stores["store"].get_feature_view(USER_FEATURES)
    assert view.batch_source.table == f"{s.bigquery_project}.{DATASET}_features.{USER_FEATURES}"


def test_feature_tables_are_loaded_into_bigquery(stores):
    s = stores["settings"]
    assert stores["written"] == {name: len(df) for name, df in stores["tables"].items()}
    bq = bigquery.client(s)
    for name, frame in stores["tables"].items():
        table = bq.get_table(gcp.feature_table_id(s, name))
        assert table.num_rows == len(frame)
        assert [f.name for f in table.schema] == SCHEMAS[name].names
    again = read_feature_table(s, POST_CONTENT).sort_values("post_id", ignore_index=True)
    np.testing.assert_allclose(again["description_embedding"].iloc[0], _unit(10), atol=1e-6)
    # written again: the table is replaced, not appended to
    write_feature_tables(s, {POST_CONTENT: stores["tables"][POST_CONTENT]})
    assert bq.get_table(gcp.feature_table_id(s, POST_CONTENT)).num_rows == 3


def test_the_registry_is_one_gcs_object_every_pod_reads(stores, tmp_path):
    from google.cloud import storage

    blob = storage.Client().bucket(stores["bucket"]).get_blob(REGISTRY_OBJECT)
    assert blob is not None and blob.size > 0
    assert {"user", "post", USER_SERVICE, POST_SERVICE} <= set(stores["names"])
    # another pod: its own FeatureStore and data directory, only the environment shared
    other = fs.feature_store(Settings(data_dir=tmp_path))
    assert {v.name for v in other.list_feature_views()} == set(SCHEMAS)
    assert {f.name for f in other.list_feature_services()} == {
        f.name for f in stores["store"].list_feature_services()
    }


def test_materialization_fills_redis_and_online_reads_match_feast(stores):
    # the same entities per view as the local store's materialization
    assert stores["materialized"] == EXPECTED_ONLINE
    assert fs.online_row_counts(stores["settings"]) == EXPECTED_ONLINE
    store = stores["store"]
    users = online_user_features(store, [1, 999, 2])
    posts = online_post_features(store, [12, 10])
    for frame, service, key, ids in (
        (users, USER_SERVICE, "user_id", [1, 999, 2]),
        (posts, POST_SERVICE, "post_id", [12, 10]),
    ):
        expected = store.get_online_features(
            features=store.get_feature_service(service),
            entity_rows=[{key: i} for i in ids],
        ).to_dict()
        for column, values in expected.items():
            if column == key:
                continue
            for got, want in zip(frame[column].tolist(), values, strict=True):
                if want is None and isinstance(got, np.ndarray):  # a missing embedding
                    assert not got.any()
                else:
                    _same(got, want, column)
    assert users["found"].tolist() == [True, False, True]
    assert users.loc[1, "n_events"] == 9 and users.loc[1, "recent_post_ids"] == "11,12,10"
    np.testing.assert_allclose(users.loc[2, "profile_embedding"], _unit(2), atol=1e-6)
    assert posts.loc[10, "n_positives"] == 5 and posts.loc[12, "category_id"] == 1
    # ... and the same values as the local profile's SQLite online store
    local_users = online_user_features(stores["local"], [1, 999, 2])
    for column in users.columns:
        for got, want in zip(users[column], local_users[column], strict=True):
            _same(got, want, column)
    # incremental: nothing new up to the same end
    assert set(fs.materialize(store, END).values()) == {0}


def test_a_written_post_is_readable_by_another_pod(stores, tmp_path):
    post = {
        "post_id": 13,
        "creator_id": 2,
        "category_id": 4,
        "media_type": "image",
        "created_at": _ts("2026-01-11"),
        "description_embedding": _unit(13),
    }
    assert write_online_post(stores["store"], post, at=_ts("2026-01-11")) == {
        POST_FEATURES: 1,
        POST_CONTENT: 1,
    }
    other = fs.feature_store(Settings(data_dir=tmp_path))
    got = online_post_features(other, [13, 10])
    assert got["found"].tolist() == [True, True]
    assert got.loc[13, "category_id"] == 4 and got.loc[13, "n_impressions"] == 0
    np.testing.assert_allclose(got.loc[13, "description_embedding"], _unit(13), atol=1e-6)
    assert fs.online_row_counts(stores["settings"])[POST_FEATURES] == 4


def test_point_in_time_reads_on_bigquery_never_read_the_future(stores):
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
    out = fs.historical_features(stores["store"], entity, ["user_features:n_events"])
    assert out["user_id"].tolist() == [1, 1, 1, 1, 2]  # in the order asked
    assert pd.isna(out["n_events"].iloc[0])
    assert out["n_events"].iloc[1:].tolist() == [0, 5, 9, 0]
    # twice in a row: Feast's script leaves nothing behind that breaks the next one, and
    # neither the entity set nor the result table stays in the scratch dataset
    again = fs.historical_features(stores["store"], entity, ["user_features:n_events"])
    _same_frames(again, out)
    bq = bigquery.client(stores["settings"])
    scratch = f"{stores['settings'].bigquery_project}.{gcp.scratch_dataset(stores['settings'])}"
    assert [t.table_id for t in bq.list_tables(scratch)] == []


@pytest.mark.parametrize("entity", ["user", "post"])
def test_training_reads_equal_the_local_offline_store(stores, entity):
    ids = {"user": [2, 1, 1, 7], "post": [12, 10, 11, 10]}[entity]
    times = [_ts("2026-01-04T12:00"), _ts("2026-01-03"), _ts("2026-01-09"), _ts("2026-01-06")]
    rows = pd.DataFrame({f"{entity}_id": ids, "ts": times})
    got = training.point_in_time(stores["store"], entity, rows)
    want = training.point_in_time(stores["local"], entity, rows)
    _same_frames(got, want)
    latest = training.latest_features(stores["store"], entity, ids, as_of=END)
    _same_frames(latest, training.latest_features(stores["local"], entity, ids, as_of=END))


def test_the_cli_config_is_the_code_config(tmp_path, monkeypatch):
    """``feature_repo/feature_store.gcp.yaml`` (the ``feast`` CLI's) = ``repo_config``."""
    from pathlib import Path

    from feast.repo_config import load_repo_config

    env = {
        "SOCIALREC_GCS_BUCKET": "bucket",
        "SOCIALREC_BIGQUERY_PROJECT": "project",
        "SOCIALREC_REDIS_CONNECTION_STRING": "redis.example.test:6379",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("SOCIALREC_FEAST_REGISTRY", "SOCIALREC_BIGQUERY_DATASET"):  # the defaults
        monkeypatch.delenv(key, raising=False)
    settings = Settings(
        profile="gcp",
        data_dir=tmp_path,
        milvus_uri="http://127.0.0.1:19530",
        mlflow_tracking_uri="http://127.0.0.1:5000",
        api_token="t",
        read_token="r",  # the gcp profile refuses to start without both
        tls_termination="ingress",
    )
    repo = Path(feature_repo.__file__).parent
    cli = load_repo_config(repo, repo / "feature_store.gcp.yaml")
    code = fs.repo_config(settings)
    assert cli.registry.path == code.registry.path == "gs://bucket/feast/registry.pb"
    assert cli.online_store == code.online_store
    assert cli.offline_store.model_dump(exclude={"storage_endpoint"}) == (
        code.offline_store.model_dump(exclude={"storage_endpoint"})
    )
    assert (cli.provider, cli.project) == (code.provider, code.project)
