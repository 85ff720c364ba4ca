"""The dbt project with the ``bigquery`` target, through Dagster, on the BigQuery emulator.

Landing files in the GCS stand-in are loaded by the raw assets (the ``warehouse`` resource:
dagster-gcp's BigQuery client), then ``dbt build`` (models and tests) runs twice: a full build,
then, after a late file lands in one day, the incremental ``fct_interactions`` (dynamic
insert_overwrite of its dt partitions). Every table then reads as the DuckDB backend's after a
full local build of the same landing files. What the emulator cannot run is listed in
docs/operations.md ("BigQuery emulator coverage"); its one statement is checked here apart.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from socialrec.data import warehouse
from socialrec.data.bigquery import client, table_id
from socialrec.data.generator import generate_dataset, write_landing
from socialrec.data.landing import encode_jsonl
from socialrec.settings import Settings
from tests.gcp_profile import gcp_settings, landing, mirror

pytestmark = [pytest.mark.gcp, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[1]
DBT_DIR = ROOT / "dbt_project"
DAYS = [f"2026-01-{d:02d}" for d in range(1, 11)]
LATE_DAY = DAYS[4]
# the tables compared with DuckDB and their keys (_loaded_at: the time of each load)
TABLES = {
    "stg_events": ["event_id"],
    "fct_interactions": ["event_id"],
    "dim_posts": ["post_id"],
    "dim_users": ["user_id"],
    "quarantine": ["dataset", "source_file", "line"],
    "user_daily_activity": ["user_id", "day"],
    "post_engagement_windows": ["post_id"],
    "user_category_affinity": ["user_id", "category_id"],
    "ml_split_bounds": ["data_start"],
    "ml_retrieval_positives": ["user_id", "post_id"],
    "ml_ranking_samples": ["user_id", "post_id"],
}


def _late_events(ds) -> list[dict]:
    """New events (new ids) in LATE_DAY, for users and posts already landed."""
    rows = ds.events[ds.events.ts.dt.strftime("%Y-%m-%d") == LATE_DAY].head(40)
    return [
        {
            **r,
            "event_id": f"late-{i}",
            "ts": r["ts"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "dwell_ms": None if pd.isna(r["dwell_ms"]) else int(r["dwell_ms"]),
        }
        for i, r in enumerate(rows.to_dict("records"))
    ]


@pytest.fixture(scope="module")
def built(gcp_standins, tmp_path_factory):
    from assets.dbt import dbt_resource, socialrec_dbt_assets
    from assets.raw import partition_range_tags, raw_categories, raw_events, raw_posts, raw_users
    from assets.resources import LandingResource, SettingsResource, WarehouseResource

    base = tmp_path_factory.mktemp("dbt_bq")
    target = {"DBT_TARGET_PATH": str(base / "target")}  # dagster-dbt's invocations
    with gcp_settings(gcp_standins, base / "data", "dbt_test", "dbt-landing", target) as s:
        ds = generate_dataset(n_users=60, n_posts=120, n_events=2000, days=len(DAYS), seed=3)
        bucket = landing(s)
        write_landing(ds, bucket)
        settings = SettingsResource(data_dir=str(s.data_dir))
        resources = {
            "settings": settings,
            "landing": LandingResource.from_settings(settings),
            "warehouse": WarehouseResource.from_settings(settings),
            "dbt": dbt_resource(s),
        }
        raw = [raw_events, raw_posts, raw_users, raw_categories]
        first = dg.materialize(
            [*raw, socialrec_dbt_assets],
            resources=resources,
            tags=partition_range_tags(DAYS[0], DAYS[-1]),
        )
        fct_first = warehouse.read_table(s, "fct_interactions")
        bucket.write_bytes(f"events/dt={LATE_DAY}/late.jsonl.gz", encode_jsonl(_late_events(ds)))
        second = dg.materialize(
            [raw_events, socialrec_dbt_assets],
            resources=resources,
            tags=partition_range_tags(LATE_DAY, LATE_DAY),
        )
        yield s, bucket, base, (first, second), fct_first


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in result.get_asset_check_evaluations()
    }


def test_both_builds_pass_with_every_dbt_test(built):
    *_, (first, second), _ = built
    for result in (first, second):
        assert result.success
        checks = _checks(result)
        assert len(checks) > 100 and all(checks.values()), [k for k, v in checks.items() if not v]
    materialized = {m.to_user_string() for m in second.get_asset_materialization_events() for m in [m.asset_key]}  # fmt: skip
    assert {"raw_events", "fct_interactions", "ml_split_bounds"} <= materialized


def test_fct_interactions_is_partitioned_clustered_and_incremental(built):
    s, _, base, _, fct_first = built
    table = client(s).get_table(table_id(s, "fct_interactions"))
    assert table.time_partitioning.field == "dt"
    fct = warehouse.read_table(s, "fct_interactions")
    late = fct[fct.event_id.str.startswith("late-")]
    assert len(fct) == len(fct_first) + len(late) and len(late) == 40
    assert (late.dt == LATE_DAY).all()
    runs = sorted(
        base.glob("target/*/run/socialrec/models/marts/fct_interactions.sql"),
        key=lambda p: p.stat().st_mtime,
    )
    assert len(runs) == 2
    # the first build created it partitioned and clustered (the emulator does not record
    # CLUSTER BY in the table's metadata: the DDL dbt ran is checked instead)
    ddl = " ".join(runs[0].read_text().split())
    assert "create or replace table" in ddl and "partition by dt cluster by user_id" in ddl
    # the second replaced only the changed days' partitions: dbt-bigquery's merge script
    script = runs[1].read_text()
    assert "merge into" in script and "when not matched by source" in script
    assert "in unnest(dbt_partitions_for_replacement)" in script
    assert "set dbt_partitions_for_replacement = (select array_agg(distinct date(dt))" in script


def _frame(settings: Settings, name: str) -> pd.DataFrame:
    df = warehouse.read_table(settings, name).drop(columns="_loaded_at", errors="ignore")
    for col in df.columns:  # integer widths differ (DuckDB INTEGER vs INT64): compare values
        if pd.api.types.is_integer_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
            df[col] = df[col].astype("float64")
    return df.sort_values(TABLES[name]).reset_index(drop=True)


def test_tables_log_and_split_are_the_duckdb_backends_on_the_same_landing(built, tmp_path):
    s, bucket, *_ = built
    local = Settings(profile="local", data_dir=tmp_path, landing_uri=str(tmp_path / "landing"))
    local.ensure_dirs()
    copy = mirror(bucket, Path(str(local.landing_uri)))
    warehouse.load_event_partitions(local, copy, DAYS)
    for dataset in warehouse.DIMENSIONS:
        warehouse.load_dimension(local, copy, dataset)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCIALREC_", "DBT_TARGET"))}
    env |= {"SOCIALREC_DBT_TARGET": "duckdb"}
    env["SOCIALREC_WAREHOUSE_PATH"] = str(Path(local.warehouse_path).resolve())
    dbt = shutil.which("dbt", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [dbt, "run", "--profiles-dir", str(DBT_DIR), "--project-dir", str(DBT_DIR)]
        + ["--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:]
    for name in TABLES:
        pd.testing.assert_frame_equal(_frame(s, name), _frame(local, name), obj=name)
    assert warehouse.read_split(s) == warehouse.read_split(local)
    logs = []
    for log in (warehouse.read_log(s), warehouse.read_log(local)):
        fields = ["ts", "user", "post", "event", "positive", "negative", "dwell_ms"]
        frame = pd.DataFrame({f: getattr(log, f) for f in fields})
        logs.append(frame.sort_values(fields).reset_index(drop=True))  # ties: any order
    assert len(logs[0]) > 0
    pd.testing.assert_frame_equal(*logs, obj="read_log")


# --- the one statement the emulator cannot run, rendered for BigQuery and for the emulator ----
RENDER = """
{% macro render_insert_overwrite() %}
  {%- set tmp = api.Relation.create(database='p', schema='d', identifier='fct__dbt_tmp') -%}
  {%- set target = api.Relation.create(database='p', schema='d', identifier='fct') -%}
  {%- set partition_by = adapter.parse_partition_by({'field': 'dt', 'data_type': 'date'}) -%}
  {%- set columns = [api.Column.create('event_id', 'STRING'), api.Column.create('dt', 'DATE')] -%}
  {%- set ours = bq_dynamic_insert_overwrite_sql(
        tmp, target, 'select 1', none, partition_by, columns, true, false) -%}
  {%- set theirs = dbt.bq_dynamic_insert_overwrite_sql(
        tmp, target, 'select 1', none, partition_by, columns, true, false) -%}
  {{ print('RENDERED ' ~ tojson({'ours': ours, 'theirs': theirs})) }}
{% endmacro %}
"""


def _render(tmp_path: Path, env: dict) -> dict[str, str]:
    """The project's insert_overwrite script (``ours``) and dbt-bigquery's (``theirs``)."""
    project = tmp_path / "render"
    (project / "macros").mkdir(parents=True, exist_ok=True)
    shutil.copy(DBT_DIR / "macros" / "bigquery_emulator.sql", project / "macros")
    (project / "macros" / "render.sql").write_text(RENDER)
    (project / "dbt_project.yml").write_text(
        "name: render_check\nversion: '1.0.0'\nconfig-version: 2\nprofile: socialrec\n"
    )
    shutil.copy(DBT_DIR / "profiles.yml", project / "profiles.yml")
    dbt = shutil.which("dbt", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [dbt, "run-operation", "render_insert_overwrite", "--profiles-dir", str(project)]
        + ["--project-dir", str(project), "--target", "bigquery", "--log-path", str(project)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RENDERED "))
    return json.loads(line.removeprefix("RENDERED "))


def test_production_gets_dbt_bigquerys_script_and_the_emulator_an_equivalent(
    gcp_standins, tmp_path
):
    base = {k: v for k, v in {**os.environ, **gcp_standins}.items() if k != "DBT_TARGET_PATH"}
    production = _render(tmp_path, {k: v for k, v in base.items() if k != "BIGQUERY_EMULATOR_HOST"})
    assert production["ours"] == production["theirs"]
    assert "IGNORE NULLS" in production["ours"]
    assert "set (dbt_partitions_for_replacement) = (" in production["ours"]

    emulator = _render(tmp_path, base)
    assert emulator["theirs"] == production["theirs"]
    ours = emulator["ours"]
    assert "IGNORE NULLS" not in ours and "select as struct" not in ours
    assert (
        "set dbt_partitions_for_replacement = (select array_agg(distinct date(dt)) "
        "from `p`.`d`.`fct__dbt_tmp` where date(dt) is not null);" in ours
    )

    # everything but that statement is dbt-bigquery's own text
    def rest(script: str) -> str:
        return re.sub(r"set \(?dbt_partitions_for_replacement\)? = .*?\);", "", script, flags=re.S)

    assert rest(ours) == rest(emulator["theirs"])
