"""The feature tables, declared ONCE: per table its entity, columns, types and descriptions.

Five tables, three of the user and two of the post (docs/contracts.md, "Feature tables"); each
is a parquet file (a Feast offline source; in the gcp profile a BigQuery table,
``socialrec.features.gcp``) and a Feast feature view of the same name. Everything
else is derived from :data:`TABLES`:

* here: the pyarrow schema of each parquet table (:data:`SCHEMAS`: the entity's id, the
  ``event_timestamp``, then the columns), the feature names (:data:`FEATURE_NAMES`), and the
  parquet reads and writes (:func:`write_feature_tables`, :func:`read_feature_table`);
* in ``feature_repo/``: the Feast sources, the ``Field`` of every column (Feast's own mapping of
  the pyarrow type) and the feature views.

The named Feast feature services are constants here too (:data:`ENTITY_SERVICES`, ...): clients
read through them (``socialrec.features.store.historical_entity_features``,
``socialrec.features.online``); ``feature_repo/feature_services.py`` defines them.

This module does not import Feast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from socialrec.features.text import embedding_matrix, embeddings_to_arrow
from socialrec.settings import Settings

PROJECT = "socialrec"
USER_FEATURES = "user_features"
USER_PROFILE = "user_profile"
USER_HISTORY = "user_history"
POST_FEATURES = "post_features"
POST_CONTENT = "post_content"
TIMESTAMP = "event_timestamp"
ENTITY_IDS = {"user": "user_id", "post": "post_id"}
# the post_features engagement windows (days); rows are added when a window empties
POST_WINDOWS_DAYS = (1, 7)
HISTORY_RECENT_LIKES = 20  # history_embedding: the mean of this many latest liked posts
HISTORY_TOP_CREATORS = 50  # creator_positives keeps the user's top creators only
HISTORY_RECENT_POSTS = 50  # recent_post_ids / recent_positive_ids: this many latest posts

# the Feast feature services (feature_repo/feature_services.py): every feature of an entity
# (what training's point-in-time joins and the service's online reads ask for; one entity per
# read, as the user and post views share feature names), and the models' feature sets
USER_SERVICE = "user_v1"
POST_SERVICE = "post_v1"
ENTITY_SERVICES = {"user": USER_SERVICE, "post": POST_SERVICE}
RANKING_SERVICE = "ranking_v1"
RETRIEVAL_SERVICE = "retrieval_v1"

_TS_TYPE = pa.timestamp("us", tz="UTC")
_EMB_TYPE = pa.list_(pa.float32())


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str = ""


@dataclass(frozen=True)
class Table:
    """One feature table / feature view: ``entity`` (``user`` or ``post``), its ``columns``
    (after the id and the timestamp), the view's ``description`` and the parquet source's."""

    name: str
    entity: str
    description: str
    source_description: str
    columns: tuple[Column, ...]

    @property
    def id_column(self) -> str:
        return ENTITY_IDS[self.entity]

    @property
    def schema(self) -> pa.Schema:
        """The parquet table's schema: the id and the timestamp first, then the columns."""
        fields = [(self.id_column, pa.int64()), (TIMESTAMP, _TS_TYPE)]
        return pa.schema(fields + [(c.name, c.type) for c in self.columns])

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]


_EMBEDDING = "MiniLM, 384-d"
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            USER_FEATURES,
            "user",
            "Onboarding categories and point-in-time activity of a user.",
            "Point-in-time activity history of each user (user_daily_activity).",
            (
                Column("onboarding_categories", pa.string(), "comma separated ids"),
                Column("n_events", pa.int64(), "events up to the row's day end"),
                Column("n_impressions", pa.int64()),
                Column("n_positives", pa.int64()),
                Column("positive_rate", pa.float32()),
            ),
        ),
        Table(
            USER_PROFILE,
            "user",
            "Profile (headline + about) text embedding of a user.",
            "The profile text embedding of each user, valid from its creation.",
            (Column("profile_embedding", _EMB_TYPE, _EMBEDDING),),
        ),
        Table(
            USER_HISTORY,
            "user",
            "What a user engaged with, point in time: per-category positives and events, most "
            "liked creators, mean embedding of the latest liked posts, the latest posts.",
            "Point-in-time engagement summary of each user (categories, creators, liked-posts "
            "embedding).",
            (
                # over every category the user had events in
                Column(
                    "category_counts",
                    pa.string(),
                    "category:positives:events,... up to the row's day end",
                ),
                # the user's HISTORY_TOP_CREATORS most liked creators
                Column("creator_positives", pa.string(), "creator:positives,... (top)"),
                # the mean description embedding of the HISTORY_RECENT_LIKES latest liked posts
                Column(
                    "history_embedding",
                    _EMB_TYPE,
                    "mean MiniLM embedding of the latest liked posts, 384-d",
                ),
                # the neighbours candidate source starts from these
                Column(
                    "recent_post_ids",
                    pa.string(),
                    "the latest distinct posts of any event, newest first: id,id,...",
                ),
                Column(
                    "recent_positive_ids",
                    pa.string(),
                    "the latest distinct positively engaged posts, newest first",
                ),
            ),
        ),
        Table(
            POST_FEATURES,
            "post",
            "Metadata and point-in-time engagement of a post.",
            "Point-in-time attributes and engagement history of each post.",
            (
                Column("creator_id", pa.int64()),  # UNKNOWN_CREATOR_ID (-1) when unknown
                Column("category_id", pa.int64()),
                Column("media_type", pa.string()),
                Column("created_at_ts", pa.int64(), "epoch seconds"),
                Column("n_impressions", pa.int64(), "received up to the row's day end"),
                Column("n_positives", pa.int64()),
                Column("positive_rate", pa.float32()),
                *[
                    Column(f"{name}_{n}d", kind, f"trailing {n}-day window")
                    for n in POST_WINDOWS_DAYS
                    for name, kind in (
                        ("n_events", pa.int64()),
                        ("n_positives", pa.int64()),
                        ("positive_rate", pa.float32()),
                    )
                ],
            ),
        ),
        Table(
            POST_CONTENT,
            "post",
            "Description text embedding of a post.",
            "The description text embedding of each post, valid from its creation.",
            (Column("description_embedding", _EMB_TYPE, _EMBEDDING),),
        ),
    )
}

# derived views of the declaration
SCHEMAS = {name: table.schema for name, table in TABLES.items()}
USER_SCHEMA = SCHEMAS[USER_FEATURES]
USER_PROFILE_SCHEMA = SCHEMAS[USER_PROFILE]
USER_HISTORY_SCHEMA = SCHEMAS[USER_HISTORY]
POST_SCHEMA = SCHEMAS[POST_FEATURES]
POST_CONTENT_SCHEMA = SCHEMAS[POST_CONTENT]
ENTITY_VIEWS = {
    entity: tuple(name for name, t in TABLES.items() if t.entity == entity) for entity in ENTITY_IDS
}
ID_COLUMNS = {name: table.id_column for name, table in TABLES.items()}
EMBEDDING_COLUMNS = {
    entity: tuple(
        c.name for view in views for c in TABLES[view].columns if pa.types.is_list(c.type)
    )
    for entity, views in ENTITY_VIEWS.items()
}
# the feature names of each view (everything but the join key and the timestamp)
FEATURE_NAMES = {name: table.feature_names for name, table in TABLES.items()}


def feature_refs(entity: str) -> list[str]:
    """``view:feature`` references of every feature of an entity (``user`` or ``post``)."""
    return [f"{view}:{name}" for view in ENTITY_VIEWS[entity] for name in FEATURE_NAMES[view]]


# --------------------------------------------------------------------------------------------
# frames in a table's types, and the parquet tables (Feast's offline sources)
# --------------------------------------------------------------------------------------------
def _counts(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=np.int64)
    return pd.to_numeric(df[col], errors="coerce").fillna(0).to_numpy(dtype=np.int64)


def _rate(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=np.float32)
    return pd.to_numeric(df[col], errors="coerce").fillna(0.0).to_numpy(dtype=np.float32)


def conform(df: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """The schema's columns of ``df``, integers and floats in its types (missing: 0)."""
    out = df[[f.name for f in schema]].copy()
    for field in schema:
        if pa.types.is_integer(field.type):
            out[field.name] = _counts(out, field.name)
        elif pa.types.is_floating(field.type):
            out[field.name] = _rate(out, field.name)
    return out


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


def feature_table_location(settings: Settings, name: str) -> str:
    """Where a feature table lives: its parquet file (local profile) or its BigQuery table id
    (gcp: ``socialrec.features.gcp``)."""
    if settings.profile == "gcp":
        from socialrec.features import gcp

        return gcp.feature_table_id(settings, name)
    return str(feature_table_path(settings, name))


def read_feature_table(settings: Settings, name: str) -> pd.DataFrame | None:
    """A whole feature table, or None when it was never written."""
    if settings.profile == "gcp":
        from socialrec.features import gcp

        table = gcp.read_feature_table(settings, name)
        return None if table is None else _from_arrow(table)
    path = feature_table_path(settings, name)
    return _from_arrow(pq.read_table(path)) if path.exists() else None


def write_feature_tables(settings: Settings, tables: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Rewrite the given feature tables (``{view name: frame}``); returns their row counts.

    Each file (local profile) or BigQuery table (gcp: one Parquet load job each) is replaced
    atomically, so Feast never reads half a table. The tables are derived from the warehouse in
    full every time (idempotent)."""
    out = {}
    for name, frame in tables.items():
        if settings.profile == "gcp":
            from socialrec.features import gcp

            gcp.write_feature_table(settings, name, _to_arrow(frame, SCHEMAS[name]))
            out[name] = len(frame)
            continue
        path = feature_table_path(settings, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(_to_arrow(frame, SCHEMAS[name]), tmp)
        os.replace(tmp, path)
        out[name] = len(frame)
    return out
