"""The online recommender: retrieval -> filtering -> ranking -> re-ranking (one module per
stage; :class:`Recommender` composes them, :mod:`.replay` replays the past through it)."""

from socialrec.recommender.context import Context, read_context
from socialrec.recommender.filtering import filter_candidates, filter_merged
from socialrec.recommender.parts import (
    CachedPostFeatures,
    FeastFeatures,
    FeatureBuilder,
    OnlineFeatures,
    Scorer,
    Searcher,
    UserEncoder,
)
from socialrec.recommender.ranking import candidate_features, rank_candidates
from socialrec.recommender.recommender import (
    COLD_START,
    PERSONALIZED,
    Recommendation,
    Recommender,
)
from socialrec.recommender.reranking import (
    NEW_POST_CLOCK_SKEW_SECONDS,
    SEED_BUCKET_SECONDS,
    new_post_mask,
    plackett_luce_order,
    request_seed,
    rerank,
)
from socialrec.recommender.retrieval import preferred_categories, retrieve

__all__ = [
    "COLD_START",
    "NEW_POST_CLOCK_SKEW_SECONDS",
    "PERSONALIZED",
    "SEED_BUCKET_SECONDS",
    "CachedPostFeatures",
    "Context",
    "FeastFeatures",
    "FeatureBuilder",
    "OnlineFeatures",
    "Recommendation",
    "Recommender",
    "Scorer",
    "Searcher",
    "UserEncoder",
    "candidate_features",
    "filter_candidates",
    "filter_merged",
    "new_post_mask",
    "plackett_luce_order",
    "preferred_categories",
    "rank_candidates",
    "read_context",
    "request_seed",
    "rerank",
    "retrieve",
]
