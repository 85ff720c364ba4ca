"""Feast offline sources: the parquet feature tables written by ``socialrec.features.store``.

Paths are absolute, computed from the socialrec Settings when this module is imported (the
``feast`` CLI imports it from inside ``feature_repo/``, so export ``SOCIALREC_DATA_DIR`` first,
as an absolute path). Code that works on another data directory calls :func:`make_sources`.
"""

from __future__ import annotations

import os
from pathlib import Path

from feast import FileSource

from socialrec.settings import Settings

TIMESTAMP_FIELD = "event_timestamp"
# one parquet table per feature view, written by socialrec.features.store.write_feature_tables
TABLES = {
    "user_features": "Point-in-time activity history of each user (user_daily_activity).",
    "user_profile": "The profile text embedding of each user, valid from its creation.",
    "user_history": "Point-in-time engagement summary of each user (categories, creators, "
    "liked-posts embedding).",
    "post_features": "Point-in-time attributes and engagement history of each post.",
    "post_content": "The description text embedding of each post, valid from its creation.",
}


def default_settings() -> Settings:
    """Settings from the environment; without SOCIALREC_DATA_DIR, ``<repo>/.socialrec``."""
    if os.environ.get("SOCIALREC_DATA_DIR"):
        return Settings()
    return Settings(data_dir=Path(__file__).resolve().parent.parent / ".socialrec")


def make_sources(settings: Settings) -> dict[str, FileSource]:
    """``{view name: FileSource}`` reading the feature tables under ``settings.features_dir``."""
    features_dir = Path(settings.features_dir).resolve()
    return {
        name: FileSource(
            name=f"{name}_source",
            path=str(features_dir / f"{name}.parquet"),
            timestamp_field=TIMESTAMP_FIELD,
            description=description,
        )
        for name, description in TABLES.items()
    }


SOURCES = make_sources(default_settings())
