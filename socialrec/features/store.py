"""Feature tables and the Feast feature store (embedded default: DuckDB offline, SQLite online).

Five feature views, three of the user and two of the post (columns: docs/contracts.md,
"Feature tables"):

* ``user_features`` — onboarding categories and activity counts, a POINT-IN-TIME history: a row
  at the user's creation (zero counts) and one per day with events (cumulative counts up to the
  end of that day, valid from the next midnight; the dbt model ``user_daily_activity``);
* ``user_profile`` — the MiniLM profile embedding, one row valid from the user's creation;
* ``user_history`` — what the user engaged with, the same kind of daily history: positives
  and events per category, positives per creator, the mean embedding of the latest liked posts
  (:func:`build_user_history`);
* ``post_features`` — creator (``UNKNOWN_CREATOR_ID`` = -1 when unknown), category, media type,
  creation time and engagement counts, the same kind of history (``post_daily_activity``),
  with 1- and 7-day trailing windows;
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

from socialrec.features.text import embedding_matrix, embeddings_to_arrow
from socialrec.settings import TEXT_EMBEDDING_DIM, UNKNOWN_CREATOR_ID, Settings
from socialrec.stores.catalog import creator_id_array

PROJECT = "socialrec"
USER_FEATURES = "user_features"
USER_PROFILE = "user_profile"
POST_FEATURES = "post_features"
POST_CONTENT = "post_content"
USER_HISTORY = "user_history"
# the post_features engagement windows (days); rows are added when a window empties
POST_WINDOWS_DAYS = (1, 7)
HISTORY_RECENT_LIKES = 20  # history_embedding: the mean of this many latest liked posts
HISTORY_TOP_CREATORS = 50  # creator_positives keeps the user's top creators only
HISTORY_RECENT_POSTS = 50  # recent_post_ids / recent_positive_ids: this many latest posts
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
        *[
            (f"{name}_{n}d", kind)
            for n in POST_WINDOWS_DAYS
            for name, kind in (
                ("n_events", pa.int64()),
                ("n_positives", pa.int64()),
                ("positive_rate", pa.float32()),
            )
        ],
    ]
)
POST_CONTENT_SCHEMA = pa.schema(
    [("post_id", pa.int64()), (TIMESTAMP, _TS_TYPE), ("description_embedding", _EMB_TYPE)]
)
USER_HISTORY_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        (TIMESTAMP, _TS_TYPE),
        # "category:positives:events,..." over every category the user had events in
        ("category_counts", pa.string()),
        # "creator:positives,..." for the user's HISTORY_TOP_CREATORS most liked creators
        ("creator_positives", pa.string()),
        # the mean description embedding of the HISTORY_RECENT_LIKES latest liked posts
        ("history_embedding", _EMB_TYPE),
        # "id,id,...": the user's latest distinct posts, newest first, of any event and of the
        # positive events (the neighbours candidate source starts from them)
        ("recent_post_ids", pa.string()),
        ("recent_positive_ids", pa.string()),
    ]
)
SCHEMAS = {
    USER_FEATURES: USER_SCHEMA,
    USER_PROFILE: USER_PROFILE_SCHEMA,
    USER_HISTORY: USER_HISTORY_SCHEMA,
    POST_FEATURES: POST_SCHEMA,
    POST_CONTENT: POST_CONTENT_SCHEMA,
}
ENTITY_VIEWS = {
    "user": (USER_FEATURES, USER_PROFILE, USER_HISTORY),
    "post": (POST_FEATURES, POST_CONTENT),
}
ENTITY_IDS = {"user": "user_id", "post": "post_id"}
ID_COLUMNS = {name: ENTITY_IDS[e] for e, views in ENTITY_VIEWS.items() for name in views}
EMBEDDING_COLUMNS = {
    "user": ("profile_embedding", "history_embedding"),
    "post": ("description_embedding",),
}
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
            "creator_id": creator_id_array(dim_posts["creator_id"]),  # null -> -1
            "category_id": dim_posts["category_id"].to_numpy(dtype=np.int64),
            "media_type": dim_posts["media_type"].astype(str).to_numpy(),
            "created_at_ts": ((created - _EPOCH) // pd.Timedelta(seconds=1)).to_numpy(np.int64),
        }
    )
    counts = ["n_events", "n_impressions", "n_positives"]
    if post_daily_activity is not None and "n_events" not in post_daily_activity.columns:
        post_daily_activity = post_daily_activity.assign(n_events=0)
    out = _history(base, post_daily_activity, "post_id", counts)
    out = _windows(out, "post_id", POST_WINDOWS_DAYS)
    return _conform(out, POST_SCHEMA)


def _windows(history: pd.DataFrame, id_col: str, windows_days: Sequence[int]) -> pd.DataFrame:
    """Add trailing-window counts to a cumulative history: ``n_events_Nd`` / ``n_positives_Nd``
    = the cumulative count at the row's time minus the count N days earlier, and
    ``positive_rate_Nd`` = positives / events of the window (0 without events).

    A row's window must also EMPTY when nothing happens: for every row, a copy is added N days
    later (same cumulative counts, so the window counts fall to what happened since), unless
    the entity already has a row at that instant (rows without any events yet are not
    copied). Point-in-time: every value is computed from
    rows at or before its own timestamp."""
    static = [c for c in history.columns if c not in (id_col, TIMESTAMP, "n_events", "n_positives")]
    base = history.sort_values([id_col, TIMESTAMP], kind="stable")
    later = [base]
    active = base[base["n_events"] > 0]  # rows that put events in a window
    for n in windows_days:
        later.append(active.assign(**{TIMESTAMP: active[TIMESTAMP] + pd.Timedelta(days=n)}))
    rows = pd.concat(later, ignore_index=True)
    # a shifted copy carries the counts of its origin; the original rows win on ties
    rows = rows.drop_duplicates([id_col, TIMESTAMP], keep="first")
    rows = rows.sort_values([TIMESTAMP, id_col], kind="stable", ignore_index=True)
    # cumulative counts at each instant: the latest original row at or before it
    cum = base[[id_col, TIMESTAMP, "n_events", "n_positives", *static]].sort_values(TIMESTAMP)
    at = pd.merge_asof(
        rows[[id_col, TIMESTAMP]], cum, on=TIMESTAMP, by=id_col, direction="backward"
    )
    for n in windows_days:
        before = pd.merge_asof(
            rows[[id_col, TIMESTAMP]]
            .assign(_t=rows[TIMESTAMP] - pd.Timedelta(days=n), _k=np.arange(len(rows)))
            .sort_values("_t"),
            cum[[id_col, TIMESTAMP, "n_events", "n_positives"]].rename(columns={TIMESTAMP: "_t"}),
            on="_t",
            by=id_col,
            direction="backward",
        ).sort_values("_k")
        ev = at["n_events"].to_numpy() - before["n_events"].fillna(0).to_numpy()
        po = at["n_positives"].to_numpy() - before["n_positives"].fillna(0).to_numpy()
        at[f"n_events_{n}d"] = ev.astype(np.int64)
        at[f"n_positives_{n}d"] = po.astype(np.int64)
        at[f"positive_rate_{n}d"] = np.divide(
            po, ev, out=np.zeros(len(ev), dtype=np.float64), where=ev > 0
        )
    return at


def _count_string(counts: dict[int, list[int]], top: int | None = None) -> str:
    items = counts.items()
    if top is not None and len(counts) > top:
        items = sorted(items, key=lambda kv: (-kv[1][0], kv[0]))[:top]
    return ",".join(":".join(str(v) for v in (k, *vals)) for k, vals in sorted(items))


def build_user_history(
    interactions: pd.DataFrame,
    dim_posts: pd.DataFrame,
    post_emb: pd.DataFrame | None,
    recent_likes: int = HISTORY_RECENT_LIKES,
    top_creators: int = HISTORY_TOP_CREATORS,
    recent_posts: int = HISTORY_RECENT_POSTS,
) -> pd.DataFrame:
    """The ``user_history`` table (columns of ``USER_HISTORY_SCHEMA``): one row per (user, day
    with events), valid from the next midnight, summarising every event up to that day's end:

    * ``category_counts``: positives and events per category of the posts (the user's category
      affinity and positive rate per category);
    * ``creator_positives``: positives per creator (the ``top_creators`` most liked; posts of
      unknown creators left out);
    * ``history_embedding``: the mean description embedding of the ``recent_likes`` latest
      positively engaged posts (zeros before the first one);
    * ``recent_post_ids`` / ``recent_positive_ids``: the ``recent_posts`` latest distinct posts
      of any event / of the positive events, newest first ("id,id,...").

    ``interactions``: ``fct_interactions`` rows (user_id, post_id, ts, is_positive).
    Like the dbt daily histories, a point-in-time join at t sees only days that ended before t.
    """
    cols = [f.name for f in USER_HISTORY_SCHEMA]
    if interactions is None or interactions.empty:
        return pd.DataFrame(columns=cols)
    posts = dim_posts.drop_duplicates("post_id", keep="last").set_index("post_id")
    ev = interactions[["user_id", "post_id", "ts", "is_positive"]].copy()
    ev = ev[ev["post_id"].isin(posts.index)]
    ev["ts"] = _utc_series(ev["ts"]).to_numpy()
    ev["day"] = ev["ts"].dt.floor("D")
    ev["category_id"] = posts["category_id"].reindex(ev["post_id"]).to_numpy(dtype=np.int64)
    ev["creator_id"] = creator_id_array(posts["creator_id"].reindex(ev["post_id"]))
    ev["is_positive"] = ev["is_positive"].fillna(0).astype(np.int64)
    ev = ev.sort_values(["user_id", "ts", "post_id"], kind="stable", ignore_index=True)

    # the liked posts' embeddings in (user, ts) order, and their running sums
    liked = ev[ev["is_positive"] == 1]
    emb = np.asarray(
        _attach_embeddings(liked["post_id"].to_numpy(dtype=np.int64), post_emb, "post_id"),
        dtype=np.float32,
    ).reshape(len(liked), TEXT_EMBEDDING_DIM)
    csum = np.vstack([np.zeros((1, TEXT_EMBEDDING_DIM)), np.cumsum(emb, axis=0, dtype=np.float64)])
    liked_users = liked["user_id"].to_numpy()
    liked_days = liked["day"].to_numpy()
    all_users, all_days = ev["user_id"].to_numpy(), ev["day"].to_numpy()
    all_posts, all_pos = ev["post_id"].to_numpy(dtype=np.int64), ev["is_positive"].to_numpy()

    out_rows: list[tuple] = []
    out_emb: list[np.ndarray] = []
    zero = np.zeros(TEXT_EMBEDDING_DIM, dtype=np.float32)
    daily = ev.groupby(["user_id", "day", "category_id", "creator_id"], sort=True).agg(
        n=("post_id", "size"), pos=("is_positive", "sum")
    )
    for user_id, user_rows in daily.groupby(level="user_id", sort=True):
        cats: dict[int, list[int]] = {}
        creators: dict[int, list[int]] = {}
        # this user's liked posts: positions [lo, hi) of the running sums
        lo = np.searchsorted(liked_users, user_id, side="left")
        hi_user = np.searchsorted(liked_users, user_id, side="right")
        a = np.searchsorted(all_users, user_id, side="left")
        b = np.searchsorted(all_users, user_id, side="right")
        user_posts, user_pos = all_posts[a:b], all_pos[a:b].astype(bool)
        for day, day_rows in user_rows.groupby(level="day", sort=True):
            for (_, _, cat, creator), n, pos in zip(
                day_rows.index, day_rows["n"], day_rows["pos"], strict=True
            ):
                c = cats.setdefault(int(cat), [0, 0])
                c[0] += int(pos)
                c[1] += int(n)
                if pos and creator != UNKNOWN_CREATOR_ID:  # no affinity to "unknown"
                    creators.setdefault(int(creator), [0])[0] += int(pos)
            # liked posts up to this day's end
            end = lo + int(np.searchsorted(liked_days[lo:hi_user], day, side="right"))
            start = max(lo, end - recent_likes)
            vec = (
                ((csum[end] - csum[start]) / (end - start)).astype(np.float32)
                if end > start
                else zero
            )
            upto = int(np.searchsorted(all_days[a:b], day, side="right"))
            out_rows.append(
                (
                    int(user_id),
                    day + pd.Timedelta(days=1),
                    _count_string(cats),
                    _count_string(creators, top_creators),
                    _latest_distinct(user_posts[:upto], recent_posts),
                    _latest_distinct(user_posts[:upto][user_pos[:upto]], recent_posts),
                )
            )
            out_emb.append(vec)
    out = pd.DataFrame(out_rows, columns=[*cols[:4], *cols[5:]])
    out["history_embedding"] = out_emb
    out = out[cols]
    return out.sort_values([TIMESTAMP, "user_id"], kind="stable", ignore_index=True)


def _latest_distinct(posts: np.ndarray, n: int) -> str:
    """The ``n`` latest distinct ids of a time-ordered array, newest first, as "id,id,..."."""
    out: list[int] = []
    seen: set[int] = set()
    for p in posts[::-1].tolist():
        if p not in seen:
            seen.add(p)
            out.append(p)
            if len(out) == n:
                break
    return ",".join(map(str, out))


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
    emb_cols = EMBEDDING_COLUMNS[entity]
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
        if name in emb_cols:
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


# --------------------------------------------------------------------------------------------
# writing one post online (the service's POST /posts)
# --------------------------------------------------------------------------------------------
POST_ATTRIBUTE_COLUMNS = ("creator_id", "category_id", "media_type", "created_at_ts")
# the engagement counts of post_features (zero for a new post)
POST_COUNT_COLUMNS = tuple(
    c for c in FEATURE_NAMES[POST_FEATURES] if c not in POST_ATTRIBUTE_COLUMNS
)


def write_online_post(
    store: FeatureStore, post: dict, counts: dict | None = None, at=None
) -> dict[str, int]:
    """Write one post's online features with Feast's own write path,
    ``FeatureStore.write_to_online_store``: ``post_features`` (the attributes, ``created_at_ts``
    = epoch seconds of ``post["created_at"]``, engagement counts from ``counts`` — zero when
    missing, i.e. a new post) and ``post_content`` (``post["description_embedding"]``), columns
    as ``POST_SCHEMA`` / ``POST_CONTENT_SCHEMA``, ``event_timestamp`` = ``at`` (default now: the
    newest value of the post). Visible to the very next online read; the next materialization
    of the offline tables overwrites it. Returns the rows written per view."""
    created = _utc_us(post["created_at"])
    ts = _utc_us(at if at is not None else pd.Timestamp.now(tz="UTC"))
    counts = counts or {}
    row = {
        "post_id": int(post["post_id"]),
        TIMESTAMP: ts,
        "creator_id": creator_id_array([post.get("creator_id")])[0],
        "category_id": int(post["category_id"]),
        "media_type": str(post["media_type"]),
        "created_at_ts": int((created - _EPOCH) // pd.Timedelta(seconds=1)),
        **{c: 0 if pd.isna(counts.get(c)) else counts[c] for c in POST_COUNT_COLUMNS},
    }
    frames = {
        POST_FEATURES: _conform(pd.DataFrame([row]), POST_SCHEMA),
        POST_CONTENT: pd.DataFrame(
            {
                "post_id": [row["post_id"]],
                TIMESTAMP: [ts],
                "description_embedding": [
                    np.asarray(post["description_embedding"], dtype=np.float32).reshape(-1)
                ],
            }
        ),
    }
    for name, frame in frames.items():
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        store.write_to_online_store(feature_view_name=name, df=frame)
    return {name: len(frame) for name, frame in frames.items()}
