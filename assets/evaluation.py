"""Evaluation layer: the offline evaluation of the champion models beside baselines.

Thin wrapper of ``socialrec.evaluation.run_offline_evaluation``: the service's 4-stage
pipeline (champion two-tower + champion ranker) and popularity, recent popularity and implicit
ALS on the same temporal split. Results as a markdown table and plots in the Dagster UI, and as
an MLflow run (metrics per method, the plots and tables as artifacts).
"""

import base64
import datetime as dt

import dagster as dg
import mlflow as mlflow_lib
from dagster_mlflow.resources import MlFlow

from assets.common import NIGHTLY, TRAINING_FRESHNESS
from orchestration.resources import SettingsResource
from socialrec import evaluation, features, registry, training, warehouse
from socialrec.catalog import live_posts
from socialrec.ranker import Ranker


def _image(path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.stem}](data:image/png;base64,{data})"


@dg.asset(
    deps=[
        dg.AssetKey("two_tower_model"),
        dg.AssetKey("ranker_model"),
        dg.AssetKey("ml_retrieval_positives"),
        dg.AssetKey("ml_ranking_samples"),
        dg.AssetKey("feature_tables"),
        dg.AssetKey("dim_posts"),
    ],
    group_name="evaluation",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=NIGHTLY,
    kinds={"mlflow", "python"},
    description="The champion 4-stage pipeline vs popularity, recent popularity and ALS on "
    "the temporal split: recall@K, NDCG/MRR/precision/recall@10, coverage, popularity bias, "
    "per segment; plots in the UI and in MLflow.",
)
def offline_evaluation(
    context: dg.AssetExecutionContext, settings: SettingsResource, mlflow: dg.ResourceParam[MlFlow]
) -> dg.MaterializeResult:
    from socialrec.two_tower import TwoTowerModel

    s = settings.get()
    positives = warehouse.read_table(s, "ml_retrieval_positives")
    samples = warehouse.read_table(s, "ml_ranking_samples")
    start = evaluation.test_start(positives)
    store = features.feature_store(s)
    live = live_posts(warehouse.read_table(s, "dim_posts"))["post_id"]
    users = training.latest_features(store, "user", positives["user_id"], as_of=start)
    posts = training.latest_features(store, "post", live, as_of=start)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    out_dir = s.data_dir / "evaluation" / stamp
    report = evaluation.run_offline_evaluation(
        s,
        positives,
        samples,
        users,
        posts,
        TwoTowerModel.load(registry.champion_dir(s, registry.TWO_TOWER)),
        Ranker.load(registry.champion_dir(s, registry.RANKER)),
        out_dir,
        max_users=s.evaluation_max_users,
    )
    table = report.markdown()
    context.log.info(f"{report.protocol}\n{table}")
    report.table.to_csv(out_dir / "results.csv")
    report.segments.to_csv(out_dir / "segments.csv", index=False)
    _log_to_mlflow(s, report, out_dir)
    ours = report.table.loc["socialrec"]
    return dg.MaterializeResult(
        metadata={
            "protocol": report.protocol,
            "results": dg.MetadataValue.md(table),
            "segments": dg.MetadataValue.md(
                evaluation.to_markdown(
                    report.segments.set_index(["segment", "method"])[
                        ["recall@100", "ndcg@10", "users"]
                    ],
                    "segment, method",
                )
            ),
            "plots": dg.MetadataValue.md("\n\n".join(_image(p) for p in report.plots.values())),
            "ndcg@10": float(ours["ndcg@10"]),
            "recall@100": float(ours["recall@100"]),
            "users": report.n_users,
            "report_dir": dg.MetadataValue.path(str(out_dir)),
        }
    )


def _log_to_mlflow(settings, report: "evaluation.OfflineReport", out_dir) -> None:
    registry.configure(settings)
    nested = mlflow_lib.active_run() is not None  # under the Dagster run's MLflow run
    with mlflow_lib.start_run(run_name="offline_evaluation", nested=nested):
        mlflow_lib.set_tags({"socialrec.model": "offline_evaluation"})
        mlflow_lib.log_param("protocol", report.protocol[:500])
        for method, row in report.table.iterrows():
            mlflow_lib.log_metrics(
                {
                    f"{method}.{registry.metric_key(k).replace('%', 'pct')}": float(v)
                    for k, v in row.items()
                }
            )
        mlflow_lib.log_artifacts(str(out_dir), "evaluation")
