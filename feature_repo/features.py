"""Feast feature views: one per feature table of ``socialrec.features.tables.TABLES``.

``user_features`` / ``post_features`` are point-in-time histories (a row per day with activity,
cumulative counts up to the end of that day); ``user_history`` the same kind of daily history
of what the user engaged with; ``user_profile`` / ``post_content`` hold the text embeddings,
valid from the entity's creation. Each column's ``Field`` is derived from the table's
declaration (its pyarrow type through Feast's own type map).
"""

from __future__ import annotations

from datetime import timedelta

from feast import FeatureView, Field
from feast.data_source import DataSource
from feast.type_map import pa_to_feast_value_type
from feast.types import from_value_type

from socialrec.features.tables import TABLES, Column

try:  # imported as the package ``feature_repo`` (Dagster, core, tests)
    from .data_sources import SOURCES
    from .entities import ENTITIES
except ImportError:  # imported by the ``feast`` CLI, which puts this directory on sys.path
    from data_sources import SOURCES
    from entities import ENTITIES

# Generous: a history row stays valid until the entity's next row, however quiet it is.
FEATURE_TTL = timedelta(days=3650)


def field(column: Column) -> Field:
    """The Feast field of a declared column (pyarrow type -> Feast type)."""
    dtype = from_value_type(pa_to_feast_value_type(str(column.type)))
    return Field(name=column.name, dtype=dtype, description=column.description)


def make_feature_views(sources: dict[str, DataSource]) -> dict[str, FeatureView]:
    """``{view name: FeatureView}`` over the given offline sources."""
    return {
        name: FeatureView(
            name=name,
            entities=[ENTITIES[table.entity]],
            ttl=FEATURE_TTL,
            schema=[field(c) for c in table.columns],
            source=sources[name],
            online=True,
            description=table.description,
            tags={"owner": "socialrec"},
        )
        for name, table in TABLES.items()
    }


VIEWS = make_feature_views(SOURCES)
user_features, user_profile = VIEWS["user_features"], VIEWS["user_profile"]
user_history = VIEWS["user_history"]
post_features, post_content = VIEWS["post_features"], VIEWS["post_content"]
