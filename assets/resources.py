"""Dagster resources. Thin: they hand the core a Settings object or a client built from it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dagster as dg
import mlflow as mlflow_lib
from dagster_gcp import BigQueryResource, GCSResource
from dagster_mlflow import mlflow_tracking
from dagster_mlflow.resources import MlFlow
from pydantic import PrivateAttr

from socialrec.data.landing import LandingBucket, open_bucket
from socialrec.data.warehouse import Warehouse, backend_of, open_warehouse
from socialrec.settings import Settings
from socialrec.stores.milvus_server import serving_milvus


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


class LandingResource(dg.ConfigurableResource):
    """The landing bucket of ``settings.landing_uri``: ``landing.get() -> LandingBucket``.

    One interface, two implementations: a ``gs://bucket`` URI gives a GCSLandingBucket whose
    google-cloud-storage client comes from dagster-gcp's ``GCSResource`` (nested, so its
    ``project`` shows in the UI); anything else a LocalLandingBucket on that directory.
    With ``STORAGE_EMULATOR_HOST`` set (tests, the GCS emulator) the client talks to the
    emulator with anonymous credentials (google-cloud-storage does that by itself).
    Resource key ``landing``; build it with ``LandingResource.from_settings(settings)``.
    """

    settings: SettingsResource
    gcs: GCSResource

    @classmethod
    def from_settings(cls, settings: SettingsResource) -> LandingResource:
        """The resource for this settings resource (GCS project: ``bigquery_project``)."""
        return cls(settings=settings, gcs=GCSResource(project=settings.get().bigquery_project))

    def get(self) -> LandingBucket:
        uri = str(self.settings.get().landing_uri)
        return open_bucket(uri, client=self.gcs.get_client() if uri.startswith("gs://") else None)


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse of the settings' profile: ``with warehouse.open() as wh`` -> ``Warehouse``.

    One interface, two backends (socialrec.data.warehouse): the local profile's DuckDB file, or
    BigQuery (gcp) through the ``google.cloud.bigquery.Client`` of dagster-gcp's
    ``BigQueryResource`` (nested, so its project and location show in the UI); the Storage
    Read API client comes from the settings. With ``BIGQUERY_EMULATOR_HOST`` set (tests) the
    client talks to the emulator (google-cloud-bigquery does that by itself).
    Resource key ``warehouse``; build it with ``WarehouseResource.from_settings(settings)``.
    """

    settings: SettingsResource
    bigquery: BigQueryResource

    @classmethod
    def from_settings(cls, settings: SettingsResource) -> WarehouseResource:
        values = settings.get()
        bigquery = BigQueryResource(
            project=values.bigquery_project, location=values.bigquery_location
        )
        return cls(settings=settings, bigquery=bigquery)

    @property
    def kind(self) -> str:
        """``duckdb`` or ``bigquery``: the backend of these settings."""
        return backend_of(self.settings.get())

    @contextlib.contextmanager
    def open(self) -> Iterator[Warehouse]:
        values = self.settings.get()
        if backend_of(values) != "bigquery":
            with open_warehouse(values) as wh:
                yield wh
            return
        with self.bigquery.get_client() as client, open_warehouse(values, client=client) as wh:
            yield wh


class MilvusResource(dg.ConfigurableResource):
    """The Milvus deployment the index assets write to: ``SOCIALREC_MILVUS_URI`` (a server or
    cluster), else the local Milvus server of the data directory, the running one or one
    started for this run and stopped when the run's step ends. ``milvus.open_index()`` ->
    ``PostIndex`` (close it, or use it as a context manager). Resource key ``milvus``."""

    settings: SettingsResource
    _uri: str | None = PrivateAttr(default=None)

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[MilvusResource]:
        with serving_milvus(self.settings.get()) as uri:
            self._uri = uri
            yield self

    @property
    def uri(self) -> str:
        if self._uri is None:
            raise RuntimeError("MilvusResource is used outside a run")
        return self._uri

    def open_index(self):
        from socialrec.stores.index import PostIndex

        return PostIndex(self.uri, self.settings.get().milvus_token)


@dg.resource(
    config_schema=mlflow_tracking.config_schema,
    required_resource_keys={"settings"},
    description="dagster-mlflow's tracking resource, after creating the experiment with its "
    "artifact location under the settings (MLflow would otherwise default to ./mlruns); the "
    "Dagster run's MLflow run is ended when the resource is torn down.",
)
def mlflow_resource(context: dg.InitResourceContext) -> Iterator[MlFlow]:
    """dagster-mlflow's ``MlFlow`` (one MLflow run per Dagster run, found again by its
    ``dagster_run_id`` tag in every step's process), ended on teardown: FAILED when a step of
    the Dagster run has failed so far, else FINISHED (a later step's process resumes it and
    ends it again). dagster-mlflow's ``end_mlflow_on_run_finished`` hook ends it only when the
    last op in topological order succeeds, so a run stopped by a failed quality gate (the
    promotion, index and bento skipped) stayed RUNNING; attached to an asset job it would also
    make every step, dbt and loads included, open the MLflow run."""
    from mlflow.entities import RunStatus

    from socialrec.models import registry

    registry.configure(context.resources.settings.get())
    mlf = MlFlow(context)
    try:
        yield mlf
    finally:
        if mlflow_lib.active_run() is not None:
            known = context.instance is not None and context.run is not None
            failed = known and bool(
                context.instance.get_records_for_run(
                    context.run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1
                ).records
            )
            mlflow_lib.end_run(
                RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
            )


def build_resources(settings: SettingsResource) -> dict[str, object]:
    """The resources of the Definitions, all built from the one settings resource."""
    from assets.dbt import dbt_resource  # here: assets.dbt imports this module

    values = settings.get()
    return {
        "settings": settings,
        "landing": LandingResource.from_settings(settings),
        "warehouse": WarehouseResource.from_settings(settings),
        "milvus": MilvusResource(settings=settings),
        "dbt": dbt_resource(values),
        "mlflow": mlflow_resource.configured(
            {
                "experiment_name": values.mlflow_experiment,
                "mlflow_tracking_uri": values.mlflow_tracking_uri,
            }
        ),
    }
