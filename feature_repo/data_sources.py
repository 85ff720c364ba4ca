"""Feast offline sources: the parquet feature tables written by ``socialrec.features``.

Paths are absolute, computed from the socialrec Settings when this module is imported (the
``feast`` CLI imports it from inside ``feature_repo/``, so export ``SOCIALREC_DATA_DIR`` first,
as an absolute path). Code that works on another data directory calls :func:`make_sources`.
"""

from __future__ import annotations

import os
from pathlib import Path

from feast import FileSource

from socialrec.settings import Settings

USER_FEATURES_FILE = "user_features.parquet"
POST_FEATURES_FILE = "post_features.parquet"
TIMESTAMP_FIELD = "event_timestamp"


def default_settings() -> Settings:
    """Settings from the environment; without SOCIALREC_DATA_DIR, ``<repo>/.socialrec``."""
    if os.environ.get("SOCIALREC_DATA_DIR"):
        return Settings()
    return Settings(data_dir=Path(__file__).resolve().parent.parent / ".socialrec")


def make_sources(settings: Settings) -> tuple[FileSource, FileSource]:
    """(user source, post source) reading the feature tables under ``settings.features_dir``."""
    features_dir = Path(settings.features_dir).resolve()
    user_source = FileSource(
        name="user_features_source",
        path=str(features_dir / USER_FEATURES_FILE),
        timestamp_field=TIMESTAMP_FIELD,
        description="One row per user and snapshot (socialrec.features.build_user_features).",
    )
    post_source = FileSource(
        name="post_features_source",
        path=str(features_dir / POST_FEATURES_FILE),
        timestamp_field=TIMESTAMP_FIELD,
        description="One row per post and snapshot (socialrec.features.build_post_features).",
    )
    return user_source, post_source


user_features_source, post_features_source = make_sources(default_settings())
