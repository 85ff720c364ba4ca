"""The Dagster Definitions load, and every asset keeps the project's promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    from orchestration.definitions import build_definitions

    return build_definitions(str(tmp_path_factory.mktemp("defs")))


def test_every_asset_has_a_freshness_policy(defs):
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert len(keys) >= 15
    missing = [k.to_user_string() for k in keys if graph.get(k).freshness_policy is None]
    assert not missing, f"assets without a freshness policy: {missing}"


def test_every_asset_is_automated_or_loaded_by_the_raw_loaders(defs):
    graph = defs.resolve_asset_graph()
    manual = {
        k.to_user_string()
        for k in graph.get_all_asset_keys()
        if graph.get(k).automation_condition is None
    }
    # raw landing assets are requested by runs (a sensor in production); everything else is
    # either eager or on the nightly cron
    assert manual <= {"raw_events", "raw_posts", "raw_users", "raw_categories"}, manual


def test_the_graph_reaches_the_bento_from_raw_events(defs):
    graph = defs.resolve_asset_graph()
    upstream = graph.get(dg.AssetKey("recommender_bento")).parent_keys
    assert dg.AssetKey("post_index") in upstream
    ancestors = set()
    frontier = [dg.AssetKey("recommender_bento")]
    while frontier:
        key = frontier.pop()
        for parent in graph.get(key).parent_keys:
            if parent not in ancestors:
                ancestors.add(parent)
                frontier.append(parent)
    for key in (
        "raw_events",
        "raw_posts",
        "raw_users",
        "dim_posts",
        "two_tower_model",
        "ranker_model",
        "post_neighbours",
        "feast_online_store",
    ):
        assert dg.AssetKey(key) in ancestors, key


def test_the_learners_read_the_one_split_and_the_ranker_replays_the_sources(defs):
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    # every learner and the evaluation read the warehouse's split (ml_split_bounds)
    for name in ("post_neighbours", "two_tower_model", "ranker_model", "offline_evaluation"):
        assert "ml_split_bounds" in parents(name), name
    assert {"fct_interactions", "dim_posts"} <= parents("post_neighbours")
    # the ranker's training replays the sources: the two-tower fit and the neighbours
    assert {"two_tower_model", "post_neighbours", "fct_interactions"} <= parents("ranker_model")
    # what reads the champions follows the promotion steps, which follow the models
    assert parents("two_tower_champion") == {"two_tower_model"}
    assert parents("ranker_champion") == {"ranker_model"}
    champions = {"two_tower_champion", "ranker_champion"}
    assert champions | {"post_neighbours"} <= parents("offline_evaluation")
    # the bento packs the neighbours beside the (champion) models and the catalog
    assert champions | {"post_neighbours"} <= parents("recommender_bento")
    assert "two_tower_champion" in parents("post_index")
    # the model gates block what follows them; the evaluation only warns
    blocking = {
        key.name: graph.get_check_spec(key).blocking
        for key in graph.get_check_keys_for_assets(
            {dg.AssetKey(n) for n in ("two_tower_model", "ranker_model", "offline_evaluation")}
        )
    }
    assert blocking == {
        "two_tower_quality_gate": True,
        "ranker_quality_gate": True,
        "shipped_pipeline_beats_best_baseline_on_warm_users": False,
    }


def test_the_graph_has_no_orphan_and_raw_assets_are_fed_by_the_landing_sensor(defs):
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    orphans = [
        k.to_user_string()
        for k in keys
        if not graph.get(k).parent_keys and not graph.get(k).child_keys
    ]
    assert not orphans, orphans
    roots = {k.to_user_string() for k in keys if not graph.get(k).parent_keys}
    # the roots are the raw loaders (and the Feast registry, applied from code)
    assert roots <= {"raw_events", "raw_posts", "raw_users", "raw_categories", "feast_registry"}
    sensor = defs.resolve_sensor_def("landing_sensor")
    job = defs.resolve_job_def(sensor.job_name)
    targeted = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {"raw_events", "raw_posts", "raw_users", "raw_categories"} <= targeted
    # the partitioned raw asset gets a per-partition freshness check run by its sensor
    checks = {c.name for c in graph.get_check_keys_for_assets({dg.AssetKey("raw_events")})}
    assert {"freshness_check", "raw_events_quarantine_rate"} <= checks
    assert defs.resolve_sensor_def("freshness_checks_sensor") is not None
    # training assets retrain on the nightly cron and are gated before promotion
    for name in ("two_tower_model", "ranker_model"):
        cond = graph.get(dg.AssetKey(name)).automation_condition
        assert "cron" in str(cond).lower() or "0 3 * * *" in str(cond), cond
        gates = {c.name for c in graph.get_check_keys_for_assets({dg.AssetKey(name)})}
        assert any(g.endswith("quality_gate") for g in gates), gates


def test_jobs_schedules_sensors_and_dbt_checks(defs):
    assert defs.resolve_job_def("materialize_all") is not None
    assert defs.resolve_job_def("nightly_retrain") is not None
    assert defs.resolve_schedule_def("nightly_retrain_schedule").cron_schedule == "0 3 * * *"
    assert defs.resolve_sensor_def("automation_condition_sensor") is not None
    graph = defs.resolve_asset_graph()
    assert any(graph.get_check_keys_for_assets({dg.AssetKey("stg_events")})), "dbt tests as checks"


def test_workspace_loads_like_dagster_dev(tmp_path):
    """`dagster dev -w workspace.yaml` loads the same code location without error."""
    env = {**os.environ, "SOCIALREC_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    dagster = Path(sys.executable).with_name("dagster")
    out = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
