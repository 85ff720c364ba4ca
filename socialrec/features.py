"""Feature tables and the Feast feature store (embedded default: DuckDB offline, SQLite online).

* :func:`build_user_features` / :func:`build_post_features` turn the dbt marts plus the text
  embeddings into one snapshot of the feature tables (columns: docs/contracts.md).
* :func:`write_feature_tables` appends a snapshot to the parquet tables that are Feast's offline
  sources, keeping only rows that changed, so the tables are a history that point-in-time joins
  (:func:`historical_features`) can travel through.
* :func:`feature_store`, :func:`apply_definitions`, :func:`materialize` and the online readers
  (:func:`online_user_features`, :func:`online_post_features`) wrap Feast for the assets and the
  service. Each online reader makes exactly ONE ``get_online_features`` call for its batch.

Feast objects themselves live in ``feature_repo/``; this module never imports Dagster or BentoML.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureService, FeatureStore, RepoConfig
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from socialrec.settings import TEXT_EMBEDDING_DIM, Settings
from socialrec.text import embedding_matrix, embeddings_to_arrow

PROJECT = "socialrec"
USER_FEATURES = "user_features"
POST_FEATURES = "post_features"
TIMESTAMP = "event_timestamp"
_ROW = "__socialrec_row"

_TS_TYPE = pa.timestamp("us", tz="UTC")
_EPOCH = pd.Timestamp(0, tz="UTC")
_EMB_TYPE = pa.list_(pa.float32())

# feature table schemas, id and timestamp first (docs/contracts.md, "Feature tables")
USER_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        (TIMESTAMP, _TS_TYPE),
        ("onboarding_categories", pa.string()),
        ("n_events", pa.int64()),
        ("n_impressions", pa.int64()),
        ("n_positives", pa.int64()),
        ("positive_rate", pa.float32()),
        ("profile_embedding", _EMB_TYPE),
    ]
)
POST_SCHEMA = pa.schema(
    [
        ("post_id", pa.int64()),
        (TIMESTAMP, _TS_TYPE),
        ("creator_id", pa.int64()),
        ("category_id", pa.int64()),
        ("media_type", pa.string()),
        ("created_at_ts", pa.int64()),
        ("n_impressions", pa.int64()),
        ("n_positives", pa.int64()),
        ("positive_rate", pa.float32()),
        ("description_embedding", _EMB_TYPE),
    ]
)
SCHEMAS = {USER_FEATURES: USER_SCHEMA, POST_FEATURES: POST_SCHEMA}
ID_COLUMNS = {USER_FEATURES: "user_id", POST_FEATURES: "post_id"}
EMBEDDING_COLUMNS = {USER_FEATURES: "profile_embedding", POST_FEATURES: "description_embedding"}
# the feature names of each view (everything but the join key and the timestamp)
FEATURE_NAMES = {name: [f.name for f in schema][2:] for name, schema in SCHEMAS.items()}


# --------------------------------------------------------------------------------------------
# building the feature tables
# --------------------------------------------------------------------------------------------
def _utc_us(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("us")


def _snapshot_ts(as_of, n: int) -> pd.Series:
    return pd.Series([_utc_us(as_of)] * n, dtype="datetime64[us, UTC]")


def _counts(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=np.int64)
    return pd.to_numeric(df[col], errors="coerce").fillna(0).to_numpy(dtype=np.int64)


def _rate(df: pd.DataFrame, col: str = "positive_rate") -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=np.float32)
    return pd.to_numeric(df[col], errors="coerce").fillna(0.0).to_numpy(dtype=np.float32)


def _categories_str(value) -> str:
    """Onboarding categories as the warehouse stores them: ``"3,7"`` (lists are joined)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    return ",".join(str(int(v)) for v in value)


def _attach_embeddings(ids: np.ndarray, emb: pd.DataFrame | None, id_col: str) -> list[np.ndarray]:
    """The embedding of every id (zero vector when it has none)."""
    matrix = np.zeros((len(ids), TEXT_EMBEDDING_DIM), dtype=np.float32)
    if emb is not None and len(emb):
        lookup = emb.drop_duplicates(id_col, keep="last").set_index(id_col)["embedding"]
        pos = lookup.index.get_indexer(ids)
        have = np.flatnonzero(pos >= 0)
        if len(have):
            matrix[have] = embedding_matrix(lookup.iloc[pos[have]].to_list())
    return list(matrix)


def build_user_features(
    dim_users: pd.DataFrame, user_emb: pd.DataFrame | None, as_of
) -> pd.DataFrame:
    """One ``user_features`` snapshot valid from ``as_of`` (columns of ``USER_SCHEMA``)."""
    ids = dim_users["user_id"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "user_id": ids,
            TIMESTAMP: _snapshot_ts(as_of, len(ids)),
            "onboarding_categories": [
                _categories_str(v) for v in dim_users["onboarding_categories"]
            ],
            "n_events": _counts(dim_users, "n_events"),
            "n_impressions": _counts(dim_users, "n_impressions"),
            "n_positives": _counts(dim_users, "n_positives"),
            "positive_rate": _rate(dim_users),
            "profile_embedding": _attach_embeddings(ids, user_emb, "user_id"),
        }
    )


def build_post_features(
    dim_posts: pd.DataFrame, post_emb: pd.DataFrame | None, as_of
) -> pd.DataFrame:
    """One ``post_features`` snapshot valid from ``as_of`` (columns of ``POST_SCHEMA``)."""
    ids = dim_posts["post_id"].to_numpy(dtype=np.int64)
    created = pd.to_datetime(dim_posts["created_at"], utc=True)
    return pd.DataFrame(
        {
            "post_id": ids,
            TIMESTAMP: _snapshot_ts(as_of, len(ids)),
            "creator_id": dim_posts["creator_id"].to_numpy(dtype=np.int64),
            "category_id": dim_posts["category_id"].to_numpy(dtype=np.int64),
            "media_type": dim_posts["media_type"].astype(str).to_numpy(),
            "created_at_ts": ((created - _EPOCH) // pd.Timedelta(seconds=1)).to_numpy(np.int64),
            "n_impressions": _counts(dim_posts, "n_impressions"),
            "n_positives": _counts(dim_posts, "n_positives"),
            "positive_rate": _rate(dim_posts),
            "description_embedding": _attach_embeddings(ids, post_emb, "post_id"),
        }
    )


# --------------------------------------------------------------------------------------------
# parquet feature tables (Feast offline sources)
# --------------------------------------------------------------------------------------------
def feature_table_path(settings: Settings, name: str) -> Path:
    """``features_dir / <name>.parquet`` for ``user_features`` / ``post_features``."""
    return Path(settings.features_dir) / f"{name}.parquet"


def _to_arrow(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    columns = []
    for field in schema:
        if pa.types.is_list(field.type):
            columns.append(embeddings_to_arrow(embedding_matrix(df[field.name].to_list())))
        elif pa.types.is_timestamp(field.type):
            ts = pd.to_datetime(df[field.name], utc=True).astype("datetime64[us, UTC]")
            columns.append(pa.array(ts, type=field.type))
        else:
            columns.append(pa.array(df[field.name].to_numpy(), type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _from_arrow(table: pa.Table) -> pd.DataFrame:
    list_cols = [f.name for f in table.schema if pa.types.is_list(f.type)]
    df = table.drop_columns(list_cols).to_pandas()
    for col in list_cols:
        arr = table.column(col).combine_chunks()
        values = arr.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        offsets = arr.offsets.to_numpy()
        df[col] = [values[offsets[i] : offsets[i + 1]] for i in range(len(df))]
    if TIMESTAMP in df.columns:
        df[TIMESTAMP] = df[TIMESTAMP].astype("datetime64[us, UTC]")
    return df[[f.name for f in table.schema]]


def read_feature_table(settings: Settings, name: str) -> pd.DataFrame | None:
    """The whole history of a feature table, or None when it was never written."""
    path = feature_table_path(settings, name)
    return _from_arrow(pq.read_table(path)) if path.exists() else None


def _fingerprints(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """A hash of each row's feature values (embedding bytes included)."""
    out = []
    for row in zip(*(df[c] for c in columns), strict=True):
        h = hashlib.sha1()
        for v in row:
            if isinstance(v, np.ndarray):
                h.update(np.asarray(v, dtype=np.float32).tobytes())
            else:
                h.update(repr(v.item() if isinstance(v, np.generic) else v).encode())
            h.update(b"\x1f")
        out.append(h.hexdigest())
    return out


def append_snapshot(existing: pd.DataFrame | None, snapshot: pd.DataFrame, name: str):
    """``(history, n_appended)``: ``existing`` plus the rows of ``snapshot`` that changed.

    A row is appended when its id is new or any feature differs from the id's latest row.
    Re-writing a snapshot with the same timestamp replaces it (idempotent re-runs).
    """
    id_col = ID_COLUMNS[name]
    if existing is None or existing.empty:
        return snapshot.reset_index(drop=True), len(snapshot)
    keys = pd.MultiIndex.from_frame(snapshot[[id_col, TIMESTAMP]])
    old_keys = pd.MultiIndex.from_frame(existing[[id_col, TIMESTAMP]])
    existing = existing[~old_keys.isin(keys)]
    latest = existing.sort_values(TIMESTAMP, kind="stable").drop_duplicates(id_col, keep="last")
    latest = latest.set_index(id_col)
    features = FEATURE_NAMES[name]
    new_fp = pd.Series(_fingerprints(snapshot, features), index=snapshot.index)
    old_fp = pd.Series(_fingerprints(latest, features), index=latest.index)
    prev_fp = old_fp.reindex(snapshot[id_col]).to_numpy()
    prev_ts = latest[TIMESTAMP].reindex(snapshot[id_col]).to_numpy()
    same = (prev_fp == new_fp.to_numpy()) & (prev_ts <= snapshot[TIMESTAMP].to_numpy())
    added = snapshot[~same]
    history = pd.concat([existing, added], ignore_index=True)
    history = history.sort_values([TIMESTAMP, id_col], kind="stable", ignore_index=True)
    return history, len(added)


def write_feature_tables(
    settings: Settings, users_df: pd.DataFrame, posts_df: pd.DataFrame
) -> dict[str, dict[str, int]]:
    """Append a ``user_features`` and a ``post_features`` snapshot to their parquet tables.

    Returns ``{table: {"rows": rows in the table, "appended": rows added by this call}}``.
    """
    out = {}
    for name, snapshot in ((USER_FEATURES, users_df), (POST_FEATURES, posts_df)):
        history, appended = append_snapshot(read_feature_table(settings, name), snapshot, name)
        path = feature_table_path(settings, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(_to_arrow(history, SCHEMAS[name]), tmp)
        os.replace(tmp, path)  # Feast never reads half a table
        out[name] = {"rows": len(history), "appended": appended}
    return out


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
    views: Sequence[str] = (USER_FEATURES, POST_FEATURES),
) -> dict[str, int]:
    """Load the offline rows up to ``end`` into the online store.

    Without ``start``: incremental (from each view's last materialization, or its TTL back
    from ``end`` the first time). Returns the number of entities written per view.
    """
    end = _utc_us(end).to_pydatetime()
    written = {}
    for name in views:
        view = store.get_feature_view(name)
        begin = start or view.most_recent_end_time or (end - view.ttl)
        written[name] = _window_rows(store, name, _utc_us(begin), end)
    if start is None:
        store.materialize_incremental(end_date=end, feature_views=list(views))
    else:
        store.materialize(
            start_date=_utc_us(start).to_pydatetime(), end_date=end, feature_views=list(views)
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
# reading features
# --------------------------------------------------------------------------------------------
def _online(store: FeatureStore, view: str, id_col: str, ids: Sequence[int]) -> pd.DataFrame:
    ids = list(dict.fromkeys(int(i) for i in ids))  # unique, in request order
    names = FEATURE_NAMES[view]
    emb_col = EMBEDDING_COLUMNS[view]
    if not ids:
        empty = pd.DataFrame(columns=[*names, "found"], index=pd.Index([], name=id_col))
        return empty.astype({"found": bool})
    response = store.get_online_features(
        features=[f"{view}:{n}" for n in names], entity_rows={id_col: ids}
    )
    proto = response.proto
    by_name = dict(zip(proto.metadata.feature_names.val, proto.results, strict=True))
    data: dict[str, object] = {}
    present = np.zeros(len(ids), dtype=bool)
    for name in names:
        vector = by_name[name]
        statuses = np.fromiter(vector.statuses, dtype=np.int64, count=len(ids))
        ok = statuses == FieldStatus.PRESENT
        present |= ok
        if name == emb_col:
            zero = np.zeros(TEXT_EMBEDDING_DIM, dtype=np.float32)
            data[name] = [
                np.asarray(v.float_list_val.val, dtype=np.float32) if good else zero.copy()
                for v, good in zip(vector.values, ok, strict=True)
            ]
        else:
            kind = [v.WhichOneof("val") for v in vector.values]
            data[name] = [
                getattr(v, k) if good and k else None
                for v, k, good in zip(vector.values, kind, ok, strict=True)
            ]
    out = pd.DataFrame(data, index=pd.Index(np.asarray(ids, dtype=np.int64), name=id_col))
    out["found"] = present
    return _typed(out, view)


def _typed(df: pd.DataFrame, view: str) -> pd.DataFrame:
    for field in SCHEMAS[view]:
        if field.name not in df.columns:
            continue
        if pa.types.is_integer(field.type):
            df[field.name] = pd.array(df[field.name], dtype="Int64")
        elif pa.types.is_floating(field.type):
            df[field.name] = pd.to_numeric(df[field.name]).astype(np.float32)
    return df


def online_user_features(store: FeatureStore, user_ids: Sequence[int]) -> pd.DataFrame:
    """``user_features`` of each (unique) id, indexed by ``user_id``; ONE Feast call.

    Unknown ids get ``found == False``, missing values and a zero ``profile_embedding``.
    """
    return _online(store, USER_FEATURES, "user_id", user_ids)


def online_post_features(store: FeatureStore, post_ids: Sequence[int]) -> pd.DataFrame:
    """``post_features`` of each (unique) id, indexed by ``post_id``; ONE Feast call.

    Unknown ids get ``found == False``, missing values and a zero ``description_embedding``.
    """
    return _online(store, POST_FEATURES, "post_id", post_ids)


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
    entity_df[TIMESTAMP] = pd.to_datetime(entity_df[TIMESTAMP], utc=True).astype(
        "datetime64[us, UTC]"
    )
    entity_df[_ROW] = np.arange(len(entity_df), dtype=np.int64)
    if not isinstance(features, FeatureService):
        features = list(features)
    out = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    # Feast returns the rows in its own order: give them back in the order they were asked
    out = out.sort_values(_ROW, kind="stable").drop(columns=[_ROW]).reset_index(drop=True)
    return out
