"""Ranker features: the ONE function that builds them at training and at serving time.

``users_df`` / ``posts_df`` are rows of the ``user_features`` / ``post_features`` tables
(docs/contracts.md), either with an id column (parquet / offline) or indexed by id (the Feast
online readers). Unknown users or posts give missing numeric features (CatBoost handles NaN)
and the category ``"unknown"``. Everything is vectorised: ids are mapped to row positions
once, embeddings are stacked once per table and gathered per pair.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from socialrec.features.text import embedding_matrix
from socialrec.settings import TEXT_EMBEDDING_DIM
from socialrec.timeutil import epoch_seconds, seconds

USER_NUMERIC = ("n_events", "n_impressions", "positive_rate")
POST_NUMERIC = (
    "n_impressions",
    "n_positives",
    "positive_rate",
    "n_events_1d",
    "n_positives_1d",
    "positive_rate_1d",
    "n_events_7d",
    "n_positives_7d",
    "positive_rate_7d",
)
# the candidate sources' signals of a (user, post) pair (socialrec.recommender.sources.merge and
# Recommender.candidates): each source's score and rank (NaN: the source did not return it),
# the merged score, how many sources returned it, and the signals every candidate gets
SOURCE_NAMES = ("two_tower", "neighbours", "trending", "popular", "fresh")
SOURCE_FEATURES = [
    *(f"{name}_{kind}" for name in SOURCE_NAMES for kind in ("score", "rank")),
    "merged_score",
    "n_sources",
    "catalog_trending",
    "catalog_popular",
    "catalog_dwell_ms",
]
CAT_FEATURES = ["post_category_id", "post_media_type"]
RANKER_FEATURES = [
    "user_n_events",
    "user_n_impressions",
    "user_positive_rate",
    "post_category_id",
    "post_media_type",
    *(f"post_{c}" for c in POST_NUMERIC),
    "post_age_hours",
    "category_in_onboarding",
    "category_affinity",
    "user_category_events",
    "user_category_share",
    "user_category_positive_rate",
    "creator_affinity",
    "text_cosine",
    "history_cosine",
    *SOURCE_FEATURES,
]
UNKNOWN = "unknown"


# ---- column parsing, shared with the two-tower encoders (socialrec.models.two_tower) ------------


def parse_categories(value) -> list[int]:
    """Onboarding categories as ints, from "3,7" (warehouse / Feast), a list or array
    (landing), or a missing value."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [int(v) for v in value.replace(";", ",").replace(" ", "").split(",") if v]
    return [int(v) for v in value]


def parse_counts(value) -> dict[int, tuple[int, ...]]:
    """``"3:5:20,7:1:4"`` (``user_history.category_counts`` / ``creator_positives``) as
    ``{3: (5, 20), 7: (1, 4)}``; ``{}`` for a missing or empty value."""
    if not isinstance(value, str) or not value:
        return {}
    out = {}
    for item in value.split(","):
        key, *counts = item.split(":")
        out[int(key)] = tuple(int(c) for c in counts)
    return out


# ---- features -------------------------------------------------------------------------------


def _by_id(df: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """One row per id, indexed by id (the last row wins, e.g. the latest snapshot)."""
    if id_col in df.columns:
        df = df.set_index(id_col)
    if not df.index.is_unique:
        df = df[~df.index.duplicated(keep="last")]
    if "found" in df.columns:  # Feast online rows of unknown ids carry no features
        found = df["found"].to_numpy(dtype=bool)
        if not found.all():
            df = df[found]
    if df.index.dtype != np.int64:
        df = df.set_axis(df.index.astype("int64"))
    return df


def _as_float(series: pd.Series) -> np.ndarray:
    """A column as float64, NaN for what is not a number (numeric columns, nullable Int64 /
    Float32 / bool included, without parsing)."""
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def _numeric(df: pd.DataFrame, col: str, rows: np.ndarray) -> np.ndarray:
    """``df[col]`` at row positions ``rows`` as float64; NaN where the row is -1 (unknown)."""
    values = np.full(len(rows), np.nan)
    if col in df.columns and len(df):
        col_values = _as_float(df[col])
        ok = rows >= 0
        values[ok] = col_values[rows[ok]]
    return values


def _per_row(df: pd.DataFrame, col: str) -> list[dict[int, tuple[int, ...]]]:
    """``parse_counts`` of every row of ``df[col]`` ({} when the column is missing)."""
    if col not in df.columns:
        return [{}] * len(df)
    return [parse_counts(v) for v in df[col].tolist()]


def _gather(df: pd.DataFrame, col: str, rows: np.ndarray) -> np.ndarray:
    """``df[col]`` embeddings at row positions ``rows`` (zeros where -1 or missing)."""
    out = np.zeros((len(rows), TEXT_EMBEDDING_DIM), dtype=np.float32)
    if col in df.columns and len(df):
        ok = rows >= 0
        out[ok] = embedding_matrix(df[col])[rows[ok]]
    return out


def _user_cosine(
    users: pd.DataFrame, col: str, u_row: np.ndarray, description: np.ndarray, desc_norm
) -> np.ndarray:
    """Row-wise cosine of each pair's user vector ``users[col]`` (at ``u_row``) with its post's
    ``description`` (0 where either is all zeros, as :func:`_cosine`). With few users (serving:
    one) a matrix product over the distinct users, not one user vector copied per pair."""
    if len(users) > 64 or col not in users.columns or not len(users):
        return _cosine(_gather(users, col, u_row), description)
    vectors = embedding_matrix(users[col])  # [n_users, d]
    dots = description @ vectors.T  # [n_pairs, n_users]
    ok = u_row >= 0
    dot = np.zeros(len(u_row), dtype=dots.dtype)
    dot[ok] = dots[np.flatnonzero(ok), u_row[ok]]
    norm = np.zeros(len(u_row), dtype=np.float32)
    norm[ok] = np.linalg.norm(vectors, axis=1)[u_row[ok]]
    norm = norm * desc_norm
    return np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; 0 where a vector is all zeros (no text)."""
    dot = np.einsum("ij,ij->i", a, b)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0)


def _aligned(df: pd.DataFrame, id_col: str, n: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows matched 1:1 with the pairs; -1 where a row has no feature at all (a point-in-time
    join before the entity existed)."""
    if len(df) != n:
        raise ValueError(f"aligned frames need {n} rows, got {len(df)}")
    df = df.reset_index(drop=True)
    values = df.drop(columns=[id_col], errors="ignore")
    has = values.notna().any(axis=1).to_numpy() if values.shape[1] else np.zeros(n, bool)
    return df, np.where(has, np.arange(n), -1)


def ranking_features(
    users_df: pd.DataFrame,
    posts_df: pd.DataFrame,
    pairs_df: pd.DataFrame,
    now_ts,
    aligned: bool = False,
) -> pd.DataFrame:
    """Features of every ``(user_id, post_id)`` pair of ``pairs_df``, in its order.

    ``users_df`` / ``posts_df``: one row per id (serving: the online features), or, with
    ``aligned=True``, one row per pair in the pairs' order (training: each sample's features at
    its own time, from a point-in-time join).
    ``now_ts``: the moment of scoring, a scalar (serving) or one value per pair (training:
    the sample's ``ts``), used for ``post_age_hours`` (clipped at 0).
    Returns the ``RANKER_FEATURES`` columns (index aligned with ``pairs_df``).
    """
    n = len(pairs_df)
    user_ids = pairs_df["user_id"].to_numpy(dtype=np.int64)
    if aligned:
        users, u_row = _aligned(users_df, "user_id", n)
        posts, p_row = _aligned(posts_df, "post_id", n)
    else:
        users = _by_id(users_df, "user_id")
        posts = _by_id(posts_df, "post_id")
        u_row = users.index.get_indexer(user_ids)
        p_row = posts.index.get_indexer(pairs_df["post_id"].to_numpy(dtype=np.int64))
    out: dict[str, object] = {}

    for col in USER_NUMERIC:
        out[f"user_{col}"] = _numeric(users, col, u_row)
    category = _numeric(posts, "category_id", p_row)
    out["post_category_id"] = np.where(
        np.isnan(category), UNKNOWN, np.nan_to_num(category).astype(np.int64).astype(str)
    )
    media = np.full(n, UNKNOWN, dtype=object)
    if "media_type" in posts.columns and len(posts):
        known = p_row >= 0
        media[known] = posts["media_type"].astype(object).to_numpy()[p_row[known]]
        media[pd.isna(media)] = UNKNOWN
    out["post_media_type"] = media.astype(str)
    for col in POST_NUMERIC:
        out[f"post_{col}"] = _numeric(posts, col, p_row)
    created = _numeric(posts, "created_at_ts", p_row)
    now_s = (  # a scalar or per-pair "now" (Timestamp, datetime, ISO string or epoch seconds)
        seconds(now_ts)
        if np.isscalar(now_ts) or isinstance(now_ts, dt.datetime | pd.Timestamp)
        else epoch_seconds(now_ts, dtype=np.float64)
    )
    out["post_age_hours"] = np.clip((now_s - created) / 3600.0, 0, None)

    # user x post: is the post's category among the user's onboarding categories?
    onboarding = (
        [frozenset(parse_categories(v)) for v in users["onboarding_categories"]]
        if "onboarding_categories" in users.columns
        else [frozenset()] * len(users)
    )
    cats = np.nan_to_num(category, nan=-1).astype(np.int64)
    out["category_in_onboarding"] = np.fromiter(
        (u >= 0 and c in onboarding[u] for u, c in zip(u_row.tolist(), cats.tolist(), strict=True)),
        dtype=bool,
        count=n,
    ).astype(np.int64)

    # user x post: the user's history in the post's category and with its creator
    # (user_history, point in time): share of the user's positives, events, positive rate
    creators = np.nan_to_num(_numeric(posts, "creator_id", p_row), nan=-1).astype(np.int64)
    cat_counts = _per_row(users, "category_counts")
    creator_counts = _per_row(users, "creator_positives")
    total_pos = [sum(v[0] for v in d.values()) for d in cat_counts]
    total_events = [sum(v[1] for v in d.values() if len(v) > 1) for d in cat_counts]
    cat_aff = np.full(n, np.nan)
    cat_events = np.full(n, np.nan)
    cat_share = np.full(n, np.nan)
    cat_rate = np.full(n, np.nan)
    creator_aff = np.full(n, np.nan)
    for i, (u, c, cr) in enumerate(
        zip(u_row.tolist(), cats.tolist(), creators.tolist(), strict=True)
    ):
        if u < 0:
            continue
        pos, events = cat_counts[u].get(c, (0, 0))
        total = total_pos[u]
        cat_aff[i] = pos / total if total else 0.0
        cat_events[i] = events
        cat_share[i] = events / total_events[u] if total_events[u] else 0.0
        cat_rate[i] = pos / events if events else np.nan
        creator_aff[i] = creator_counts[u].get(cr, (0,))[0] / total if total else 0.0
    out["category_affinity"] = cat_aff
    out["user_category_events"] = cat_events
    out["user_category_share"] = cat_share
    out["user_category_positive_rate"] = cat_rate
    out["creator_affinity"] = creator_aff

    # user x post: cosine of the description embedding with the profile embedding and with
    # the mean embedding of the user's latest liked posts (gathered, then row-wise)
    description = _gather(posts, "description_embedding", p_row)
    desc_norm = np.linalg.norm(description, axis=1)
    out["text_cosine"] = _user_cosine(users, "profile_embedding", u_row, description, desc_norm)
    out["history_cosine"] = _user_cosine(users, "history_embedding", u_row, description, desc_norm)

    # the sources' signals of the pair (serving: the merged candidates; training: the same
    # replayed sources, as of the request)
    for col in SOURCE_FEATURES:
        out[col] = _as_float(pairs_df[col]) if col in pairs_df.columns else np.full(n, np.nan)
    if "retrieval_score" in pairs_df.columns and "two_tower_score" not in pairs_df.columns:
        out["two_tower_score"] = _as_float(pairs_df["retrieval_score"])

    return pd.DataFrame({c: out[c] for c in RANKER_FEATURES}, index=pairs_df.index)
