"""Feast feature views: two per entity (columns: docs/contracts.md, "Feature tables").

``user_features`` / ``post_features`` are point-in-time histories (a row per day with activity,
cumulative counts up to the end of that day); ``user_profile`` / ``post_content`` hold the text
embeddings, valid from the entity's creation.
"""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Array, Float32, Int64, String

try:  # imported as the package ``feature_repo`` (Dagster, core, tests)
    from .data_sources import SOURCES
    from .entities import post, user
except ImportError:  # imported by the ``feast`` CLI, which puts this directory on sys.path
    from data_sources import SOURCES
    from entities import post, user

# Generous: a history row stays valid until the entity's next row, however quiet it is.
FEATURE_TTL = timedelta(days=3650)

FIELDS = {
    "user_features": [
        Field(name="onboarding_categories", dtype=String, description="comma separated ids"),
        Field(name="n_events", dtype=Int64, description="events up to the row's day end"),
        Field(name="n_impressions", dtype=Int64),
        Field(name="n_positives", dtype=Int64),
        Field(name="positive_rate", dtype=Float32),
    ],
    "user_profile": [
        Field(name="profile_embedding", dtype=Array(Float32), description="MiniLM, 384-d"),
    ],
    "user_history": [
        Field(
            name="category_counts",
            dtype=String,
            description="category:positives:events,... up to the row's day end",
        ),
        Field(name="creator_positives", dtype=String, description="creator:positives,... (top)"),
        Field(
            name="history_embedding",
            dtype=Array(Float32),
            description="mean MiniLM embedding of the latest liked posts, 384-d",
        ),
        Field(
            name="recent_post_ids",
            dtype=String,
            description="the latest distinct posts of any event, newest first: id,id,...",
        ),
        Field(
            name="recent_positive_ids",
            dtype=String,
            description="the latest distinct positively engaged posts, newest first",
        ),
    ],
    "post_features": [
        Field(name="creator_id", dtype=Int64),
        Field(name="category_id", dtype=Int64),
        Field(name="media_type", dtype=String),
        Field(name="created_at_ts", dtype=Int64, description="epoch seconds"),
        Field(name="n_impressions", dtype=Int64, description="received up to the row's day end"),
        Field(name="n_positives", dtype=Int64),
        Field(name="positive_rate", dtype=Float32),
        *[
            Field(name=f"{name}_{n}d", dtype=dtype, description=f"trailing {n}-day window")
            for n in (1, 7)
            for name, dtype in (
                ("n_events", Int64),
                ("n_positives", Int64),
                ("positive_rate", Float32),
            )
        ],
    ],
    "post_content": [
        Field(name="description_embedding", dtype=Array(Float32), description="MiniLM, 384-d"),
    ],
}
DESCRIPTIONS = {
    "user_features": "Onboarding categories and point-in-time activity of a user.",
    "user_profile": "Profile (headline + about) text embedding of a user.",
    "user_history": "What a user engaged with, point in time: per-category positives and "
    "events, most liked creators, mean embedding of the latest liked posts, the latest posts.",
    "post_features": "Metadata and point-in-time engagement of a post.",
    "post_content": "Description text embedding of a post.",
}


def make_feature_views(sources: dict[str, FileSource]) -> dict[str, FeatureView]:
    """``{view name: FeatureView}`` over the given offline sources."""
    return {
        name: FeatureView(
            name=name,
            entities=[user if name.startswith("user") else post],
            ttl=FEATURE_TTL,
            schema=list(fields),
            source=sources[name],
            online=True,
            description=DESCRIPTIONS[name],
            tags={"owner": "socialrec"},
        )
        for name, fields in FIELDS.items()
    }


VIEWS = make_feature_views(SOURCES)
user_features, user_profile = VIEWS["user_features"], VIEWS["user_profile"]
user_history = VIEWS["user_history"]
post_features, post_content = VIEWS["post_features"], VIEWS["post_content"]
