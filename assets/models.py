"""Model layer: the TFRS two-tower retrieval model and the CatBoost ranker.

Thin wrappers of ``socialrec.training`` (Feast point-in-time training frames, fit, evaluate)
and ``socialrec.registry`` (MLflow run + registered version + ``challenger`` alias). Each model
has a blocking quality gate (an asset check): the challenger and the current champion are
evaluated on the same validation set and the challenger is promoted to ``champion`` only when
it does not regress; otherwise the check fails and nothing downstream (index, bento) runs. The MLflow
run of the Dagster run comes from dagster-mlflow's resource (key ``mlflow``, the ``mlflow``
parameter: starting it opens the run); each model is a nested run under it. Retrained nightly.
"""

import datetime as dt

import dagster as dg
import pandas as pd
from dagster_mlflow.resources import MlFlow

from assets.common import NIGHTLY, TRAINING_FRESHNESS
from orchestration.resources import SettingsResource
from socialrec import features, registry, training, warehouse
from socialrec.settings import Settings


def _model_dir(settings: Settings, name: str):
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return settings.models_dir / name / stamp


def _registered_metadata(reg: registry.RegisteredModel) -> dict:
    return {
        "mlflow_model": reg.name,
        "mlflow_version": reg.version,
        "mlflow_run_id": reg.run_id,
        "model_uri": reg.model_uri,
        "alias": registry.CHALLENGER,
        "note": reg.reason,
    }


@dg.asset(
    deps=[
        dg.AssetKey("ml_retrieval_positives"),
        dg.AssetKey("feature_tables"),
        dg.AssetKey("feast_registry"),
    ],
    group_name="models",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=NIGHTLY,
    kinds={"tensorflow", "mlflow"},
    description="TFRS two-tower model (user tower: id, onboarding categories, profile "
    "embedding, activity; post tower: id, category, media type, creator, description "
    "embedding; logQ-corrected in-batch softmax) trained on the train split of "
    "ml_retrieval_positives, early-stopped on validation recall@100; recall@K on the test split "
    "beside random; registered in MLflow as the challenger.",
)
def two_tower_model(
    context: dg.AssetExecutionContext, settings: SettingsResource, mlflow: dg.ResourceParam[MlFlow]
) -> dg.MaterializeResult:
    s = settings.get()
    positives = warehouse.read_table(s, "ml_retrieval_positives")
    # the features as they were when the training period ended (no look into its future)
    as_of = training.split_end(positives, "train")
    store = features.feature_store(s)
    users, posts = training.training_frames(store, positives, as_of)
    result = training.train_two_tower(s, positives, users, posts, store=store)
    m = result.metrics
    table = "| K | recall@K | random recall@K |\n|---|---|---|\n" + "\n".join(
        f"| {k} | {m[f'recall@{k}']:.4f} | {m[f'random_recall@{k}']:.4f} |"
        for k in training.RETRIEVAL_KS
    )
    context.log.info(
        f"two-tower on {int(m['n_users'])} test-split users x {int(m['n_posts'])} posts:\n{table}"
    )
    model_dir = result.model.save(_model_dir(s, "two_tower"))
    example = users.head(5)
    reg = registry.log_two_tower(
        s,
        model_dir,
        params=result.params,
        metrics=m,
        data={
            "positives": registry.data_snapshot(positives),
            "users": len(users),
            "posts": len(posts),
        },
        example_input=registry.two_tower_example(example),
        example_output=result.model.user_embeddings(example),
    )
    return dg.MaterializeResult(
        metadata={
            **_registered_metadata(reg),
            "retrieval_eval": dg.MetadataValue.md(table),
            **{registry.metric_key(k): float(v) for k, v in m.items()},
            "model_dir": dg.MetadataValue.path(str(model_dir)),
        }
    )


@dg.asset(
    deps=[
        dg.AssetKey("ml_ranking_samples"),
        dg.AssetKey("feature_tables"),
        dg.AssetKey("feast_registry"),
        dg.AssetKey("two_tower_model"),  # retrieval_score: the champion two-tower's score
    ],
    group_name="models",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=NIGHTLY,
    kinds={"catboost", "mlflow"},
    description="CatBoost ranker on ml_ranking_samples with user, post and user x post "
    "features (socialrec.ranking_features), point in time; Logloss and YetiRank both trained, "
    "the better validation NDCG@10 per user kept; registered in MLflow.",
)
def ranker_model(
    context: dg.AssetExecutionContext, settings: SettingsResource, mlflow: dg.ResourceParam[MlFlow]
) -> dg.MaterializeResult:
    s = settings.get()
    samples = warehouse.read_table(s, "ml_ranking_samples")
    # each sample's user and post features as they were when it was shown (point in time)
    users, posts = training.ranker_frames(features.feature_store(s), samples)
    # retrieval_score: the serving two-tower's score of each sample
    two_tower = training.champion_two_tower(s)
    result = training.train_ranker(s, samples, users, posts, aligned=True, two_tower=two_tower)
    m = result.metrics
    context.log.info(
        "ranker: "
        + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if not k.startswith("importance."))
    )
    model_dir = _model_dir(s, "ranker")
    result.model.save(model_dir)
    example: pd.DataFrame = result.data["example"]
    from socialrec.ranking_features import RANKER_FEATURES

    reg = registry.log_ranker(
        s,
        result.model,
        model_dir,
        params=result.params,
        metrics=m,
        data={"samples": registry.data_snapshot(samples)},
        example_input=example[RANKER_FEATURES] if len(example) else None,
    )
    importance = sorted(
        ((k.removeprefix("importance."), v) for k, v in m.items() if k.startswith("importance.")),
        key=lambda kv: -kv[1],
    )
    return dg.MaterializeResult(
        metadata={
            **_registered_metadata(reg),
            **{
                registry.metric_key(k): float(v)
                for k, v in m.items()
                if not k.startswith("importance.")
            },
            "feature_importance": dg.MetadataValue.md(
                "| feature | importance |\n|---|---|\n"
                + "\n".join(f"| {k} | {v:.2f} |" for k, v in importance)
            ),
            "model_dir": dg.MetadataValue.path(str(model_dir)),
        }
    )


def _gate_result(gate: training.GateResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=gate.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=gate.reason,
        metadata={**gate.metadata(), "promoted": gate.passed},
    )


@dg.asset_check(
    asset=two_tower_model,
    blocking=True,
    description="Quality gate: recall@100 of the challenger vs the champion on the current "
    "validation split; promotes the challenger to champion unless it regresses.",
)
def two_tower_quality_gate(settings: SettingsResource) -> dg.AssetCheckResult:
    s = settings.get()
    positives = warehouse.read_table(s, "ml_retrieval_positives")
    as_of = training.split_end(positives, "train")
    users, posts = training.training_frames(features.feature_store(s), positives, as_of)
    gate = training.quality_gate(
        s,
        registry.TWO_TOWER,
        "validation recall@100",
        lambda path: training.two_tower_validation_recall(path, positives, users, posts),
    )
    return _gate_result(gate)


@dg.asset_check(
    asset=ranker_model,
    blocking=True,
    description="Quality gate: NDCG@10 per user of the challenger vs the champion on the "
    "current validation split; promotes the challenger to champion unless it regresses.",
)
def ranker_quality_gate(settings: SettingsResource) -> dg.AssetCheckResult:
    s = settings.get()
    samples = warehouse.read_table(s, "ml_ranking_samples")
    users, posts = training.ranker_frames(features.feature_store(s), samples)
    data = training.ranker_dataset(
        samples, users, posts, aligned=True, two_tower=training.champion_two_tower(s)
    )
    gate = training.quality_gate(
        s,
        registry.RANKER,
        "validation NDCG@10",
        lambda path: training.ranker_validation_ndcg(path, data),
    )
    return _gate_result(gate)
