"""The ranker learns on what it will rank: replayed requests of the validation split
(:mod:`socialrec.training.ranker_rows` builds those rows).

Users are split by a hash: 80% train the model (every positive candidate and a
``ranker_negative_share`` sample of the others), 20% are held out with ALL their candidates,
for early stopping, for choosing the outcome weights (:func:`choose_weights`) and for the
ranker's validation NDCG@10 beside the merged candidate order's. The quality gate replays the
test split's requests through the service's recommender with the challenger and the champion
(:func:`test_replay_ndcg`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from socialrec.evaluation.protocol import FINAL_K, build_requests
from socialrec.models.ranker import NEGATIVE_OUTCOMES, Ranker, label
from socialrec.recommender.replay import Snapshot
from socialrec.training.ranker_rows import (
    Elsewhere,
    created_seconds,
    holdout_users,
    side_by_side,
)

WEIGHT_GRID = {
    "full_view": (0.0, 0.5),
    "like": (0.0, 0.5),
    "share_comment": (0.0, 0.5),
    "negative": (0.0, -1.0),
}


def ndcg_by_request(rows: pd.DataFrame, scores: np.ndarray, k: int = 10) -> float:
    """Mean over users of the mean NDCG@k of their requests, candidates ordered by
    ``scores`` (ties: lower post id), relevance = the ``positive`` label. The protocol's
    ``request_metrics`` NDCG in arrays: the same gains, summed in the same order, so the
    value is the same to the last bit; the outcome weights are chosen on it (8 tries) and a
    loop over requests was ~10 s of a demo's ranker."""
    if rows.empty:
        return float("nan")
    request = rows.groupby(["user_id", "day", "request"], sort=False).ngroup().to_numpy()
    post = rows["post_id"].to_numpy()
    order = np.lexsort((post, -np.asarray(scores, dtype=np.float64), request))
    req = request[order]
    y = rows[label("positive")].to_numpy()[order] == 1
    starts = np.r_[0, np.flatnonzero(np.diff(req)) + 1]
    rank = np.arange(len(req)) - np.repeat(starts, np.diff(np.r_[starts, len(req)]))
    gains = _gains(k)
    top = y & (rank < k)
    n = int(req[-1]) + 1
    dcg = np.bincount(req[top], weights=gains[rank[top]], minlength=n)  # in rank order
    n_relevant = np.bincount(req[y], minlength=n)
    ideal = _ideal_dcg(k)[np.minimum(n_relevant, k)]
    has = n_relevant > 0
    if not has.any():
        return float("nan")
    users = rows["user_id"].to_numpy()[order][starts]
    per_request = pd.DataFrame({0: users[has], 1: dcg[has] / ideal[has]})
    return float(per_request.groupby(0)[1].mean().mean())


def _gains(k: int) -> np.ndarray:
    """The protocol's per-rank NDCG gains, 1 / log2(rank + 2), as it computes them."""
    return np.array([1.0 / np.log2(i + 2) for i in range(k)])


def _ideal_dcg(k: int) -> np.ndarray:
    """The ideal DCG of n relevant posts (n = 0..k), summed as the protocol sums it."""
    return np.array([sum(1.0 / np.log2(i + 2) for i in range(n)) for n in range(k + 1)])


def choose_weights(ranker: Ranker, holdout: pd.DataFrame) -> tuple[dict[str, float], list[dict]]:
    """The outcome weights (``positive`` fixed at 1, the others from ``WEIGHT_GRID``) with the
    best held-out NDCG@10; returns (weights, every tried weighting with its NDCG@10)."""
    probs = ranker.predict_outcomes(holdout)
    others = [o for o in ranker.outcomes if o != "positive"]
    tried = []
    best: tuple[float, dict[str, float]] | None = None
    for values in itertools.product(*(WEIGHT_GRID.get(o, (0.0,)) for o in others)):
        w = {"positive": 1.0, **dict(zip(others, values, strict=True))}
        value = ndcg_by_request(holdout, ranker.combine(probs, w))
        tried.append({**w, "ndcg@10": value})
        if best is None or value > best[0] + 1e-12:
            best = (value, w)
    assert best is not None
    return best[1], tried


FUSION_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


class _TopHits:
    """Mean over the requests of ``rows`` with a positive candidate of the share of those
    positives in the request's top ``k`` by a score (ties: lower post id), for the many scores
    the fusion weights try. A positive's rank is the count of its request's rows ordered before
    it, so each positive is paired with its request's rows once: a try compares those pairs
    instead of sorting every row (the same ranks, so the same value to the last bit)."""

    def __init__(self, rows: pd.DataFrame):
        req = rows["request"].to_numpy()
        self.post = rows["post_id"].to_numpy()
        positive = np.flatnonzero(rows[label("positive")].to_numpy().astype(bool))
        by_request = np.argsort(req, kind="stable")
        first = np.searchsorted(req[by_request], req[positive], "left")
        sizes = np.searchsorted(req[by_request], req[positive], "right") - first
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        self.pos = np.repeat(positive, sizes)  # (positive, a row of its request) pairs
        self.other = by_request[np.repeat(first, sizes) + within]
        self.pair_of = np.repeat(np.arange(len(positive)), sizes)
        self.n = len(positive)
        # the requests with a positive, in request order, and each positive's request
        self.requests, self.request_of = np.unique(req[positive], return_inverse=True)

    def __call__(self, scores: np.ndarray, k: int) -> float:
        if not self.n:
            return float("nan")
        mine, theirs = scores[self.pos], scores[self.other]
        before = (theirs > mine) | (
            (theirs == mine) & (self.post[self.other] < self.post[self.pos])
        )
        rank = np.bincount(self.pair_of, weights=before, minlength=self.n)
        hits = np.bincount(self.request_of, weights=rank < k, minlength=len(self.requests))
        total = np.bincount(self.request_of, minlength=len(self.requests))
        return float(pd.Series(hits.astype(np.int64) / total).mean())


def choose_fusion_weights(
    holdout: pd.DataFrame, sources: Sequence[str], k: int = 100
) -> tuple[dict[str, float], float, float]:
    """The sources' weights in the merged order (weighted reciprocal rank fusion) with the best
    recall@``k`` of the held-out requests' positive candidates: coordinate ascent over
    ``FUSION_GRID`` from equal weights, two passes. Returns (weights, recall@k at equal
    weights, recall@k at the chosen ones)."""
    from socialrec.recommender.sources import fusion_scores

    names = [s for s in sources if f"{s}_rank" in holdout.columns]
    ranks = holdout[[f"{s}_rank" for s in names]].to_numpy(dtype=np.float64)
    w = np.ones(len(names))
    top_hits = _TopHits(holdout)
    base = best = top_hits(fusion_scores(ranks, w), k)
    for _ in range(2):
        for i in range(len(names)):
            for value in FUSION_GRID:
                trial = w.copy()
                trial[i] = value
                if not trial.any():
                    continue
                got = top_hits(fusion_scores(ranks, trial), k)
                if got > best + 1e-9:
                    best, w = got, trial
    return dict(zip(names, w.tolist(), strict=True)), base, best


@dataclass
class RankerFit:
    ranker: Ranker
    metrics: dict[str, float]
    params: dict[str, Any]
    weights_tried: list[dict] = field(default_factory=list)
    example: pd.DataFrame | None = None


def fit_ranker(settings, data: pd.DataFrame, weights=None, progress=None) -> RankerFit:
    """Train on the non-held-out users, early-stop and choose the outcome weights on the held
    out ones; held-out NDCG@10 of the ranker beside the merged candidate order's. ``progress``
    (a callable of a line) hears the training's losses."""
    hold = holdout_users(data["user_id"].to_numpy())
    # the merged order first: the sources' fusion weights on the held-out requests (all their
    # candidates are kept), then every row's merged_score with them (a ranker feature)
    from socialrec.recommender.sources import SOURCES, fusion_scores

    fusion, recall_equal, recall_fused = (
        choose_fusion_weights(data[hold], SOURCES) if hold.any() else ({}, np.nan, np.nan)
    )
    if fusion:
        ranks = data[[f"{s}_rank" for s in fusion]].to_numpy(dtype=np.float64)
        data = data.assign(merged_score=fusion_scores(ranks, list(fusion.values())))
    # held-out rows keep every candidate; training rows dropped the unsampled ones already
    train, valid = data[~hold].reset_index(drop=True), data[hold].reset_index(drop=True)
    if train.empty or train[label("positive")].nunique() < 2:
        raise ValueError("too few replayed training rows with positives to train the ranker")
    # early stopping on the held-out rows sampled like the training rows (a loss, not a list)
    rng = np.random.default_rng(settings.seed)
    stop = valid[
        valid[label("positive")].astype(bool).to_numpy()
        | (rng.random(len(valid)) < settings.ranker_negative_share)
    ]
    ranker = Ranker(
        iterations=settings.ranker_iterations,
        learning_rate=0.08,
        seed=settings.seed,
        early_stopping_rounds=50,
        one_hot_max_size=settings.ranker_one_hot_max_size,
    ).fit(train, stop, progress)
    chosen, tried = choose_weights(ranker, valid) if len(valid) else (ranker.weights, [])
    ranker.weights = dict(weights) if weights else chosen
    for o in NEGATIVE_OUTCOMES:  # a negative outcome never adds to the score
        ranker.weights[o] = min(0.0, ranker.weights.get(o, 0.0))
    ranker.source_weights = fusion or None
    metrics = {
        "validation_ndcg@10": ndcg_by_request(valid, ranker.predict(valid)),
        "validation_merged_ndcg@10": ndcg_by_request(valid, valid["merged_score"].to_numpy()),
        "validation_merged_recall@100.equal_weights": recall_equal,
        "validation_merged_recall@100.fused": recall_fused,
        "train_rows": float(len(train)),
        "validation_rows": float(len(valid)),
        "best_iteration": float(ranker.best_iteration or 0),
    }
    for k, v in ranker.evaluate(valid).items():
        metrics[f"validation_{k}"] = v
    metrics.update({f"importance.{k}": v for k, v in ranker.feature_importance().items()})
    params = {
        **ranker.params,
        "outcomes": ",".join(ranker.outcomes),
        "weights": ",".join(f"{k}={v:g}" for k, v in ranker.weights.items()),
        "weights_from": "settings" if weights else "validation NDCG@10 of held-out users",
        "source_weights": ",".join(f"{k}={v:g}" for k, v in fusion.items()),
    }
    return RankerFit(ranker, metrics, params, tried, valid.head(5))


def ordered_lists(rows: pd.DataFrame, scores: Sequence[float]) -> dict[int, list[int]]:
    """request -> its candidates' post ids ordered by ``scores``."""
    frame = rows[["request", "post_id"]].assign(s=np.asarray(scores, dtype=float))
    frame = frame.sort_values(["request", "s", "post_id"], ascending=[True, False, True])
    return {int(r): g["post_id"].tolist() for r, g in frame.groupby("request", sort=False)}


def test_replay_ndcg(
    settings, log, posts, bounds, read_features, two_tower, neighbour_params, rankers,
    others: Sequence[Elsewhere] | None = None,
) -> dict[str, float]:  # fmt: skip
    """NDCG@10 (all users) of the test split's replayed requests as of the test start, feed
    policies off: the merged candidate order (``merged``) and each ranker of ``rankers``
    (name -> Ranker; None entries are skipped). The quality gate's numbers. The requests are
    cut into k contiguous parts replayed side by side by this process and k - 1 ``others``
    (``side_by_side``): the same snapshot and code, so the same lists."""
    from socialrec.evaluation.protocol import score_lists

    created = created_seconds(posts)
    requests = build_requests(
        log, created, bounds.test_start, bounds.data_end + 1,
        settings.evaluation_max_users, settings.seed,
    )  # fmt: skip
    rankers = {name: r for name, r in rankers.items() if r is not None}
    if not len(requests):
        return {}
    if not rankers:
        return {"requests": float(len(requests))}
    shared = (settings, log, posts, bounds.test_start, read_features, two_tower, neighbour_params)
    k, processes = side_by_side(settings, others, len(requests), read_features, two_tower, rankers)
    parts = [requests.subset(p) for p in np.array_split(np.arange(len(requests)), k)]
    with processes as others:
        used = others[: k - 1]  # part i + 1 goes to other i
        for other, part in zip(used, parts[1:], strict=True):
            other.submit(replayed_lists, *shared, part, rankers)
        n_posts, lists = replayed_lists(*shared, parts[0], rankers)
        for other in used:
            for name, (candidates, ranked) in other.result()[1].items():
                lists[name][0].extend(candidates)
                lists[name][1].extend(ranked)
    out: dict[str, float] = {}
    for name, (candidates, ranked) in lists.items():
        out[name] = score_lists(ranked, requests, n_posts)["ndcg@10"]
        if "merged" not in out:
            out["merged"] = score_lists(candidates, requests, n_posts)["ndcg@10"]
    out["requests"] = float(len(requests))
    return out


def replayed_lists(
    settings, log, posts, as_of, read_features, two_tower, neighbour_params, requests, rankers
) -> tuple[int, dict[str, tuple[list[list[int]], list[list[int]]]]]:
    """(catalog size, name -> (merged candidate lists, ranked lists)): ``requests`` replayed
    from a snapshot as of ``as_of`` with each ranker of ``rankers``, feed policies off."""
    from socialrec.recommender.replay import PLAIN_POLICIES, replay

    snap = Snapshot.build(
        as_of, log, posts, read_features, settings, two_tower, neighbour_params,
        users=requests.users,
    )  # fmt: skip
    lists = {}
    for name, ranker in rankers.items():
        rec, seen = snap.recommender(ranker, settings, **PLAIN_POLICIES)
        got = replay(rec, seen, requests, k=FINAL_K)
        lists[name] = (got.candidates, got.ranked)
    return len(snap.catalog), lists


def ranker_gate(settings, metrics: Mapping[str, float]):
    """The ranker's quality gate from the metrics its asset logged: the challenger's test
    NDCG@10 must beat the merged candidate order's (the ranking stage has to help) and not
    regress against the champion's (same replay; a champion without it counts as NaN and is
    replaced, with a warning). Only a decision: promotion is a separate step."""
    from socialrec.models import registry
    from socialrec.training.retrieval import GateResult

    name, metric = registry.RANKER, "test NDCG@10 (replayed requests)"
    # the registry logs "@" as "_at_" (registry.metric_key): accept both spellings
    metrics = {**metrics, **{k.replace("_at_", "@"): v for k, v in metrics.items()}}
    challenger = registry.aliased_version(settings, name, registry.CHALLENGER)
    if challenger is None:
        raise ValueError(f"{name} has no challenger version to gate")
    champion = registry.aliased_version(settings, name, registry.CHAMPION)
    value = float(metrics.get("test_ndcg@10.challenger", float("nan")))
    merged = float(metrics.get("test_ndcg@10.merged", float("nan")))
    champ_value = None if champion is None else float(metrics.get("test_ndcg@10.champion", "nan"))
    if champion is not None and champion.version == challenger.version:
        return GateResult(name, metric, int(challenger.version), int(champion.version), value,
                          value, True, "the challenger is already the champion")  # fmt: skip
    warning = None
    if not (np.isfinite(value) and np.isfinite(merged)):
        passed, reason = False, f"no test NDCG@10 to compare (challenger {value}, merged {merged})"
    elif value <= merged:
        passed = False
        reason = (
            f"the ranker does not beat the merged candidate order: NDCG@10 {value:.4f} vs "
            f"{merged:.4f}"
        )
    else:
        passed, reason, warning = registry.gate(value, champ_value, settings.quality_gate_tolerance)
        reason = f"{reason}; beats the merged candidate order ({value:.4f} vs {merged:.4f})"
    return GateResult(
        name, metric, int(challenger.version), None if champion is None else int(champion.version),
        value, champ_value, passed, reason, warning,
    )  # fmt: skip
