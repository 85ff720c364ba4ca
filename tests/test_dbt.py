"""The dbt project through dagster-dbt: raw assets -> dbt models and tests (asset checks)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from socialrec.data import raw_records, warehouse
from socialrec.data.eventlog import EventLog, SplitBounds
from socialrec.data.generator import generate_dataset, write_landing
from socialrec.data.landing import encode_jsonl, open_bucket
from socialrec.settings import EVENT_TYPES, NEGATIVE_EVENTS, POSITIVE_EVENTS, Settings

pytestmark = pytest.mark.integration

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Land a tiny dataset (plus a client retry in another file), then materialize raw + dbt."""
    from assets.dbt import dbt_resource, socialrec_dbt_assets
    from assets.raw import (
        partition_range_tags,
        raw_categories,
        raw_events,
        raw_posts,
        raw_users,
    )
    from assets.resources import LandingResource, SettingsResource, WarehouseResource

    data_dir = tmp_path_factory.mktemp("dbt")
    settings = Settings(data_dir=data_dir)
    settings.ensure_dirs()
    ds = generate_dataset(
        n_users=60, n_posts=120, n_events=3000, days=len(DAYS), start_date=DAYS[0], seed=3
    )
    bucket = open_bucket(str(settings.landing_uri))
    write_landing(ds, bucket)
    retry = ds.events.iloc[[5]].copy()
    retry_row = {
        **retry.iloc[0].to_dict(),
        "ts": retry.iloc[0]["ts"].strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dwell_ms": None,
    }
    bucket.write_bytes(f"events/dt={DAYS[-1]}/retry.jsonl.gz", encode_jsonl([retry_row]))

    settings_resource = SettingsResource(data_dir=str(data_dir))
    result = dg.materialize(
        [raw_events, raw_posts, raw_users, raw_categories, socialrec_dbt_assets],
        resources={
            "settings": settings_resource,
            "landing": LandingResource.from_settings(settings_resource),
            "warehouse": WarehouseResource.from_settings(settings_resource),
            "dbt": dbt_resource(settings),
        },
        tags=partition_range_tags(DAYS[0], DAYS[-1]),
    )
    return settings, ds, retry_row["event_id"], result


def test_raw_assets_report_their_loads(built):
    settings, ds, _, result = built
    assert result.success
    mats = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
    }
    events_meta = mats["raw_events"]
    assert events_meta["rows"].value == len(ds.events) + 1  # the retry is a separate file
    assert events_meta["quarantined"].value == 0
    assert events_meta["files"].value == len(DAYS) + 1
    assert mats["raw_posts"]["rows"].value == len(ds.posts)
    assert mats["raw_users"]["rows"].value == len(ds.users)
    for model in ("stg_events", "fct_interactions", "dim_posts", "dim_users", "quarantine",
                  "user_category_affinity", "ml_ranking_samples"):  # fmt: skip
        assert model in mats, model


def test_stg_events_deduplicates_retries(built):
    settings, ds, retry_id, _ = built
    raw = warehouse.read_table(settings, "raw.events", ["event_id"])
    stg = warehouse.read_table(settings, "stg_events")
    assert (raw.event_id == retry_id).sum() >= 2
    assert stg.event_id.is_unique
    assert len(stg) == ds.events.event_id.nunique()
    assert set(stg.event_type) <= set(EVENT_TYPES)
    kept = stg[stg.event_id == retry_id].iloc[0]
    assert not kept._source_file.endswith("retry.jsonl.gz")  # the earliest load wins


def test_dims_follow_the_contract(built):
    settings, _, _, _ = built
    stg = warehouse.read_table(settings, "stg_events")
    posts = warehouse.read_table(settings, "dim_posts")
    users = warehouse.read_table(settings, "dim_users")
    # the contract's columns first, in order; the additions after them
    assert list(posts.columns)[:12] == [
        "post_id", "creator_id", "category_id", "media_type", "description", "created_at",
        "n_impressions", "n_views", "n_likes", "n_positives", "n_negatives", "positive_rate",
    ]  # fmt: skip
    assert {"n_comments", "n_shares", "like_rate", "negative_rate", "is_deleted",
            "updated_at"} <= set(posts.columns)  # fmt: skip
    assert list(users.columns)[:10] == [
        "user_id", "created_at", "headline", "about", "onboarding_categories", "n_events",
        "n_impressions", "n_positives", "positive_rate", "last_event_ts",
    ]  # fmt: skip
    assert "is_deleted" in users.columns and not users.is_deleted.any()
    assert posts.is_deleted.dtype == bool and not posts.is_deleted.any()
    assert posts.post_id.is_unique and users.user_id.is_unique
    assert posts.n_impressions.sum() == (stg.event_type == "IMPRESSION").sum()
    assert users.n_events.sum() == len(stg)
    assert posts.n_positives.sum() == stg.event_type.isin(POSITIVE_EVENTS).sum()
    assert users.positive_rate.dtype == "float64" and (users.positive_rate >= 0).all()
    assert users.onboarding_categories.str.fullmatch(r"\d+(,\d+)*").all()


def test_ranking_samples_labels_and_time_split(built):
    settings, ds, _, _ = built
    samples = warehouse.read_table(settings, "ml_ranking_samples")
    assert set(samples.label.unique()) == {0, 1}
    assert set(samples.split) == {"train", "validation", "test"}
    assert not samples.duplicated(["user_id", "post_id"]).any()
    by_split = samples.groupby("split").ts.agg(["min", "max"])
    assert by_split.loc["train", "max"] < by_split.loc["validation", "min"]
    assert by_split.loc["validation", "max"] < by_split.loc["test", "min"]

    # the same labels computed independently from the generated events
    ev = ds.events.drop_duplicates("event_id")
    ev = ev.assign(
        imp=ev.event_type.eq("IMPRESSION"),
        pos=ev.event_type.isin(POSITIVE_EVENTS),
        neg=ev.event_type.isin(NEGATIVE_EVENTS),
    )
    pairs = ev[ev.imp | ev.pos | ev.neg].groupby(["user_id", "post_id"])[["pos", "neg"]].any()
    expected = (pairs.pos & ~pairs.neg).astype(int).rename("expected").reset_index()
    got = samples.merge(expected, on=["user_id", "post_id"], how="outer", indicator=True)
    assert (got._merge == "both").all()
    assert (got.label == got.expected).all()

    # the global split by event quantile (ml_split_bounds): the discrete 80% and 90% quantiles
    # of the valid events' times (quantile_disc: the ceil(q n)-th time), floored to midnight
    # only when the floors keep the splits apart. This 3-day log has both quantiles on its
    # last day: the exact times are kept (tests/test_protocol.py has both cases)
    bounds = warehouse.read_table(settings, "ml_split_bounds")
    assert len(bounds) == 1
    b = bounds.iloc[0]
    fct = warehouse.read_table(settings, "fct_interactions")
    ts = fct.ts.sort_values().reset_index(drop=True)
    q_v, q_t = (ts.iloc[math.ceil(q * len(ts)) - 1] for q in (1 - 0.1 - 0.1, 1 - 0.1))
    v_day, t_day = q_v.floor("D"), q_t.floor("D")
    floored = ts.iloc[0] < v_day < t_day
    assert not floored
    assert (b.validation_start, b.test_start) == (q_v, q_t)
    assert (b.data_start, b.data_end) == (ts.iloc[0], ts.iloc[-1])
    # the Python side of the split (the offline evaluation on logs outside the warehouse)
    # computes the same bounds from the same events
    assert SplitBounds.from_frame(bounds) == SplitBounds.from_log(EventLog.from_frame(fct))
    assert b.validation_share == pytest.approx(
        ((ts >= b.validation_start) & (ts < b.test_start)).mean()
    )
    assert b.test_share == pytest.approx((ts >= b.test_start).mean())
    assert b.n_events == len(fct)
    assert (samples.split == "train").eq(samples.ts < b.validation_start).all()
    assert (samples.split == "test").eq(samples.ts >= b.test_start).all()


def test_retrieval_positives_are_first_positive_per_pair(built):
    settings, ds, _, _ = built
    pos = warehouse.read_table(settings, "ml_retrieval_positives")
    ev = ds.events[ds.events.event_type.isin(POSITIVE_EVENTS)]
    first = ev.groupby(["user_id", "post_id"]).ts.min().dt.tz_localize(None).rename("first")
    got = pos.set_index(["user_id", "post_id"]).join(first)
    assert len(pos) == len(first)
    assert (got.ts == got["first"]).all()
    assert set(pos.split) <= {"train", "validation", "test"}


def test_dbt_tests_are_asset_checks_and_pass(built):
    from assets.dbt import socialrec_dbt_assets

    _, _, _, result = built
    check_keys = {c.key for c in socialrec_dbt_assets.check_specs}
    assert len(check_keys) >= 20
    names = {(k.asset_key.to_user_string(), k.name) for k in check_keys}
    assert ("stg_events", "unique_stg_events_event_id") in names
    assert any(n.startswith("relationships_stg_events_post_id") for a, n in names)
    evaluations = result.get_asset_check_evaluations()
    assert {e.asset_check_key for e in evaluations} == check_keys
    failed = [e.asset_check_key.name for e in evaluations if not e.passed]
    assert not failed, failed


def test_dbt_assets_keys_groups_and_upstreams():
    from assets.common import DERIVED_FRESHNESS
    from assets.dbt import socialrec_dbt_assets

    specs = {s.key.to_user_string(): s for s in socialrec_dbt_assets.specs}
    assert {"stg_events", "fct_interactions", "dim_posts", "dim_users", "quarantine",
            "quarantined_events", "user_category_affinity", "user_creator_affinity",
            "user_engagement_windows", "post_engagement_windows", "creator_engagement_windows",
            "ml_retrieval_positives", "ml_ranking_samples"} <= set(specs)  # fmt: skip
    for spec in specs.values():
        assert spec.group_name == "warehouse"
        assert spec.freshness_policy == DERIVED_FRESHNESS
        assert spec.automation_condition is not None
    deps = socialrec_dbt_assets.asset_deps
    assert dg.AssetKey("raw_events") in deps[dg.AssetKey("stg_event_lines")]
    assert dg.AssetKey("stg_event_lines") in deps[dg.AssetKey("stg_events")]
    assert dg.AssetKey("raw_events") in deps[dg.AssetKey("fct_interactions")]
    assert dg.AssetKey("raw_posts") in deps[dg.AssetKey("stg_posts")]
    assert dg.AssetKey("fct_interactions") in deps[dg.AssetKey("ml_ranking_samples")]


def test_event_type_vars_match_settings():
    project = yaml.safe_load((DBT_DIR / "dbt_project.yml").read_text())
    assert tuple(project["vars"]["positive_events"]) == POSITIVE_EVENTS
    assert tuple(project["vars"]["negative_events"]) == NEGATIVE_EVENTS
    hours = project["vars"]["future_tolerance_hours"]
    assert raw_records.FUTURE_TOLERANCE == pd.Timedelta(hours=hours)
    assert set(project["vars"]["relevance_weights"]) == set(EVENT_TYPES)


def test_dbt_gets_the_event_window_from_settings():
    from assets.dbt import dbt_vars

    local = json.loads(dbt_vars(Settings(event_max_future_hours=0.5))[1])
    assert local == {"future_tolerance_hours": 0.5}
    bq = json.loads(dbt_vars(Settings(dbt_target="bigquery", bigquery_dataset="d"))[1])
    assert bq["future_tolerance_hours"] == Settings().event_max_future_hours
    assert bq["raw_schema"] == "d_raw"


# Compiles the project for the bigquery target without credentials or network: the adapter's
# relation lookup is stubbed to "the table exists", so incremental models take their
# incremental branch (the larger SQL).
_OFFLINE_BIGQUERY_COMPILE = """
import sys
from unittest import mock
from dbt.adapters.bigquery.impl import BigQueryAdapter
from dbt.adapters.bigquery.relation import BigQueryRelation
from dbt.cli.main import dbtRunner

def existing_table(self, database, schema, identifier):
    return BigQueryRelation.create(
        database=database, schema=schema, identifier=identifier, type="table"
    )

with mock.patch.object(BigQueryAdapter, "get_relation", existing_table):
    result = dbtRunner().invoke(["compile", "--target", "bigquery", "--no-populate-cache",
                                 "--quiet", *sys.argv[1:]])
if not result.success:
    print(result.exception)
sys.exit(0 if result.success else 1)
"""


def test_bigquery_target_parses_without_a_connection(tmp_path):
    """``dbt parse --target bigquery`` with the project's profiles, then every model and test
    compiled for BigQuery (offline, a fake token) and parsed as BigQuery SQL by sqlglot."""
    import sqlglot

    from assets.dbt import DBT_EXECUTABLE

    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    proc = subprocess.run(
        [DBT_EXECUTABLE, "parse", "--target", "bigquery", "--profiles-dir", str(DBT_DIR),
         "--project-dir", str(DBT_DIR), "--target-path", str(tmp_path), "--log-path",
         str(tmp_path)],  # fmt: skip
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "manifest.json").exists()

    # the project's bigquery output, authenticated with a token that is never used
    profiles = yaml.safe_load((DBT_DIR / "profiles.yml").read_text())
    output = profiles["socialrec"]["outputs"]["bigquery"]
    output.update(method="oauth-secrets", token="offline", threads=1)
    profiles_dir = tmp_path / "profiles"
    profiles_dir.mkdir()
    (profiles_dir / "profiles.yml").write_text(yaml.safe_dump(profiles))
    target = tmp_path / "compiled"
    proc = subprocess.run(
        [sys.executable, "-c", _OFFLINE_BIGQUERY_COMPILE, "--profiles-dir", str(profiles_dir),
         "--project-dir", str(DBT_DIR), "--target-path", str(target), "--log-path",
         str(target)],  # fmt: skip
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    manifest = json.loads((target / "manifest.json").read_text())
    nodes = [n for n in manifest["nodes"].values() if n["resource_type"] in ("model", "test")]
    models = [n for n in nodes if n["resource_type"] == "model"]
    assert len(models) >= 17
    for node in nodes:
        sql = node.get("compiled_code")
        assert sql, f"{node['unique_id']} did not compile"
        assert "::" not in sql, node["unique_id"]  # a DuckDB/Postgres cast
        sqlglot.parse(sql, read="bigquery")  # raises on SQL BigQuery cannot parse
    fct = manifest["nodes"]["model.socialrec.fct_interactions"]
    assert fct["config"]["incremental_strategy"] == "insert_overwrite"
    assert fct["config"]["partition_by"] == {"field": "dt", "data_type": "date"}
    assert "`fct_interactions`" in fct["compiled_code"]  # the incremental branch


def test_the_definitions_parse_the_project_with_the_dbt_cli(tmp_path):
    """The manifest the definitions load is written by ``dbt parse`` under the parse lock
    (assets.dbt._parse_once), and a parse that fails says why."""
    from dagster_dbt import DbtProject

    from assets.dbt import _parse_once

    project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR, target_path=tmp_path / "t")
    _parse_once(project)
    manifest = json.loads(Path(project.manifest_path).read_text())
    assert "model.socialrec.fct_interactions" in manifest["nodes"]
    assert Path(project.manifest_path).parent == tmp_path / "t"

    (tmp_path / "p").mkdir()  # no profiles.yml
    broken = DbtProject(
        project_dir=DBT_DIR, profiles_dir=tmp_path / "p", target_path=tmp_path / "b"
    )
    with pytest.raises(RuntimeError, match="dbt parse failed"):
        _parse_once(broken)


def test_a_dbt_command_of_the_assets_reuses_the_definitions_parse(tmp_path):
    """The definitions parse with the profile, target and vars of the asset's dbt commands,
    so that a command of the run reads the parse instead of parsing the project again."""
    from dagster_dbt import DbtProject

    from assets.dbt import DBT_EXECUTABLE, _parse_once, dbt_env, dbt_vars

    project = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR, target_path=tmp_path / "t")
    _parse_once(project)
    settings = Settings()
    target = os.fspath(project.target_path)
    env = {**os.environ, **dbt_env(settings), "DBT_TARGET_PATH": target, "DBT_LOG_PATH": target}
    argv = [DBT_EXECUTABLE, "--log-format", "json", "--debug", "ls", "--resource-type", "model"]
    done = subprocess.run(
        argv + dbt_vars(settings) + ["--target", settings.dbt_target, "--profiles-dir", DBT_DIR],
        cwd=DBT_DIR, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    messages = [
        json.loads(line)["info"]["msg"] for line in done.stdout.splitlines() if line[:1] == "{"
    ]
    assert "Nothing changed, skipping partial parsing." in messages, messages[:5]
    assert not [m for m in messages if "Unable to do partial parsing" in m]
