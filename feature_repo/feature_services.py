"""Feast feature services: the named feature sets the models are trained and served with."""

from __future__ import annotations

from feast import FeatureService, FeatureView

try:  # imported as the package ``feature_repo``
    from .features import VIEWS
except ImportError:  # imported by the ``feast`` CLI
    from features import VIEWS


def make_feature_services(views: dict[str, FeatureView]) -> tuple[FeatureService, ...]:
    """(``ranking_v1``, ``retrieval_v1``)."""
    ranking = FeatureService(
        name="ranking_v1",
        features=list(views.values()),
        description="Everything the CatBoost ranker reads about a user and a candidate post.",
    )
    retrieval = FeatureService(
        name="retrieval_v1",
        features=[
            views["user_features"][
                ["onboarding_categories", "n_events", "n_positives", "positive_rate"]
            ],
            views["user_profile"],
            views["user_history"],
            views["post_features"][["creator_id", "category_id", "media_type", "created_at_ts"]],
            views["post_content"],
        ],
        description="The two-tower inputs (user tower and post tower).",
    )
    return ranking, retrieval


ranking_v1, retrieval_v1 = make_feature_services(VIEWS)
