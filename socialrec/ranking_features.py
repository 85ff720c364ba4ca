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

from socialrec.settings import TEXT_EMBEDDING_DIM
from socialrec.text import embedding_matrix

USER_NUMERIC = ("n_events", "n_impressions", "positive_rate")
POST_NUMERIC = ("n_impressions", "positive_rate")
CAT_FEATURES = ["post_category_id", "post_media_type"]
RANKER_FEATURES = [
    "user_n_events",
    "user_n_impressions",
    "user_positive_rate",
    "post_category_id",
    "post_media_type",
    "post_n_impressions",
    "post_positive_rate",
    "post_age_hours",
    "category_in_onboarding",
    "text_cosine",
]
UNKNOWN = "unknown"


# ---- column parsing, shared with the two-tower encoders (socialrec.two_tower) ------------


def parse_categories(value) -> list[int]:
    """Onboarding categories as ints, from "3,7" (warehouse / Feast), a list or array
    (landing), or a missing value."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [int(v) for v in value.replace(";", ",").replace(" ", "").split(",") if v]
    return [int(v) for v in value]


# ---- features -------------------------------------------------------------------------------


def _by_id(df: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """One row per id, indexed by id (the last row wins, e.g. the latest snapshot)."""
    if id_col in df.columns:
        df = df.set_index(id_col)
    df = df[~df.index.duplicated(keep="last")]
    if "found" in df.columns:  # Feast online rows of unknown ids carry no features
        df = df[df["found"].astype(bool)]
    df.index = df.index.astype("int64")
    return df


def _numeric(df: pd.DataFrame, col: str, rows: np.ndarray) -> np.ndarray:
    """``df[col]`` at row positions ``rows`` as float64; NaN where the row is -1 (unknown)."""
    values = np.full(len(rows), np.nan)
    if col in df.columns and len(df):
        col_values = pd.to_numeric(df[col], errors="coerce").astype("float64").to_numpy()
        ok = rows >= 0
        values[ok] = col_values[rows[ok]]
    return values


def _to_epoch_seconds(now_ts, n: int) -> np.ndarray:
    """A scalar or per-pair "now" (Timestamp, datetime, ISO string or epoch seconds)."""
    if np.isscalar(now_ts) or isinstance(now_ts, dt.datetime | pd.Timestamp):
        if isinstance(now_ts, int | float | np.number):
            return np.full(n, float(now_ts))
        return np.full(n, pd.Timestamp(now_ts).timestamp())
    values = pd.Series(now_ts).reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64)
    ts = pd.to_datetime(values, utc=True)
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


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
    out["post_age_hours"] = np.clip((_to_epoch_seconds(now_ts, n) - created) / 3600.0, 0, None)

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

    # user x post: cosine of profile and description embeddings (gathered, then row-wise)
    profile = np.zeros((n, TEXT_EMBEDDING_DIM), dtype=np.float32)
    description = np.zeros((n, TEXT_EMBEDDING_DIM), dtype=np.float32)
    if "profile_embedding" in users.columns and len(users):
        ok = u_row >= 0
        profile[ok] = embedding_matrix(users["profile_embedding"])[u_row[ok]]
    if "description_embedding" in posts.columns and len(posts):
        ok = p_row >= 0
        description[ok] = embedding_matrix(posts["description_embedding"])[p_row[ok]]
    out["text_cosine"] = _cosine(profile, description)

    return pd.DataFrame(out, index=pairs_df.index)[RANKER_FEATURES]
