"""The two-tower model's inputs: input columns -> named arrays, ONE function per tower
(:func:`encode_users`, :func:`encode_posts`), used in training, after
:meth:`socialrec.models.two_tower.TwoTowerModel.load` and at serving time. No TensorFlow here.

* User tower: user id, onboarding categories (multi-hot over the category slots), category
  affinity (the user's share of positives per category slot, from ``user_history``), profile
  text embedding, the mean embedding of the latest liked posts (``history_embedding``),
  activity (log counts of events and positives, positive rate).
* Post tower: post id, category, media type, creator (-1 when missing), age bucket (hours since
  creation at a given moment; unknown when no moment is given), description text embedding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from socialrec.features.ranking import parse_categories, parse_counts
from socialrec.features.text import embedding_matrix
from socialrec.settings import MEDIA_TYPES
from socialrec.timeutil import seconds

USER_TOWER_INPUTS = (
    "user_id",
    "onboarding",
    "category_affinity",
    "profile_embedding",
    "history_embedding",
    "activity",
)
POST_TOWER_INPUTS = (
    "post_id",
    "category_id",
    "media_type",
    "creator_id",
    "age_bucket",
    "description_embedding",
)
ACTIVITY_FEATURES = 3
# post age buckets (upper bounds in hours): <6h, <1d, <3d, <1w, <30d, older; -1 = unknown
AGE_BUCKET_HOURS = (6.0, 24.0, 72.0, 168.0, 720.0)


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df.columns:
        return np.zeros(len(df), dtype=np.float32)
    return pd.to_numeric(df[col], errors="coerce").fillna(0).to_numpy(dtype=np.float32)


def _column(df: pd.DataFrame, col: str) -> list:
    return df[col].tolist() if col in df.columns else [None] * len(df)


def age_buckets(age_hours) -> np.ndarray:
    """int64 bucket of each age in hours (``AGE_BUCKET_HOURS``); -1 where unknown (NaN)."""
    age = pd.to_numeric(pd.Series(np.asarray(age_hours, dtype=object)), errors="coerce")
    out = np.searchsorted(np.asarray(AGE_BUCKET_HOURS), age.fillna(0).clip(lower=0), "right")
    return np.where(age.isna(), -1, out).astype(np.int64)


def encode_users(users_df: pd.DataFrame, category_slots: list[int]) -> dict[str, np.ndarray]:
    """User tower inputs: ``user_id`` int64, ``onboarding`` multi-hot float32 over the
    category slots (unknown categories ignored), ``category_affinity`` float32 over the slots
    (share of the user's positives, from ``category_counts``; 0 without history),
    ``profile_embedding`` / ``history_embedding`` float32[384] (zeros when missing),
    ``activity`` float32[3] (log1p events, log1p positives, positive rate; 0 when missing)."""
    slot = {c: i for i, c in enumerate(category_slots)}
    n = len(users_df)
    multi_hot = np.zeros((n, len(category_slots)), dtype=np.float32)
    rows, cols = [], []
    for i, value in enumerate(users_df["onboarding_categories"].tolist()):
        for c in parse_categories(value):
            if c in slot:
                rows.append(i)
                cols.append(slot[c])
    multi_hot[rows, cols] = 1.0
    affinity = np.zeros((n, len(category_slots)), dtype=np.float32)
    for i, value in enumerate(_column(users_df, "category_counts")):
        counts = parse_counts(value)
        total = sum(v[0] for v in counts.values())
        if total:
            for c, (pos, *_) in counts.items():
                if c in slot:
                    affinity[i, slot[c]] = pos / total
    activity = np.stack(
        [
            np.log1p(np.maximum(_numeric(users_df, "n_events"), 0)),
            np.log1p(np.maximum(_numeric(users_df, "n_positives"), 0)),
            np.clip(_numeric(users_df, "positive_rate"), 0, 1),
        ],
        axis=1,
    ).astype(np.float32)
    return {
        "user_id": users_df["user_id"].to_numpy(dtype=np.int64),
        "onboarding": multi_hot,
        "category_affinity": affinity,
        "profile_embedding": embedding_matrix(users_df["profile_embedding"]),
        "history_embedding": embedding_matrix(_column(users_df, "history_embedding")),
        "activity": activity,
    }


def encode_posts(posts_df: pd.DataFrame, now=None) -> dict[str, np.ndarray]:
    """Post tower inputs: ``post_id`` int64, ``category_id`` int64 (-1 when missing),
    ``media_type`` int64 (index in MEDIA_TYPES, -1 when unknown), ``creator_id`` int64 (-1
    when missing), ``age_bucket`` int64 (from an ``age_hours`` column, else from
    ``created_at_ts`` and ``now``; -1 when neither), ``description_embedding`` float32[384]."""
    if "age_hours" in posts_df.columns:
        age = pd.to_numeric(posts_df["age_hours"], errors="coerce").to_numpy(dtype=np.float64)
    elif now is not None and "created_at_ts" in posts_df.columns:
        created = pd.to_numeric(posts_df["created_at_ts"], errors="coerce")
        age = ((seconds(now) - created) / 3600.0).to_numpy(dtype=np.float64)
    else:
        age = np.full(len(posts_df), np.nan)
    media_index = {m: i for i, m in enumerate(MEDIA_TYPES)}
    media = (
        posts_df["media_type"]
        if "media_type" in posts_df.columns
        else pd.Series([None] * len(posts_df), index=posts_df.index)
    )
    creator = (
        posts_df["creator_id"]
        if "creator_id" in posts_df.columns
        else pd.Series(np.nan, index=posts_df.index)
    )
    return {
        "post_id": posts_df["post_id"].to_numpy(dtype=np.int64),
        "category_id": pd.to_numeric(posts_df["category_id"]).fillna(-1).to_numpy(dtype=np.int64),
        "media_type": np.asarray([media_index.get(v, -1) for v in media], dtype=np.int64),
        "creator_id": pd.to_numeric(creator).fillna(-1).to_numpy(dtype=np.int64),
        "age_bucket": age_buckets(age),
        "description_embedding": embedding_matrix(posts_df["description_embedding"]),
    }
