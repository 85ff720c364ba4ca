"""Dagster resources. Thin: they hand the core a Settings object or a client built from it."""

from __future__ import annotations

import dagster as dg
from dagster_mlflow import mlflow_tracking
from dagster_mlflow.resources import MlFlow

from socialrec.settings import Settings


class SettingsResource(dg.ConfigurableResource):
    """The socialrec Settings, read from the environment (SOCIALREC_*) at run time.

    ``data_dir`` can be pinned here (tests do); otherwise the environment decides.
    """

    data_dir: str | None = None

    def get(self) -> Settings:
        overrides = {"data_dir": self.data_dir} if self.data_dir else {}
        settings = Settings(**overrides)
        settings.ensure_dirs()
        return settings


@dg.resource(
    config_schema=mlflow_tracking.config_schema,
    required_resource_keys={"settings"},
    description="dagster-mlflow's tracking resource, after creating the experiment with its "
    "artifact location under the settings (MLflow would otherwise default to ./mlruns).",
)
def mlflow_resource(context):
    from socialrec import registry

    registry.configure(context.resources.settings.get())
    return MlFlow(context)
