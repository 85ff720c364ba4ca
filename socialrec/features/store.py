"""The Feast feature store (local profile: DuckDB offline, SQLite online, file registry; gcp:
BigQuery offline, Redis online, registry on GCS): administration and the point-in-time reads
of training.

:func:`feature_store`, :func:`apply_definitions`, :func:`materialize` and
:func:`online_row_counts` wrap Feast for the assets; :func:`historical_features` is the
point-in-time join, :func:`historical_entity_features` the one through an entity's named feature
service (what training reads). The feature tables are declared in
:mod:`socialrec.features.tables` and built by :mod:`socialrec.features.build`; the service's
online reads and writes are :mod:`socialrec.features.online`.

Feast objects themselves live in ``feature_repo/``; this package never imports Dagster or BentoML.
"""

from __future__ import annotations

import atexit
import datetime as dt
import gc
import os
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from feast import BigQuerySource, FeatureService, FeatureStore, RepoConfig

from socialrec.features import gcp
from socialrec.features.online import (
    feature_service,
)
from socialrec.features.tables import (
    ENTITY_IDS,
    ENTITY_SERVICES,
    ENTITY_VIEWS,
    PROJECT,
    SCHEMAS,
    TIMESTAMP,
)
from socialrec.settings import Settings
from socialrec.timeutil import timestamp, timestamps

_ROW = "__socialrec_row"


@atexit.register
def _close_ibis_default_backend() -> None:
    """Feast's DuckDB offline store runs on ibis' default backend: a DuckDB connection kept
    in a module global for the process's life. Closed at exit, before the interpreter tears
    DuckDB down (else nanobind lists it and its types as leaked)."""
    ibis = sys.modules.get("ibis")
    backend = getattr(getattr(ibis, "options", None), "default_backend", None)
    if backend is not None:
        backend.disconnect()
        ibis.options.default_backend = None
    gc.collect()


# --------------------------------------------------------------------------------------------
# the Feast store
# --------------------------------------------------------------------------------------------
def repo_config(settings: Settings) -> RepoConfig:
    """The store's config by profile (``feature_repo/feature_store.yaml`` and
    ``feature_store.gcp.yaml`` are the same configs for the ``feast`` CLI):

    * local: file registry and SQLite online store under ``settings.feast_dir``, DuckDB offline
      store over the parquet tables;
    * gcp: the registry every pod reads, ``settings.feast_registry`` (a ``gs://`` object, read
      with google-cloud-storage; or a SQLAlchemy URL: Feast's SQL registry), the Redis online
      store (``settings.redis_connection_string``; Memorystore on GCP) and the BigQuery offline
      store (``socialrec.features.bigquery_store``: Feast's, with entity sets and results moved
      as tables; its temporary tables in ``socialrec.features.gcp.scratch_dataset``).
    """
    feast_dir = Path(settings.feast_dir).resolve()
    if settings.profile != "gcp":
        return RepoConfig(
            project=PROJECT,
            provider="local",
            registry={
                "registry_type": "file",
                "path": str(feast_dir / "registry.db"),
                "cache_ttl_seconds": 60,
            },
            online_store={"type": "sqlite", "path": str(feast_dir / "online.db")},
            offline_store={"type": "duckdb"},
            entity_key_serialization_version=3,
            repo_path=feast_dir,
        )
    registry = settings.feast_registry
    file_like = registry.split("://", 1)[0] in ("gs", "s3", "file") or "://" not in registry
    return RepoConfig(
        project=PROJECT,
        provider="gcp",
        registry={
            "registry_type": "file" if file_like else "sql",
            "path": registry,
            "cache_ttl_seconds": 60,
        },
        online_store={"type": "redis", "connection_string": settings.redis_connection_string},
        offline_store={
            "type": "socialrec.features.bigquery_store.BigQueryOfflineStore",
            "project_id": settings.bigquery_project,
            "dataset": gcp.scratch_dataset(settings),
            "location": settings.bigquery_location,
            "storage_endpoint": settings.bigquery_storage_endpoint,
        },
        entity_key_serialization_version=3,
        repo_path=feast_dir,
    )


def feature_store(settings: Settings) -> FeatureStore:
    """A FeatureStore on ``settings.feast_dir`` (created if missing)."""
    Path(settings.feast_dir).mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.feast_dir), config=repo_config(settings))


def apply_definitions(store: FeatureStore, objects: Iterable) -> list[str]:
    """Register Feast objects (entities, sources, views, services); returns their names."""
    objects = list(objects)
    store.apply(objects)
    return [o.name for o in objects]


def _window_rows(store: FeatureStore, view_name: str, start, end) -> int:
    """How many entities have a row in ``(start, end]`` of a view's source: its parquet file,
    or its BigQuery table (a ``COUNT(DISTINCT)`` query)."""
    view = store.get_feature_view(view_name)
    id_col = view.entity_columns[0].name
    source = view.batch_source
    if isinstance(source, BigQuerySource):
        bq = gcp.offline_client(store.config.offline_store)
        return gcp.window_rows(bq, source.table, id_col, TIMESTAMP, start, end)
    path = source.path
    if not os.path.exists(path):
        return 0
    df = pq.read_table(path, columns=[id_col, TIMESTAMP]).to_pandas()
    ts = df[TIMESTAMP]
    mask = ts <= pd.Timestamp(end)
    if start is not None:
        mask &= ts > pd.Timestamp(start)
    return int(df.loc[mask, id_col].nunique())


def materialize(
    store: FeatureStore,
    end: dt.datetime,
    start: dt.datetime | None = None,
    views: Sequence[str] = tuple(SCHEMAS),
) -> dict[str, int]:
    """Load the offline rows up to ``end`` into the online store.

    Without ``start``: incremental (from each view's last materialization, or its TTL back
    from ``end`` the first time). Feast writes, per entity, its latest row of the window, so
    edits travel as rows stamped at their ``updated_at`` (``socialrec.features.build``,
    "Edits"); a full window (``start``) re-reads every row, e.g. after a backdated edit.
    Returns the number of entities written per view.
    """
    end = timestamp(end).to_pydatetime()
    written = {}
    for name in views:
        view = store.get_feature_view(name)
        begin = start or view.most_recent_end_time or (end - view.ttl)
        written[name] = _window_rows(store, name, timestamp(begin), end)
    if start is None:
        store.materialize_incremental(end_date=end, feature_views=list(views))
    else:
        store.materialize(
            start_date=timestamp(start).to_pydatetime(), end_date=end, feature_views=list(views)
        )
    return written


def online_row_counts(settings: Settings) -> dict[str, int]:
    """Entities per view in the online store (for asset metadata and checks): the rows of each
    view's SQLite table (local), or the Redis hashes of the project holding the view's
    ``_ts:<view>`` field (gcp: :func:`_redis_row_counts`)."""
    if settings.profile == "gcp":
        return _redis_row_counts(repo_config(settings))
    path = Path(settings.feast_dir) / "online.db"
    out = {name: 0 for name in SCHEMAS}
    if not path.exists():
        return out
    with sqlite3.connect(path) as conn:
        for name in SCHEMAS:
            try:
                (n,) = conn.execute(
                    f"SELECT COUNT(DISTINCT entity_key) FROM {PROJECT}_{name}"
                ).fetchone()
                out[name] = int(n)
            except sqlite3.OperationalError:  # table not created yet
                pass
    return out


def _redis_row_counts(config: RepoConfig, batch: int = 1000) -> dict[str, int]:
    """Feast's Redis layout: one hash per entity key (the serialized key + the project name),
    a ``_ts:<view>`` field per view written. Per entity: SCAN the keys of its join key and
    project (the pattern Feast's own deletes use), then HEXISTS of every view of the entity,
    pipelined per ``batch`` keys. Cost: one pass over the entity's keys."""
    from feast.infra.online_stores.helpers import _redis_key_prefix
    from feast.infra.online_stores.redis import RedisOnlineStore

    client = RedisOnlineStore()._get_client(config.online_store)  # Feast's own client
    out = {name: 0 for name in SCHEMAS}
    for entity, views in ENTITY_VIEWS.items():
        pattern = _redis_key_prefix([ENTITY_IDS[entity]]) + b"*" + PROJECT.encode()
        keys = list(client.scan_iter(match=pattern, count=batch))
        for i in range(0, len(keys), batch):
            with client.pipeline(transaction=False) as pipe:
                for key in keys[i : i + batch]:
                    for name in views:
                        pipe.hexists(key, f"_ts:{name}")
                found = pipe.execute()
            for j, name in enumerate(views):
                out[name] += sum(bool(v) for v in found[j :: len(views)])
    return out


# --------------------------------------------------------------------------------------------
# point-in-time reads (training)
# --------------------------------------------------------------------------------------------
def historical_features(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    features: Sequence[str] | FeatureService,
) -> pd.DataFrame:
    """Point-in-time join: for each entity row, the feature values valid at its
    ``event_timestamp`` (the latest snapshot at or before it, within the view TTL).

    Rows come back in the order of ``entity_df``; features a row has no value for are null.
    """
    entity_df = entity_df.copy()
    entity_df[TIMESTAMP] = timestamps(entity_df[TIMESTAMP])
    entity_df[_ROW] = np.arange(len(entity_df), dtype=np.int64)
    if not isinstance(features, FeatureService):
        features = list(features)
    out = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    # Feast returns the rows in its own order: give them back in the order they were asked
    out = out.sort_values(_ROW, kind="stable").drop(columns=[_ROW]).reset_index(drop=True)
    return out


def historical_entity_features(
    store: FeatureStore, entity: str, entity_df: pd.DataFrame
) -> pd.DataFrame:
    """Every feature of ``entity`` (``user`` or ``post``: its feature service,
    ``ENTITY_SERVICES``) valid at each row's ``event_timestamp``; :func:`historical_features`."""
    return historical_features(store, entity_df, feature_service(store, ENTITY_SERVICES[entity]))
