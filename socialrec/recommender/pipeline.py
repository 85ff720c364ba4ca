"""The online 4-stage recommender: retrieval -> filtering -> ranking -> re-ranking.

Each stage is a plain function over small inputs (unit-testable without any server);
:class:`Recommender` composes them with the real parts:

1. :func:`retrieve` — the user's online features (one Feast call) -> user tower -> ANN search,
   filtered to the user's onboarding and liked categories (:func:`preferred_categories`),
   plus an unfiltered exploration slice (``settings.exploration_share``), merged by best score.
2. :func:`filter_candidates` — drop posts the user has seen, disliked or reported, their own,
   posts of creators they blocked, and posts no longer in the live catalog (deleted).
3. :func:`rank_candidates` — one online fetch of all candidates' post features,
   ``ranking_features`` (the same function as at training time), ranker probabilities.
4. :func:`rerank` — best first, interleaved so the top k holds at most
   ``settings.max_per_category`` posts of a category and ``max_per_creator`` of a creator
   (the caps give way when nothing else is left); optionally a decay of repeated categories,
   a boost of posts younger than ``new_post_boost_hours``, softmax sampling of the order
   (``softmax_temperature``, seeded per request) and promoted posts
   (``promoted_post_ids`` with a ranker score >= ``promoted_min_score``) first.

A user the feature store does not know yet but whose request names categories (a new user's
onboarding choice) is embedded from them by the user tower and goes through the same four
stages. An unknown user without categories, or a user left with no candidates, gets the
cold-start path (popular and fresh
posts from the catalog, minus what they have seen) — never an error. Its list is re-ranked the
same way (caps, decay, new-post boost, sampling), except the promoted rule: it needs a ranker
score to check against ``promoted_min_score``, and cold-start scores are only list positions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from socialrec.recommender import sources as _sources
from socialrec.settings import Settings
from socialrec.stores.catalog import Catalog
from socialrec.stores.seen import SeenStore

PERSONALIZED = "personalized"
COLD_START = "cold_start"


# --- the parts, as the recommender sees them ------------------------------------------------
class OnlineFeatures(Protocol):
    def users(self, user_ids: Sequence[int]) -> pd.DataFrame: ...

    def posts(self, post_ids: Sequence[int]) -> pd.DataFrame: ...


class FeastFeatures:
    """Online features from a Feast store (``socialrec.features.store``), one call per batch."""

    def __init__(self, store: Any):
        self.store = store

    def users(self, user_ids: Sequence[int]) -> pd.DataFrame:
        from socialrec.features.store import online_user_features

        return online_user_features(self.store, user_ids)

    def posts(self, post_ids: Sequence[int]) -> pd.DataFrame:
        from socialrec.features.store import online_post_features

        return online_post_features(self.store, post_ids)


class CachedPostFeatures:
    """Online features with a bounded, time-limited cache of the POST rows in front.

    Post features change when the feature store is materialized (daily histories) or a post is
    published (``invalidate``), not per request; the Feast SQLite online store reads ~0.13 ms
    per post, so the ranking stage's one batched fetch grows with K. Cached rows are served
    for ``ttl_seconds``; the misses of a request are still fetched in ONE batched call. At most
    ``max_posts`` rows are kept (least recently used dropped). Users are never cached (their
    rows change with every event).
    """

    def __init__(self, inner: OnlineFeatures, max_posts: int = 50_000, ttl_seconds: float = 60):
        import threading
        from collections import OrderedDict

        self.inner = inner
        self.max_posts = max_posts
        self.ttl_seconds = ttl_seconds
        self._rows: OrderedDict[int, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self._dtypes: dict = {}
        self.hits = self.misses = 0

    def users(self, user_ids: Sequence[int]) -> pd.DataFrame:
        return self.inner.users(user_ids)

    def invalidate(self, post_ids: Iterable[int] | None = None) -> None:
        with self._lock:
            if post_ids is None:
                self._rows.clear()
            for p in post_ids or ():
                self._rows.pop(int(p), None)

    def posts(self, post_ids: Sequence[int]) -> pd.DataFrame:
        ids = list(dict.fromkeys(int(p) for p in post_ids))
        now = time.monotonic()
        rows: dict[int, dict] = {}
        with self._lock:
            for p in ids:
                hit = self._rows.get(p)
                if hit is not None and now - hit[0] < self.ttl_seconds:
                    rows[p] = hit[1]
                    self._rows.move_to_end(p)
        missing = [p for p in ids if p not in rows]
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        fetched = None
        if missing:
            fetched = self.inner.posts(missing)
            new = {
                int(p): row
                for p, row in zip(fetched.index, fetched.to_dict("records"), strict=True)
            }
            rows.update(new)
            with self._lock:
                for p, row in new.items():
                    self._rows[p] = (now, row)
                    self._rows.move_to_end(p)
                while len(self._rows) > self.max_posts:
                    self._rows.popitem(last=False)
        if fetched is not None and len(missing) == len(ids):
            return fetched.loc[ids]
        if fetched is not None:
            self._dtypes = fetched.dtypes.to_dict()
        out = pd.DataFrame.from_records([rows[p] for p in ids], index=pd.Index(ids, name="post_id"))
        # the online reader's dtypes (nullable ints, ...), also when every row was a hit
        return out.astype(self._dtypes, errors="ignore") if self._dtypes else out


class UserEncoder(Protocol):
    def user_embeddings(self, users_df: pd.DataFrame) -> np.ndarray: ...


class Searcher(Protocol):
    def search(
        self, alias: str, vectors: np.ndarray, top_n: int, category_ids: Sequence[int] | None
    ) -> list[list[tuple[int, float]]]: ...


class Scorer(Protocol):
    def predict(self, features_df: pd.DataFrame) -> np.ndarray: ...


FeatureBuilder = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, Any], pd.DataFrame]


# --- stage 1: retrieval (the candidate sources: socialrec.recommender.sources) --------------------------
# kept importable from here: the service and older callers use these names
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


# --- stage 2: filtering ---------------------------------------------------------------------
def filter_candidates(
    candidates: Sequence[tuple[int, float]],
    user_id: int,
    seen: set[int],
    negatives: set[int],
    creator_of: dict[int, int],
    blocked_creators: set[int] | frozenset[int] = frozenset(),
    created_of: dict[int, float] | None = None,
    now: float | None = None,
) -> tuple[list[tuple[int, float]], dict[str, int]]:
    """Candidates minus the posts the user disliked or reported (``negative``), has seen
    (``seen``), made (``own``), posts of creators the user blocked (``blocked``), posts
    missing from the live catalog ``creator_of`` (``deleted``: tombstoned since the index was
    built, or unknown) and, given ``created_of`` and ``now``, posts created after ``now``
    (``unpublished``: only a replay of the past meets them); also the drop counts per reason."""
    dropped = {"seen": 0, "negative": 0, "own": 0, "blocked": 0, "deleted": 0, "unpublished": 0}
    kept = []
    for post_id, score in candidates:
        creator = creator_of.get(post_id)
        if post_id in negatives:
            dropped["negative"] += 1
        elif post_id in seen:
            dropped["seen"] += 1
        elif creator is None:
            dropped["deleted"] += 1
        elif creator == user_id:
            dropped["own"] += 1
        elif creator in blocked_creators:
            dropped["blocked"] += 1
        elif created_of is not None and now is not None and created_of.get(post_id, 0) > now:
            dropped["unpublished"] += 1
        else:
            kept.append((post_id, score))
    return kept, dropped


# --- stage 3: ranking -----------------------------------------------------------------------
def candidate_features(
    user_row: pd.DataFrame,
    post_features: pd.DataFrame,
    candidates: pd.DataFrame,
    feature_builder: FeatureBuilder,
    now_ts: Any,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(candidates with online post features, their post rows, their ranker features): the
    ranking stage's input, also the ranker's training rows (socialrec.training.ranker)."""
    known = (
        post_features[post_features["found"].astype(bool)] if len(post_features) else post_features
    )
    cands = candidates[candidates["post_id"].isin(known.index)].reset_index(drop=True)
    posts = known.loc[cands["post_id"].astype("int64").tolist()].reset_index()
    if cands.empty:
        return cands, posts, pd.DataFrame()
    users = user_row.reset_index(drop=True)
    pairs = cands.assign(user_id=np.full(len(cands), int(users["user_id"].iloc[0]), np.int64))
    return cands, posts, feature_builder(users, posts, pairs, now_ts)


def rank_candidates(
    user_row: pd.DataFrame,
    post_features: pd.DataFrame,
    candidates: pd.DataFrame,
    ranker: Scorer | None,
    feature_builder: FeatureBuilder,
    now_ts: Any,
) -> pd.DataFrame:
    """Ranker scores for the candidates that have online features.

    ``user_row``: the user's online features (one row, ``user_id`` column);
    ``post_features``: online post features indexed by post_id with a ``found`` column;
    ``candidates``: ``post_id`` plus the merged sources' columns (``merged_score``, each
    source's score and rank: ranker features). Without a ``ranker`` the merged score orders
    them (retrieval alone). Returns post_id, ranker_score, category_id, creator_id, created_at
    (epoch seconds from the ``created_at_ts`` feature; NaN when unknown) and, when the ranker
    predicts several outcomes, one ``p_<outcome>`` column each; candidate order kept.
    """
    if ranker is None:
        known = (
            post_features[post_features["found"].astype(bool)]
            if len(post_features)
            else (post_features)
        )
        cands = candidates[candidates["post_id"].isin(known.index)].reset_index(drop=True)
        posts = known.loc[cands["post_id"].astype("int64").tolist()].reset_index()
        feats = None
    else:
        cands, posts, feats = candidate_features(
            user_row, post_features, candidates, feature_builder, now_ts
        )
    ids = cands["post_id"].astype("int64").tolist()
    out = pd.DataFrame({"post_id": pd.Series(ids, dtype="int64")})
    if not ids:
        return out.assign(ranker_score=[], category_id=[], creator_id=[], created_at=[])
    if ranker is None:
        out["ranker_score"] = cands["merged_score"].to_numpy(dtype=float)
    else:
        outcomes = getattr(ranker, "predict_outcomes", None)
        if outcomes is not None:
            probs = outcomes(feats)
            scores = ranker.combine(probs)
            for col in probs.columns:
                out[f"p_{col}"] = probs[col].to_numpy()
        else:
            scores = ranker.predict(feats)
        scores = np.asarray(scores, dtype=float).reshape(-1)
        if len(scores) != len(ids):
            raise RuntimeError(f"ranker returned {len(scores)} scores for {len(ids)} candidates")
        out["ranker_score"] = scores
    out["category_id"] = posts["category_id"].astype("int64").to_numpy()
    out["creator_id"] = posts["creator_id"].astype("int64").to_numpy()
    created = (
        pd.to_numeric(posts["created_at_ts"], errors="coerce").astype("float64")
        if "created_at_ts" in posts.columns
        else pd.Series(np.nan, index=posts.index)
    )
    out["created_at"] = created.where(created > 0).to_numpy()  # 0: a filled-in unknown
    return out


# --- stage 4: re-ranking --------------------------------------------------------------------
# a post dated up to this far in the future (clock skew between services) still counts as new;
# one dated further ahead (e.g. after an offline evaluation's "now") is not boosted
NEW_POST_CLOCK_SKEW_SECONDS = 300.0
# Recommender.recommend without an explicit seed: the sampling seed is derived from the user and
# the request time in buckets of this many seconds (a retry within the bucket gets the same order)
SEED_BUCKET_SECONDS = 60
_U64 = (1 << 64) - 1


def _epoch_seconds(ts: Any) -> float:
    """A scalar time (Timestamp, datetime, ISO string or epoch seconds) as epoch seconds (UTC;
    a naive time is taken as UTC)."""
    if isinstance(ts, int | float | np.number):
        return float(ts)
    return pd.Timestamp(ts).timestamp()


def _created_seconds(values: pd.Series) -> np.ndarray:
    """A ``created_at`` column (epoch seconds or datetimes) as float epoch seconds; NaN unknown."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64)
    ts = pd.to_datetime(values, utc=True)
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64)


def new_post_mask(scored: pd.DataFrame, now_ts: Any, window_hours: float) -> np.ndarray:
    """Which rows of ``scored`` are younger than ``window_hours`` at ``now_ts``.

    None of them without a ``now_ts``, a ``created_at`` column or a window; an unknown (NaN)
    ``created_at`` is not new; a post dated at most ``NEW_POST_CLOCK_SKEW_SECONDS`` after
    ``now_ts`` is (clock skew), one dated further ahead is not.
    """
    n = len(scored)
    if now_ts is None or window_hours <= 0 or "created_at" not in scored.columns:
        return np.zeros(n, dtype=bool)
    age = _epoch_seconds(now_ts) - _created_seconds(scored["created_at"])
    return (age < window_hours * 3600.0) & (age >= -NEW_POST_CLOCK_SKEW_SECONDS)


def request_seed(user_id: int, now_ts: Any) -> int:
    """The sampling seed of a request without one: a hash of (user, request time bucket of
    ``SEED_BUCKET_SECONDS``), so a request is reproducible from the user and its time."""
    bucket = int(_epoch_seconds(now_ts) // SEED_BUCKET_SECONDS)
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
    ``cap_relaxed`` (taken although it breaks a cap: nothing else was left).
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
        pool.append(
            {
                "post_id": int(row.post_id),
                "score": score * new_post_boost if is_young else score,
                "ranker_score": None if cold else base,
                "category_id": cat,
                "creator_id": int(row.creator_id),
                "boosted": bool(is_young),
                "promoted": not cold
                and int(row.post_id) in promoted_ids
                and base >= promoted_min_score,
                "cap_relaxed": False,
            }
        )
    pool.sort(key=lambda it: (-it["score"], it["post_id"]))
    front = [it for it in pool if it["promoted"]]
    rest = [it for it in pool if not it["promoted"]]
    if softmax_temperature > 0 and len(rest) > 1:
        rng = rng if rng is not None else np.random.default_rng(seed)
        order = plackett_luce_order([it["score"] for it in rest], softmax_temperature, rng)
        rest = [rest[i] for i in order]
    rest = front + rest

    def fits(it: dict) -> bool:
        return (
            max_per_category is None or per_cat.get(it["category_id"], 0) < max_per_category
        ) and (max_per_creator is None or per_creator.get(it["creator_id"], 0) < max_per_creator)

    picked: list[dict] = []
    per_cat: dict[int, int] = {}
    per_creator: dict[int, int] = {}
    while len(picked) < k and rest:
        nxt = next((i for i, it in enumerate(rest) if fits(it)), None)
        if nxt is None:  # every remaining post breaks a cap: take the next one anyway
            item = rest.pop(0)
            item["cap_relaxed"] = True
        else:
            item = rest.pop(nxt)
        per_cat[item["category_id"]] = per_cat.get(item["category_id"], 0) + 1
        if item["creator_id"] >= 0:  # unknown creators (UNKNOWN_CREATOR_ID) each count alone
            per_creator[item["creator_id"]] = per_creator.get(item["creator_id"], 0) + 1
        if picked and item["score"] > picked[-1]["score"]:
            item["score"] = picked[-1]["score"]
        picked.append(item)
    return picked


# --- the composition ------------------------------------------------------------------------
@dataclass
class Recommendation:
    user_id: int
    items: list[dict]
    path: str  # PERSONALIZED | COLD_START
    debug: dict[str, Any] | None = None
    # the candidates that survived filtering, in merged (source fusion) order, and the ranker's
    # order before the re-ranking policies (the offline evaluation's ablation reads both)
    candidates: list[int] = field(default_factory=list)
    ranked: list[int] = field(default_factory=list)
    # sources skipped because a dependency was down (name -> its error): the feed failed open
    degraded: dict[str, BaseException] = field(default_factory=dict)


@dataclass
class _Timer:
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def stage(self, name: str, started: float, **counts: Any) -> float:
        now = time.perf_counter()
        self.stages[name] = {"ms": round((now - started) * 1000, 2), **counts}
        return now


@dataclass
class Context:
    """What the stages know about one request."""

    user_id: int
    now: pd.Timestamp
    user_df: pd.DataFrame  # one row: the user's features (or a new user's requested categories)
    found: bool  # the feature store knows the user
    new_user: bool  # unknown, but the request named categories
    categories: list[int]
    seen: set[int]
    negatives: set[int]
    blocked: set[int]
    vector: np.ndarray | None = None

    @property
    def personalized(self) -> bool:
        return self.found or self.new_user


class Recommender:
    """The 4 stages over the real parts.

    ``features``: an :class:`OnlineFeatures` or a Feast ``FeatureStore`` (wrapped in
    :class:`FeastFeatures`); ``two_tower``: anything with ``user_embeddings``; ``index``:
    a :class:`socialrec.stores.index.PostIndex`; ``ranker``: anything with ``predict`` (None: the
    merged source order, "retrieval alone"); ``neighbours``: a
    :class:`socialrec.models.neighbours.NeighbourTable` (None: no ``neighbours`` source);
    ``sources``: the candidate sources (default: ``settings.candidate_sources`` built from the
    parts given); ``outage``: the exception types that mean a dependency is down (a source
    failing with one is skipped, the feed fails open); ``feature_builder`` defaults to
    ``socialrec.features.ranking.ranking_features``.
    """

    def __init__(
        self,
        features: Any,
        two_tower: UserEncoder,
        index: Searcher,
        seen_store: SeenStore,
        ranker: Scorer | None,
        catalog: Catalog,
        settings: Settings,
        feature_builder: FeatureBuilder | None = None,
        neighbours: Any = None,
        sources: Sequence[_sources.CandidateSource] | None = None,
        outage: tuple[type[BaseException], ...] = (),
    ):
        self.features: OnlineFeatures = (
            features
            if hasattr(features, "users") and hasattr(features, "posts")
            else FeastFeatures(features)
        )
        self.two_tower = two_tower
        self.index = index
        self.seen_store = seen_store
        self.ranker = ranker
        self.catalog = catalog
        self.settings = settings
        self.neighbours = neighbours
        self.outage = outage
        self._sources = list(sources) if sources is not None else None
        if feature_builder is None:
            from socialrec.features.ranking import ranking_features

            feature_builder = ranking_features
        self.feature_builder = feature_builder

    @property
    def fusion_weights(self) -> dict[str, float] | None:
        """The sources' weights in the merged order: settings, else the ones learned with the
        ranker (None: equal)."""
        return self.settings.source_weights or getattr(self.ranker, "source_weights", None)

    @property
    def sources(self) -> list[_sources.CandidateSource]:
        """The candidate sources (built from the current parts unless given: the catalog may
        be swapped by the service when a post is published)."""
        if self._sources is not None:
            return self._sources
        s = self.settings
        built: list[_sources.CandidateSource] = []
        for name in s.candidate_sources:
            if name == "two_tower" and self.index is not None:
                built.append(
                    _sources.TwoTowerSource(self.index, s.collection_alias, s.exploration_share)
                )
            elif name == "neighbours" and self.neighbours is not None:
                built.append(_sources.NeighbourSource(self.neighbours))
            elif name in ("trending", "popular", "fresh"):
                built.append(_sources.CatalogSource(self.catalog, name))
        return built

    # --- the stages, one request -----------------------------------------------------------
    def context(
        self, user_id: int, now: Any = None, categories: Sequence[int] | None = None
    ) -> Context:
        """Read what the request needs: the seen store once, the user's features once, the
        user tower's vector once (a known user, or a new one with categories)."""
        user_id = int(user_id)
        now_ts = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
        if now_ts.tzinfo is None:
            now_ts = now_ts.tz_localize("UTC")
        seen = self.seen_store.seen(user_id)
        negatives = self.seen_store.negatives(user_id)
        blocked = (
            self.seen_store.blocked_creators(user_id)
            if hasattr(self.seen_store, "blocked_creators")
            else set()
        )
        users = self.features.users([user_id])
        found = bool(len(users)) and bool(users["found"].iloc[0])
        requested = [int(c) for c in categories] if categories else []
        cats = requested or (preferred_categories(users.iloc[0]) if found else [])
        user_df = users.reset_index()
        if not found and requested:
            # a new user: embedded from the requested categories alone
            user_df = pd.DataFrame(
                {"user_id": [user_id], "onboarding_categories": [",".join(map(str, requested))]}
            )
            user_df["profile_embedding"] = [None]
        elif requested:
            user_df["onboarding_categories"] = ",".join(map(str, requested))
        ctx = Context(
            user_id, now_ts, user_df, found, not found and bool(requested), cats,
            set(seen), set(negatives), set(blocked),
        )  # fmt: skip
        if ctx.personalized and self.two_tower is not None:
            ctx.vector = self.two_tower.user_embeddings(user_df)[0]
        return ctx

    def candidates(self, ctx: Context) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Stages 1 and 2: every source's candidates merged, then filtered. Returns the kept
        candidates (``socialrec.recommender.sources.merge`` columns, plus for every candidate its post's
        ``catalog_trending``, ``catalog_popular`` and ``catalog_dwell_ms`` — the mean dwell time
        of its events, when the log has dwell — and its ``neighbours_score``) and what happened
        (source sizes and errors, drop counts)."""
        s = self.settings
        now_s = int(ctx.now.timestamp())
        user = ctx.user_df.iloc[0] if ctx.found else None
        request = _sources.SourceRequest(
            ctx.user_id, user, ctx.categories, now_s, ctx.seen | ctx.negatives, ctx.vector
        )
        results, errors = _sources.gather(
            self.sources,
            request,
            lambda name: s.retrieval_top_n if name == "two_tower" else s.source_top_n,
            self.outage,
        )
        merged = _sources.merge(results, self.fusion_weights)
        ids = merged["post_id"].astype("int64").tolist()
        meta = self.catalog.metadata(ids)
        creators = dict(zip(meta["post_id"].tolist(), meta["creator_id"].tolist(), strict=True))
        created = dict(zip(meta["post_id"].tolist(), meta["created_at"].tolist(), strict=True))
        kept, dropped = filter_candidates(
            [(p, 0.0) for p in ids], ctx.user_id, ctx.seen, ctx.negatives, creators,
            ctx.blocked, created, now_s,
        )  # fmt: skip
        keep = {p for p, _ in kept}
        merged = merged[merged["post_id"].isin(keep)].reset_index(drop=True)
        merged = self._candidate_features(merged, user)
        info = {
            "sources": {k: len(v) for k, v in results.items()},
            "source_errors": errors,  # name -> the outage exception (the feed failed open)
            "dropped": dropped,
        }
        return merged, info

    def _candidate_features(self, merged: pd.DataFrame, user: pd.Series | None) -> pd.DataFrame:
        """Per-candidate signals every candidate gets, whichever source found it: the catalog's
        trending and all-time positive counts, and the neighbours score of the user's recent
        posts (0 without history)."""
        if merged.empty:
            return merged.assign(catalog_trending=[], catalog_popular=[], catalog_dwell_ms=[])
        posts = self.catalog.posts.reindex(merged["post_id"].to_numpy())
        merged = merged.assign(
            catalog_trending=posts["trending"].to_numpy(dtype=float),
            catalog_popular=posts["n_positives"].to_numpy(dtype=float),
            catalog_dwell_ms=posts["dwell_ms"].to_numpy(dtype=float),
        )
        if self.neighbours is not None:
            history = _sources.recent_posts(user, self.neighbours.params.signal)
            ids, score = self.neighbours.scores(history) if history else ([], [])
            lookup = dict(zip(np.asarray(ids).tolist(), np.asarray(score).tolist(), strict=True))
            merged["neighbours_score"] = [lookup.get(int(p), 0.0) for p in merged["post_id"]]
        return merged

    def score(self, ctx: Context, candidates: pd.DataFrame) -> pd.DataFrame:
        """Stage 3: one batched fetch of the candidates' post features, the ranker's scores."""
        if candidates.empty:
            return pd.DataFrame()
        post_feats = self.features.posts(candidates["post_id"].tolist())
        scored = rank_candidates(
            ctx.user_df, post_feats, candidates, self.ranker, self.feature_builder, ctx.now
        )
        scored = scored[scored["creator_id"] != ctx.user_id]  # posts missing from the catalog
        return self._with_created_at(scored)

    def recommend(
        self,
        user_id: int,
        k: int = 20,
        debug: bool = False,
        now: Any = None,
        seed: int | None = None,
        categories: Sequence[int] | None = None,
    ) -> Recommendation:
        """The user's top ``k``. ``categories``: the app's categories for this request (e.g. a
        new user's onboarding choice); they replace the stored onboarding categories in the
        sources' category filters, and a user the feature store does not know yet is embedded
        from them by the user tower (its content path: unknown id, no history) and goes through
        the same four stages. A user unknown to the feature store and without categories gets
        the sources that need no user (trending, popular, fresh) through the same ranking and
        re-ranking (path ``cold_start``); when nothing is left, the catalog's popular and fresh
        interleave (never an error). ``now``: the request time (default: the clock), for the
        sources, features and the new-post boost. ``seed``: the softmax sampling's seed (used
        only when ``settings.softmax_temperature > 0``); None derives one from the user and
        ``now`` (:func:`request_seed`), so a request is reproducible and a fixed ``now``
        (offline evaluation) is deterministic.
        """
        s = self.settings
        timer = _Timer()
        t = time.perf_counter()
        ctx = self.context(user_id, now, categories)
        t = timer.stage("features", t, found=ctx.found, new_user=ctx.new_user)
        candidates, info = self.candidates(ctx)
        degraded = info.pop("source_errors")
        t = timer.stage(
            "retrieval",
            t,
            candidates=len(candidates),
            **info,
            skipped={k: f"{type(v).__name__}: {v}"[:200] for k, v in degraded.items()},
        )
        scored = self.score(ctx, candidates)
        t = timer.stage("ranking", t, scored=len(scored))

        path = PERSONALIZED if ctx.personalized else COLD_START
        ranked = (
            scored.sort_values(["ranker_score", "post_id"], ascending=[False, True])[
                "post_id"
            ].tolist()
            if not scored.empty
            else []
        )
        if scored.empty:
            path = COLD_START
            scored = self._cold_start_frame(
                ctx.user_id, k, ctx.categories, ctx.seen | ctx.negatives
            )
        sampled = s.softmax_temperature > 0
        if seed is None and sampled:
            seed = request_seed(ctx.user_id, ctx.now)
        items = rerank(
            scored,
            k,
            s.diversity_decay,
            s.max_per_category,
            s.max_per_creator,
            now_ts=ctx.now,
            new_post_boost_hours=s.new_post_boost_hours,
            new_post_boost=s.new_post_boost,
            softmax_temperature=s.softmax_temperature,
            seed=seed,
            promoted=s.promoted_post_ids,
            promoted_min_score=s.promoted_min_score,
        )
        timer.stage(
            "reranking",
            t,
            returned=len(items),
            path=path,
            boosted=sum(it["boosted"] for it in items),
            promoted=sum(it["promoted"] for it in items),
            cap_relaxed=sum(it["cap_relaxed"] for it in items),
            temperature=s.softmax_temperature,
            seed=int(seed) if sampled and seed is not None else None,
        )
        info = None
        if debug:
            info = {"stages": timer.stages, "categories": ctx.categories, "n_seen": len(ctx.seen)}
        return Recommendation(
            ctx.user_id, items, path, info, candidates["post_id"].tolist() if len(candidates) else [],
            ranked, degraded,
        )  # fmt: skip

    def _cold_start_frame(
        self, user_id: int, k: int, categories: list[int], exclude: set[int]
    ) -> pd.DataFrame:
        # fetch extra so diversity re-ranking has room to reorder
        picks = self.catalog.cold_start(
            2 * k, categories or None, exclude=exclude, exclude_creator=user_id
        )
        meta = self.catalog.metadata(p for p, _ in picks)
        frame = pd.DataFrame(picks, columns=["post_id", "ranker_score"])
        frame["category_id"] = meta.loc[frame["post_id"], "category_id"].to_numpy()
        frame["creator_id"] = meta.loc[frame["post_id"], "creator_id"].to_numpy()
        frame["created_at"] = meta.loc[frame["post_id"], "created_at"].to_numpy()
        frame["cold"] = True
        return frame

    def _with_created_at(self, scored: pd.DataFrame) -> pd.DataFrame:
        """``created_at`` from the online features, else from the catalog (NaN when neither
        knows the post: no new-post boost)."""
        if scored.empty:
            return scored
        created = (
            scored["created_at"].astype("float64")
            if "created_at" in scored.columns
            else pd.Series(np.nan, index=scored.index)
        )
        if created.isna().any():
            meta = self.catalog.metadata(scored["post_id"])
            created = created.fillna(scored["post_id"].map(meta["created_at"]).astype("float64"))
        return scored.assign(created_at=created)

    def mark_events(self, events: Iterable[tuple[int, int, str, Any]]) -> int:
        """The write path's read-your-writes half: mark events seen at once."""
        events = list(events)
        if hasattr(self.seen_store, "mark_events"):
            return self.seen_store.mark_events(events)
        for u, p, e, ts in events:
            self.seen_store.mark(u, [p], e, ts)
        return len(events)
