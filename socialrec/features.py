"""Feature tables and the Feast feature store (embedded default: DuckDB offline, SQLite online).

Four feature views, two per entity (columns: docs/contracts.md, "Feature tables"):

* ``user_features`` — onboarding categories and activity counts, a POINT-IN-TIME history: a row
  at the user's creation (zero counts) and one per day with events (cumulative counts up to the
  end of that day, valid from the next midnight; the dbt model ``user_daily_activity``);
* ``user_profile`` — the MiniLM profile embedding, one row valid from the user's creation;
* ``post_features`` — creator, category, media type, creation time and engagement counts, the
  same kind of history (``post_daily_activity``);
* ``post_content`` — the MiniLM description embedding, valid from the post's creation.

A point-in-time join (:func:`historical_features`) at time t therefore reads only events of days
that ended before t: training samples never see their own outcome or the future, and the
online store (materialized up to now) serves the latest row of the same definitions.
Descriptive attributes (categories, creator) are the latest version of the entity.

:func:`write_feature_tables` rewrites the parquet tables (Feast's offline sources) atomically
from the warehouse; :func:`feature_store`, :func:`apply_definitions`, :func:`materialize` and
the online readers (:func:`online_user_features`, :func:`online_post_features`) wrap Feast for
the assets and the service. Each online reader makes exactly ONE ``get_online_features`` call
for its batch (both views of the entity in that call).

Feast objects themselves live in ``feature_repo/``; this module never imports Dagster or BentoML.
"""

from __future__ import annotations

import datetime as dt
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
USER_PROFILE = "user_profile"
POST_FEATURES = "post_features"
POST_CONTENT = "post_content"
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
    ]
)
USER_PROFILE_SCHEMA = pa.schema(
    [("user_id", pa.int64()), (TIMESTAMP, _TS_TYPE), ("profile_embedding", _EMB_TYPE)]
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
    ]
)
POST_CONTENT_SCHEMA = pa.schema(
    [("post_id", pa.int64()), (TIMESTAMP, _TS_TYPE), ("description_embedding", _EMB_TYPE)]
)
SCHEMAS = {
    USER_FEATURES: USER_SCHEMA,
    USER_PROFILE: USER_PROFILE_SCHEMA,
    POST_FEATURES: POST_SCHEMA,
    POST_CONTENT: POST_CONTENT_SCHEMA,
}
ENTITY_VIEWS = {"user": (USER_FEATURES, USER_PROFILE), "post": (POST_FEATURES, POST_CONTENT)}
ENTITY_IDS = {"user": "user_id", "post": "post_id"}
ID_COLUMNS = {name: ENTITY_IDS[e] for e, views in ENTITY_VIEWS.items() for name in views}
EMBEDDING_COLUMNS = {"user": "profile_embedding", "post": "description_embedding"}
# the feature names of each view (everything but the join key and the timestamp)
FEATURE_NAMES = {name: [f.name for f in schema][2:] for name, schema in SCHEMAS.items()}


# --------------------------------------------------------------------------------------------
# building the feature tables
# --------------------------------------------------------------------------------------------
def _utc_us(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor("us")


def _utc_series(values) -> pd.Series:
    return pd.to_datetime(pd.Series(values), utc=True).dt.floor("us").astype("datetime64[us, UTC]")


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


def _history(
    base: pd.DataFrame, activity: pd.DataFrame | None, id_col: str, counts: Sequence[str]
) -> pd.DataFrame:
    """Rows at each entity's creation (zero counts) plus its activity rows (``valid_from``,
    cumulative counts); the static columns of ``base`` are repeated on every row. An activity
    row at the very creation instant wins over the zero row."""
    static = base.drop(columns=[*counts, "positive_rate"], errors="ignore")
    zero = static.assign(**{c: 0 for c in counts}, positive_rate=0.0)
    zero[TIMESTAMP] = _utc_series(base["created_at"]).to_numpy()
    rows = [zero]
    if activity is not None and len(activity):
        act = activity[activity[id_col].isin(base[id_col])]
        act = act[[id_col, "valid_from", *counts, "positive_rate"]].rename(
            columns={"valid_from": TIMESTAMP}
        )
        act[TIMESTAMP] = _utc_series(act[TIMESTAMP]).to_numpy()
        rows.append(act.merge(static.drop(columns=[TIMESTAMP], errors="ignore"), on=id_col))
    out = pd.concat(rows, ignore_index=True)
    out = out.drop_duplicates([id_col, TIMESTAMP], keep="last")
    return out.sort_values([TIMESTAMP, id_col], kind="stable", ignore_index=True)


def build_user_features(
    dim_users: pd.DataFrame, user_daily_activity: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The ``user_features`` history (columns of ``USER_SCHEMA``)."""
    base = pd.DataFrame(
        {
            "user_id": dim_users["user_id"].to_numpy(dtype=np.int64),
            "created_at": dim_users["created_at"].to_numpy(),
            "onboarding_categories": [
                _categories_str(v) for v in dim_users["onboarding_categories"]
            ],
        }
    )
    counts = ["n_events", "n_impressions", "n_positives"]
    out = _history(base, user_daily_activity, "user_id", counts)
    return _conform(out, USER_SCHEMA)


def build_user_profile(dim_users: pd.DataFrame, user_emb: pd.DataFrame | None) -> pd.DataFrame:
    """The ``user_profile`` table: one profile embedding per user, valid from its creation."""
    ids = dim_users["user_id"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "user_id": ids,
            TIMESTAMP: _utc_series(dim_users["created_at"]).to_numpy(),
            "profile_embedding": _attach_embeddings(ids, user_emb, "user_id"),
        }
    )


def build_post_features(
    dim_posts: pd.DataFrame, post_daily_activity: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The ``post_features`` history (columns of ``POST_SCHEMA``)."""
    created = pd.to_datetime(dim_posts["created_at"], utc=True)
    base = pd.DataFrame(
        {
            "post_id": dim_posts["post_id"].to_numpy(dtype=np.int64),
            "created_at": created.to_numpy(),
            "creator_id": dim_posts["creator_id"].to_numpy(dtype=np.int64),
            "category_id": dim_posts["category_id"].to_numpy(dtype=np.int64),
            "media_type": dim_posts["media_type"].astype(str).to_numpy(),
            "created_at_ts": ((created - _EPOCH) // pd.Timedelta(seconds=1)).to_numpy(np.int64),
        }
    )
    out = _history(base, post_daily_activity, "post_id", ["n_impressions", "n_positives"])
    return _conform(out, POST_SCHEMA)


def build_post_content(dim_posts: pd.DataFrame, post_emb: pd.DataFrame | None) -> pd.DataFrame:
    """The ``post_content`` table: one description embedding per post, valid from creation."""
    ids = dim_posts["post_id"].to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "post_id": ids,
            TIMESTAMP: _utc_series(dim_posts["created_at"]).to_numpy(),
            "description_embedding": _attach_embeddings(ids, post_emb, "post_id"),
        }
    )


def _conform(df: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    out = df[[f.name for f in schema]].copy()
    for field in schema:
        if pa.types.is_integer(field.type):
            out[field.name] = _counts(out, field.name)
        elif pa.types.is_floating(field.type):
            out[field.name] = _rate(out, field.name)
    return out


# --------------------------------------------------------------------------------------------
# parquet feature tables (Feast offline sources)
# --------------------------------------------------------------------------------------------
def feature_table_path(settings: Settings, name: str) -> Path:
    """``features_dir / <name>.parquet`` for each feature view."""
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
    """A whole feature table, or None when it was never written."""
    path = feature_table_path(settings, name)
    return _from_arrow(pq.read_table(path)) if path.exists() else None


def write_feature_tables(settings: Settings, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Rewrite the given feature tables (``{view name: frame}``); returns their row counts.

    Each file is replaced atomically, so Feast never reads half a table. The tables are derived
    from the warehouse in full every time (idempotent)."""
    out = {}
    for name, frame in tables.items():
        path = feature_table_path(settings, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(_to_arrow(frame, SCHEMAS[name]), tmp)
        os.replace(tmp, path)
        out[name] = len(frame)
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
    views: Sequence[str] = tuple(SCHEMAS),
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
def feature_refs(entity: str) -> list[str]:
    """``view:feature`` references of every feature of an entity (``user`` or ``post``)."""
    return [f"{view}:{name}" for view in ENTITY_VIEWS[entity] for name in FEATURE_NAMES[view]]


def _online(store: FeatureStore, entity: str, ids: Sequence[int]) -> pd.DataFrame:
    id_col = ENTITY_IDS[entity]
    ids = list(dict.fromkeys(int(i) for i in ids))  # unique, in request order
    names = [n for view in ENTITY_VIEWS[entity] for n in FEATURE_NAMES[view]]
    emb_col = EMBEDDING_COLUMNS[entity]
    if not ids:
        empty = pd.DataFrame(columns=[*names, "found"], index=pd.Index([], name=id_col))
        return empty.astype({"found": bool})
    response = store.get_online_features(features=feature_refs(entity), entity_rows={id_col: ids})
    proto = response.proto
    by_name = dict(zip(proto.metadata.feature_names.val, proto.results, strict=True))
    data: dict[str, object] = {}
    present = np.zeros(len(ids), dtype=bool)
    for name in names:
        vector = by_name[name]
        statuses = np.fromiter(vector.statuses, dtype=np.int64, count=len(ids))
        ok = statuses == FieldStatus.PRESENT
        if name == emb_col:
            zero = np.zeros(TEXT_EMBEDDING_DIM, dtype=np.float32)
            data[name] = [
                np.asarray(v.float_list_val.val, dtype=np.float32) if good else zero.copy()
                for v, good in zip(vector.values, ok, strict=True)
            ]
        else:
            present |= ok  # an entity is known when its (non-embedding) features are
            kind = [v.WhichOneof("val") for v in vector.values]
            data[name] = [
                getattr(v, k) if good and k else None
                for v, k, good in zip(vector.values, kind, ok, strict=True)
            ]
    out = pd.DataFrame(data, index=pd.Index(np.asarray(ids, dtype=np.int64), name=id_col))
    out["found"] = present
    return _typed(out, entity)


def _typed(df: pd.DataFrame, entity: str) -> pd.DataFrame:
    for view in ENTITY_VIEWS[entity]:
        for field in SCHEMAS[view]:
            if field.name not in df.columns or field.name == ENTITY_IDS[entity]:
                continue
            if pa.types.is_integer(field.type):
                df[field.name] = pd.array(df[field.name], dtype="Int64")
            elif pa.types.is_floating(field.type):
                df[field.name] = pd.to_numeric(df[field.name]).astype(np.float32)
    return df


def online_user_features(store: FeatureStore, user_ids: Sequence[int]) -> pd.DataFrame:
    """``user_features`` + ``user_profile`` of each (unique) id, indexed by ``user_id``; ONE
    Feast call. Unknown ids get ``found == False``, missing values and a zero
    ``profile_embedding``."""
    return _online(store, "user", user_ids)


def online_post_features(store: FeatureStore, post_ids: Sequence[int]) -> pd.DataFrame:
    """``post_features`` + ``post_content`` of each (unique) id, indexed by ``post_id``; ONE
    Feast call. Unknown ids get ``found == False``, missing values and a zero
    ``description_embedding``."""
    return _online(store, "post", post_ids)


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
