"""The offline protocol: a global temporal split, requests replayed day by day, per-user metrics.

**Split.** ``ml_split_bounds`` (dbt) cuts the log by event quantile: the last 10% of the events
are *test*, the 10% before them *validation*, the rest *train* (boundaries floored to midnight
when the log is long enough). :class:`SplitBounds` carries the two instants.

**Requests.** A window ``[start, end)`` of the log becomes one request per (user, UTC day) with
at least one positive that day: the app asks for the user's feed at the time of the user's first
event of the day (:func:`build_requests`). At that instant

* the *seen* posts are every post the user had any event with before the request (the seen
  store filters them online, and it is updated in real time, so days earlier in the window
  count too);
* the *candidates* are the posts created at or before the request and not seen: posts created
  during the window are candidates from their creation on, so new-post recommendation is
  measured;
* the *relevant* posts are the day's positives among the candidates (positives on posts the
  user had seen, or on posts created after the request, cannot be asked of any method; both
  are counted in :attr:`Requests.dropped`).

Everything a method learns or reads (models, baselines, features, popularity) is fitted or
read as of ``start``; only the seen set and the candidate pool move with each request.

**Segments.** A request is *warm* when its user had a positive before ``start``, else *cold*.

**Metrics.** NDCG@10, recall@10/100, MRR@10 of each request's list against its relevant posts
(binary relevance), averaged over a user's requests, then over users (every user counts once);
coverage@10 = distinct posts in the top 10s / posts in the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from socialrec.data.eventlog import EventLog
from socialrec.timeutil import DAY_SECONDS, to_seconds

FINAL_K = 10
RECALL_KS = (10, 100)
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "coverage@10")
SEGMENTS = ("all", "warm", "cold")
# the outcomes a request records per day (the ranker's labels); "positive" is the relevance
OUTCOMES = ("positive", "full_view", "like", "share_comment", "negative")


@dataclass
class Requests:
    """The replayed requests of one window (see the module docstring)."""

    start: int
    end: int
    frame: pd.DataFrame  # request (0..n-1), user_id, day, ts (epoch s), warm (bool)
    relevant: list[np.ndarray]  # per request: the relevant post ids
    seen: list[np.ndarray]  # per request: post ids seen before the request
    outcomes: dict[str, list[np.ndarray]] = field(default_factory=dict)  # OUTCOMES, unfiltered
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def users(self) -> np.ndarray:
        return self.frame["user_id"].to_numpy()

    def segment(self, name: str) -> np.ndarray:
        """Request positions of a segment (``SEGMENTS``)."""
        if name == "all":
            return np.arange(len(self))
        warm = self.frame["warm"].to_numpy()
        return np.flatnonzero(warm if name == "warm" else ~warm)

    def subset(self, positions: Sequence[int]) -> Requests:
        pos = np.asarray(positions, dtype=np.int64)
        return Requests(
            self.start,
            self.end,
            self.frame.iloc[pos].reset_index(drop=True).assign(request=np.arange(len(pos))),
            [self.relevant[i] for i in pos],
            [self.seen[i] for i in pos],
            {k: [v[i] for i in pos] for k, v in self.outcomes.items()},
            dict(self.dropped),
        )

    def user_counts(self) -> dict[str, int]:
        f = self.frame
        return {
            "warm": int(f.loc[f["warm"], "user_id"].nunique()),
            "cold": int(f.loc[~f["warm"], "user_id"].nunique()),
        }


def _outcome_masks(log: EventLog) -> dict[str, np.ndarray]:
    return {
        "positive": log.positive,
        "full_view": log.is_type("VIEW_FULL"),
        "like": log.is_type("LIKE", "BOOKMARK"),
        "share_comment": log.is_type("SHARE", "COMMENT"),
        "negative": log.negative,
    }


def _posts_by_user_day(
    users: np.ndarray, days: np.ndarray, posts: np.ndarray
) -> dict[tuple[int, int], np.ndarray]:
    """(user, day) -> the distinct posts (sorted) of those events."""
    if not len(users):
        return {}
    order = np.lexsort((posts, days, users))
    u, d, p = users[order], days[order], posts[order]
    cut = np.flatnonzero((np.diff(u) != 0) | (np.diff(d) != 0)) + 1
    out = {}
    for lo, hi in zip(np.r_[0, cut], np.r_[cut, len(u)], strict=True):
        out[(int(u[lo]), int(d[lo]))] = np.unique(p[lo:hi])
    return out


def build_requests(
    log: EventLog,
    created: Mapping[int, int] | pd.Series,
    start,
    end,
    max_users: int | None = None,
    seed: int = 0,
) -> Requests:
    """The requests of ``[start, end)`` of ``log`` (see the module docstring).

    ``created``: post id -> creation time (epoch seconds) of every post that may be shown
    (posts missing from it — deleted, or unknown — are never relevant). ``max_users``: keep
    the requests of that many users (seeded sample), all of them by default."""
    start, end = to_seconds(start), to_seconds(end)
    created = pd.Series(created, dtype="float64") if not isinstance(created, pd.Series) else created
    window = log.between(start, end)
    days = window.ts // DAY_SECONDS
    frame = (
        pd.DataFrame({"user_id": window.user, "day": days, "ts": window.ts})
        .groupby(["user_id", "day"], sort=True)["ts"]
        .min()
        .reset_index()
    )
    masks = _outcome_masks(window)
    by_outcome = {
        name: _posts_by_user_day(window.user[m], days[m], window.post[m])
        for name, m in masks.items()
    }
    positives = by_outcome["positive"]
    has = [(u, d) in positives for u, d in zip(frame["user_id"], frame["day"], strict=True)]
    frame = frame[np.asarray(has, dtype=bool)]
    rng = np.random.default_rng(seed)
    if max_users is not None and frame["user_id"].nunique() > 2 * max_users:
        # a first sample bounds the work; the final one (below) counts reachable requests only
        keep = rng.choice(np.unique(frame["user_id"]), size=2 * max_users, replace=False)
        frame = frame[frame["user_id"].isin(keep)]
    frame = frame.reset_index(drop=True)

    # each user's events in time order, to read "seen before the request" by binary search
    past = log.before(end)
    order = np.lexsort((past.ts, past.user))
    users_sorted, ts_sorted, posts_sorted = past.user[order], past.ts[order], past.post[order]
    created_of = created.to_dict()
    relevant, seen, outcomes = [], [], {k: [] for k in masks}
    dropped = {"positives": 0, "seen_before": 0, "created_after_request": 0, "not_a_post": 0}
    for user, day, ts in frame[["user_id", "day", "ts"]].itertuples(index=False):
        lo = np.searchsorted(users_sorted, user, "left")
        hi = np.searchsorted(users_sorted, user, "right")
        cut = lo + np.searchsorted(ts_sorted[lo:hi], ts, "left")
        before = np.unique(posts_sorted[lo:cut])
        seen.append(before)
        for name in masks:
            got = by_outcome[name].get((user, day))
            outcomes[name].append(got if got is not None else np.zeros(0, dtype=np.int64))
        pos = positives[(user, day)]
        dropped["positives"] += len(pos)
        fresh = pos[~np.isin(pos, before)]
        dropped["seen_before"] += len(pos) - len(fresh)
        when = np.array([created_of.get(int(p), np.nan) for p in fresh], dtype=np.float64)
        dropped["not_a_post"] += int(np.isnan(when).sum())
        ok = when <= ts
        dropped["created_after_request"] += int((when > ts).sum())
        relevant.append(fresh[ok])
    frame["warm"] = frame["user_id"].isin(log.before(start).users_with("positive"))
    frame.insert(0, "request", np.arange(len(frame)))
    reqs = Requests(start, end, frame, relevant, seen, outcomes, dropped)
    has = np.array([len(r) > 0 for r in relevant], dtype=bool)
    dropped["requests_without_reachable_positive"] = int((~has).sum())
    if max_users is not None:
        users = np.unique(frame.loc[has, "user_id"])
        if len(users) > max_users:
            has &= (
                frame["user_id"].isin(rng.choice(users, size=max_users, replace=False)).to_numpy()
            )
    return reqs.subset(np.flatnonzero(has)) if not has.all() else reqs


# ---- metrics --------------------------------------------------------------------------------
def _ndcg(ranked: Sequence[int], relevant: set[int], k: int = FINAL_K) -> float:
    gains = [1.0 / np.log2(i + 2) for i, p in enumerate(ranked[:k]) if p in relevant]
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(len(relevant), k)))
    return float(sum(gains) / ideal) if ideal else 0.0


def request_metrics(ranked: Sequence[int], relevant: Sequence[int]) -> dict[str, float]:
    """The per-request metrics of one ranked list."""
    rel = {int(p) for p in relevant}
    ranked = [int(p) for p in ranked]
    out = {"ndcg@10": _ndcg(ranked, rel)}
    for k in RECALL_KS:
        out[f"recall@{k}"] = len(rel.intersection(ranked[:k])) / len(rel) if rel else 0.0
    out["mrr@10"] = next((1.0 / (i + 1) for i, p in enumerate(ranked[:FINAL_K]) if p in rel), 0.0)
    return out


def score_lists(
    lists: Sequence[Sequence[int]], requests: Requests, n_posts: int, segment: str = "all"
) -> dict[str, float]:
    """The protocol's metrics of one method's ranked lists (one per request, in request
    order) over a segment: per-user means of the request metrics, averaged over users."""
    pos = requests.segment(segment)
    if not len(pos):
        return {**{m: float("nan") for m in METRICS}, "users": 0, "requests": 0}
    rows = [request_metrics(lists[i], requests.relevant[i]) for i in pos]
    frame = pd.DataFrame(rows)
    frame["user_id"] = requests.users[pos]
    per_user = frame.groupby("user_id").mean()
    out = {m: float(per_user[m].mean()) for m in per_user.columns}
    top = {int(p) for i in pos for p in list(lists[i])[:FINAL_K]}
    out["coverage@10"] = len(top) / max(n_posts, 1)
    out["users"] = int(len(per_user))
    out["requests"] = int(len(pos))
    return out


def paired_difference(
    a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], requests: Requests, metric="ndcg@10"
) -> tuple[float, float]:
    """(mean, standard error) over users of ``metric(a) - metric(b)``: whether a difference
    between two methods on the same requests is more than noise."""
    rows = [
        (
            int(u),
            request_metrics(la, rel)[metric] - request_metrics(lb, rel)[metric],
        )
        for u, la, lb, rel in zip(requests.users, a, b, requests.relevant, strict=True)
    ]
    if not rows:
        return float("nan"), float("nan")
    d = pd.DataFrame(rows, columns=["u", "d"]).groupby("u")["d"].mean()
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def top_k_from_scores(
    scores: np.ndarray,
    posts: pd.Index,
    requests: Requests,
    positions: Sequence[int],
    created: np.ndarray,
    k: int,
) -> list[list[int]]:
    """Each request's top ``k`` posts by ``scores`` (rows aligned with ``positions``, columns
    with ``posts``), among the posts created by the request and not seen, best first (ties:
    lower column)."""
    out = []
    n = len(posts)
    k = min(k, n)
    for row, i in enumerate(positions):
        s = np.array(scores[row], dtype=np.float64, copy=True)
        s[created > requests.frame["ts"].iat[i]] = -np.inf
        seen = posts.get_indexer(requests.seen[i])
        s[seen[seen >= 0]] = -np.inf
        top = np.argpartition(-s, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.lexsort((top, -s[top]))]
        out.append([int(posts[j]) for j in top if np.isfinite(s[j])])
    return out
