"""Baselines a reviewer would accept, each tuned on validation by a small grid.

* ``popularity``: posts by their positives before the cutoff.
* ``recent_popularity``: positives in a trailing window that ends at the cutoff (the test start
  for the test); window in days from a geometric grid (1, 2, 4, ... up to the log's span).
* ``als``: implicit-feedback matrix factorisation (the ``implicit`` library, CPU).
* ``itemknn``: item-based nearest neighbours, asymmetric cosine with shrinkage
  (:class:`socialrec.models.neighbours.NeighbourTable`; ``alpha`` 0.5 is the plain cosine). The
  ``implicit`` library's cosine / BM25 / TF-IDF item-KNN were measured too and were weaker on
  every log we have (docs/benchmarks.md), so the stronger variant is the baseline.
* ``ease``: EASE^R (Steck, 2019), a closed-form item-item model; only where the catalog fits
  in memory (``EASE_MAX_POSTS``).

Every learned baseline is also tuned on its input *signal* (``positive`` events only, or
every ``exposure``), the same choice our own neighbours source gets. Users a model knows
nothing about get the popularity scores. A baseline answers ``scores(user_ids)``: one row per
user over its post index; the protocol masks what each request may not be shown.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from socialrec.data.eventlog import EventLog
from socialrec.models.neighbours import NeighbourParams, NeighbourTable
from socialrec.timeutil import DAY_SECONDS

EASE_MAX_POSTS = 20_000  # a dense posts x posts inverse: 20k posts ~ 3.2 GB in float64
_TIE = 1e-6  # popularity as a tie-breaker below any real score difference


class Baseline:
    name = "baseline"

    def __init__(self, **params: Any):
        self.params = params
        self.posts = pd.Index([], dtype=np.int64)
        self._popularity = np.zeros(0)

    def fit(self, log: EventLog, posts: pd.Index, cutoff: int) -> Baseline:
        """Learn from ``log`` (already cut at ``cutoff``) over the post index ``posts``."""
        self.posts = pd.Index(np.asarray(posts, dtype=np.int64))
        self._popularity = log.counts(self.posts, log.positive)
        self._fit(log, cutoff)
        return self

    def _fit(self, log: EventLog, cutoff: int) -> None:
        pass

    def _fallback(self, n: int) -> np.ndarray:
        return np.tile(self._popularity, (n, 1))

    def scores(self, user_ids: Sequence[int]) -> np.ndarray:
        return self._fallback(len(user_ids))


class Popularity(Baseline):
    name = "popularity"


class RecentPopularity(Baseline):
    name = "recent_popularity"

    def _fit(self, log: EventLog, cutoff: int) -> None:
        window = float(self.params.get("window_days", 7)) * DAY_SECONDS
        recent = log.between(cutoff - window, cutoff)
        self._recent = recent.counts(self.posts, recent.positive)

    def scores(self, user_ids: Sequence[int]) -> np.ndarray:
        s = self._recent + _TIE * self._popularity / (self._popularity.max(initial=0) + 1)
        return np.tile(s, (len(user_ids), 1))


class _UserModel(Baseline):
    """A baseline with per-user rows for the users of its training matrix."""

    def _matrix(self, log: EventLog):
        signal = self.params.get("signal", "positive")
        self.users = pd.Index(np.unique(log.user[log.mask(signal)]))
        return log.matrix(signal, self.users, self.posts)

    def scores(self, user_ids: Sequence[int]) -> np.ndarray:
        out = self._fallback(len(user_ids))
        rows = self.users.get_indexer(np.asarray(user_ids, dtype=np.int64))
        known = np.flatnonzero(rows >= 0)
        if len(known):
            out[known] = self._user_scores(rows[known]) + _TIE * self._popularity / (
                self._popularity.max(initial=0) + 1
            )
        return out

    def _user_scores(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ALS(_UserModel):
    name = "als"

    def _fit(self, log: EventLog, cutoff: int) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        x = self._matrix(log)
        x.data = 1.0 + float(self.params.get("alpha", 10.0)) * x.data
        # implicit's own threads do the work: a BLAS thread pool under them only slows it (and
        # implicit warns when it sees one; OpenBLAS is loaded long before, so not by env var)
        with threadpool_limits(limits=1, user_api="blas"):
            self.model = AlternatingLeastSquares(
                factors=int(self.params.get("factors", 64)),
                regularization=float(self.params.get("regularization", 0.05)),
                iterations=int(self.params.get("iterations", 15)),
                random_state=int(self.params.get("seed", 42)),
                calculate_training_loss=False,
            )
            self.model.fit(x, show_progress=False)

    def _user_scores(self, rows: np.ndarray) -> np.ndarray:
        return self.model.user_factors[rows] @ self.model.item_factors.T


class ItemKNN(_UserModel):
    name = "itemknn"

    def _fit(self, log: EventLog, cutoff: int) -> None:
        p = NeighbourParams(
            k=int(self.params.get("k", 100)),
            alpha=float(self.params.get("alpha", 0.5)),
            shrink=float(self.params.get("shrink", 10.0)),
            signal=self.params.get("signal", "positive"),
            max_user_posts=0,
        )
        self.table = NeighbourTable.fit(log, p)
        self.x = self._matrix(log)

    def _user_scores(self, rows: np.ndarray) -> np.ndarray:
        sim = self.table.sim
        cols = self.posts.get_indexer(self.table.posts)
        ok = cols >= 0
        # user x post history restricted to the table's posts, times the similarities
        hist = self.x[rows][:, cols[ok]]
        dense = (hist @ sim[ok]).toarray()
        out = np.zeros((len(rows), len(self.posts)))
        out[:, cols[ok]] = dense[:, ok]
        return out


class EASE(_UserModel):
    name = "ease"

    def _fit(self, log: EventLog, cutoff: int) -> None:
        x = self._matrix(log)
        active = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
        if len(active) > EASE_MAX_POSTS:
            raise ValueError(f"EASE needs a dense {len(active)}^2 matrix (max {EASE_MAX_POSTS})")
        xa = x[:, active]
        gram = (xa.T @ xa).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += float(self.params.get("l2", 500.0))
        inv = np.linalg.inv(gram)
        b = inv / (-np.diag(inv))
        b[np.diag_indices_from(b)] = 0.0
        self.active, self.b, self.xa = active, b.astype(np.float32), xa

    def _user_scores(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), len(self.posts)))
        out[:, self.active] = np.asarray(self.xa[rows] @ self.b)
        return out


BASELINES: dict[str, type[Baseline]] = {
    b.name: b for b in (Popularity, RecentPopularity, ALS, ItemKNN, EASE)
}


def default_grids(span_days: float, n_posts: int) -> dict[str, list[dict[str, Any]]]:
    """The small grids the protocol tunes on validation (no dataset-specific values: the
    windows grow geometrically from a day up to the log's span)."""
    windows = [d for d in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if d <= max(span_days, 1)]
    grids: dict[str, list[dict[str, Any]]] = {
        "popularity": [{}],
        "recent_popularity": [{"window_days": d} for d in windows],
        "als": [
            {"factors": f, "regularization": r, "alpha": a, "signal": s}
            for f, r, a, s in itertools.product(
                (32, 128), (0.01, 0.1), (2.0, 10.0, 40.0), ("positive", "exposure")
            )
        ],
        "itemknn": [
            {"k": k, "alpha": a, "shrink": sh, "signal": s}
            for k, a, sh, s in itertools.product(
                (50, 500), (0.5, 0.8), (0.0, 10.0), ("positive", "exposure")
            )
        ],
        "ease": [
            {"l2": lam, "signal": s}
            for lam, s in itertools.product((50.0, 500.0, 5000.0), ("positive", "exposure"))
        ],
    }
    if n_posts > EASE_MAX_POSTS:
        grids.pop("ease")
    return grids


def recommend(
    baseline: Baseline,
    requests,
    created: np.ndarray,
    k: int = 100,
    batch: int = 2048,
) -> list[list[int]]:
    """The top ``k`` of every request (protocol masks applied), in request order."""
    from socialrec.evaluation.protocol import top_k_from_scores

    out: list[list[int]] = []
    users = requests.users
    for lo in range(0, len(requests), batch):
        pos = np.arange(lo, min(lo + batch, len(requests)))
        scores = baseline.scores(users[pos])
        out.extend(top_k_from_scores(scores, baseline.posts, requests, pos, created, k))
    return out


def tune(
    name: str,
    grid: Iterable[Mapping[str, Any]],
    fit_log: EventLog,
    posts: pd.Index,
    cutoff: int,
    requests,
    created: np.ndarray,
    objective: Callable[[list[list[int]]], float],
    on_result: Callable[[str, Mapping[str, Any], float], None] | None = None,
) -> tuple[dict[str, Any], float, list[tuple[dict, float]]]:
    """Fit every grid point on ``fit_log`` and keep the best ``objective`` of its lists on
    ``requests``. Returns (best params, best value, every (params, value))."""
    cls = BASELINES[name]
    results: list[tuple[dict, float]] = []
    best: tuple[dict[str, Any], float] | None = None
    for params in grid:
        params = dict(params)
        value = objective(recommend(cls(**params).fit(fit_log, posts, cutoff), requests, created))
        results.append((params, value))
        if on_result is not None:
            on_result(name, params, value)
        if best is None or value > best[1]:
            best = (params, value)
    assert best is not None, "an empty grid"
    return best[0], best[1], results
