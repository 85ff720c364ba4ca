"""Feast feature services: the named feature sets clients read (names:
``socialrec.features.tables``).

``user_v1`` / ``post_v1``: every feature of the entity, what training's point-in-time joins and
the service's online reads ask for (one entity per read: the user and post views share feature
names). ``ranking_v1`` / ``retrieval_v1``: the features each model uses.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

from socialrec.features.tables import (
    ENTITY_VIEWS,
    POST_SERVICE,
    RANKING_SERVICE,
    RETRIEVAL_SERVICE,
    USER_SERVICE,
)

try:  # imported as the package ``feature_repo``
    from .features import VIEWS
except ImportError:  # imported by the ``feast`` CLI
    from features import VIEWS


def make_feature_services(views: dict[str, FeatureView]) -> tuple[FeatureService, ...]:
    """(``ranking_v1``, ``retrieval_v1``, ``user_v1``, ``post_v1``)."""
    ranking = FeatureService(
        name=RANKING_SERVICE,
        features=list(views.values()),
        description="Everything the CatBoost ranker reads about a user and a candidate post.",
    )
    retrieval = FeatureService(
        name=RETRIEVAL_SERVICE,
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
    user = FeatureService(
        name=USER_SERVICE,
        features=[views[name] for name in ENTITY_VIEWS["user"]],
        description="Every feature of a user: the training reads and the service's user reads.",
    )
    post = FeatureService(
        name=POST_SERVICE,
        features=[views[name] for name in ENTITY_VIEWS["post"]],
        description="Every feature of a post: the training reads and the service's post reads.",
    )
    return ranking, retrieval, user, post


ranking_v1, retrieval_v1, user_v1, post_v1 = make_feature_services(VIEWS)
