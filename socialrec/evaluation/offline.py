"""The whole offline evaluation (what the ``offline_evaluation`` asset and ``make
bench-quality`` run): the shipped pipeline, its ablations and tuned baselines on one protocol.

1. The requests of the validation and the test split are replayed day by day
   (:mod:`socialrec.evaluation.protocol`).
2. Every baseline is tuned on validation (fitted on the train split, best NDCG@10 of the warm
   users over its grid), then refitted on everything before the test start with the chosen
   parameters and asked for the test requests.
3. The pipeline: a :class:`socialrec.recommender.replay.Snapshot` as of the test start (champion models,
   features read point in time, catalog and neighbours fitted on the events before the test)
   answers each test request at its own time through the service's recommender. One replay
   gives three lists: ``retrieval`` (the merged candidates, source fusion order),
   ``socialrec_plain`` (the ranker's order, no feed policies) and ``socialrec`` (the shipped
   default: ranker and feed policies). Each candidate source is also replayed alone
   (recall@100/500, every source asked for 500, in one pass of the first two stages).
4. Metrics per segment (all / warm / cold), paired differences with standard errors for the
   comparisons the targets name, and two plots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec.data.eventlog import EventLog, SplitBounds
from socialrec.evaluation import baselines as bl
from socialrec.evaluation.protocol import (
    SEGMENTS,
    Requests,
    build_requests,
    paired_difference,
    score_lists,
)
from socialrec.evaluation.report import (
    markdown_table,
    params_table,
    plot_popularity_bias,
    plot_recall_curves,
    segment_table,
)
from socialrec.recommender.replay import (
    FeatureReader,
    Snapshot,
    replay,
    replay_candidates,
    source_lists,
)
from socialrec.timeutil import DAY_SECONDS

PIPELINE = ("socialrec", "socialrec_plain", "retrieval")
BASELINES = ("popularity", "recent_popularity", "als", "itemknn", "ease")
SOURCE_RECALL_KS = (100, 500)


@dataclass
class OfflineReport:
    name: str
    protocol: str
    users: dict[str, int]
    segments: dict[str, dict[str, dict[str, float]]]  # segment -> method -> metric -> value
    params: dict[str, dict[str, Any]]
    sources: dict[str, dict[str, float]]  # source (or "merged") -> recall@100/500
    comparisons: dict[str, dict[str, float]]  # name -> {"diff", "se", "ratio"}
    validation: dict[str, list[dict[str, Any]]]  # baseline -> every grid point's value
    info: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, Path] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The issue's JSON shape for one dataset (plus the extra sections)."""
        return {
            "protocol": self.protocol,
            "users": self.users,
            "segments": self.segments,
            "params": self.params,
            "sources": self.sources,
            "comparisons": self.comparisons,
            "validation": self.validation,
            "info": self.info,
        }

    def markdown(self) -> str:
        parts = [f"**Protocol.** {self.protocol}"]
        for seg in SEGMENTS:
            if seg in self.segments:
                n = self.users.get(seg, sum(self.users.values()))
                parts.append(f"**{seg} users ({n})**\n\n{segment_table(self.segments, seg)}")
        parts.append("**Candidate sources, alone and merged (test, all users)**\n\n"
                     + markdown_table(self.sources, [f"recall@{k}" for k in SOURCE_RECALL_KS],
                                      "source"))  # fmt: skip
        parts.append("**Chosen parameters**\n\n" + params_table(self.params))
        parts.append("**Comparisons (warm users, NDCG@10, paired over users)**\n\n"
                     + markdown_table(self.comparisons, ["a", "b", "ratio", "diff", "se"],
                                      "comparison"))  # fmt: skip
        return "\n\n".join(parts)

    def write(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps({self.name: self.to_json()}, indent=2))
        (out / "report.md").write_text(self.markdown())
        return out / "report.json"


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b and not np.isnan(b) else float("nan")


def run_offline_evaluation(
    settings,
    log: EventLog,
    posts: pd.DataFrame,
    bounds: SplitBounds,
    read_features: FeatureReader,
    two_tower,
    ranker,
    out_dir: str | Path,
    name: str = "warehouse",
    neighbour_params=None,
    max_users: int | None = None,
    baselines: Iterable[str] = BASELINES,
    grids: Mapping[str, list[dict]] | None = None,
    log_fn: Callable[[str], None] = lambda _: None,
) -> OfflineReport:
    """See the module docstring. ``posts``: dim_posts-shaped (post_id, category_id,
    creator_id, media_type, created_at, is_deleted); ``read_features(entity, ids, as_of)``:
    feature rows as of an instant (Feast point in time); ``two_tower`` / ``ranker``: the
    models under evaluation (fitted before the test start)."""
    t_start = time.perf_counter()
    from socialrec.stores.catalog import live_posts

    live = live_posts(posts).drop_duplicates("post_id", keep="last")
    post_index = pd.Index(np.sort(live["post_id"].to_numpy(dtype=np.int64)))
    created_s = pd.Series(
        (pd.to_datetime(live["created_at"], utc=True) - pd.Timestamp(0, tz="UTC"))
        .dt.total_seconds()
        .to_numpy(),
        index=live["post_id"].to_numpy(dtype=np.int64),
    )
    created = created_s.reindex(post_index).to_numpy(dtype=np.float64)
    V, T, end = bounds.validation_start, bounds.test_start, bounds.data_end + 1
    valid = build_requests(log, created_s, V, T, max_users, settings.seed)
    test = build_requests(log, created_s, T, end, max_users, settings.seed)
    log_fn(
        f"requests: validation {len(valid)} ({valid.dropped}), test {len(test)} ({test.dropped})"
    )
    lists: dict[str, list[list[int]]] = {}
    params: dict[str, dict[str, Any]] = {}
    tried: dict[str, list[dict[str, Any]]] = {}
    tune_segment = "warm" if len(valid.segment("warm")) else "all"

    def objective(method_lists):
        return score_lists(method_lists, valid, len(post_index), tune_segment)["ndcg@10"]

    span_days = (T - bounds.data_start) / DAY_SECONDS
    all_grids = grids or bl.default_grids(span_days, len(post_index))
    for method in baselines:
        if method not in all_grids:
            log_fn(f"{method}: skipped (catalog of {len(post_index)} posts)")
            continue
        t0 = time.perf_counter()
        best, value, results = bl.tune(
            method, all_grids[method], log.before(V), post_index, V, valid, created, objective,
            lambda m, p, v: log_fn(f"{m} {p}: validation NDCG@10 {v:.4f}"),
        )  # fmt: skip
        model = bl.BASELINES[method](**best).fit(log.before(T), post_index, T)
        lists[method] = bl.recommend(model, test, created)
        params[method] = best
        tried[method] = [{**p, "validation_ndcg@10": v} for p, v in results]
        log_fn(f"{method}: {best} (validation NDCG@10 {value:.4f}) {time.perf_counter() - t0:.0f}s")

    # the pipeline, as of the test start
    t0 = time.perf_counter()
    log_fn(f"replaying the pipeline on {len(test)} test requests")
    snap = Snapshot.build(
        T, log, posts, read_features, settings, two_tower, neighbour_params, users=test.users
    )
    rec, seen = snap.recommender(ranker, settings)
    got = replay(rec, seen, test, k=100)
    lists["socialrec"], lists["socialrec_plain"], lists["retrieval"] = (
        got.final, got.ranked, got.candidates,
    )  # fmt: skip
    log_fn(f"pipeline replayed in {time.perf_counter() - t0:.0f}s: {snap.info}")
    params["socialrec"] = _pipeline_params(settings, ranker, snap)
    params["socialrec_plain"] = {"policies": "off (no caps, boost, sampling, promotion)"}
    params["retrieval"] = {"order": "reciprocal rank fusion of the sources, no ranker"}

    # each source alone (and the merged candidates) at 100 and 500
    sources: dict[str, dict[str, float]] = {}
    wide = {
        "retrieval_top_n": max(SOURCE_RECALL_KS),
        "source_top_n": max(SOURCE_RECALL_KS),
        "source_weights": settings.source_weights or getattr(ranker, "source_weights", None),
    }
    r, s = snap.recommender(None, settings, **wide)
    log_fn(f"each source's recall@{max(SOURCE_RECALL_KS)} on the test requests")
    frames = replay_candidates(r, s, test)
    for source in [*settings.candidate_sources, "merged"]:
        cand = source_lists(frames, None if source == "merged" else source)
        sources[source] = {f"recall@{k}": _recall(cand, test, k) for k in SOURCE_RECALL_KS}

    log_fn("scoring every list per segment; plots and report")
    segments = {
        seg: {m: score_lists(lst, test, len(post_index), seg) for m, lst in lists.items()}
        for seg in SEGMENTS
    }
    comparisons = _comparisons(lists, test, segments)
    users = test.user_counts()
    report = OfflineReport(
        name=name,
        protocol=protocol_text(bounds, valid, test, settings, tune_segment),
        users=users,
        segments=segments,
        params=params,
        sources=sources,
        comparisons=comparisons,
        validation=tried,
        info={
            "requests": {"validation": len(valid), "test": len(test)},
            "dropped": {"validation": valid.dropped, "test": test.dropped},
            "posts": len(post_index),
            "snapshot": snap.info,
            "seconds": round(time.perf_counter() - t_start, 1),
        },
    )
    out = Path(out_dir)
    popularity = dict(
        zip(
            post_index.tolist(),
            log.before(T).counts(post_index, log.before(T).positive),
            strict=True,
        )
    )
    shown = {m: lists[m] for m in ("socialrec", "retrieval", *baselines) if m in lists}
    report.plots = {
        "recall_at_k": plot_recall_curves(shown, test, out / "recall_at_k.png"),
        "popularity_bias": plot_popularity_bias(shown, popularity, out / "popularity_bias.png"),
    }
    report.write(out)
    return report


def _recall(lists: list[list[int]], requests: Requests, k: int) -> float:
    """Mean over requests of recall@k."""
    values = [
        len(set(lst[:k]) & {int(p) for p in rel}) / len(rel)
        for lst, rel in zip(lists, requests.relevant, strict=True)
        if len(rel)
    ]
    return float(np.mean(values)) if values else float("nan")


def _pipeline_params(settings, ranker, snap: Snapshot) -> dict[str, Any]:
    out: dict[str, Any] = {
        "sources": "+".join(settings.candidate_sources),
        "max_per_category": settings.max_per_category,
        "max_per_creator": settings.max_per_creator,
        "new_post_boost": f"{settings.new_post_boost}x<{settings.new_post_boost_hours}h",
        "softmax_temperature": settings.softmax_temperature,
    }
    if ranker is not None and getattr(ranker, "weights", None):
        out["outcome_weights"] = ",".join(f"{k}={v:g}" for k, v in ranker.weights.items())
    fusion = settings.source_weights or getattr(ranker, "source_weights", None)
    if fusion:
        out["source_weights"] = ",".join(f"{k}={v:g}" for k, v in fusion.items())
    if snap.neighbours is not None:
        p = snap.neighbours.params
        out["neighbours"] = (
            f"ease,{p.signal},k={p.k},l2={p.l2:g}"
            if p.method == "ease"
            else f"cosine,{p.signal},k={p.k},alpha={p.alpha},shrink={p.shrink}"
        )
    return out


def _comparisons(lists, test: Requests, segments) -> dict[str, dict[str, float]]:
    """The paired NDCG@10 differences the targets name, on warm users."""
    warm = test.subset(test.segment("warm"))
    pos = test.segment("warm")
    sub = {m: [lst[i] for i in pos] for m, lst in lists.items()}
    ndcg = {m: v["ndcg@10"] for m, v in segments["warm"].items()}
    base = [m for m in BASELINES if m in ndcg]
    best = max(base, key=lambda m: -np.inf if np.isnan(ndcg[m]) else ndcg[m]) if base else None
    pairs = [("socialrec", best), ("socialrec", "popularity"), ("socialrec_plain", "retrieval"),
             ("socialrec", "socialrec_plain")]  # fmt: skip
    out = {}
    for a, b in pairs:
        if a not in sub or b not in sub or not len(warm):
            continue
        diff, se = paired_difference(sub[a], sub[b], warm)
        out[f"{a} vs {b}"] = {"a": a, "b": b, "ratio": _ratio(ndcg[a], ndcg[b]), "diff": diff,
                              "se": se}  # fmt: skip
    return out


def protocol_text(bounds: SplitBounds, valid: Requests, test: Requests, settings, seg: str) -> str:
    d = test.dropped
    return (
        f"Global temporal split by event quantile ({bounds.describe()}). One request per "
        f"(user, UTC day) with a positive, asked at the user's first event of the day; seen = "
        f"every post the user had an event with before the request; candidates = posts created "
        f"by the request and not seen (posts created during the test are candidates from their "
        f"creation); relevant = the day's positives among them (dropped: {d.get('seen_before', 0)} "
        f"positives on seen posts, {d.get('created_after_request', 0)} on posts created after "
        f"the request). Baselines tuned on validation ({len(valid)} requests, best NDCG@10 of "
        f"{seg} users, fitted on train), then refitted on everything before the test start; the "
        f"pipeline's models were fitted before the test start, its features, catalog and "
        f"neighbours are read as of the test start. {len(test)} test requests; warm = a "
        f"positive before the test start. Metrics per user (mean of the user's requests), then "
        f"mean over users; coverage@10 over the {int(settings.evaluation_max_users)}-user cap "
        f"or all users. socialrec = the shipped default (sources + ranker + feed policies); "
        f"socialrec_plain = the same without feed policies; retrieval = the merged candidates "
        f"in source-fusion order."
    )
