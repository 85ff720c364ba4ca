"""Warehouse layer: the dbt project (staging -> marts -> ML datasets) as Dagster assets.

Every dbt model is an asset keyed by its name (``dim_posts``) in group "warehouse"; dbt sources
map to the raw assets through their ``meta.dagster.asset_key``; dbt tests are asset checks.
The dbt process gets the warehouse address from the ``settings`` resource (env vars read by
``dbt_project/profiles.yml``), so tests and production point it at their own warehouse.

Register ``dbt_resource(settings)`` under the resource key ``dbt``. One check of Dagster's own
sits beside the dbt tests: ``experiment_negative_rate`` on ``experiment_daily_outcomes``.
"""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from assets.common import DERIVED_FRESHNESS, EAGER
from assets.raw import WAREHOUSE_KIND
from assets.resources import SettingsResource, WarehouseResource
from socialrec.data.bigquery import dataset_name
from socialrec.recommender.experiments import negative_rate_alarms
from socialrec.settings import HOLDOUT, Settings

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"


def _dbt_executable() -> str:
    """``dbt`` of this interpreter's environment (the venv's bin), else the one on PATH."""
    candidate = Path(sys.executable).parent / "dbt"
    if candidate.exists():
        return str(candidate)
    return shutil.which("dbt") or "dbt"


DBT_EXECUTABLE = _dbt_executable()

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def dbt_env(settings: Settings) -> dict[str, str]:
    """The SOCIALREC_* variables profiles.yml reads, from one Settings object."""
    env = {"SOCIALREC_DBT_TARGET": str(settings.dbt_target or "duckdb")}
    if settings.warehouse_path is not None:
        env["SOCIALREC_WAREHOUSE_PATH"] = str(Path(settings.warehouse_path).resolve())
    if settings.bigquery_project:
        env["SOCIALREC_BIGQUERY_PROJECT"] = settings.bigquery_project
    env["SOCIALREC_BIGQUERY_DATASET"] = settings.bigquery_dataset
    env["SOCIALREC_BIGQUERY_LOCATION"] = settings.bigquery_location
    return env


def dbt_vars(settings: Settings) -> list[str]:
    """The ``--vars`` of a dbt command for these settings: ``future_tolerance_hours`` is
    ``settings.event_max_future_hours`` (the loader and dbt quarantine the same future events);
    on BigQuery, the raw tables are in the dataset ``<bigquery_dataset>_raw`` (var
    ``raw_schema``; DuckDB: schema ``raw``)."""
    values: dict = {"future_tolerance_hours": settings.event_max_future_hours}
    if settings.dbt_target == "bigquery":
        values["raw_schema"] = dataset_name(settings, "raw")
    return ["--vars", json.dumps(values)]


def _manifest_is_stale(project: DbtProject) -> bool:
    manifest = Path(project.manifest_path)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    sources = [
        p
        for p in DBT_PROJECT_DIR.rglob("*")
        if p.suffix in (".sql", ".yml", ".yaml")
        and p.is_file()
        and not p.is_relative_to(DBT_PROJECT_DIR / "target")
    ]
    return any(p.stat().st_mtime > built for p in sources)


def _parse(project: DbtProject) -> None:
    """``dbt parse`` into the project's target path: the dbt CLI itself, as
    ``DbtCliResource.cli`` runs it, without what that adds around a command (a ``dbt --version``
    probe and an in-process adapter with the project's macros: ~5 s of a fresh demo's start,
    for a parse that needs neither). With the profile, target and vars the asset's ``dbt build``
    gets from the same settings, so that the build reuses this parse (``partial_parse.msgpack``)
    instead of parsing again (~3 s: "Unable to do partial parsing because ... changed")."""
    settings = Settings()
    target = os.fspath(project.target_path)
    env = {
        **os.environ,
        **dbt_env(settings),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_TARGET_PATH": target,
        "DBT_LOG_PATH": target,
        "DBT_PROFILES_DIR": os.fspath(project.profiles_dir),
        "DBT_PROJECT_DIR": os.fspath(project.project_dir),
    }
    done = subprocess.run(
        [DBT_EXECUTABLE, "parse", "--quiet", *dbt_vars(settings)]
        + (["--target", settings.dbt_target] if settings.dbt_target else []),
        cwd=project.project_dir,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"dbt parse failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _parse_once(project: DbtProject, timeout: float = 60) -> None:
    """Parse under a lock file beside the manifest, so that processes loading the definitions
    together parse once: one that waited finds the manifest rewritten and skips its parse."""
    manifest = Path(project.manifest_path)
    before = manifest.lstat().st_mtime if manifest.exists() else 0
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest.with_suffix(".concurrent-update-lock"), "a") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"dbt parse lock held for {timeout}s: {lock.name}") from None
                time.sleep(0.1)
        try:
            if manifest.exists() and manifest.lstat().st_mtime > before:
                return  # another process parsed while this one waited
            _parse(project)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """Parse the project when its manifest is missing or older than a model/yml (outside
    ``dagster dev`` too, where the DbtProject preparer would not run)."""
    if _manifest_is_stale(project):
        _parse_once(project)
    return Path(project.manifest_path)


ensure_manifest()


class SocialrecDbtTranslator(DagsterDbtTranslator):
    """Default asset keys (the model name); group, freshness and automation for every model."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if self.get_resource_props(manifest, unique_id)["resource_type"] != "model":
            return spec  # sources keep the raw_* keys from their meta
        return spec.replace_attributes(
            group_name="warehouse",
            freshness_policy=DERIVED_FRESHNESS,
            automation_condition=EAGER,
            # the warehouse the models run in (the manifest names the adapter it was parsed
            # with, which is not the profile's when one manifest serves both)
            kinds={"dbt", WAREHOUSE_KIND},
        )


_ENV_LOCK = threading.Lock()


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set env vars while the dbt process is spawned (DbtCliResource copies os.environ)."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def dbt_resource(settings: Settings | None = None) -> DbtCliResource:
    """The ``dbt`` resource of the Definitions (this project, its profiles, the venv's dbt)."""
    return DbtCliResource(
        project_dir=os.fspath(DBT_PROJECT_DIR),
        profiles_dir=os.fspath(DBT_PROJECT_DIR),
        dbt_executable=DBT_EXECUTABLE,
        target=settings.dbt_target if settings is not None else None,
    )


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=SocialrecDbtTranslator(),
)
def socialrec_dbt_assets(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, settings: SettingsResource
):
    """``dbt build`` of the selected models: runs them and their tests (asset checks)."""
    with _environ(dbt_env(settings.get())):
        # the dbt process starts here
        invocation = dbt.cli(["build", *dbt_vars(settings.get())], context=context)
    yield from invocation.stream()


@dg.asset_check(
    asset=dg.AssetKey("experiment_daily_outcomes"),
    description="No experiment variant has a negative rate (dislikes and reports per exposure, "
    "all days) significantly above control's: one-sided two-proportion z-test at "
    "SOCIALREC_EXPERIMENT_ALPHA, both arms with at least SOCIALREC_EXPERIMENT_MIN_IMPRESSIONS "
    "exposures (the holdout is reported, never flagged). docs/experiments.md",
)
def experiment_negative_rate(
    settings: SettingsResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    s = settings.get()
    with warehouse.open() as wh:
        outcomes = wh.read_table(
            "experiment_daily_outcomes", ["variant", "impressions", "negatives"]
        )
    arms = negative_rate_alarms(outcomes, s.experiment_alpha, s.experiment_min_impressions)
    worse = [a["variant"] for a in arms if a["worse"] and a["variant"] != HOLDOUT]
    metadata: dict[str, Any] = {
        "worse": ", ".join(worse) or "none",
        "alpha": s.experiment_alpha,
        "min_impressions": s.experiment_min_impressions,
    }
    metadata.update({f"arm_{a['variant']}": dg.MetadataValue.json(a) for a in arms})
    return dg.AssetCheckResult(
        passed=not worse, severity=dg.AssetCheckSeverity.WARN, metadata=metadata
    )
