"""Stage 4, re-ranking: best first, interleaved so the top k holds at most ``max_per_category``
posts of a category and ``max_per_creator`` of a creator (the caps give way when nothing else is
left); optionally a decay of repeated categories, a boost of posts younger than
``new_post_boost_hours``, softmax sampling of the order (``softmax_temperature``, seeded per
request) and promoted posts (``promoted_post_ids`` with a ranker score >= ``promoted_min_score``)
first."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from socialrec.recommender.reasons import reason
from socialrec.timeutil import epoch_seconds, seconds

# a post dated up to this far in the future (clock skew between services) still counts as new;
# one dated further ahead (e.g. after an offline evaluation's "now") is not boosted
NEW_POST_CLOCK_SKEW_SECONDS = 300.0
# Recommender.recommend without an explicit seed: the sampling seed is derived from the user and
# the request time in buckets of this many seconds (a retry within the bucket gets the same order)
SEED_BUCKET_SECONDS = 60
_U64 = (1 << 64) - 1


def new_post_mask(scored: pd.DataFrame, now_ts: Any, window_hours: float) -> np.ndarray:
    """Which rows of ``scored`` are younger than ``window_hours`` at ``now_ts``.

    None of them without a ``now_ts``, a ``created_at`` column or a window; an unknown (NaN)
    ``created_at`` is not new; a post dated at most ``NEW_POST_CLOCK_SKEW_SECONDS`` after
    ``now_ts`` is (clock skew), one dated further ahead is not.
    """
    n = len(scored)
    if now_ts is None or window_hours <= 0 or "created_at" not in scored.columns:
        return np.zeros(n, dtype=bool)
    age = seconds(now_ts) - epoch_seconds(scored["created_at"], dtype=np.float64)
    return (age < window_hours * 3600.0) & (age >= -NEW_POST_CLOCK_SKEW_SECONDS)


def request_seed(user_id: int, now_ts: Any) -> int:
    """The sampling seed of a request without one: a hash of (user, request time bucket of
    ``SEED_BUCKET_SECONDS``), so a request is reproducible from the user and its time."""
    bucket = int(seconds(now_ts) // SEED_BUCKET_SECONDS)
    seq = np.random.SeedSequence([int(user_id) & _U64, bucket & _U64])
    return int(seq.generate_state(1, np.uint64)[0])


def plackett_luce_order(
    scores: Sequence[float], temperature: float, rng: np.random.Generator
) -> np.ndarray:
    """Positions of ``scores`` in an order sampled without replacement from
    ``softmax(score / temperature)`` (Plackett-Luce), with the Gumbel-max trick: sorting
    ``score / temperature + Gumbel noise`` is such a sample. As the temperature goes to 0 the
    order becomes the sorted one; as it grows, uniformly random."""
    s = np.asarray(scores, dtype=np.float64)
    keys = s / temperature + rng.gumbel(size=len(s))
    return np.argsort(-keys, kind="stable")


def rerank(
    scored: pd.DataFrame,
    k: int,
    diversity_decay: float = 1.0,
    max_per_category: int | None = None,
    max_per_creator: int | None = None,
    *,
    now_ts: Any = None,
    new_post_boost_hours: float = 0.0,
    new_post_boost: float = 1.0,
    softmax_temperature: float = 0.0,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    promoted: Iterable[int] | None = None,
    promoted_min_score: float = 0.5,
) -> list[dict]:
    """The top ``k`` after boosts, promotion, sampling and diversity; ``score``s never increase.

    ``scored``: post_id, ranker_score, category_id, creator_id; optionally ``created_at``
    (epoch seconds or datetimes, for the new-post boost) and ``cold`` (cold-start rows: no
    ranker score, never promoted).

    1. Decay: the n-th post (from 0, in ranker order) of a category gets
       ``ranker_score * diversity_decay ** n`` (1.0: no decay).
    2. Boost: a post younger than ``new_post_boost_hours`` at ``now_ts`` (see
       :func:`new_post_mask`) gets that score multiplied by ``new_post_boost``.
    3. Order: best score first. Posts in ``promoted`` whose *ranker* score is at least
       ``promoted_min_score`` come before all others (among themselves in score order).
       With ``softmax_temperature > 0`` the order of the other posts is sampled instead
       (:func:`plackett_luce_order`, from ``rng``, else a generator seeded with ``seed``, else
       a fresh one); 0 keeps it deterministic.
    4. Interleave: posts are taken in that order, skipping one that would put more than
       ``max_per_category`` posts of its category or ``max_per_creator`` of its creator in the
       top k (posts of unknown creators, ``creator_id`` < 0, are not one creator: never
       capped together); when only such posts are left, the caps give way (k posts whenever k
       exist).
       Promoted posts are counted in the caps and obey them like any other post (a promoted
       post that would break a cap waits), so how many are promoted into the top k is bounded
       by the caps only: the promoted list is meant to be short.

    Each item: post_id, score, ranker_score, category_id, creator_id and why it is where it
    is: ``boosted`` (step 2 applied), ``promoted`` (step 3 moved it to the front),
    ``cap_relaxed`` (taken although it breaks a cap: nothing else was left), and ``rules``:
    those steps as ``rule`` reasons (:mod:`socialrec.recommender.reasons`), in the order they
    applied — decay, boost, promoted or sampled, moved up past posts a cap held back, or
    taken over a cap.
    The returned ``score`` is the decayed and boosted score clamped so that it never increases
    down the list (sampling and promotion can put a lower score first); ``ranker_score`` is
    the ranker's own (None on the cold-start path).
    """
    if scored.empty or k <= 0:
        return []
    ordered = scored.sort_values(["ranker_score", "post_id"], ascending=[False, True])
    young = new_post_mask(ordered, now_ts, new_post_boost_hours) & (new_post_boost != 1.0)
    promoted_ids = {int(p) for p in promoted or ()}
    seen_per_category: dict[int, int] = {}
    pool = []
    for row, is_young in zip(ordered.itertuples(index=False), young.tolist(), strict=True):
        cat = int(row.category_id)
        n = seen_per_category.get(cat, 0)
        seen_per_category[cat] = n + 1
        base = float(row.ranker_score)
        cold = bool(getattr(row, "cold", False))
        score = base * diversity_decay**n
        rules = []
        if n and diversity_decay != 1.0:
            factor = diversity_decay**n
            rules.append(
                reason("rule", f"diversity: post {n + 1} of its category, x{factor:.2f}", factor)
            )
        if is_young:
            rules.append(reason("rule", f"new post boost x{new_post_boost:g}", new_post_boost))
        is_promoted = not cold and int(row.post_id) in promoted_ids and base >= promoted_min_score
        if is_promoted:
            rules.append(reason("rule", "promoted: moved to the front"))
        pool.append(
            {
                "post_id": int(row.post_id),
                "score": score * new_post_boost if is_young else score,
                "ranker_score": None if cold else base,
                "category_id": cat,
                "creator_id": int(row.creator_id),
                "boosted": bool(is_young),
                "promoted": is_promoted,
                "cap_relaxed": False,
                "rules": rules,
            }
        )
    pool.sort(key=lambda it: (-it["score"], it["post_id"]))
    front = [it for it in pool if it["promoted"]]
    rest = [it for it in pool if not it["promoted"]]
    if softmax_temperature > 0 and len(rest) > 1:
        rng = rng if rng is not None else np.random.default_rng(seed)
        order = plackett_luce_order([it["score"] for it in rest], softmax_temperature, rng)
        rest = [rest[i] for i in order]
        for now_at, was_at in enumerate(order.tolist()):
            rest[now_at]["rules"].append(_sampled(was_at - now_at, softmax_temperature))
    rest = front + rest
    caps = {"category": max_per_category, "creator": max_per_creator}

    def over(it: dict) -> str | None:
        """The cap taking ``it`` would break (None: it fits)."""
        if max_per_category is not None and per_cat.get(it["category_id"], 0) >= max_per_category:
            return "category"
        if max_per_creator is not None and per_creator.get(it["creator_id"], 0) >= max_per_creator:
            return "creator"
        return None

    picked: list[dict] = []
    per_cat: dict[int, int] = {}
    per_creator: dict[int, int] = {}
    while len(picked) < k and rest:
        nxt = next((i for i, it in enumerate(rest) if over(it) is None), None)
        if nxt is None:  # every remaining post breaks a cap: take the next one anyway
            item = rest.pop(0)
            item["cap_relaxed"] = True
            cap = over(item)
            text = f"over the {cap} cap: nothing else was left"
            item["rules"].append(reason("rule", text, caps[cap]))
        else:
            if nxt:  # the posts before it would break a cap: it moves up past them
                passed = sorted({over(it) for it in rest[:nxt]})
                names = " and ".join(f"{c} cap ({caps[c]} per feed)" for c in passed)
                text = f"moved up past {nxt} post{'s' * (nxt > 1)} over the {names}"
                rest[nxt]["rules"].append(reason("rule", text, nxt))
            item = rest.pop(nxt)
        per_cat[item["category_id"]] = per_cat.get(item["category_id"], 0) + 1
        if item["creator_id"] >= 0:  # unknown creators (UNKNOWN_CREATOR_ID) each count alone
            per_creator[item["creator_id"]] = per_creator.get(item["creator_id"], 0) + 1
        if picked and item["score"] > picked[-1]["score"]:
            item["score"] = picked[-1]["score"]
        picked.append(item)
    return picked


def _sampled(moved_up: int, temperature: float) -> dict[str, Any]:
    """The ``sampled`` rule of an item whose place the exploration sampling drew."""
    where = (
        f"moved up {moved_up}" if moved_up > 0
        else f"moved down {-moved_up}" if moved_up < 0
        else "kept its place"
    )  # fmt: skip
    return reason("rule", f"sampled for exploration: {where}", temperature)
