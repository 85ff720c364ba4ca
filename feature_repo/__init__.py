"""The socialrec Feast repo (feast-workshop layout).

``entities.py``, ``data_sources.py``, ``features.py`` and ``feature_services.py`` define the
objects; ``feature_store.yaml`` lets the ``feast`` CLI work on them (``cd feature_repo &&
SOCIALREC_DATA_DIR=/abs/path feast plan``). Code applies them with
``socialrec.features.store.apply_definitions(store, all_definitions(settings))``.
"""

from __future__ import annotations

from socialrec.settings import Settings

from .data_sources import make_sources
from .entities import post, user
from .feature_services import make_feature_services
from .features import make_feature_views


def all_definitions(settings: Settings | None = None) -> list:
    """Every Feast object of the repo; sources point under ``settings`` (default: environment)."""
    if settings is None:
        from .data_sources import default_settings

        settings = default_settings()
    sources = make_sources(settings)
    views = make_feature_views(sources)
    services = make_feature_services(views)
    return [user, post, *sources.values(), *views.values(), *services]
