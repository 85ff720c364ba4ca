"""Serving layer: the seen store's history and the built recommender bento.

``recommender_bento`` imports the champion models (from the MLflow registry) and the post
catalog into the BentoML model store, labelled with their MLflow runs, and runs
``bentoml build`` (``bentos/package.py``, in a subprocess that uses the settings' BentoML
home). ``make demo`` serves the bento tag this asset records.
"""

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import dagster as dg

from assets.common import DERIVED_FRESHNESS, EAGER, TRAINING_FRESHNESS
from assets.resources import SettingsResource
from socialrec.data import warehouse
from socialrec.models import artifacts, registry
from socialrec.stores.catalog import Catalog
from socialrec.stores.post_details import PostDetails
from socialrec.stores.seen import open_seen_store

ROOT = Path(__file__).resolve().parent.parent


@dg.asset(
    deps=[dg.AssetKey("stg_events")],
    group_name="serving",
    freshness_policy=DERIVED_FRESHNESS,
    automation_condition=EAGER,
    kinds={"sqlite"},
    description="Every (user, post, event type) of the warehouse in the seen store, so the "
    "service filters what users have already seen. Upserts: re-running is idempotent.",
)
def seen_history(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    s = settings.get()
    events = warehouse.read_table(s, "stg_events", ["user_id", "post_id", "event_type", "ts"])
    with open_seen_store(s) as store:
        written = store.bulk_load(events)
        total = store.count()
        total = written if total is None else total  # None: the backend cannot count cheaply
    context.log.info(f"seen store: {written} events upserted, {total} rows")
    return dg.MaterializeResult(metadata={"events_upserted": written, "dagster/row_count": total})


@dg.asset(
    deps=[
        dg.AssetKey("two_tower_champion"),
        dg.AssetKey("ranker_champion"),
        dg.AssetKey("post_index"),
        dg.AssetKey("feast_online_store"),
        dg.AssetKey("seen_history"),
        dg.AssetKey("dim_posts"),
        dg.AssetKey("dim_users"),
        dg.AssetKey("post_neighbours"),
    ],
    group_name="serving",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=EAGER,
    kinds={"bentoml"},
    description="`bentoml build` of bentos/service.py with the champion two-tower, the "
    "champion ranker, the post catalog (popularity and trending as of the log's end) and the "
    "current co-engagement neighbours from the BentoML model store (each labelled with its "
    "MLflow or Dagster run).",
)
def recommender_bento(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    s = settings.get()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    log = warehouse.read_log(s)
    # the catalog's counts as of the log's end (the data's clock; in production, about now)
    dim_posts = warehouse.read_table(s, "dim_posts")
    catalog_dir = Catalog.from_log(
        dim_posts,
        log,
        (log.end or 0) + 1,
        s.trending_days,
        fresh_share=s.cold_start_fresh_share,
    ).save(s.models_dir / "catalog" / stamp)
    # what the feed page shows on a card (descriptions, media types, category names)
    PostDetails.from_warehouse(
        dim_posts,
        warehouse.read_table(s, "dim_users", ["user_id", "n_events"]),
    ).save(catalog_dir)
    neighbours = artifacts.current(s, artifacts.NEIGHBOURS)
    if neighbours is None:
        raise dg.Failure("no co-engagement neighbours yet: materialize post_neighbours first")
    models = {}
    for name in (registry.TWO_TOWER, registry.RANKER):
        mv = registry.champion_version(s, name)
        models[name] = {
            "path": str(registry.champion_dir(s, name)),
            "labels": {
                "mlflow_run_id": registry.champion_run_id(s, name),
                "mlflow_model": name,
                "mlflow_version": str(mv.version),
            },
        }
    models["socialrec_catalog"] = {
        "path": str(catalog_dir),
        "labels": {"dagster_run_id": context.run.run_id},
    }
    models["socialrec_neighbours"] = {
        "path": neighbours["path"],
        "labels": {"signal": neighbours["params"]["signal"]},
    }
    spec = {"models": models, "labels": {"dagster_run_id": context.run.run_id}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    env = {**os.environ, "BENTOML_HOME": str(s.bentoml_home), "BENTOML_DO_NOT_TRACK": "true"}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bentos.package", "--spec", f.name],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        raise dg.Failure(
            f"bentoml build failed:\n{out.stderr[-3000:]}",
            metadata={"stderr": dg.MetadataValue.text(out.stderr[-10000:])},
        )
    built = json.loads(out.stdout.strip().splitlines()[-1])
    context.log.info(f"built {built['bento_tag']} with {built['models']}")
    return dg.MaterializeResult(
        metadata={
            "bento_tag": built["bento_tag"],
            "models": built["models"],
            "bento_path": dg.MetadataValue.path(built["path"]),
            "bentoml_home": dg.MetadataValue.path(str(s.bentoml_home)),
            "serve": f"bentoml serve {built['bento_tag']} --host 127.0.0.1 --port 3001",
        }
    )
