"""Candidate sources: the retrieval stage merges several, and none of them can break the feed.

Each source answers one question about a request (:class:`SourceRequest`) with up to ``n``
(post_id, score) pairs, best first:

* ``two_tower`` — the user tower's vector against the post index (ANN, Milvus), filtered to
  the user's categories plus an unfiltered exploration slice (:func:`retrieve_two_tower`);
* ``neighbours`` — the co-engagement neighbours of the user's recent posts
  (:class:`socialrec.models.neighbours.NeighbourTable`; the history of the table's signal from
  ``user_history``: ``recent_post_ids`` or ``recent_positive_ids``);
* ``trending`` — the posts with the most positives in the catalog's trailing window;
* ``popular`` — the catalog's all-time popular posts (smoothed);
* ``fresh`` — the newest posts in the user's categories.

:func:`merge` unions them: each candidate keeps every source's score and rank (the ranker's
features) and gets a merged score, weighted reciprocal rank fusion (``sum_s w_s / (RRF_K +
rank_s)``; the weights are learned with the ranker on held-out replayed requests,
:func:`socialrec.training.ranker.choose_fusion_weights`), which orders the candidates when no
ranker does. A source whose dependency is down (an error of the
``outage`` types the caller names: the service's ``DependencyError``) is skipped and reported,
unless it is the only source: the feed fails open. Any other exception is a bug and propagates.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from socialrec.features.ranking import parse_categories, parse_counts
from socialrec.settings import CANDIDATE_SOURCES
from socialrec.stores.seen.base import PostSet

SOURCES = CANDIDATE_SOURCES
RRF_K = 60.0
# the sources of a request run at once (the index and store calls wait on I/O while the
# catalog lists compute); the two-tower source's second search runs on a pool of its own, so
# a source never waits for a task queued behind other sources
_SOURCE_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="socialrec-source")
_SEARCH_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="socialrec-search")


@dataclass
class SourceRequest:
    user_id: int
    user: pd.Series | None  # the user's online features (None: unknown user)
    categories: list[int]  # the user's preferred categories (may be empty)
    now: int  # epoch seconds
    # posts the user must not get (seen, disliked): ``in``, ``len`` and
    # socialrec.stores.seen.base.contains_many, never listed (it may be a Bloom filter); sources
    # over-fetch by its size
    exclude: PostSet
    vector: np.ndarray | None = None  # the user tower's vector, computed once per request
    extras: dict[str, Any] = field(default_factory=dict)


class CandidateSource(Protocol):
    name: str

    def candidates(self, request: SourceRequest, n: int) -> list[tuple[int, float]]: ...


HISTORY_COLUMNS = {"exposure": "recent_post_ids", "positive": "recent_positive_ids"}


def recent_posts(user: pd.Series | None, signal: str = "exposure") -> list[int]:
    """The user's latest posts for a neighbours ``signal`` (``user_history.recent_post_ids``
    or ``recent_positive_ids``: "12,7,3", newest first) as ints."""
    if user is None:
        return []
    return parse_categories(user.get(HISTORY_COLUMNS[signal]))


def preferred_categories(user: pd.Series) -> list[int]:
    """The user's onboarding categories, then the categories of the posts they engaged with
    positively (``user_history.category_counts``), most first."""
    onboarding = parse_categories(user.get("onboarding_categories"))
    liked = sorted(
        ((c, counts[0]) for c, counts in parse_counts(user.get("category_counts")).items()),
        key=lambda kv: (-kv[1], kv[0]),
    )
    return list(dict.fromkeys(onboarding + [c for c, pos in liked if pos > 0]))


# --- the sources ----------------------------------------------------------------------------
def retrieve_two_tower(
    index, alias: str, vector: np.ndarray, top_n: int, categories: Sequence[int], explore: float
) -> list[tuple[int, float]]:
    """(post_id, similarity), best first, at most ``top_n``: ``top_n - round(top_n *
    explore)`` from a search filtered to ``categories``, the rest from an unfiltered search
    (hits the filtered one did not return); without categories one unfiltered search."""
    vec = np.asarray(vector, dtype=np.float32).reshape(1, -1)
    if top_n <= 0:
        return []
    if not categories:
        hits = index.search(alias, vec, top_n, None)[0]
        return sorted(hits, key=lambda kv: (-kv[1], kv[0]))[:top_n]
    n_explore = min(top_n, round(top_n * explore)) if explore > 0 else 0
    best: dict[int, float] = {}
    # both searches issued together: the exploration slice's on the search pool
    explore_hits = _SEARCH_POOL.submit(index.search, alias, vec, top_n, None) if n_explore else None
    try:
        filtered = (
            index.search(alias, vec, top_n - n_explore, list(categories))[0]
            if top_n - n_explore > 0
            else []
        )
    finally:
        if explore_hits is not None:
            wait([explore_hits])  # never leave a search running behind an error
    for post_id, score in filtered:
        best[post_id] = max(score, best.get(post_id, -math.inf))
    if explore_hits is not None:
        added = 0
        for post_id, score in explore_hits.result()[0]:
            if post_id in best:
                best[post_id] = max(score, best[post_id])
            elif added < n_explore:
                best[post_id] = score
                added += 1
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]


@dataclass
class TwoTowerSource:
    index: Any  # socialrec.stores.index.PostIndex / InMemoryIndex
    alias: str
    exploration_share: float = 0.2
    name: str = "two_tower"

    def candidates(self, request: SourceRequest, n: int) -> list[tuple[int, float]]:
        if request.vector is None:
            return []
        fetch = n + min(len(request.exclude), 2 * n)  # over-fetch by what filtering drops
        return retrieve_two_tower(
            self.index, self.alias, request.vector, fetch, request.categories,
            self.exploration_share,
        )  # fmt: skip


@dataclass
class NeighbourSource:
    table: Any  # socialrec.models.neighbours.NeighbourTable
    name: str = "neighbours"

    def candidates(self, request: SourceRequest, n: int) -> list[tuple[int, float]]:
        history = recent_posts(request.user, self.table.params.signal)
        if not history:
            return []
        return self.table.recommend(history, n, exclude=request.exclude)


@dataclass
class CatalogSource:
    """A list of the catalog: ``trending``, ``popular`` or ``fresh`` (in the user's
    categories; all categories when the user has none)."""

    catalog: Any  # socialrec.stores.catalog.Catalog
    name: str = "trending"

    def candidates(self, request: SourceRequest, n: int) -> list[tuple[int, float]]:
        cats = request.categories if self.name == "fresh" else None
        return self.catalog.top(
            self.name, n, categories=cats, exclude=request.exclude, created_by=request.now
        )


# --- merging ----------------------------------------------------------------------------------
def fusion_scores(ranks: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted reciprocal rank fusion: ``sum_s w_s / (RRF_K + rank_s)`` over the sources that
    returned the candidate (``ranks``: candidates x sources, NaN = not returned)."""
    w = np.ones(ranks.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    return np.nansum(w / (RRF_K + ranks), axis=1)


def merge(
    results: Mapping[str, Sequence[tuple[int, float]]],
    weights: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """One row per candidate, best merged score first: ``post_id``, ``merged_score`` (reciprocal
    rank fusion over the sources that returned it, each weighted by ``weights[source]``,
    default 1), ``n_sources`` and, for every source in ``results``, ``<source>_score`` and
    ``<source>_rank`` (0-based; NaN when the source did not return the post). Built with
    numpy (one frame at the end): it runs on every request."""
    names = list(results)
    cols = [f"{n}_{k}" for n in names for k in ("score", "rank")]
    ids_per = []
    for name in names:
        hits = results[name]
        ids = np.fromiter((int(p) for p, _ in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((float(v) for _, v in hits), dtype=np.float64, count=len(hits))
        # a source that repeats a post keeps its best (first) rank
        ids, first = np.unique(ids, return_index=True)
        ids_per.append((ids, first.astype(np.float64), scores[first]))
    if not any(len(ids) for ids, _, _ in ids_per):
        return pd.DataFrame(columns=["post_id", "merged_score", "n_sources", *cols])
    post_ids = np.unique(np.concatenate([ids for ids, _, _ in ids_per]))
    data: dict[str, np.ndarray] = {}
    ranks = np.full((len(post_ids), len(names)), np.nan)
    for j, (name, (ids, rank, score)) in enumerate(zip(names, ids_per, strict=True)):
        at = np.searchsorted(post_ids, ids)
        column = np.full(len(post_ids), np.nan)
        column[at] = score
        data[f"{name}_score"] = column
        ranks[at, j] = rank
        data[f"{name}_rank"] = ranks[:, j]
    w = [float((weights or {}).get(n, 1.0)) for n in names]
    merged = fusion_scores(ranks, w)
    order = np.lexsort((post_ids, -merged))  # merged score descending, then post_id
    frame = {
        "post_id": post_ids[order],
        "merged_score": merged[order],
        "n_sources": np.isfinite(ranks).sum(axis=1)[order],
    }
    frame.update({c: data[c][order] for c in cols})
    return pd.DataFrame(frame)


def gather(
    sources: Sequence[CandidateSource],
    request: SourceRequest,
    n: int | Callable[[str], int],
    outage: tuple[type[BaseException], ...] = (),
) -> tuple[dict[str, list[tuple[int, float]]], dict[str, BaseException]]:
    """Every source's candidates for one request (``n``: how many, or a function of the
    source's name). A source that fails with one of the
    ``outage`` errors is left out and its error reported (one unavailable store never empties
    the feed), unless it is the only source; anything else propagates (a bug is not an outage).
    """
    results: dict[str, list[tuple[int, float]]] = {}
    errors: dict[str, BaseException] = {}

    def ask(source: CandidateSource) -> list[tuple[int, float]]:
        return source.candidates(request, n(source.name) if callable(n) else n)

    # every source at once; the last one in this thread
    calls: list[Callable[[], list]] = [_SOURCE_POOL.submit(ask, s).result for s in sources[:-1]]
    calls += [functools.partial(ask, s) for s in sources[-1:]]
    for source, result in zip(sources, calls, strict=True):
        try:
            results[source.name] = result()
        except outage as exc:
            if len(sources) == 1:
                raise
            errors[source.name] = exc
    return results, errors
