"""MLflow tracking and model registry for the two models.

* :func:`configure` points MLflow (tracking and registry) at ``settings.mlflow_tracking_uri``
  and creates the experiment with its artifacts under ``settings.mlflow_artifacts_dir``.
* :func:`log_two_tower` / :func:`log_ranker` log one training run: params, metrics, a data
  snapshot description, the saved model directory as run artifacts (``two_tower/``,
  ``ranker/``), and an MLflow model with a signature (pyfunc for the two-tower, the catboost
  flavour for the ranker) registered as ``socialrec_two_tower`` / ``socialrec_ranker``.
  Inside an active run (the Dagster run's, from dagster-mlflow) each model gets a nested run.
* The new version gets the alias ``challenger``. The quality gate (an asset check that calls
  :func:`gate` on metrics of both models measured on the same test set) only decides: a
  challenger passes when it does not regress (the first version when its metric is valid);
  a separate promotion step then moves ``champion`` to it with :func:`promote`. Serving reads
  ``champion``.
* :func:`model_dir` gives a local copy of an aliased version's model directory (what
  ``TwoTowerModel.load`` / ``Ranker.load`` read); :func:`champion_run_id` its run id.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from socialrec.models.signature import model_signature
from socialrec.settings import Settings

TWO_TOWER = "socialrec_two_tower"
RANKER = "socialrec_ranker"
CHAMPION = "champion"
CHALLENGER = "challenger"
# where each model's saved directory lives among its run's artifacts (docs/contracts.md)
ARTIFACT_PATHS = {TWO_TOWER: "two_tower", RANKER: "ranker"}

logger = logging.getLogger(__name__)


# ---- set-up ---------------------------------------------------------------------------------


def configure(settings: Settings) -> str:
    """Point MLflow at the settings' tracking/registry store; returns the experiment id."""
    uri = str(settings.mlflow_tracking_uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is None:
        artifact_location = None
        if settings.profile == "local":
            Path(settings.mlflow_artifacts_dir).mkdir(parents=True, exist_ok=True)
            artifact_location = Path(settings.mlflow_artifacts_dir).resolve().as_uri()
        experiment_id = client.create_experiment(
            settings.mlflow_experiment, artifact_location=artifact_location
        )
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _client(settings: Settings) -> MlflowClient:
    uri = str(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


# ---- what gets logged -----------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredModel:
    """The outcome of one logged training run."""

    name: str
    version: int
    run_id: str
    model_uri: str
    promoted: bool
    reason: str


def data_snapshot(df: pd.DataFrame, ts_col: str = "ts", split_col: str = "split") -> dict:
    """Row counts, distinct ids, time range and split sizes of a training dataset."""
    out: dict[str, Any] = {"rows": int(len(df))}
    for col in ("user_id", "post_id"):
        if col in df.columns:
            out[f"distinct_{col}s"] = int(df[col].nunique())
    if ts_col in df.columns and len(df):
        ts = pd.to_datetime(df[ts_col], utc=True)
        out["ts_min"], out["ts_max"] = ts.min().isoformat(), ts.max().isoformat()
    if split_col in df.columns:
        out["splits"] = {str(k): int(v) for k, v in df[split_col].value_counts().items()}
    if "label" in df.columns and len(df):
        out["positive_rate"] = float(df["label"].mean())
    return out


def metric_key(name: str) -> str:
    """MLflow metric names cannot hold '@': ``recall@10`` -> ``recall_at_10``."""
    return name.replace("@", "_at_")


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


def _pins(*packages: str) -> list[str]:
    pins = []
    for pkg in packages:
        try:
            pins.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pins.append(pkg)
    return pins


class Verdict(NamedTuple):
    """A gate's decision: ``passed``, why, and a warning when it passed on a broken champion."""

    passed: bool
    reason: str
    warning: str | None = None


def gate(
    challenger: float | None,
    champion: float | None,
    tolerance: float,
    higher_is_better: bool = True,
) -> Verdict:
    """Whether the challenger may replace the champion: it must not be worse than the champion
    by more than ``tolerance`` (relative). Missing and NaN metrics are decided explicitly:

    * a challenger without a finite metric (None, NaN, inf) never passes, first version or not;
    * no champion version (``champion`` None): a valid challenger passes;
    * a champion version whose metric is missing or not finite (callers pass NaN for a missing
      one): a valid challenger replaces it, with a warning (a broken champion must not block
      every later version).
    """
    if challenger is None or not math.isfinite(challenger):
        return Verdict(False, f"challenger metric is {challenger}: never promoted")
    if champion is None:
        return Verdict(True, "no champion yet")
    if not math.isfinite(champion):
        warning = (
            f"champion metric is {champion}: replaced by the valid challenger "
            f"({challenger:.4f}) without a comparison"
        )
        logger.warning(warning)
        return Verdict(True, warning, warning)
    sign = 1.0 if higher_is_better else -1.0
    floor = champion - sign * tolerance * abs(champion)
    passed = sign * (challenger - floor) >= 0
    verdict = "does not regress" if passed else "regresses"
    return Verdict(
        passed,
        f"challenger {challenger:.4f} vs champion {champion:.4f}: {verdict} "
        f"(tolerance {tolerance:.0%})",
    )


def promote(settings: Settings, name: str, version: int | str, reason: str) -> None:
    """Point ``champion`` at ``version`` and record why on the version: the explicit step
    after a passing gate (never called by the gate itself)."""
    client = _client(settings)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "promotion", reason)


def _log_run(
    settings: Settings,
    name: str,
    model_dir: Path,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    data: Mapping[str, Any],
    log_model,
    run_name: str,
) -> RegisteredModel:
    configure(settings)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=run_name, nested=nested) as run:
        mlflow.set_tags({"socialrec.model": name})
        mlflow.log_params(_flat("", dict(params), {}))
        clean = {
            metric_key(k): float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float | np.number) and math.isfinite(float(v))
        }
        mlflow.log_metrics(clean)
        mlflow.log_dict(dict(data), "data_snapshot.json")
        mlflow.log_params({f"data.{k}": v for k, v in _flat("", dict(data), {}).items()})
        mlflow.log_artifacts(str(model_dir), ARTIFACT_PATHS[name])
        info = log_model()
        model_version = int(info.registered_model_version)
        client = _client(settings)
        client.set_model_version_tag(name, str(model_version), "mlflow_run_id", run.info.run_id)
        client.set_model_version_tag(name, str(model_version), "metrics", json.dumps(clean))
        client.set_registered_model_alias(name, CHALLENGER, str(model_version))
        reason = "registered as challenger; the quality gate decides on champion"
        return RegisteredModel(name, model_version, run.info.run_id, info.model_uri, False, reason)


# ---- the two-tower model --------------------------------------------------------------------


class TwoTowerPyfunc(mlflow.pyfunc.PythonModel):
    """Pyfunc face of the two-tower dir: a frame with ``user_id`` gets user embeddings, one
    with ``post_id`` post embeddings (columns as in ``TwoTowerModel``)."""

    def load_context(self, context):
        from socialrec.models.two_tower import TwoTowerModel

        self.model = TwoTowerModel.load(context.artifacts["two_tower"])

    def predict(self, context, model_input: pd.DataFrame, params=None):
        if "user_id" in model_input.columns:
            return self.model.user_embeddings(model_input)
        return self.model.post_embeddings(model_input)


def two_tower_example(users_df: pd.DataFrame) -> pd.DataFrame:
    """The user-tower input columns of a few users, typed for signature inference
    (``profile_embedding`` / ``history_embedding`` as float32 arrays, which MLflow infers as
    ``Array(float)``; the activity counts as int64, the rate as float64, ``category_counts``
    as a string)."""
    from socialrec.features.text import embedding_matrix

    activity = [c for c in ("n_events", "n_positives", "positive_rate") if c in users_df.columns]
    out = users_df[["user_id", "onboarding_categories", "profile_embedding", *activity]].copy()
    out["category_counts"] = (
        users_df["category_counts"].fillna("").astype(str).to_numpy()
        if "category_counts" in users_df.columns
        else ""
    )
    out["history_embedding"] = list(
        embedding_matrix(
            users_df["history_embedding"]
            if "history_embedding" in users_df.columns
            else [None] * len(users_df)
        )
    )
    out = out.reset_index(drop=True).astype({"user_id": "int64"})
    for c in activity:
        values = pd.to_numeric(out[c], errors="coerce").fillna(0)
        out[c] = values.astype("float64" if c == "positive_rate" else "int64")
    out["onboarding_categories"] = out["onboarding_categories"].fillna("").astype(str)
    out["profile_embedding"] = list(embedding_matrix(out["profile_embedding"]))
    return out


def log_two_tower(
    settings: Settings,
    model_dir: str | os.PathLike,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    data: Mapping[str, Any],
    example_input: pd.DataFrame | None = None,
    example_output: np.ndarray | None = None,
    run_name: str = "two_tower",
) -> RegisteredModel:
    """Log and register a saved two-tower dir (``TwoTowerModel.save``); the signature is
    inferred from an example user frame and its embeddings."""
    model_dir = Path(model_dir)
    signature = (
        model_signature(example_input, example_output) if example_input is not None else None
    )

    def log_model():
        return mlflow.pyfunc.log_model(
            name="two_tower_model",
            python_model=TwoTowerPyfunc(),
            artifacts={"two_tower": str(model_dir)},
            signature=signature,
            pip_requirements=_pins("tensorflow", "tf-keras", "pandas", "numpy"),
            registered_model_name=TWO_TOWER,
        )

    return _log_run(settings, TWO_TOWER, model_dir, params, metrics, data, log_model, run_name)


# ---- the ranker -----------------------------------------------------------------------------


def log_ranker(
    settings: Settings,
    ranker,
    model_dir: str | os.PathLike,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    data: Mapping[str, Any],
    example_input: pd.DataFrame | None = None,
    run_name: str = "ranker",
) -> RegisteredModel:
    """Log and register a trained ``Ranker`` saved in ``model_dir`` (``Ranker.save``); the
    signature is inferred from an example feature frame and its predictions."""
    model_dir = Path(model_dir)
    signature = None
    if example_input is not None:
        signature = model_signature(example_input, ranker.predict(example_input))

    def log_model():
        return mlflow.catboost.log_model(
            ranker.model,
            name="ranker_model",
            signature=signature,
            pip_requirements=_pins("catboost", "pandas", "numpy"),
            registered_model_name=RANKER,
        )

    return _log_run(settings, RANKER, model_dir, params, metrics, data, log_model, run_name)


# ---- reading the champion -------------------------------------------------------------------


def aliased_version(settings: Settings, name: str, alias: str):
    """The ``ModelVersion`` behind an alias, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return _client(settings).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_version(settings: Settings, name: str):
    """The ``ModelVersion`` behind the ``champion`` alias (raises if there is none)."""
    return _client(settings).get_model_version_by_alias(name, CHAMPION)


def champion_run_id(settings: Settings, name: str) -> str:
    mv = champion_version(settings, name)
    return mv.run_id or mv.tags["mlflow_run_id"]


def champion_dir(settings: Settings, name: str) -> Path:
    """A local copy of the champion's model directory (see :func:`model_dir`)."""
    return model_dir(settings, name, CHAMPION)


def model_dir(settings: Settings, name: str, alias: str = CHAMPION) -> Path:
    """A local copy of the model directory (``two_tower/`` or ``ranker/`` of its run) of the
    version behind ``alias``, cached per version under ``settings.models_dir / "champions"``."""
    mv = _client(settings).get_model_version_by_alias(name, alias)
    run_id = mv.run_id or mv.tags["mlflow_run_id"]
    artifact_path = ARTIFACT_PATHS[name]
    dst = Path(settings.models_dir) / "champions" / name / f"v{mv.version}"
    target = dst / artifact_path
    if target.exists():
        return target
    dst.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dst))
    try:
        uri = str(settings.mlflow_tracking_uri)
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(tmp), tracking_uri=uri
        )
        try:
            os.replace(local, target)  # atomic: readers never see half a model
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def version_metrics(settings: Settings, name: str, alias: str = CHALLENGER) -> dict[str, float]:
    """The metrics logged with the version behind ``alias`` (its ``metrics`` tag), plus its
    ``version``; empty when the alias does not exist."""
    mv = aliased_version(settings, name, alias)
    if mv is None:
        return {}
    out = json.loads(mv.tags.get("metrics", "{}"))
    out["version"] = float(mv.version)
    return out
