"""Feast feature views over the user and post feature tables (columns: docs/contracts.md)."""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Array, Float32, Int64, String

try:  # imported as the package ``feature_repo`` (Dagster, core, tests)
    from .data_sources import post_features_source, user_features_source
    from .entities import post, user
except ImportError:  # imported by the ``feast`` CLI, which puts this directory on sys.path
    from data_sources import post_features_source, user_features_source
    from entities import post, user

# Generous: the tables hold whole-history aggregates that stay valid until the next snapshot.
FEATURE_TTL = timedelta(days=3650)

USER_FEATURE_FIELDS = [
    Field(name="onboarding_categories", dtype=String, description="comma separated ids"),
    Field(name="n_events", dtype=Int64),
    Field(name="n_impressions", dtype=Int64),
    Field(name="n_positives", dtype=Int64),
    Field(name="positive_rate", dtype=Float32),
    Field(name="profile_embedding", dtype=Array(Float32), description="MiniLM, 384-d"),
]

POST_FEATURE_FIELDS = [
    Field(name="creator_id", dtype=Int64),
    Field(name="category_id", dtype=Int64),
    Field(name="media_type", dtype=String),
    Field(name="created_at_ts", dtype=Int64, description="epoch seconds"),
    Field(name="n_impressions", dtype=Int64),
    Field(name="n_positives", dtype=Int64),
    Field(name="positive_rate", dtype=Float32),
    Field(name="description_embedding", dtype=Array(Float32), description="MiniLM, 384-d"),
]


def make_feature_views(
    user_source: FileSource, post_source: FileSource
) -> tuple[FeatureView, FeatureView]:
    """(``user_features``, ``post_features``) over the given offline sources."""
    user_view = FeatureView(
        name="user_features",
        entities=[user],
        ttl=FEATURE_TTL,
        schema=list(USER_FEATURE_FIELDS),
        source=user_source,
        online=True,
        description="Profile, activity and profile text embedding of a user.",
        tags={"owner": "socialrec"},
    )
    post_view = FeatureView(
        name="post_features",
        entities=[post],
        ttl=FEATURE_TTL,
        schema=list(POST_FEATURE_FIELDS),
        source=post_source,
        online=True,
        description="Metadata, engagement and description text embedding of a post.",
        tags={"owner": "socialrec"},
    )
    return user_view, post_view


user_features, post_features = make_feature_views(user_features_source, post_features_source)
