"""Baselines of the offline evaluation: global popularity, recent popularity and implicit ALS.

Each baseline is fitted on the training interactions (``user_id``, ``post_id``, ``ts`` and an
optional ``weight``) and answers ``recommend(user_ids, k, exclude)`` -> ``{user: [post, ...]}``
with the posts of ``exclude[user]`` (what the user already saw) never returned, exactly as the
pipeline's filtering stage does, so that every method is ranked on the same candidates.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd


def _weights(train: pd.DataFrame) -> pd.Series:
    if "weight" in train.columns:
        return pd.to_numeric(train["weight"], errors="coerce").fillna(1.0)
    return pd.Series(1.0, index=train.index)


def _top_excluding(
    order: Sequence[int], k: int, exclude: Iterable[int], allowed: set[int] | None = None
) -> list[int]:
    excluded = set(exclude)
    out = []
    for item in order:
        if item in excluded or (allowed is not None and item not in allowed):
            continue
        out.append(int(item))
        if len(out) == k:
            break
    return out


class GlobalPopularity:
    """Posts by their total training weight (ties: lower id), the same list for everyone."""

    name = "popularity"

    def __init__(self, candidates: Iterable[int] | None = None):
        self.candidates = None if candidates is None else {int(c) for c in candidates}
        self.order: list[int] = []
        self.scores: dict[int, float] = {}

    def _rank(self, train: pd.DataFrame) -> None:
        scores = _weights(train).groupby(train["post_id"].astype("int64")).sum()
        scores = scores.sort_index().sort_values(ascending=False, kind="stable")
        self.scores = {int(k): float(v) for k, v in scores.items()}
        self.order = list(self.scores)

    def fit(self, train: pd.DataFrame) -> GlobalPopularity:
        self._rank(train)
        return self

    def recommend(
        self, user_ids: Iterable[int], k: int, exclude: Mapping[int, Iterable[int]] | None = None
    ) -> dict[int, list[int]]:
        exclude = exclude or {}
        return {
            int(u): _top_excluding(self.order, k, exclude.get(int(u), ()), self.candidates)
            for u in user_ids
        }


class RecentPopularity(GlobalPopularity):
    """Popularity over the last ``window`` before the end of training (trending now)."""

    name = "recent_popularity"

    def __init__(self, window: pd.Timedelta | str = "7D", candidates: Iterable[int] | None = None):
        super().__init__(candidates)
        self.window = pd.Timedelta(window)

    def fit(self, train: pd.DataFrame) -> RecentPopularity:
        ts = pd.to_datetime(train["ts"], utc=True)
        recent = train[ts >= ts.max() - self.window]
        self._rank(recent)
        # posts never engaged with recently follow, by all-time popularity
        rest = GlobalPopularity().fit(train).order
        seen = set(self.order)
        self.order += [p for p in rest if p not in seen]
        return self


class ALS:
    """Implicit-feedback matrix factorisation (the ``implicit`` library's ALS, CPU).

    Confidence is ``1 + alpha * weight``. Users without training interactions get the global
    popularity list (ALS has no vector for them).
    """

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 20,
        alpha: float = 10.0,
        seed: int = 42,
        candidates: Iterable[int] | None = None,
    ):
        self.params = {
            "factors": factors,
            "regularization": regularization,
            "iterations": iterations,
            "alpha": alpha,
            "seed": seed,
        }
        self.candidates = None if candidates is None else {int(c) for c in candidates}
        self.fallback = GlobalPopularity(candidates)

    def fit(self, train: pd.DataFrame) -> ALS:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's own threads do the work
        from implicit.cpu.als import AlternatingLeastSquares
        from scipy.sparse import csr_matrix

        p = self.params
        self.fallback.fit(train)
        users = pd.Index(np.sort(train["user_id"].astype("int64").unique()))
        items = pd.Index(np.sort(train["post_id"].astype("int64").unique()))
        w = _weights(train).to_numpy(dtype=np.float32)
        rows = users.get_indexer(train["user_id"].astype("int64"))
        cols = items.get_indexer(train["post_id"].astype("int64"))
        matrix = csr_matrix(
            (1.0 + p["alpha"] * w, (rows, cols)), shape=(len(users), len(items)), dtype=np.float32
        )
        matrix.sum_duplicates()
        self.model = AlternatingLeastSquares(
            factors=p["factors"],
            regularization=p["regularization"],
            iterations=p["iterations"],
            random_state=p["seed"],
            calculate_training_loss=False,
        )
        self.model.fit(matrix, show_progress=False)
        self.users, self.items, self.matrix = users, items, matrix
        return self

    def recommend(
        self, user_ids: Iterable[int], k: int, exclude: Mapping[int, Iterable[int]] | None = None
    ) -> dict[int, list[int]]:
        exclude = exclude or {}
        user_ids = [int(u) for u in user_ids]
        out = self.fallback.recommend(user_ids, k, exclude)
        known = [u for u in user_ids if u in self.users]
        if not known:
            return out
        rows = self.users.get_indexer(known)
        # ask for enough to survive the exclusions and the candidate restriction
        extra = max((len(set(exclude.get(u, ()))) for u in known), default=0)
        n = min(len(self.items), k + extra + 50)
        ids, _ = self.model.recommend(rows, self.matrix[rows], N=n, filter_already_liked_items=True)
        for u, item_rows in zip(known, np.atleast_2d(ids), strict=True):
            order = self.items[item_rows[item_rows >= 0]].tolist()
            picked = _top_excluding(order, k, exclude.get(u, ()), self.candidates)
            if len(picked) < k:  # too few left after the exclusions: top up with popularity
                taken = set(picked) | set(exclude.get(u, ()))
                picked += [p for p in self.fallback.recommend([u], k, {u: taken})[u]]
            out[u] = picked[:k]
        return out
