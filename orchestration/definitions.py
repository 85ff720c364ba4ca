"""The Dagster Definitions of socialrec (``dagster dev -w workspace.yaml`` loads this module).

Every layer's assets come from its module in ``assets/``; resources are built from the one
Settings object, so the same graph runs on the embedded defaults or on GCP.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf-keras)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dagster as dg  # noqa: E402

from assets import dbt, embeddings, evaluation, features, index, models, raw, serving  # noqa: E402
from assets.resources import LandingResource, SettingsResource, mlflow_resource  # noqa: E402
from orchestration.sensors import build_landing_sensor  # noqa: E402

ASSET_MODULES = [raw, dbt, embeddings, features, models, index, serving, evaluation]


def build_definitions(data_dir: str | None = None) -> dg.Definitions:
    """Definitions for one data directory (None: from the environment). Tests pass a tmp dir."""
    settings_resource = SettingsResource(data_dir=data_dir)
    settings = settings_resource.get()
    all_assets = dg.load_assets_from_modules(ASSET_MODULES)

    materialize_all = dg.define_asset_job(
        "materialize_all",
        selection=dg.AssetSelection.all(),
        description="The whole asset graph, raw data to the built bento (what `make demo` runs).",
    )
    nightly_retrain = dg.define_asset_job(
        "nightly_retrain",
        selection=dg.AssetSelection.groups("models", "index", "serving", "evaluation"),
        description="Retrain the models, rebuild the post index and the bento, evaluate offline.",
    )
    return dg.Definitions(
        assets=all_assets,
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[materialize_all, nightly_retrain],
        schedules=[
            dg.ScheduleDefinition(
                name="nightly_retrain_schedule",
                job=nightly_retrain,
                cron_schedule="0 3 * * *",
                execution_timezone="UTC",
            )
        ],
        sensors=[
            dg.AutomationConditionSensorDefinition(
                "automation_condition_sensor",
                target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING,
            ),
            build_landing_sensor(running=settings.profile == "gcp"),
            dg.build_sensor_for_freshness_checks(
                freshness_checks=raw.raw_events_freshness_checks,
                name="freshness_checks_sensor",
                default_status=dg.DefaultSensorStatus.RUNNING,
            ),
        ],
        resources={
            "settings": settings_resource,
            "landing": LandingResource.from_settings(settings_resource),
            "dbt": dbt.dbt_resource(settings),
            "mlflow": mlflow_resource.configured(
                {
                    "experiment_name": settings.mlflow_experiment,
                    "mlflow_tracking_uri": settings.mlflow_tracking_uri,
                }
            ),
        },
    )


defs = build_definitions()
