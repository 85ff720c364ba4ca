"""The ranker learns on what it will rank: replayed requests of the validation split.

For every window of the validation split ``[validation_start, test_start)`` (a UTC day each,
unless the split is longer than ``ranker_max_snapshots`` days: then that many windows of whole
days):

1. a :class:`socialrec.recommender.replay.Snapshot` as of the window's start: the catalog, the neighbours
   and the users' and posts' features as they were at that midnight, and the two-tower model
   fitted on the train split (a model that never saw the window's events);
2. the window's requests (:func:`socialrec.evaluation.protocol.build_requests`) go through the
   service's retrieval and filtering stages, as the service would have answered them;
3. each candidate is labelled with the outcomes its user had with it that day
   (``socialrec.models.ranker.OUTCOMES``) and gets the ranking stage's features (the same
   ``ranking_features`` the service computes). Positives missing from the candidates are not
   added: the ranker never sees a post the sources would not have given it.

Users are split by a hash: 80% train the model (every positive candidate and a
``ranker_negative_share`` sample of the others), 20% are held out with ALL their candidates,
for early stopping, for choosing the outcome weights (:func:`choose_weights`) and for the
ranker's validation NDCG@10 beside the merged candidate order's.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from socialrec.data.eventlog import EventLog
from socialrec.evaluation.protocol import (
    FINAL_K,
    OUTCOMES,
    Requests,
    build_requests,
)
from socialrec.models.ranker import NEGATIVE_OUTCOMES, Ranker, label
from socialrec.recommender.replay import FeatureReader, Snapshot
from socialrec.timeutil import DAY_SECONDS, epoch_seconds, to_timestamp

HOLDOUT_SHARE = 0.2
WEIGHT_GRID = {
    "full_view": (0.0, 0.5),
    "like": (0.0, 0.5),
    "share_comment": (0.0, 0.5),
    "negative": (0.0, -1.0),
}


def holdout_users(users: np.ndarray, share: float = HOLDOUT_SHARE) -> np.ndarray:
    """Whether each user is held out (a stable hash of the id)."""
    h = pd.util.hash_array(np.asarray(users, dtype=np.int64), categorize=False)
    return (h % 1000) < int(share * 1000)


def candidate_rows(
    recommender, seen, requests: Requests, keep_all: np.ndarray, negative_share: float, seed: int
) -> pd.DataFrame:
    """The ranker's rows for replayed ``requests``: the features of every kept candidate, one
    ``y_<outcome>`` label column per outcome, ``request``, ``user_id``, ``post_id`` and the
    merged source score. ``keep_all[i]``: keep every candidate of request i (held out users),
    else every positive and a ``negative_share`` sample of the rest."""
    from socialrec.recommender.ranking import candidate_features

    rng = np.random.default_rng(seed)
    parts = []
    for i, (user, ts) in enumerate(requests.frame[["user_id", "ts"]].itertuples(index=False)):
        seen.current = set(requests.seen[i].tolist())
        ctx = recommender.context(int(user), to_timestamp(int(ts)))
        cands, _ = recommender.candidates(ctx)
        if cands.empty:
            continue
        labels = {o: cands["post_id"].isin(requests.outcomes[o][i]).to_numpy() for o in OUTCOMES}
        if not keep_all[i]:
            keep = labels["positive"] | (rng.random(len(cands)) < negative_share)
            cands = cands[keep].reset_index(drop=True)
            labels = {o: v[keep] for o, v in labels.items()}
        post_rows = recommender.features.posts(cands["post_id"].tolist())
        kept, _, feats = candidate_features(
            ctx.user_df, post_rows, cands, recommender.feature_builder, ctx.now
        )
        if feats.empty:
            continue
        known = cands["post_id"].isin(kept["post_id"]).to_numpy()
        feats = feats.assign(
            **{label(o): labels[o][known].astype(np.int8) for o in OUTCOMES},
            request=int(requests.frame["request"].iat[i]),
            day=int(requests.frame["day"].iat[i]),
            user_id=int(user),
            post_id=kept["post_id"].to_numpy(dtype=np.int64),
        )
        parts.append(feats)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


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


def _top_hits(rows: pd.DataFrame, scores: np.ndarray, k: int) -> float:
    """Mean over requests with a positive candidate of the share of those positives in the
    request's top ``k`` by ``scores`` (ties: lower post id)."""
    req = rows["request"].to_numpy()
    order = np.lexsort((rows["post_id"].to_numpy(), -scores, req))
    req_sorted = req[order]
    start = np.r_[0, np.flatnonzero(np.diff(req_sorted)) + 1]
    pos_in_req = np.arange(len(order)) - np.repeat(start, np.diff(np.r_[start, len(order)]))
    y = rows[label("positive")].to_numpy()[order].astype(bool)
    hits = pd.Series(y & (pos_in_req < k)).groupby(req_sorted).sum()
    total = pd.Series(y).groupby(req_sorted).sum()
    ok = total > 0
    return float((hits[ok] / total[ok]).mean()) if ok.any() else float("nan")


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
    base = best = _top_hits(holdout, fusion_scores(ranks, w), k)
    for _ in range(2):
        for i in range(len(names)):
            for value in FUSION_GRID:
                trial = w.copy()
                trial[i] = value
                if not trial.any():
                    continue
                got = _top_hits(holdout, fusion_scores(ranks, trial), k)
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


def training_windows(start: int, end: int, max_windows: int) -> list[tuple[int, int]]:
    """``[start, end)`` cut into at most ``max_windows`` windows of whole UTC days (one day
    each when the split is short enough: a feed's daily snapshots; longer windows for a log of
    years). Each window is replayed from one snapshot as of its start."""
    days = max(1, -(-(end - start) // DAY_SECONDS))
    per = max(1, -(-days // max(1, max_windows)))
    windows = []
    t = start
    while t < end:
        nxt = min((t // DAY_SECONDS + per) * DAY_SECONDS, end)
        windows.append((t, nxt))
        t = nxt
    return windows


def build_training_set(
    settings,
    log: EventLog,
    posts: pd.DataFrame,
    created: Mapping[int, int] | pd.Series,
    start: int,
    end: int,
    read_features: FeatureReader,
    two_tower,
    neighbour_params=None,
    progress=None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Replayed candidate rows of every window of ``[start, end)`` (the module docstring);
    ``progress`` hears a line per replayed window."""
    frames, info = [], {"windows": 0, "requests": 0, "candidates_per_request": 0.0}
    windows = training_windows(start, end, settings.ranker_max_snapshots)
    per_window = max(1, settings.ranker_max_requests // max(1, len(windows)))
    for w_start, w_end in windows:
        requests = build_requests(log, created, w_start, w_end, seed=settings.seed)
        if len(requests) > per_window:
            rng = np.random.default_rng(settings.seed + w_start)
            keep = rng.choice(len(requests), per_window, replace=False)
            requests = requests.subset(np.sort(keep))
        if not len(requests):
            continue
        snap = Snapshot.build(
            w_start, log, posts, read_features, settings, two_tower, neighbour_params,
            users=requests.users,
        )  # fmt: skip
        rec, seen = snap.recommender(None, settings)
        keep_all = holdout_users(requests.users)
        rows = candidate_rows(
            rec, seen, requests, keep_all, settings.ranker_negative_share, settings.seed
        )
        if len(rows):
            rows["request"] = rows["request"] + info["requests"]  # unique across windows
            frames.append(rows)
        info["windows"] += 1
        info["requests"] += len(requests)
        if progress is not None:
            progress(f"window {info['windows']}/{len(windows)}: {len(requests)} requests replayed")
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    info["rows"] = len(data)
    if len(data):
        info["candidates_per_request"] = float(data.groupby("request").size().mean())
        info["positive_rate"] = float(data[label("positive")].mean())
    return data, info


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


def created_seconds(posts: pd.DataFrame) -> pd.Series:
    """post_id -> creation time (epoch seconds) of the live posts of a dim_posts frame."""
    from socialrec.stores.catalog import live_posts

    live = live_posts(posts).drop_duplicates("post_id", keep="last")
    return pd.Series(
        epoch_seconds(live["created_at"], dtype=np.float64),
        index=live["post_id"].to_numpy(dtype=np.int64),
    )


def test_replay_ndcg(
    settings, log, posts, bounds, read_features, two_tower, neighbour_params, rankers
) -> dict[str, float]:
    """NDCG@10 (all users) of the test split's replayed requests as of the test start, feed
    policies off: the merged candidate order (``merged``) and each ranker of ``rankers``
    (name -> Ranker; None entries are skipped). The quality gate's numbers."""
    from socialrec.evaluation.protocol import score_lists
    from socialrec.recommender.replay import PLAIN_POLICIES, replay

    created = created_seconds(posts)
    requests = build_requests(
        log, created, bounds.test_start, bounds.data_end + 1,
        settings.evaluation_max_users, settings.seed,
    )  # fmt: skip
    if not len(requests):
        return {}
    snap = Snapshot.build(
        bounds.test_start, log, posts, read_features, settings, two_tower, neighbour_params,
        users=requests.users,
    )  # fmt: skip
    out: dict[str, float] = {}
    n_posts = len(snap.catalog)
    for name, ranker in rankers.items():
        if ranker is None:
            continue
        rec, seen = snap.recommender(ranker, settings, **PLAIN_POLICIES)
        got = replay(rec, seen, requests, k=FINAL_K)
        out[name] = score_lists(got.ranked, requests, n_posts)["ndcg@10"]
        if "merged" not in out:
            out["merged"] = score_lists(got.candidates, requests, n_posts)["ndcg@10"]
    out["requests"] = float(len(requests))
    return out


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
