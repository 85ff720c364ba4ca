"""The Dagster Definitions of socialrec (``dagster dev -w workspace.yaml`` loads this module).

Only a merge: the assets and checks of every layer, the jobs and schedule, the sensors and the
resources are all defined beside the assets in ``assets/``; the resources are built from the
one Settings object, so the same graph runs on the embedded defaults or on GCP.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf-keras)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dagster as dg  # noqa: E402

from assets import (  # noqa: E402
    dbt,
    deletion,
    embeddings,
    evaluation,
    features,
    index,
    jobs,
    models,
    raw,
    serving,
)
from assets.resources import SettingsResource, build_resources  # noqa: E402
from assets.sensors import build_sensors  # noqa: E402

ASSET_MODULES = [raw, dbt, embeddings, features, models, index, serving, evaluation, deletion]


def build_definitions(data_dir: str | None = None) -> dg.Definitions:
    """Definitions for one data directory (None: from the environment). Tests pass a tmp dir."""
    settings = SettingsResource(data_dir=data_dir)
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=jobs.JOBS,
        schedules=jobs.SCHEDULES,
        sensors=build_sensors(landing_running=settings.get().profile == "gcp"),
        resources=build_resources(settings),
    )


defs = build_definitions()
