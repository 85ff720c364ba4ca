"""Feast feature services: the named feature sets the models are trained and served with."""

from __future__ import annotations

from feast import FeatureService, FeatureView

try:  # imported as the package ``feature_repo``
    from .features import post_features, user_features
except ImportError:  # imported by the ``feast`` CLI
    from features import post_features, user_features


def make_feature_services(
    user_view: FeatureView, post_view: FeatureView
) -> tuple[FeatureService, FeatureService]:
    """(``ranking_v1``, ``retrieval_v1``)."""
    ranking = FeatureService(
        name="ranking_v1",
        features=[user_view, post_view],
        description="Everything the CatBoost ranker reads about a user and a candidate post.",
    )
    retrieval = FeatureService(
        name="retrieval_v1",
        features=[
            user_view[["onboarding_categories", "n_events", "profile_embedding"]],
            post_view[["creator_id", "category_id", "media_type", "description_embedding"]],
        ],
        description="The two-tower inputs (user tower and post tower).",
    )
    return ranking, retrieval


ranking_v1, retrieval_v1 = make_feature_services(user_features, post_features)
