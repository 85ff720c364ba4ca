"""Stage 1, retrieval: the candidate sources (:mod:`socialrec.recommender.sources`) asked for
one request and merged, plus the per-candidate signals every candidate gets whichever source
found it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from socialrec.recommender import sources as _sources
from socialrec.recommender.context import Context
from socialrec.recommender.parts import Searcher
from socialrec.settings import Settings
from socialrec.stores.catalog import Catalog

preferred_categories = _sources.preferred_categories


def retrieve(
    index: Searcher,
    alias: str,
    user_vector: np.ndarray,
    top_n: int,
    category_ids: Sequence[int],
    exploration_share: float,
) -> list[tuple[int, float]]:
    """The two-tower source's ANN search (:func:`socialrec.recommender.sources.retrieve_two_tower`)."""
    return _sources.retrieve_two_tower(
        index, alias, user_vector, top_n, category_ids, exploration_share
    )


def build_sources(
    settings: Settings, index: Any, neighbours: Any, catalog: Catalog
) -> list[_sources.CandidateSource]:
    """The sources ``settings.candidate_sources`` names, those whose part is there."""
    s = settings
    built: list[_sources.CandidateSource] = []
    for name in s.candidate_sources:
        if name == "two_tower" and index is not None:
            built.append(_sources.TwoTowerSource(index, s.collection_alias, s.exploration_share))
        elif name == "neighbours" and neighbours is not None:
            built.append(_sources.NeighbourSource(neighbours))
        elif name in ("trending", "popular", "fresh"):
            built.append(_sources.CatalogSource(catalog, name))
    return built


def gather_merged(
    sources: Sequence[_sources.CandidateSource],
    ctx: Context,
    settings: Settings,
    weights: Mapping[str, float] | None,
    outage: tuple[type[BaseException], ...] = (),
) -> tuple[pd.DataFrame, dict[str, int], dict[str, BaseException]]:
    """Every source's candidates for the request (the seen and negative posts excluded),
    merged; also each source's count and the sources skipped for an outage."""
    user = ctx.user_df.iloc[0] if ctx.found else None
    request = _sources.SourceRequest(
        ctx.user_id, user, ctx.categories, int(ctx.now.timestamp()), ctx.state.excluded,
        ctx.vector,
    )  # fmt: skip
    results, errors = _sources.gather(
        sources,
        request,
        lambda name: settings.retrieval_top_n if name == "two_tower" else settings.source_top_n,
        outage,
    )
    merged = _sources.merge(results, weights)
    return merged, {k: len(v) for k, v in results.items()}, errors


def candidate_signals(
    merged: pd.DataFrame, user: pd.Series | None, catalog: Catalog, neighbours: Any
) -> pd.DataFrame:
    """Per-candidate signals every candidate gets, whichever source found it: the catalog's
    trending and all-time positive counts, and the neighbours score of the user's recent
    posts (0 without history)."""
    if merged.empty:
        return merged.assign(catalog_trending=[], catalog_popular=[], catalog_dwell_ms=[])
    posts = catalog.posts.reindex(merged["post_id"].to_numpy())
    merged = merged.assign(
        catalog_trending=posts["trending"].to_numpy(dtype=float),
        catalog_popular=posts["n_positives"].to_numpy(dtype=float),
        catalog_dwell_ms=posts["dwell_ms"].to_numpy(dtype=float),
    )
    if neighbours is not None:
        history = _sources.recent_posts(user, neighbours.params.signal)
        ids, score = neighbours.scores(history) if history else ([], [])
        lookup = dict(zip(np.asarray(ids).tolist(), np.asarray(score).tolist(), strict=True))
        merged["neighbours_score"] = [lookup.get(int(p), 0.0) for p in merged["post_id"]]
    return merged
