"""The Feast feature store (embedded default: DuckDB offline, SQLite online): administration
and the point-in-time reads of training.

:func:`feature_store`, :func:`apply_definitions`, :func:`materialize` and
:func:`online_row_counts` wrap Feast for the assets; :func:`historical_features` is the
point-in-time join, :func:`historical_entity_features` the one through an entity's named feature
service (what training reads). The feature tables are declared in
:mod:`socialrec.features.tables` and built by :mod:`socialrec.features.build`; the service's
online reads and writes are :mod:`socialrec.features.online`.

Feast objects themselves live in ``feature_repo/``; this package never imports Dagster or BentoML.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from feast import FeatureService, FeatureStore, RepoConfig

from socialrec.features.online import (
    feature_service,
)
from socialrec.features.tables import (
    ENTITY_SERVICES,
    PROJECT,
    SCHEMAS,
    TIMESTAMP,
)
from socialrec.settings import Settings
from socialrec.timeutil import timestamp, timestamps

_ROW = "__socialrec_row"


# --------------------------------------------------------------------------------------------
# the Feast store
# --------------------------------------------------------------------------------------------
def repo_config(settings: Settings) -> RepoConfig:
    """The same config as ``feature_repo/feature_store.yaml``, for one data directory."""
    feast_dir = Path(settings.feast_dir).resolve()
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
    """How many entities have a row in ``(start, end]`` of a view's parquet source."""
    view = store.get_feature_view(view_name)
    path = view.batch_source.path
    if not os.path.exists(path):
        return 0
    table = pq.read_table(path, columns=[view.entity_columns[0].name, TIMESTAMP])
    df = table.to_pandas()
    ts = df[TIMESTAMP]
    mask = ts <= pd.Timestamp(end)
    if start is not None:
        mask &= ts > pd.Timestamp(start)
    return int(df.loc[mask, view.entity_columns[0].name].nunique())


def materialize(
    store: FeatureStore,
    end: dt.datetime,
    start: dt.datetime | None = None,
    views: Sequence[str] = tuple(SCHEMAS),
) -> dict[str, int]:
    """Load the offline rows up to ``end`` into the online store.

    Without ``start``: incremental (from each view's last materialization, or its TTL back
    from ``end`` the first time). Returns the number of entities written per view.
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
    """Entities per view in the SQLite online store (for asset metadata and checks)."""
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
