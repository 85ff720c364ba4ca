"""Stage 2, filtering: drop posts the user has seen, disliked or reported, their own, posts of
creators they blocked, and posts no longer in the live catalog (deleted)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from socialrec.recommender.context import Context
from socialrec.stores.catalog import Catalog
from socialrec.stores.seen.base import PostSet, contains_many


def filter_candidates(
    candidates: Sequence[tuple[int, float]],
    user_id: int,
    seen: PostSet,
    negatives: PostSet,
    creator_of: dict[int, int],
    blocked_creators: set[int] | frozenset[int] = frozenset(),
    created_of: dict[int, float] | None = None,
    now: float | None = None,
) -> tuple[list[tuple[int, float]], dict[str, int]]:
    """Candidates minus the posts the user disliked or reported (``negative``), has seen
    (``seen``), made (``own``), posts of creators the user blocked (``blocked``), posts
    missing from the live catalog ``creator_of`` (``deleted``: tombstoned since the index was
    built, or unknown) and, given ``created_of`` and ``now``, posts created after ``now``
    (``unpublished``: only a replay of the past meets them); also the drop counts per reason.
    ``seen`` and ``negatives`` answer ``in`` (sets, or the user's Bloom filter: a post it
    takes for seen is dropped as seen)."""
    dropped = {"seen": 0, "negative": 0, "own": 0, "blocked": 0, "deleted": 0, "unpublished": 0}
    kept = []
    for post_id, score in candidates:
        creator = creator_of.get(post_id)
        if post_id in negatives:
            dropped["negative"] += 1
        elif post_id in seen:
            dropped["seen"] += 1
        elif creator is None:
            dropped["deleted"] += 1
        elif creator == user_id:
            dropped["own"] += 1
        elif creator in blocked_creators:
            dropped["blocked"] += 1
        elif created_of is not None and now is not None and created_of.get(post_id, 0) > now:
            dropped["unpublished"] += 1
        else:
            kept.append((post_id, score))
    return kept, dropped


def filter_merged(
    merged: pd.DataFrame, ctx: Context, catalog: Catalog
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The merged candidates (``socialrec.recommender.sources.merge``) the request may show,
    in their order, and the drop counts (:func:`filter_candidates` with the request's seen
    state and the catalog's creators and creation times). The seen test is one vectorised
    :func:`contains_many` over the candidates (the seen set may be a Bloom filter)."""
    now_s = int(ctx.now.timestamp())
    id_array = merged["post_id"].to_numpy(dtype=np.int64)
    ids = id_array.tolist()
    seen = frozenset(id_array[contains_many(ctx.seen, id_array)].tolist())
    meta = catalog.metadata(ids)
    creators = dict(zip(meta["post_id"].tolist(), meta["creator_id"].tolist(), strict=True))
    created = dict(zip(meta["post_id"].tolist(), meta["created_at"].tolist(), strict=True))
    kept, dropped = filter_candidates(
        [(p, 0.0) for p in ids], ctx.user_id, seen, ctx.negatives, creators,
        ctx.blocked, created, now_s,
    )  # fmt: skip
    keep = {p for p, _ in kept}
    return merged[merged["post_id"].isin(keep)].reset_index(drop=True), dropped
