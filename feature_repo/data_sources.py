"""Feast offline sources: the feature tables of ``socialrec.features.tables.TABLES``.

Local profile: the parquet files under ``settings.features_dir`` (``FileSource``); gcp profile:
the BigQuery tables ``<bigquery_dataset>_features.<view>`` (``BigQuerySource``,
``socialrec.features.gcp``). Paths are absolute, computed from the socialrec Settings when this
module is imported (the ``feast`` CLI imports it from inside ``feature_repo/``, so export
``SOCIALREC_DATA_DIR`` first, as an absolute path). Code that works on other settings calls
:func:`make_sources`.
"""

from __future__ import annotations

import os
from pathlib import Path

from feast import BigQuerySource, FileSource
from feast.data_source import DataSource

from socialrec.features.gcp import feature_table_id
from socialrec.features.tables import TABLES, TIMESTAMP, feature_table_path
from socialrec.settings import Settings


def default_settings() -> Settings:
    """Settings from the environment; without SOCIALREC_DATA_DIR, ``<repo>/.socialrec``."""
    if os.environ.get("SOCIALREC_DATA_DIR"):
        return Settings()
    return Settings(data_dir=Path(__file__).resolve().parent.parent / ".socialrec")


def make_sources(settings: Settings) -> dict[str, DataSource]:
    """``{view name: source}`` of the feature tables of ``settings``' profile."""
    if settings.profile == "gcp":
        return {
            name: BigQuerySource(
                name=f"{name}_source",
                table=feature_table_id(settings, name),
                timestamp_field=TIMESTAMP,
                description=table.source_description,
            )
            for name, table in TABLES.items()
        }
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
