"""Feast offline sources: the parquet feature tables of ``socialrec.features.tables.TABLES``.

Paths are absolute, computed from the socialrec Settings when this module is imported (the
``feast`` CLI imports it from inside ``feature_repo/``, so export ``SOCIALREC_DATA_DIR`` first,
as an absolute path). Code that works on another data directory calls :func:`make_sources`.
"""

from __future__ import annotations

import os
from pathlib import Path

from feast import FileSource

from socialrec.features.tables import TABLES, TIMESTAMP, feature_table_path
from socialrec.settings import Settings


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
            path=str(features_dir / feature_table_path(settings, name).name),
            timestamp_field=TIMESTAMP,
            description=table.source_description,
        )
        for name, table in TABLES.items()
    }


SOURCES = make_sources(default_settings())
