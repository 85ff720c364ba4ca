"""MovieLens (ml-latest-small layout): a preset of options plus the tags.csv aggregation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec.data.importers.core import import_interactions
from socialrec.data.landing import LandingBucket

MOVIELENS_OPTIONS: dict[str, Any] = {
    "source": "movielens",
    "user_col": "userId",
    "item_col": "movieId",
    "time_col": "timestamp",
    "time_unit": "s",
    "rating_col": "rating",
    "rating_rules": "five_star",  # every rating VIEW, >= 4 LIKE, <= 2 DISLIKE
    "text_cols": ["title", "genres_text", "tags_text"],
    "category_col": "genres",
    "category_sep": "|",  # the first genre is the category
    "media_type": "video",
    "creator": "category",  # one synthetic creator per (first) genre
}


def movielens_items(dataset_dir: str | Path, max_tags: int = 20) -> pd.DataFrame:
    """movies.csv + tags.csv -> movieId, title, genres, genres_text, tags_text.

    Tags are aggregated per movie: distinct case-insensitively, most frequent first (ties: the
    first seen), at most ``max_tags``; tags.csv is optional."""
    d = Path(dataset_dir)
    movies = pd.read_csv(d / "movies.csv", dtype={"movieId": str, "title": str, "genres": str})
    genres = movies["genres"].fillna("")
    movies["genres_text"] = [
        "" if g in ("", "(no genres listed)") else "Genres: " + ", ".join(g.split("|"))
        for g in genres
    ]
    tags_text: dict[str, str] = {}
    if (d / "tags.csv").exists():
        tags = pd.read_csv(d / "tags.csv", dtype={"movieId": str, "tag": str})
        tags["tag"] = tags["tag"].fillna("").str.strip()
        tags = tags[tags["tag"] != ""].reset_index(drop=True)
        tags["norm"] = tags["tag"].str.lower()
        tags["order"] = np.arange(len(tags))
        agg = (
            tags.groupby(["movieId", "norm"], sort=False)
            .agg(tag=("tag", "first"), n=("tag", "size"), order=("order", "min"))
            .reset_index()
            .sort_values(["movieId", "n", "order"], ascending=[True, False, True])
        )
        for movie, g in agg.groupby("movieId", sort=False):
            tags_text[movie] = "Tags: " + ", ".join(g["tag"].head(max_tags))
    movies["tags_text"] = movies["movieId"].map(tags_text).fillna("")
    return movies[["movieId", "title", "genres", "genres_text", "tags_text"]]


def import_movielens(
    dataset_dir: str | Path,
    bucket: LandingBucket | str,
    *,
    max_tags: int = 20,
    now: dt.datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """MovieLens (ml-latest-small layout: ratings.csv, movies.csv, tags.csv) into the landing
    layout with MOVIELENS_OPTIONS (``overrides``: any other option, e.g. ``shift_to``)."""
    d = Path(dataset_dir)
    return import_interactions(
        d / "ratings.csv",
        bucket,
        items=movielens_items(d, max_tags),
        options={**MOVIELENS_OPTIONS, **overrides},
        now=now,
    )
