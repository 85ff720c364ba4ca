"""MLflow for real (SQLite backend, local artifacts): log, register, alias, read the champion."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from socialrec.features.ranking import RANKER_FEATURES
from socialrec.models import registry
from socialrec.models.ranker import OUTCOMES, Ranker, label
from socialrec.settings import Settings
from tests.test_two_tower import tiny_frames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    s = Settings(data_dir=tmp_path_factory.mktemp("mlflow"))
    s.ensure_dirs()
    return s


@pytest.fixture(scope="module")
def frames():
    return tiny_frames()


@pytest.fixture(scope="module")
def ranker_data(frames):
    from socialrec.features.ranking import ranking_features
    from tests.test_ranker import with_outcomes

    s = frames.samples
    feats = ranking_features(frames.users, frames.posts, s, s["ts"])
    return with_outcomes(pd.concat([feats, s[["label", "split", "user_id", "post_id"]]], axis=1))


def _fit_ranker(data: pd.DataFrame) -> Ranker:
    return Ranker(iterations=30).fit(data[data["split"] == "train"])


def _shuffled(data: pd.DataFrame) -> pd.DataFrame:
    """Every outcome label shuffled (the same permutation): nothing left to learn."""
    labels = [label(o) for o in OUTCOMES]
    order = np.random.default_rng(0).permutation(len(data))
    return data.assign(**{c: data[c].to_numpy()[order] for c in labels})


def _log(settings, ranker, data, tmp_path, i):
    model_dir = tmp_path / f"ranker{i}"
    ranker.save(model_dir)
    return registry.log_ranker(
        settings,
        ranker,
        model_dir,
        params={"iterations": ranker.params["iterations"]},
        metrics={"validation_auc": 0.7 + i / 100, "recall@10": 0.5, "nan": float("nan")},
        data={"samples": registry.data_snapshot(data.assign(ts=pd.Timestamp.now()))},
        example_input=data[RANKER_FEATURES].head(5),
    )


def _gate(settings, data):
    """The gate, then the promotion step when it passed (the gate itself never promotes)."""
    from socialrec.training import retrieval as training

    valid = data[data["split"] == "validation"]
    before = registry.aliased_version(settings, registry.RANKER, registry.CHAMPION)
    result = training.quality_gate(
        settings,
        registry.RANKER,
        "validation AUC",
        lambda path: Ranker.load(path).evaluate(valid)["positive_auc"],
    )
    after = registry.aliased_version(settings, registry.RANKER, registry.CHAMPION)
    assert (before and before.version) == (after and after.version), "the gate promoted"
    if result.passed:
        registry.promote(settings, registry.RANKER, result.challenger_version, result.reason)
    return result


def test_challenger_becomes_champion_only_through_the_gate(settings, ranker_data, tmp_path):
    # v1: nothing to regress against -> promoted
    v1 = _log(settings, _fit_ranker(ranker_data), ranker_data, tmp_path, 1)
    assert (v1.version, v1.promoted) == (1, False)
    assert registry.aliased_version(settings, registry.RANKER, registry.CHAMPION) is None
    first = _gate(settings, ranker_data)
    assert first.passed and first.champion_version is None and first.reason == "no champion yet"
    assert int(registry.champion_version(settings, registry.RANKER).version) == 1

    # v2 learned from shuffled labels: it regresses on the same validation set -> blocked
    v2 = _log(settings, _fit_ranker(_shuffled(ranker_data)), ranker_data, tmp_path, 2)
    second = _gate(settings, ranker_data)
    assert not second.passed, second
    assert (second.challenger_version, second.champion_version) == (v2.version, 1)
    assert second.challenger_value < second.champion_value
    assert int(registry.champion_version(settings, registry.RANKER).version) == 1
    assert int(registry.aliased_version(settings, registry.RANKER, "challenger").version) == 2

    # v3 as good as v1 -> promoted; the gate is idempotent once it is champion
    v3 = _log(settings, _fit_ranker(ranker_data), ranker_data, tmp_path, 3)
    third = _gate(settings, ranker_data)
    assert third.passed and third.champion_version == 1
    assert int(registry.champion_version(settings, registry.RANKER).version) == v3.version
    assert _gate(settings, ranker_data).reason == "the challenger is already the champion"
    assert registry.champion_run_id(settings, registry.RANKER) == v3.run_id

    run = mlflow.get_run(v3.run_id)
    assert run.data.metrics["validation_auc"] == pytest.approx(0.73)
    assert "recall_at_10" in run.data.metrics and "nan" not in run.data.metrics
    assert run.data.params["iterations"] == "30"
    assert run.info.artifact_uri.startswith(settings.mlflow_artifacts_dir.resolve().as_uri())

    # the champion's directory is a local copy that loads and predicts like the original
    local = registry.champion_dir(settings, registry.RANKER)
    assert registry.champion_dir(settings, registry.RANKER) == local  # cached per version
    x = ranker_data[RANKER_FEATURES].head(20)
    loaded = Ranker.load(local)
    np.testing.assert_allclose(loaded.predict(x), Ranker.load(tmp_path / "ranker3").predict(x))
    assert loaded.outcomes == ["positive", "like", "share_comment", "negative"]
    # and MLflow's own flavour serves the same per-outcome probabilities
    flavour = mlflow.catboost.load_model(v3.model_uri)
    cats = {c: str for c in ("post_category_id", "post_media_type")}
    raw = np.asarray(flavour.predict(x.astype(cats), prediction_type="RawFormulaVal"))
    np.testing.assert_allclose(
        1 / (1 + np.exp(-raw.reshape(len(x), -1))), loaded.predict_outcomes(x), rtol=1e-6
    )
    # the metrics logged with a version, as the gates read them back ("@" logged as "_at_")
    logged = registry.version_metrics(settings, registry.RANKER, registry.CHAMPION)
    assert logged == {"validation_auc": pytest.approx(0.73), "recall_at_10": 0.5, "version": 3.0}
    assert registry.version_metrics(settings, registry.RANKER, "no-such-alias") == {}


@pytest.mark.parametrize(
    ("challenger", "champion", "higher", "passed"),
    [
        (0.50, None, True, True),
        (0.50, 0.50, True, True),
        (0.495, 0.50, True, True),  # within 2%
        (0.48, 0.50, True, False),
        (float("nan"), 0.5, True, False),
        (0.51, 0.50, False, True),  # lower is better (a loss): 2% worse is allowed
        (0.52, 0.50, False, False),
    ],
)
def test_gate_arithmetic(challenger, champion, higher, passed):
    assert registry.gate(challenger, champion, 0.02, higher)[0] is passed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
def test_a_challenger_without_a_valid_metric_never_passes(bad):
    # against a champion, against a broken champion, and as a first version
    for champion in (0.5, float("nan"), None):
        verdict = registry.gate(bad, champion, 0.02)
        assert not verdict.passed and "never promoted" in verdict.reason, verdict
        assert verdict.warning is None


@pytest.mark.parametrize("champion", [float("nan"), float("inf")])
def test_a_champion_without_a_valid_metric_is_replaced_with_a_warning(champion, caplog):
    with caplog.at_level("WARNING", logger=registry.__name__):
        verdict = registry.gate(0.01, champion, 0.02)  # any valid challenger, however low
    assert verdict.passed and verdict.warning and verdict.warning == verdict.reason
    assert f"champion metric is {champion}" in verdict.warning
    assert verdict.warning in caplog.text


def test_a_first_version_with_a_nan_metric_stays_a_challenger(ranker_data, tmp_path):
    from socialrec.training import retrieval as training

    s = Settings(data_dir=tmp_path / "nan")
    s.ensure_dirs()
    ranker = _fit_ranker(ranker_data)
    ranker.save(tmp_path / "r")
    reg = registry.log_ranker(s, ranker, tmp_path / "r", params={}, metrics={}, data={})
    result = training.quality_gate(s, registry.RANKER, "m", lambda path: float("nan"))
    assert not result.passed and result.challenger_version == reg.version
    assert "never promoted" in result.reason
    assert registry.aliased_version(s, registry.RANKER, registry.CHAMPION) is None
    # a champion whose metric turns out NaN does not block the next valid challenger
    registry.promote(s, registry.RANKER, reg.version, "forced, for the test")
    ranker.save(tmp_path / "r2")
    v2 = registry.log_ranker(s, ranker, tmp_path / "r2", params={}, metrics={}, data={})
    values = {str(reg.version): float("nan"), str(v2.version): 0.3}
    result = training.quality_gate(
        s, registry.RANKER, "m", lambda path: values[path.parent.name.removeprefix("v")]
    )
    assert result.passed and result.warning and "champion metric is nan" in result.warning
    assert (result.champion_version, result.challenger_version) == (reg.version, v2.version)
    assert int(registry.champion_version(s, registry.RANKER).version) == reg.version  # not yet


def test_a_two_tower_run_registers_a_pyfunc_of_the_saved_towers(settings, frames, tmp_path):
    from socialrec.models.two_tower import TwoTowerModel

    train = frames.positives[frames.positives["split"] == "train"].head(3000)
    model = TwoTowerModel(8, id_dim=8, text_dim=16, hidden_dim=16)
    model.fit(train, frames.users, frames.posts, epochs=1, batch_size=256, seed=1)
    model_dir = model.save(tmp_path / "tt")
    example = frames.users.head(4)
    reg = registry.log_two_tower(
        settings,
        model_dir,
        params=model.hparams,
        metrics={"recall@10": 0.2},
        data={"positives": registry.data_snapshot(train)},
        example_input=registry.two_tower_example(example),
        example_output=model.user_embeddings(example),
    )
    assert reg.version == 1
    local = registry.model_dir(settings, registry.TWO_TOWER, registry.CHALLENGER)
    assert (local / "user_tower" / "saved_model.pb").exists()
    pyfunc = mlflow.pyfunc.load_model(reg.model_uri)
    np.testing.assert_allclose(
        pyfunc.predict(example), model.user_embeddings(example), rtol=1e-5, atol=1e-6
    )
