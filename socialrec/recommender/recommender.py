"""The online 4-stage recommender: retrieval -> filtering -> ranking -> re-ranking.

Each stage is a plain function over small inputs in its own module (unit-testable without any
server); :class:`Recommender` composes them with ready parts (the service's composition root
wraps them: guards, the Feast reader, the post-feature cache):

1. :mod:`.retrieval` — the user's online features (one Feast call) -> user tower -> ANN search,
   filtered to the user's onboarding and liked categories (:func:`preferred_categories`),
   plus an unfiltered exploration slice (``settings.exploration_share``), and the other
   candidate sources, merged (:mod:`.sources`).
2. :mod:`.filtering` — drop posts the user has seen, disliked or reported, their own, posts of
   creators they blocked, and posts no longer in the live catalog (deleted). The seen store is
   read once per request (:func:`.context.read_context`: its ``state``).
3. :mod:`.ranking` — one online fetch of all candidates' post features,
   ``ranking_features`` (the same function as at training time), ranker probabilities.
4. :mod:`.reranking` — best first, diversity caps, decay, new-post boost, softmax sampling and
   promoted posts.

Each item then gets its ``reasons`` (:mod:`.reasons`): the sources that found it, its
retrieval similarity, the ranker's score and outcomes, the re-ranking rules applied — from what
the stages already computed.

A user the feature store does not know yet but whose request names categories (a new user's
onboarding choice) is embedded from them by the user tower and goes through the same four
stages. An unknown user without categories, or a user left with no candidates, gets the
cold-start path (popular and fresh
posts from the catalog, minus what they have seen) — never an error. Its list is re-ranked the
same way (caps, decay, new-post boost, sampling), except the promoted rule: it needs a ranker
score to check against ``promoted_min_score``, and cold-start scores are only list positions.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from socialrec.features.ranking import ranking_features
from socialrec.recommender import sources as _sources
from socialrec.recommender.context import Context, read_context
from socialrec.recommender.filtering import filter_merged
from socialrec.recommender.parts import (
    FeatureBuilder,
    OnlineFeatures,
    Scorer,
    Searcher,
    UserEncoder,
)
from socialrec.recommender.ranking import rank_candidates
from socialrec.recommender.reasons import explain, reason
from socialrec.recommender.reranking import request_seed, rerank
from socialrec.recommender.retrieval import build_sources, candidate_signals, gather_merged
from socialrec.settings import Settings
from socialrec.stores.catalog import Catalog
from socialrec.stores.seen import SeenStore
from socialrec.stores.seen.base import PostSet

PERSONALIZED = "personalized"
COLD_START = "cold_start"


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


class Recommender:
    """The 4 stages over ready parts.

    ``features``: an :class:`~socialrec.recommender.parts.OnlineFeatures` (e.g.
    :class:`~socialrec.recommender.parts.FeastFeatures` over a Feast store); ``two_tower``:
    anything with ``user_embeddings``; ``index``: a :class:`socialrec.stores.index.PostIndex`;
    ``seen_store``: a ``SeenStore`` (read once per request through ``state``); ``ranker``:
    anything with ``predict`` (None: the merged source order, "retrieval alone");
    ``neighbours``: a :class:`socialrec.models.neighbours.NeighbourTable` (None: no
    ``neighbours`` source); ``sources``: the candidate sources (default:
    ``settings.candidate_sources`` built from the parts given); ``outage``: the exception types
    that mean a dependency is down (a source failing with one is skipped, the feed fails
    open); ``feature_builder`` defaults to ``socialrec.features.ranking.ranking_features``.
    """

    def __init__(
        self,
        features: OnlineFeatures,
        two_tower: UserEncoder | None,
        index: Searcher | None,
        seen_store: SeenStore,
        ranker: Scorer | None,
        catalog: Catalog,
        settings: Settings,
        feature_builder: FeatureBuilder | None = None,
        neighbours: Any = None,
        sources: Sequence[_sources.CandidateSource] | None = None,
        outage: tuple[type[BaseException], ...] = (),
    ):
        self.features = features
        self.two_tower = two_tower
        self.index = index
        self.seen_store = seen_store
        self.ranker = ranker
        self.catalog = catalog
        self.settings = settings
        self.neighbours = neighbours
        self.outage = outage
        self._sources = list(sources) if sources is not None else None
        self.feature_builder = feature_builder or ranking_features

    def with_policy(self, settings: Settings, ranker: Scorer | None) -> Recommender:
        """The same parts serving other settings and ranker (an experiment arm,
        ``socialrec.recommender.experiments``); sources given explicitly are kept when
        ``settings.candidate_sources`` names them."""
        arm = copy.copy(self)
        arm.settings, arm.ranker = settings, ranker
        if self._sources is not None:
            arm._sources = [x for x in self._sources if x.name in settings.candidate_sources]
        return arm

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
        return build_sources(self.settings, self.index, self.neighbours, self.catalog)

    # --- the stages, one request -----------------------------------------------------------
    def context(
        self, user_id: int, now: Any = None, categories: Sequence[int] | None = None
    ) -> Context:
        """Read what the request needs: the seen store once, the user's features once, the
        user tower's vector once (a known user, or a new one with categories)."""
        return read_context(
            self.features, self.seen_store, self.two_tower, user_id, now, categories
        )

    def candidates(self, ctx: Context) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Stages 1 and 2: every source's candidates merged, then filtered. Returns the kept
        candidates (``socialrec.recommender.sources.merge`` columns, plus for every candidate its post's
        ``catalog_trending``, ``catalog_popular`` and ``catalog_dwell_ms`` — the mean dwell time
        of its events, when the log has dwell — and its ``neighbours_score``) and what happened
        (source sizes and errors, drop counts)."""
        merged, sizes, errors = gather_merged(
            self.sources, ctx, self.settings, self.fusion_weights, self.outage
        )
        adopt = getattr(self.catalog, "adopt", None)  # the service's live view (serving.posts)
        if adopt is not None and not merged.empty:
            adopt(merged["post_id"].to_numpy())  # posts published through another worker
        merged, dropped = filter_merged(merged, ctx, self.catalog)
        user = ctx.user_df.iloc[0] if ctx.found else None
        merged = candidate_signals(merged, user, self.catalog, self.neighbours)
        info = {
            "sources": sizes,
            "source_errors": errors,  # name -> the outage exception (the feed failed open)
            "dropped": dropped,
        }
        return merged, info

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
        found = candidates  # what the reasons' sources and similarity come from
        why = None if ctx.personalized else "fallback: cold start for a new user"
        if scored.empty:
            path = COLD_START
            scored = self._cold_start_frame(ctx.user_id, k, ctx.categories, ctx.state.excluded)
            found = scored.assign(cold_start_score=scored["ranker_score"])
            found["cold_start_rank"] = np.arange(len(found), dtype=np.float64)
            why = why or "fallback: cold start, nothing left to rank"
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
        explain(
            items, found, scored, getattr(self.ranker, "weights", None),
            ranked=self.ranker is not None, rule=reason("rule", why) if why else None,
        )  # fmt: skip
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
        self, user_id: int, k: int, categories: list[int], exclude: PostSet
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
        return self.seen_store.mark_events(list(events))
