"""Evaluation layer: the offline evaluation of the champion pipeline beside tuned baselines.

Thin wrapper of ``socialrec.evaluation.run_offline_evaluation`` (the protocol is in
``socialrec/evaluation/protocol.py`` and docs/benchmarks.md): the service's pipeline (champion
two-tower, champion ranker, the current neighbours) and its ablations (retrieval alone, the
ranker without feed policies) against popularity, recent popularity, ALS, item-KNN and EASE,
each tuned on validation, on the test split's replayed requests. The tables and plots are in
the Dagster UI and in an MLflow run; a warning check says when the shipped pipeline loses to
the best baseline on warm users.
"""

import base64
import math

import dagster as dg
import mlflow as mlflow_lib
from dagster_mlflow.resources import MlFlow

from assets.common import NIGHTLY, TRAINING_FRESHNESS
from assets.models import current_neighbour_params
from assets.resources import SettingsResource
from socialrec import evaluation
from socialrec.data import warehouse
from socialrec.evaluation.protocol import METRICS
from socialrec.evaluation.report import segment_table
from socialrec.models import artifacts, registry
from socialrec.models.ranker import Ranker
from socialrec.training.retrieval import StoreFeatures

CHECK = "shipped_pipeline_beats_best_baseline_on_warm_users"


def _number(value) -> float | None:
    """A metric for a table cell: None when missing or NaN (the UI parses records as JSON)."""
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 4)


def segments_table(segments: dict) -> dg.TableMetadataValue:
    """Every segment's results as one table the UI can sort: a row per (segment, method)."""
    metrics = [
        m for m in METRICS if any(m in row for rows in segments.values() for row in rows.values())
    ]
    counts = ("users", "requests")
    schema = dg.TableSchema(
        columns=[dg.TableColumn("segment", "string"), dg.TableColumn("method", "string")]
        + [dg.TableColumn(m, "float") for m in metrics]
        + [dg.TableColumn(c, "int") for c in counts]
    )
    records = [
        dg.TableRecord(
            {
                "segment": seg,
                "method": method,
                **{m: _number(row.get(m)) for m in metrics},
                **{c: int(row[c]) if c in row else None for c in counts},
            }
        )
        for seg, rows in segments.items()
        for method, row in rows.items()
    ]
    return dg.MetadataValue.table(records, schema)


def _image(path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.stem}](data:image/png;base64,{data})"


@dg.asset(
    deps=[
        dg.AssetKey("two_tower_champion"),
        dg.AssetKey("ranker_champion"),
        dg.AssetKey("post_neighbours"),
        dg.AssetKey("fct_interactions"),
        dg.AssetKey("ml_split_bounds"),
        dg.AssetKey("feature_tables"),
        dg.AssetKey("dim_posts"),
    ],
    group_name="evaluation",
    freshness_policy=TRAINING_FRESHNESS,
    automation_condition=NIGHTLY,
    kinds={"mlflow", "python"},
    check_specs=[dg.AssetCheckSpec(CHECK, asset="offline_evaluation", blocking=False)],
    description="The champion pipeline (socialrec), without feed policies (socialrec_plain) "
    "and its merged candidates alone (retrieval) vs popularity, recent popularity, ALS, "
    "item-KNN and EASE tuned on validation, on the test split's requests replayed day by day: "
    "NDCG/recall/MRR/coverage per segment (all, warm, cold), each source's recall, plots.",
)
def offline_evaluation(
    context: dg.AssetExecutionContext, settings: SettingsResource, mlflow: dg.ResourceParam[MlFlow]
):
    from socialrec.models.two_tower import TwoTowerModel

    s = settings.get()
    out_dir = artifacts.new_dir(s, "evaluation")
    report = evaluation.run_offline_evaluation(
        s,
        warehouse.read_log(s),
        warehouse.read_table(s, "dim_posts"),
        warehouse.read_split(s),
        StoreFeatures(s),
        TwoTowerModel.load(registry.champion_dir(s, registry.TWO_TOWER)),
        Ranker.load(registry.champion_dir(s, registry.RANKER)),
        out_dir,
        name=s.evaluation_name,
        neighbour_params=current_neighbour_params(s),
        max_users=s.evaluation_max_users,
        log_fn=context.log.info,
    )
    context.log.info(report.markdown())
    _log_to_mlflow(s, report, out_dir)
    warm = report.segments["warm"]
    ours = warm.get("socialrec", {}).get("ndcg@10", float("nan"))
    baselines = {m: v["ndcg@10"] for m, v in warm.items() if m in evaluation.offline.BASELINES}
    best = max(baselines, key=lambda m: baselines[m]) if baselines else None
    passed = best is None or not (ours < baselines[best])
    yield dg.MaterializeResult(
        metadata={
            "protocol": report.protocol,
            "results": segments_table(report.segments),
            **{
                f"results_{seg}": dg.MetadataValue.md(segment_table(report.segments, seg))
                for seg in report.segments
            },
            "report": dg.MetadataValue.md(report.markdown()),
            "plots": dg.MetadataValue.md("\n\n".join(_image(p) for p in report.plots.values())),
            **{f"warm_{m}": float(warm.get("socialrec", {}).get(m, float("nan"))) for m in METRICS},
            "users_warm": report.users.get("warm", 0),
            "users_cold": report.users.get("cold", 0),
            "report_json": dg.MetadataValue.path(str(out_dir / "report.json")),
        }
    )
    yield dg.AssetCheckResult(
        check_name=CHECK,
        passed=bool(passed),
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"warm users: socialrec NDCG@10 {ours:.4f} vs best baseline {best} "
            f"{baselines.get(best, float('nan')):.4f}"
            if best
            else "no baseline evaluated"
        ),
        metadata={"socialrec": float(ours), **{m: float(v) for m, v in baselines.items()}},
    )


def _log_to_mlflow(settings, report, out_dir) -> None:
    registry.configure(settings)
    nested = mlflow_lib.active_run() is not None  # under the Dagster run's MLflow run
    with mlflow_lib.start_run(run_name="offline_evaluation", nested=nested):
        mlflow_lib.set_tags({"socialrec.model": "offline_evaluation"})
        mlflow_lib.log_param("protocol", report.protocol[:500])
        for seg, methods in report.segments.items():
            for method, row in methods.items():
                mlflow_lib.log_metrics(
                    {
                        f"{seg}.{method}.{registry.metric_key(k)}": float(v)
                        for k, v in row.items()
                        if isinstance(v, int | float)
                    }
                )
        mlflow_lib.log_artifacts(str(out_dir), "evaluation")
