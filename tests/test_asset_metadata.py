"""What the Dagster UI shows of the evaluation and the models (issue 14): the offline
evaluation's results as a table (a row per segment and method, sortable in the UI), a model
asset that says what it made (a registered version) and no role it may no longer have."""

from __future__ import annotations

import math

import dagster as dg


def test_the_evaluation_results_are_one_table_of_segments_and_methods():
    from assets.evaluation import segments_table

    row = {"ndcg@10": 0.04652, "recall@10": 0.0674, "recall@100": 0.29, "mrr@10": 0.05}
    segments = {
        "all": {"popularity": {**row, "users": 1000, "requests": 1565}, "socialrec": row},
        "cold": {"socialrec": {**row, "ndcg@10": math.nan, "users": 21, "requests": 29}},
    }
    table = segments_table(segments)
    assert isinstance(table, dg.TableMetadataValue)
    names = [c.name for c in table.schema.columns]
    assert names[:2] == ["segment", "method"] and names[-2:] == ["users", "requests"]
    assert {"ndcg@10", "recall@100"} <= set(names)
    got = [r.data for r in table.records]
    assert [(r["segment"], r["method"]) for r in got] == [
        ("all", "popularity"),
        ("all", "socialrec"),
        ("cold", "socialrec"),
    ]
    assert got[0]["ndcg@10"] == 0.0465 and got[0]["users"] == 1000
    assert got[1]["users"] is None  # a value the report lacks stays empty, not a made-up 0
    assert got[2]["ndcg@10"] is None  # NaN is no JSON: the UI could not parse the record


def test_a_model_asset_names_its_registered_version_not_a_role():
    from assets.models import _registered_metadata
    from socialrec.models import registry

    reg = registry.RegisteredModel(
        "socialrec_ranker", 3, "run-1", "models:/m-1", False, "registered as challenger"
    )
    meta = _registered_metadata(reg, "ranker_champion")
    assert meta["mlflow_version"] == 3 and meta["model_uri"] == "models:/m-1"
    assert "alias" not in meta and "challenger" not in str(meta.values())
    assert meta["registered"].startswith("socialrec_ranker version 3")
    assert "`ranker_champion`" in meta["registered"]
