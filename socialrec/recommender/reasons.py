"""Why each recommended item is there, in a few words: its ``reasons``.

A reason is a plain dict ``{"code", "text", "value"}`` (``socialrec.serving.schemas.Reason``
in the API), computed from what the stages already know — no second model pass:

* ``source`` — one per candidate source that found the post (the merged candidates'
  ``<source>_score`` and ``<source>_rank`` columns), value that source's score;
* ``similarity`` — the two-tower retrieval similarity (the user . post inner product);
* ``ranker`` — the ranker's blended score (the item's ``ranker_score``);
* ``outcome`` — the predicted outcomes the ranker weighs (``p_<outcome>`` columns), at most
  ``MAX_OUTCOMES``, the largest ``weight * p`` first;
* ``rule`` — what re-ranking did to it (:func:`socialrec.recommender.reranking.rerank` records
  them: boost, diversity decay, cap, promoted, sampled) and why the answer is a cold start or
  a fallback.

In that order, at most ``MAX_REASONS`` per item (outcomes go first, then the sources that
ranked the post lowest; the ranker, the similarity and the rules stay).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MAX_REASONS = 8
MAX_OUTCOMES = 3
TWO_TOWER = "two_tower"
SOURCE_TEXT = {
    TWO_TOWER: "two_tower retrieval",
    "neighbours": "neighbours of your recent posts",
    "trending": "trending posts",
    "popular": "popular posts",
    "fresh": "fresh posts",
    "cold_start": "the popular and fresh list",
}


def reason(code: str, text: str, value: float | None = None) -> dict[str, Any]:
    """One reason; a value that is not a finite number is None."""
    ok = value is not None and math.isfinite(value)
    return {"code": code, "text": text, "value": float(value) if ok else None}


def num(x: float) -> str:
    """A short number for a card: two decimals, or one significant digit when smaller."""
    return f"{x:.2f}" if x == 0 or abs(x) >= 0.01 else f"{x:.1g}"


def age(hours: float) -> str:
    """An age for a card: minutes, hours or days."""
    if hours < 1 / 60:
        return "under 1 min"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} d"


def source_reason(name: str, score: float | None, rank: int | None = None) -> dict[str, Any]:
    """``found by <source> (#rank)``; the fresh list's score is minus the age in hours (the
    catalog's ``top``), said as the post's age."""
    where = [f"#{rank + 1}"] if rank is not None else []
    if name == "fresh" and score is not None and math.isfinite(score):
        where.append(f"{age(-score)} old")
    text = f"found by {SOURCE_TEXT.get(name, name)}" + (f" ({', '.join(where)})" if where else "")
    return reason("source", text, score)


def ranker_reason(score: float, ranked: bool = True) -> dict[str, Any]:
    if ranked:
        return reason("ranker", f"ranker score {num(score)}", score)
    return reason("ranker", f"source fusion score {num(score)} (no ranker)", score)


def fallback_reasons(score: float, why: str) -> list[dict[str, Any]]:
    """A fallback answer's item: the catalog's cold-start list found it, and why."""
    return [source_reason("cold_start", score), reason("rule", f"fallback: {why}")]


def _positions(frame: pd.DataFrame | None, post_ids: Sequence[int]) -> np.ndarray:
    """The row of each post in ``frame`` (-1: not there): one vectorised comparison of the k
    items with the frame's ids (cheaper than an index for the few items of a request)."""
    if frame is None or frame.empty or "post_id" not in frame.columns or not len(post_ids):
        return np.full(len(post_ids), -1)
    equal = frame["post_id"].to_numpy()[:, None] == np.asarray(post_ids)[None, :]
    return np.where(equal.any(axis=0), equal.argmax(axis=0), -1)


def _column(frame: pd.DataFrame, name: str, at: np.ndarray) -> list[float]:
    values = frame[name].to_numpy(dtype=np.float64)
    return np.where(at >= 0, values[np.maximum(at, 0)], np.nan).tolist()


def found_by(
    candidates: pd.DataFrame | None, post_ids: Sequence[int], at: np.ndarray | None = None
) -> list[list[dict[str, Any]]]:
    """Per post: a ``source`` reason for every source that returned it (its best rank first,
    ties in the merged columns' order), from the merged candidates' columns."""
    at = _positions(candidates, post_ids) if at is None else at
    if not (at >= 0).any():
        return [[] for _ in post_ids]
    out: list[list[tuple[float, int, dict]]] = [[] for _ in post_ids]
    columns = set(candidates.columns)
    names = [c[: -len("_rank")] for c in candidates.columns if c.endswith("_rank")]
    for j, name in enumerate(n for n in names if f"{n}_score" in columns):
        ranks = _column(candidates, f"{name}_rank", at)
        scores = _column(candidates, f"{name}_score", at)
        for i, (rank, score) in enumerate(zip(ranks, scores, strict=True)):
            if rank == rank:  # not NaN: the source returned it
                out[i].append((rank, j, source_reason(name, score, int(rank))))
    return [[r for _, _, r in sorted(found, key=lambda x: x[:2])] for found in out]


def similarities(
    candidates: pd.DataFrame | None, post_ids: Sequence[int], at: np.ndarray | None = None
) -> list[float]:
    """The two-tower similarity of each post (NaN: the two-tower source did not return it)."""
    if candidates is None or f"{TWO_TOWER}_score" not in candidates.columns:
        return [math.nan] * len(post_ids)
    at = _positions(candidates, post_ids) if at is None else at
    return _column(candidates, f"{TWO_TOWER}_score", at)


def outcome_reasons(
    scored: pd.DataFrame | None, post_ids: Sequence[int], weights: Mapping[str, float] | None
) -> list[list[dict[str, Any]]]:
    """Per post: the predicted outcomes the ranker weighs (``p_<outcome>`` columns; weight 0
    left out; without ``weights`` each counts 1), the top ``MAX_OUTCOMES`` by weight * p."""
    cols = [c for c in (scored.columns if scored is not None else ()) if c.startswith("p_")]
    weighed = [(c[2:], 1.0 if weights is None else float(weights.get(c[2:], 0.0))) for c in cols]
    weighed = [(o, w) for o, w in weighed if w != 0]
    if not weighed:
        return [[] for _ in post_ids]
    at = _positions(scored, post_ids)
    columns = [_column(scored, f"p_{o}", at) for o, _ in weighed]
    out = []
    for row in zip(*columns, strict=True):
        ok = [j for j, p in enumerate(row) if p == p]  # not NaN
        ok.sort(key=lambda j: -weighed[j][1] * row[j])
        out.append(
            [
                reason(
                    "outcome",
                    f"p({weighed[j][0]}) {num(row[j])}"
                    + (" counts against" if weighed[j][1] < 0 else ""),
                    row[j],
                )
                for j in ok[:MAX_OUTCOMES]
            ]
        )
    return out


def compact(reasons: list[dict[str, Any]], limit: int = MAX_REASONS) -> list[dict[str, Any]]:
    """At most ``limit`` reasons, in order: drop the last outcomes first, then the last
    sources (the lowest-ranked ones), never the first source, the ranker or a rule."""
    reasons = list(reasons)
    for code, keep in (("outcome", 0), ("source", 1)):
        while len(reasons) > limit:
            idx = [i for i, r in enumerate(reasons) if r["code"] == code]
            if len(idx) <= keep:
                break
            reasons.pop(idx[-1])
    return reasons


def explain(
    items: list[dict],
    candidates: pd.DataFrame | None,
    scored: pd.DataFrame | None,
    weights: Mapping[str, float] | None = None,
    ranked: bool = True,
    rule: dict[str, Any] | None = None,
) -> list[dict]:
    """Set each item's ``reasons`` (in place; also returns the items): its sources and
    similarity from the merged ``candidates``, its ranker score, its outcomes from ``scored``
    (weighted by the ranker's ``weights``), the re-ranking rules ``rerank`` recorded in its
    ``rules`` (removed) and ``rule`` (the answer's own: a cold start). ``ranked``: a ranker
    scored them (False: the ranker score is the sources' fusion score)."""
    ids = [int(it["post_id"]) for it in items]
    at = _positions(candidates, ids)
    sources = found_by(candidates, ids, at)
    sims = similarities(candidates, ids, at)
    outcomes = outcome_reasons(scored, ids, weights)
    for it, src, sim, outs in zip(items, sources, sims, outcomes, strict=True):
        reasons = list(src)
        if sim == sim:  # not NaN
            reasons.append(reason("similarity", f"retrieval similarity {num(sim)}", sim))
        if it.get("ranker_score") is not None:
            reasons.append(ranker_reason(it["ranker_score"], ranked))
        reasons += outs
        reasons += it.pop("rules", [])
        if rule is not None:
            reasons.append(dict(rule))
        it["reasons"] = compact(reasons)
    return items
