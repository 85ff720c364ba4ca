"""MLflow for real (SQLite backend, local artifacts): log, register, alias, read the champion."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from socialrec import registry
from socialrec.ranker import Ranker
from socialrec.ranking_features import RANKER_FEATURES
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
    from socialrec.training import ranker_dataset

    return ranker_dataset(frames.samples, frames.users, frames.posts)


def _fit_ranker(data: pd.DataFrame) -> Ranker:
    return Ranker(iterations=30).fit(data[data["split"] == "train"])


def test_each_logged_ranker_is_a_new_champion_with_its_run(settings, ranker_data, tmp_path):
    versions = []
    for i in range(2):
        ranker = _fit_ranker(ranker_data)
        model_dir = tmp_path / f"ranker{i}"
        ranker.save(model_dir)
        reg = registry.log_ranker(
            settings,
            ranker,
            model_dir,
            params={"iterations": 30},
            metrics={"validation_auc": 0.7 + i / 100, "recall@10": 0.5, "nan": float("nan")},
            data={"samples": registry.data_snapshot(ranker_data.assign(ts=pd.Timestamp.now()))},
            example_input=ranker_data[RANKER_FEATURES].head(5),
        )
        versions.append(reg)
    assert [r.version for r in versions] == [1, 2]
    assert all(r.promoted for r in versions)
    champion = registry.champion_version(settings, registry.RANKER)
    assert int(champion.version) == 2
    assert registry.champion_run_id(settings, registry.RANKER) == versions[1].run_id

    run = mlflow.get_run(versions[1].run_id)
    assert run.data.metrics["validation_auc"] == pytest.approx(0.71)
    assert "recall_at_10" in run.data.metrics and "nan" not in run.data.metrics
    assert run.data.params["iterations"] == "30"
    assert run.info.artifact_uri.startswith(settings.mlflow_artifacts_dir.resolve().as_uri())

    # the champion's directory is a local copy that loads and predicts like the original
    local = registry.champion_dir(settings, registry.RANKER)
    assert registry.champion_dir(settings, registry.RANKER) == local  # cached per version
    x = ranker_data[RANKER_FEATURES].head(20)
    loaded = Ranker.load(local)
    np.testing.assert_allclose(loaded.predict(x), Ranker.load(tmp_path / "ranker1").predict(x))
    # and MLflow's own flavour with the inferred signature serves the same scores
    flavour = mlflow.catboost.load_model(versions[1].model_uri)
    assert flavour.predict_proba(
        x.astype({c: str for c in ("post_category_id", "post_media_type")})
    )[:, 1] == pytest.approx(loaded.predict(x))


def test_a_two_tower_run_registers_a_pyfunc_of_the_saved_towers(settings, frames, tmp_path):
    from socialrec.two_tower import TwoTowerModel

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
    assert reg.version == 1 and reg.promoted
    local = registry.champion_dir(settings, registry.TWO_TOWER)
    assert (local / "user_tower" / "saved_model.pb").exists()
    pyfunc = mlflow.pyfunc.load_model(reg.model_uri)
    np.testing.assert_allclose(
        pyfunc.predict(example), model.user_embeddings(example), rtol=1e-5, atol=1e-6
    )
