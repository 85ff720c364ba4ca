"""Model layer: the co-engagement neighbours, the TFRS two-tower model and the CatBoost ranker.

Thin wrappers of ``socialrec.training.retrieval`` / ``socialrec.training.ranker`` (fit, evaluate) and
``socialrec.models.registry`` (MLflow run + registered version + ``challenger`` alias). The split is
the warehouse's (``ml_split_bounds``: train / validation / test by event quantile):

* ``post_neighbours`` chooses its signal on validation and is fitted on the whole log (what the
  service serves);
* ``two_tower_model`` is fitted on train (early-stopped on validation), then refitted on train +
  validation: the refit is the challenger, the first fit travels with it for the ranker;
* ``ranker_model`` learns on the validation split's requests replayed through the sources (the
  two-tower fit that never saw them), then both the challenger and the champion rank the test
  split's replayed requests.

Each model has a blocking quality gate (an asset check) on the test split that only decides:
it passes when the challenger does not regress against the champion (and, for the ranker,
when it beats the merged candidate order); a challenger without a valid metric never passes,
a champion without one is replaced with a warning. Promotion is its own asset downstream
(``two_tower_champion``, ``ranker_champion``: the ``champion`` alias moves to the challenger
the gate passed); a failed gate skips it, and the index, the bento and the evaluation, which
read the champions, keep the previous ones. The MLflow run of the Dagster run comes from dagster-mlflow's
resource (key ``mlflow``); each model is a nested run under it. Retrained nightly.
"""

import dagster as dg
from dagster_mlflow.resources import MlFlow

from assets.common import EAGER, NIGHTLY, TRAINING_FRESHNESS
from assets.resources import SettingsResource
from socialrec.data import warehouse
from socialrec.features import store as features
from socialrec.models import artifacts, registry
from socialrec.models.neighbours import NeighbourParams, NeighbourTable
from socialrec.settings import Settings
from socialrec.timeutil import to_timestamp
from socialrec.training import ranker as ranker_training
from socialrec.training import ranker_rows
from socialrec.training import retrieval as training


def _model_dir(settings: Settings, name: str):
    return artifacts.new_dir(settings, name)


def _registered_metadata(reg: registry.RegisteredModel, champion_asset: str) -> dict:
    """What the model asset made: a registered version. Its role is not said here (the gate may
    fail, the promotion may move ``champion`` to it later): the champion asset's metadata
    carries the alias."""
    return {
        "mlflow_model": reg.name,
        "mlflow_version": reg.version,
        "mlflow_run_id": reg.run_id,
        "model_uri": reg.model_uri,
        "registered": f"{reg.name} version {reg.version}: its quality gate decides, "
        f"`{champion_asset}` moves the champion alias to it",
    }


def current_neighbour_params(settings: Settings) -> NeighbourParams:
    """The parameters of the current ``post_neighbours`` build (settings before the first)."""
    info = artifacts.current(settings, artifacts.NEIGHBOURS)
    if info is None:
        return training.neighbour_params(settings)
    return NeighbourParams(**info["params"])


@dg.asset(
    deps=[
        dg.AssetKey("fct_interactions"),
        dg.AssetKey("ml_split_bounds"),
        dg.AssetKey("dim_posts"),
    ],
    group_name="models",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=NIGHTLY,
    kinds={"python", "scipy"},
    description="Item-to-item co-engagement neighbours (top k per post) of the neighbours "
    "candidate source: the method (asymmetric cosine, or EASE where the catalog fits in "
    "memory) and the signal (positive engagements or every exposure) are chosen on "
    "validation, the table is fitted on the whole log.",
)
def post_neighbours(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    s = settings.get()
    log, bounds = warehouse.read_log(s), warehouse.read_split(s)
    posts = warehouse.read_table(s, "dim_posts")
    choice = training.choose_neighbours(s, log, posts, bounds)
    params = training.neighbour_params(s, **choice["chosen"])
    table = NeighbourTable.fit(log, params)
    out = table.save(_model_dir(s, artifacts.NEIGHBOURS))
    artifacts.publish(s, artifacts.NEIGHBOURS, out, {"params": params.__dict__})
    context.log.info(f"neighbours: {len(table)} pairs over {len(table.posts)} posts, {choice}")
    return dg.MaterializeResult(
        metadata={
            "pairs": len(table),
            "posts": len(table.posts),
            "signal": params.signal,
            **{
                f"validation_ndcg@10.{t['method']}.{t['signal']}.{t['l2']:g}": float(t["ndcg@10"])
                for t in choice["tried"]
            },
            "path": dg.MetadataValue.path(str(out)),
        }
    )


@dg.asset(
    deps=[
        dg.AssetKey("ml_retrieval_positives"),
        dg.AssetKey("ml_split_bounds"),
        dg.AssetKey("feature_tables"),
        dg.AssetKey("feast_registry"),
    ],
    group_name="models",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=NIGHTLY,
    kinds={"tensorflow", "mlflow"},
    description="TFRS two-tower model (user tower: id, onboarding categories, category "
    "affinity, profile and liked-posts embeddings, activity; post tower: id, category, media "
    "type, creator, age bucket, description embedding; logQ-corrected in-batch softmax): "
    "fitted on train (early-stopped on validation recall@100), refitted on train + validation "
    "for the chosen epochs; recall@K on the test split beside random; registered in MLflow as "
    "the challenger.",
)
def two_tower_model(
    context: dg.AssetExecutionContext, settings: SettingsResource, mlflow: dg.ResourceParam[MlFlow]
) -> dg.MaterializeResult:
    s = settings.get()
    positives = warehouse.read_table(s, "ml_retrieval_positives")
    bounds = warehouse.read_split(s)
    store = features.feature_store(s)
    result = training.train_two_tower(
        s, positives, store, to_timestamp(bounds.validation_start),
        to_timestamp(bounds.test_start), progress=context.log.info,
    )  # fmt: skip
    m = result.metrics
    table = "| K | recall@K | random recall@K |\n|---|---|---|\n" + "\n".join(
        f"| {k} | {m[f'recall@{k}']:.4f} | {m[f'random_recall@{k}']:.4f} |"
        for k in training.RETRIEVAL_KS
    )
    context.log.info(
        f"two-tower on {int(m['n_users'])} test-split users x {int(m['n_posts'])} posts:\n{table}"
    )
    model_dir = training.save_two_tower(result, _model_dir(s, "two_tower"))
    example = result.data["users"].head(5)
    reg = registry.log_two_tower(
        s,
        model_dir,
        params=result.params,
        metrics=m,
        data={"positives": registry.data_snapshot(positives), "users": len(result.data["users"])},
        example_input=registry.two_tower_example(example),
        example_output=result.model.user_embeddings(example),
    )
    return dg.MaterializeResult(
        metadata={
            **_registered_metadata(reg, "two_tower_champion"),
            "retrieval_eval": dg.MetadataValue.md(table),
            **{registry.metric_key(k): float(v) for k, v in m.items()},
            "model_dir": dg.MetadataValue.path(str(model_dir)),
        }
    )


@dg.asset(
    deps=[
        dg.AssetKey("two_tower_model"),  # its as-of-validation fit retrieves for the replays
        dg.AssetKey("post_neighbours"),
        dg.AssetKey("fct_interactions"),
        dg.AssetKey("ml_split_bounds"),
        dg.AssetKey("feature_tables"),
        dg.AssetKey("feast_registry"),
    ],
    group_name="models",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=NIGHTLY,
    kinds={"catboost", "mlflow"},
    description="CatBoost ranker predicting several outcomes (positive, full view, like, "
    "share/comment, negative) combined with weights chosen on held-out users: trained on the "
    "validation split's requests replayed through the candidate sources (as the service would "
    "have answered them that day), then the challenger, the champion and the merged candidate "
    "order rank the test split's replayed requests (the gate's NDCG@10); registered in MLflow.",
)
def ranker_model(
    context: dg.AssetExecutionContext, settings: SettingsResource, mlflow: dg.ResourceParam[MlFlow]
) -> dg.MaterializeResult:
    from socialrec.models.ranker import Ranker
    from socialrec.models.two_tower import TwoTowerModel

    s = settings.get()
    # the other replay processes start now: their imports while this one reads the data
    with ranker_rows.replay_processes(s.ranker_replay_processes - 1) as others:
        log, bounds = warehouse.read_log(s), warehouse.read_split(s)
        posts = warehouse.read_table(s, "dim_posts")
        read = training.StoreFeatures(s)
        tt_dir = registry.model_dir(s, registry.TWO_TOWER, registry.CHALLENGER)
        selection = TwoTowerModel.load(tt_dir / training.AS_OF_VALIDATION)
        nparams = current_neighbour_params(s)
        data, info = ranker_rows.build_training_set(
            s, log, posts, ranker_rows.created_seconds(posts), bounds.validation_start,
            bounds.test_start, read, selection, nparams, progress=context.log.info, others=others,
        )  # fmt: skip
        context.log.info(f"replayed training set: {info}")
        fit = ranker_training.fit_ranker(s, data, s.ranker_outcome_weights, context.log.info)
        context.log.info("the ranker's gate: replaying the test split's requests")
        champion_dir = (
            registry.champion_dir(s, registry.RANKER)
            if registry.aliased_version(s, registry.RANKER, registry.CHAMPION) is not None
            else None
        )
        gate = ranker_training.test_replay_ndcg(
            s, log, posts, bounds, read, TwoTowerModel.load(tt_dir), nparams,
            {"challenger": fit.ranker,
             "champion": Ranker.load(champion_dir) if champion_dir is not None else None},
            others,
        )  # fmt: skip
    m = {**fit.metrics, **{f"test_ndcg@10.{k}": v for k, v in gate.items()}}
    context.log.info(
        "ranker: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if "importance." not in k)
    )
    model_dir = _model_dir(s, "ranker")
    fit.ranker.save(model_dir)
    from socialrec.features.ranking import RANKER_FEATURES

    reg = registry.log_ranker(
        s,
        fit.ranker,
        model_dir,
        params={**fit.params, **{f"training.{k}": v for k, v in info.items()}},
        metrics=m,
        data={"bounds": bounds.__dict__},
        example_input=fit.example[RANKER_FEATURES] if fit.example is not None else None,
    )
    importance = sorted(
        ((k.removeprefix("importance."), v) for k, v in m.items() if k.startswith("importance.")),
        key=lambda kv: -kv[1],
    )
    return dg.MaterializeResult(
        metadata={
            **_registered_metadata(reg, "ranker_champion"),
            **{
                registry.metric_key(k): float(v)
                for k, v in m.items()
                if not k.startswith("importance.")
            },
            "outcome_weights": fit.params["weights"],
            "weights_tried": dg.MetadataValue.md(
                "| weights | held-out NDCG@10 |\n|---|---:|\n"
                + "\n".join(
                    f"| {', '.join(f'{k}={v:g}' for k, v in w.items() if k != 'ndcg@10')} "
                    f"| {w['ndcg@10']:.4f} |"
                    for w in fit.weights_tried
                )
            ),
            "feature_importance": dg.MetadataValue.md(
                "| feature | importance |\n|---|---|\n"
                + "\n".join(f"| {k} | {v:.2f} |" for k, v in importance)
            ),
            "model_dir": dg.MetadataValue.path(str(model_dir)),
        }
    )


def _gate_result(context: dg.AssetCheckExecutionContext, gate) -> dg.AssetCheckResult:
    if gate.warning:
        context.log.warning(f"{gate.model}: {gate.warning}")
    return dg.AssetCheckResult(
        passed=gate.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=gate.reason,
        metadata=gate.metadata(),
    )


@dg.asset_check(
    asset=two_tower_model,
    blocking=True,
    description="Quality gate: test recall@100 of the challenger vs the champion (both fitted "
    "before the test start); passes unless the challenger regresses or has no valid metric "
    "(a champion without one is replaced, with a warning). Promotion is `two_tower_champion`.",
)
def two_tower_quality_gate(
    context: dg.AssetCheckExecutionContext, settings: SettingsResource
) -> dg.AssetCheckResult:
    s = settings.get()
    positives = warehouse.read_table(s, "ml_retrieval_positives")
    bounds = warehouse.read_split(s)
    store = features.feature_store(s)
    test_start = to_timestamp(bounds.test_start)
    gate = training.quality_gate(
        s,
        registry.TWO_TOWER,
        "test recall@100",
        lambda path: training.two_tower_test_recall(path, positives, store, test_start),
    )
    return _gate_result(context, gate)


@dg.asset_check(
    asset=ranker_model,
    blocking=True,
    description="Quality gate on the test split's replayed requests: the challenger's NDCG@10 "
    "must beat the merged candidate order's (the ranker stage has to help) and not regress "
    "against the champion's. Promotion is `ranker_champion`.",
)
def ranker_quality_gate(
    context: dg.AssetCheckExecutionContext, settings: SettingsResource
) -> dg.AssetCheckResult:
    s = settings.get()
    metrics = registry.version_metrics(s, registry.RANKER, registry.CHALLENGER)
    gate = ranker_training.ranker_gate(s, metrics)
    return _gate_result(context, gate)


# ---- promotion: its own step, after a passing gate ---------------------------------------------


# after the model, once its blocking gate passed (automation never promotes past a failed gate)
PROMOTION = EAGER & dg.AutomationCondition.all_deps_blocking_checks_passed()


def _promote(context: dg.AssetExecutionContext, s: Settings, name: str, check: dg.AssetCheckKey):
    """Move ``champion`` to the challenger the latest evaluation of ``check`` passed. In a run
    the blocking gate already skips this step when it fails; run alone (or by automation
    after a failed gate) it refuses a challenger without a passing verdict of its own."""
    challenger = registry.aliased_version(s, name, registry.CHALLENGER)
    record = context.instance.get_latest_asset_check_evaluation_record(check)
    event = record.event.dagster_event if record and record.event else None
    evaluation = event.event_specific_data if event else None
    meta = {k: v.value for k, v in evaluation.metadata.items()} if evaluation else {}
    if challenger is None or evaluation is None or not evaluation.passed:
        raise dg.Failure(f"{name}: no passing {check.name} for its challenger: not promoted")
    if meta.get("challenger_version") != int(challenger.version):
        raise dg.Failure(
            f"{name}: {check.name} passed version {meta.get('challenger_version')}, the "
            f"challenger is {challenger.version}: not promoted"
        )
    before = registry.aliased_version(s, name, registry.CHAMPION)
    reason = f"{meta.get('metric')}: {evaluation.description}"
    registry.promote(s, name, challenger.version, reason)
    context.log.info(f"{name}: champion is now version {challenger.version} ({reason})")
    return dg.MaterializeResult(
        metadata={
            "mlflow_model": name,
            "alias": registry.CHAMPION,
            "model_uri": f"models:/{name}@{registry.CHAMPION}",
            "champion_version": int(challenger.version),
            "previous_champion": None if before is None else int(before.version),
            "mlflow_run_id": challenger.run_id or challenger.tags.get("mlflow_run_id", ""),
            "gate_run_id": record.run_id,
            "reason": reason,
        }
    )


@dg.asset(
    deps=[two_tower_model],
    group_name="models",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=PROMOTION,
    kinds={"mlflow"},
    description="Promotion of the two-tower challenger: the `champion` alias in MLflow moves "
    "to it once `two_tower_quality_gate` passed (blocking: a failed gate skips this step).",
)
def two_tower_champion(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    check = dg.AssetCheckKey(two_tower_model.key, "two_tower_quality_gate")
    return _promote(context, settings.get(), registry.TWO_TOWER, check)


@dg.asset(
    deps=[ranker_model],
    group_name="models",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=PROMOTION,
    kinds={"mlflow"},
    description="Promotion of the ranker challenger: the `champion` alias in MLflow moves to "
    "it once `ranker_quality_gate` passed (blocking: a failed gate skips this step).",
)
def ranker_champion(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    check = dg.AssetCheckKey(ranker_model.key, "ranker_quality_gate")
    return _promote(context, settings.get(), registry.RANKER, check)
