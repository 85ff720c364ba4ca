"""The quality gate and the promotion through Dagster, on the real job, check, promotion asset
and MLflow resource: the check only decides, ``ranker_champion`` promotes in its own step, a
failed gate skips it, and every Dagster run's MLflow run is ended.

Only the training is a stand-in (an asset under the key ``ranker_model`` that registers a tiny
ranker with the test NDCG@10 numbers it is given), so a run takes seconds."""

from __future__ import annotations

import dagster as dg
import mlflow
import pytest
from dagster_mlflow.resources import MlFlow

from assets import jobs, models
from assets.resources import SettingsResource, build_resources
from socialrec.models import registry
from socialrec.models.ranker import Ranker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def saved_ranker(tmp_path_factory):
    import pandas as pd

    from socialrec.features.ranking import ranking_features
    from tests.test_ranker import with_outcomes
    from tests.test_registry import _fit_ranker
    from tests.test_two_tower import tiny_frames

    f = tiny_frames()
    samples = f.samples
    feats = ranking_features(f.users, f.posts, samples, samples["ts"])
    cols = samples[["label", "split", "user_id", "post_id"]]
    data = with_outcomes(pd.concat([feats, cols], axis=1))
    path = tmp_path_factory.mktemp("ranker") / "ranker"
    ranker = _fit_ranker(data)
    ranker.save(path)
    return ranker, path


@pytest.fixture()
def setup(tmp_path, saved_ranker):
    """Definitions with the materialize_all job over the stand-in training, the real gate and
    the real promotion; ``numbers`` is what the next training run logs."""
    ranker, path = saved_ranker
    numbers: dict[str, float] = {}

    @dg.asset(name="ranker_model", group_name="models")
    def training(settings: SettingsResource, mlflow: dg.ResourceParam[MlFlow]):
        metrics = {f"test_ndcg@10.{k}": v for k, v in numbers.items()}
        reg = registry.log_ranker(settings.get(), ranker, path, params={}, metrics=metrics, data={})
        return dg.MaterializeResult(metadata={"mlflow_version": reg.version})

    settings = SettingsResource(data_dir=str(tmp_path))
    defs = dg.Definitions(
        assets=[training, models.ranker_champion],
        asset_checks=[models.ranker_quality_gate],
        jobs=[jobs.materialize_all],
        resources=build_resources(settings),
    )
    with dg.instance_for_test() as instance:
        yield defs, settings.get(), numbers, instance


def _run(defs, instance, selection=None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("materialize_all")
    keys = None if selection is None else [dg.AssetKey(k) for k in selection]
    return job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=keys)


def _champion(settings) -> int | None:
    mv = registry.aliased_version(settings, registry.RANKER, registry.CHAMPION)
    return None if mv is None else int(mv.version)


def _steps(result, event_type: str) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == event_type]


def _parent_run(settings, result):
    runs = mlflow.search_runs(
        experiment_names=[settings.mlflow_experiment],
        filter_string=f"tags.dagster_run_id = '{result.run_id}'",
        output_format="list",
    )
    assert len(runs) == 1, runs
    return runs[0]


def test_the_gate_decides_and_promotion_is_its_own_step(setup):
    defs, s, numbers, instance = setup
    # v1: the gate passes but, run without the promotion asset, nothing is promoted
    numbers.update(challenger=0.5, merged=0.1)
    gated = _run(defs, instance, ["ranker_model"])
    assert gated.success
    [evaluation] = gated.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.metadata["challenger_version"].value == 1
    assert _champion(s) is None
    # the promotion asset, in its own step, moves champion to the version the gate passed
    promoted = _run(defs, instance, ["ranker_champion"])
    assert promoted.success and _champion(s) == 1
    assert _steps(promoted, "ASSET_MATERIALIZATION") == ["ranker_champion"]
    meta = promoted.asset_materializations_for_node("ranker_champion")[0].metadata
    assert meta["champion_version"].value == 1 and meta["previous_champion"].value is None
    assert meta["gate_run_id"].value == gated.run_id
    assert meta["alias"].value == "champion"  # the champion asset carries the alias
    assert meta["model_uri"].value == "models:/socialrec_ranker@champion"

    # v2 within the tolerance, the whole job: check step, then the promotion step
    numbers.update(challenger=0.495, champion=0.5)
    full = _run(defs, instance)
    assert full.success and _champion(s) == 2
    check_step = next(
        e.step_key for e in full.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    )
    assert check_step != "ranker_champion"
    succeeded = _steps(full, "STEP_SUCCESS")
    assert succeeded.index(check_step) < succeeded.index("ranker_champion")
    assert "ranker_champion" in _steps(full, "ASSET_MATERIALIZATION")
    assert _parent_run(s, full).info.status == "FINISHED"
    assert _parent_run(s, gated).info.status == "FINISHED"  # every run ends its MLflow run


def test_a_failed_gate_skips_the_promotion_and_the_mlflow_run_still_ends(setup):
    defs, s, numbers, instance = setup
    numbers.update(challenger=0.5, merged=0.1)
    assert _run(defs, instance).success and _champion(s) == 1

    # v2 regresses: the blocking check fails, the promotion step never runs
    numbers.update(challenger=0.3, champion=0.5)
    failed = _run(defs, instance)
    assert not failed.success
    [evaluation] = failed.get_asset_check_evaluations()
    assert not evaluation.passed and "regresses" in evaluation.description
    assert "ranker_champion" not in _steps(failed, "STEP_SUCCESS")
    assert "ranker_champion" not in _steps(failed, "ASSET_MATERIALIZATION")
    assert _champion(s) == 1
    # dagster-mlflow's hook would have left this run RUNNING (its last op never ran)
    parent = _parent_run(s, failed)
    assert parent.info.status == "FAILED" and parent.info.end_time

    # the promotion alone refuses a challenger its gate did not pass
    alone = _run(defs, instance, ["ranker_champion"])
    assert not alone.success and _champion(s) == 1
    failure = next(e for e in alone.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no passing ranker_quality_gate" in failure.event_specific_data.error.message

    # v3 with a NaN metric never passes (logged NaN is dropped: the gate reads it as missing)
    numbers.clear()
    numbers.update(challenger=float("nan"), merged=0.1, champion=0.5)
    nan = _run(defs, instance)
    [evaluation] = nan.get_asset_check_evaluations()
    assert not evaluation.passed and _champion(s) == 1
    assert Ranker.load(registry.champion_dir(s, registry.RANKER)).outcomes
