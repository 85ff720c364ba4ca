"""Writing the landing files: events per UTC day, the dimensions as one snapshot."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from socialrec.data.importers.options import ImportOptions
from socialrec.data.landing import LandingBucket, encode_jsonl, landing_key


def _chunks(df: pd.DataFrame, n: int) -> Iterator[tuple[int, pd.DataFrame]]:
    for i in range(0, len(df), n):
        yield i // n, df.iloc[i : i + n]


def _write(
    bucket: LandingBucket,
    opts: ImportOptions,
    pairs: pd.DataFrame,
    posts: pd.DataFrame,
    users: pd.DataFrame,
    names: list[str],
    fmt: str,
) -> list[str]:
    keys: list[str] = []
    src = opts.source

    def put(key: str, records: Iterator[dict]) -> None:
        bucket.write_bytes(key, encode_jsonl(records))
        keys.append(key)

    ev = pd.DataFrame(
        {
            "event_id": [
                f"{src}-{r}-{t}" for r, t in zip(pairs["row"], pairs["event_type"], strict=True)
            ],
            "user_id": pairs["user_id"].to_numpy(),
            "post_id": pairs["post_id"].to_numpy(),
            "event_type": pairs["event_type"].to_numpy(),
            "ts": pairs["ts"].dt.strftime(fmt).to_numpy(),
            "dwell_ms": pairs["dwell_ms"].to_numpy(),
            "day": pairs["ts"].dt.strftime("%Y-%m-%d").to_numpy(),
        }
    )
    for day, part in ev.groupby("day", sort=True):
        for i, chunk in _chunks(part, opts.rows_per_file):
            put(landing_key("events", day, f"{src}-events-{i:04d}.jsonl.gz"), _event_records(chunk))

    snapshot = ev["day"].max()  # the dimensions are a snapshot as of the log's last day
    post_rows = posts.sort_values("post_id")
    for i, chunk in _chunks(post_rows, opts.rows_per_file):
        put(
            landing_key("posts", snapshot, f"{src}-posts-{i:04d}.jsonl.gz"),
            (
                {
                    "post_id": int(p.post_id),
                    "creator_id": None if pd.isna(p.creator_id) else int(p.creator_id),
                    "category_id": int(p.category_id),
                    "media_type": opts.media_type,
                    "description": p.description,
                    "created_at": p.created_at.strftime(fmt),
                }
                for p in chunk.itertuples(index=False)
            ),
        )
    for i, chunk in _chunks(users, opts.rows_per_file):
        put(
            landing_key("users", snapshot, f"{src}-users-{i:04d}.jsonl.gz"),
            (
                {
                    "user_id": int(u.user_id),
                    "created_at": u.created_at.strftime(fmt),
                    "headline": u.headline,
                    "about": u.about,
                    "onboarding_categories": [int(c) for c in u.onboarding_categories],
                }
                for u in chunk.itertuples(index=False)
            ),
        )
    put(
        landing_key("categories", snapshot, f"{src}-categories-0000.jsonl.gz"),
        ({"category_id": i, "name": name} for i, name in enumerate(names, start=1)),
    )
    return keys


def _event_records(chunk: pd.DataFrame) -> Iterator[dict]:
    for e in chunk.itertuples(index=False):
        dwell = None if np.isnan(e.dwell_ms) or e.dwell_ms < 0 else int(round(e.dwell_ms))
        yield {
            "event_id": e.event_id,
            "user_id": int(e.user_id),
            "post_id": int(e.post_id),
            "event_type": e.event_type,
            "ts": e.ts,
            "dwell_ms": dwell,
        }
