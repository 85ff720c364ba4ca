"""The dbt layer on a tiny DuckDB warehouse, changed round after round like production:

0. land a generated dataset, load raw, ``dbt build`` (models and dbt tests);
1. plant a LIKE after some samples' exposure: the point-in-time features of the earlier
   ml_ranking_samples rows must not move (no leakage), the later ones must;
2. a late file into an old dt (new events, a retry, unknown user / post, a bad line) and a
   future-stamped raw row: an incremental ``dbt run`` adds exactly the valid new events to
   fct_interactions and quarantines the others;
3. post upserts (a category change, stale and tied versions), a tombstone and the missing
   post landing late: ``dbt build`` again, every dbt test passing;
4. ``dbt docs generate`` on the result.

The rounds share one warehouse (built once per module); each test checks one round's snapshot.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from socialrec.data import warehouse
from socialrec.data.generator import generate_dataset, write_landing
from socialrec.data.landing import open_bucket
from socialrec.settings import POSITIVE_EVENTS, Settings

pytestmark = pytest.mark.integration

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DBT = str(Path(sys.executable).with_name("dbt"))
DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")
PIT_FEATURES = [
    "user_prior_events",
    "user_prior_impressions",
    "user_prior_positives",
    "post_prior_impressions",
    "post_prior_positives",
    "post_prior_negatives",
    "user_category_prior_positives",
]
UNKNOWN_USER, UNKNOWN_POST = 990_001, 880_001
UPDATED = pd.Timestamp("2026-01-05 00:00:00")


def _iso(ts: pd.Timestamp) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


class Warehouse:
    """A temp settings/landing/DuckDB trio plus a dbt runner pointed at it."""

    def __init__(self, root: Path):
        self.settings = Settings(data_dir=root / "data")
        self.settings.ensure_dirs()
        self.bucket = open_bucket(str(self.settings.landing_uri))
        self.target = root / "target"

    def dbt(self, *args: str) -> list[dict]:
        env = {
            **os.environ,
            "SOCIALREC_WAREHOUSE_PATH": str(Path(self.settings.warehouse_path).resolve()),
            "SOCIALREC_DBT_TARGET": "duckdb",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }
        proc = subprocess.run(
            [
                DBT,
                *args,
                "--profiles-dir",
                str(DBT_DIR),
                "--project-dir",
                str(DBT_DIR),
                "--target-path",
                str(self.target),
                "--log-path",
                str(self.target),
            ],  # fmt: skip
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
        results = self.target / "run_results.json"
        return json.loads(results.read_text())["results"] if results.exists() else []

    def table(self, name: str) -> pd.DataFrame:
        return warehouse.read_table(self.settings, name)

    def land(self, key: str, rows: list[dict | str]) -> None:
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        self.bucket.write_bytes(key, gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))

    def load_events(self, *days: str) -> None:
        warehouse.load_event_partitions(self.settings, self.bucket, list(days))

    def load_dimension(self, name: str) -> None:
        warehouse.load_dimension(self.settings, self.bucket, name)


def _day(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values).dt.strftime("%Y-%m-%d")


def _failed(results: list[dict]) -> list[str]:
    return [r["unique_id"] for r in results if r["status"] not in ("success", "pass")]


def _expected_pit(events: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The point-in-time features recomputed in pandas: counts over events with ts < row ts."""
    ev = events.assign(
        imp=events.event_type.eq("IMPRESSION").astype(int),
        pos=events.event_type.isin(POSITIVE_EVENTS).astype(int),
        neg=events.is_negative.astype(int),
    )
    by_user = {k: g for k, g in ev.groupby("user_id")}
    by_post = {k: g for k, g in ev.groupby("post_id")}
    rows = []
    for s in samples.itertuples():
        u = by_user[s.user_id]
        u = u[u.ts < s.ts]
        p = by_post[s.post_id]
        p = p[p.ts < s.ts]
        rows.append(
            {
                "user_prior_events": len(u),
                "user_prior_impressions": int(u.imp.sum()),
                "user_prior_positives": int(u.pos.sum()),
                "post_prior_impressions": int(p.imp.sum()),
                "post_prior_positives": int(p.pos.sum()),
                "post_prior_negatives": int(p.neg.sum()),
                "user_category_prior_positives": int(u[u.category_id == s.category_id].pos.sum()),
            }
        )
    return pd.DataFrame(rows, index=samples.index)


def _assert_fct_matches_stg(wh: Warehouse) -> pd.DataFrame:
    """fct_interactions (incremental) == stg_events (its definition), row for row."""
    fct = wh.table("fct_interactions").sort_values("event_id", ignore_index=True)
    stg = wh.table("stg_events").sort_values("event_id", ignore_index=True)
    assert fct.event_id.is_unique
    cols = [c for c in stg.columns if c in fct.columns]
    pd.testing.assert_frame_equal(fct[cols], stg[cols], check_dtype=False)
    return fct


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    wh = Warehouse(tmp_path_factory.mktemp("dbt_layer"))
    ds = generate_dataset(
        n_users=40, n_posts=80, n_events=1500, days=len(DAYS), start_date=DAYS[0], seed=11
    )
    write_landing(ds, wh.bucket)
    wh.load_events(*DAYS)
    for name in ("posts", "users", "categories"):
        wh.load_dimension(name)
    snap: dict = {"wh": wh, "ds": ds}

    # ---- round 0: full build --------------------------------------------------------------
    snap["build0"] = wh.dbt("build")
    snap["samples0"] = wh.table("ml_ranking_samples")
    snap["stg0"] = wh.table("stg_events")
    snap["posts0"] = wh.table("dim_posts")
    snap["positives0"] = wh.table("ml_retrieval_positives")

    # ---- round 1: a LIKE planted after some exposures of the same user --------------------
    samples, posts = snap["samples0"], snap["posts0"].set_index("post_id")
    stg = snap["stg0"]
    plant = None
    for user in samples.user_id.value_counts().index:
        mine = samples[samples.user_id == user].sort_values("ts", ignore_index=True)
        t_plant = mine.ts.iloc[len(mine) // 2] + pd.Timedelta(seconds=1)
        earlier_cats = set(posts.loc[mine.post_id[mine.ts < t_plant], "category_id"])
        touched = set(stg.post_id[stg.user_id == user])
        free = posts[posts.category_id.isin(earlier_cats) & ~posts.index.isin(touched)]
        if len(free):
            plant = {"user_id": int(user), "post_id": int(free.index[0]), "ts": t_plant}
            break
    assert plant is not None
    day = plant["ts"].strftime("%Y-%m-%d")
    wh.land(
        f"events/dt={day}/planted.jsonl.gz",
        [
            {
                "event_id": "planted-like",
                "user_id": plant["user_id"],
                "post_id": plant["post_id"],
                "event_type": "LIKE",
                "ts": _iso(plant["ts"]),
                "dwell_ms": None,
            }
        ],
    )
    wh.load_events(day)
    wh.dbt("run")
    snap["plant"] = plant
    snap["samples1"] = wh.table("ml_ranking_samples")

    # ---- round 2: a late file into the oldest dt, then an incremental run -----------------
    users = ds.users.user_id.astype(int).tolist()
    live = ds.posts.post_id.astype(int).tolist()
    late = [
        {"event_id": f"late-{i}", "user_id": users[i], "post_id": live[-1 - i],
         "event_type": "LIKE" if i % 2 else "IMPRESSION",
         "ts": f"{DAYS[0]}T12:00:0{i}Z", "dwell_ms": 1000 + i}
        for i in range(5)
    ]  # fmt: skip
    retry = stg[_day(stg.dt) == DAYS[1]].iloc[0]
    late += [
        {"event_id": retry.event_id, "user_id": int(retry.user_id),
         "post_id": int(retry.post_id), "event_type": retry.event_type,
         "ts": _iso(retry.ts), "dwell_ms": None},
        {"event_id": "late-unknown-user", "user_id": UNKNOWN_USER, "post_id": live[0],
         "event_type": "IMPRESSION", "ts": f"{DAYS[0]}T13:00:00Z", "dwell_ms": None},
        {"event_id": "late-unknown-post", "user_id": users[0], "post_id": UNKNOWN_POST,
         "event_type": "LIKE", "ts": f"{DAYS[0]}T13:00:01Z", "dwell_ms": None},
    ]  # fmt: skip
    wh.land(f"events/dt={DAYS[0]}/late.jsonl.gz", [*late, "{not json"])
    wh.load_events(DAYS[0])
    # a loader elsewhere (BigQuery) might not check clocks: a row stamped a day after its load
    con = duckdb.connect(str(wh.settings.warehouse_path))
    try:
        con.execute(
            "INSERT INTO raw.events VALUES ('future-1', ?, ?, 'LIKE', TIMESTAMP '2026-01-03 12:00:00',"
            " NULL, DATE '2026-01-02', 'events/dt=2026-01-02/clock.jsonl', 1,"
            " TIMESTAMP '2026-01-02 10:00:00', NULL)",  # variant: none
            [users[1], live[1]],
        )
    finally:
        con.close()
    snap["fct_before2"] = wh.table("fct_interactions")
    wh.dbt("run", "--select", "+fct_interactions", "quarantined_events", "quarantine")
    snap["late"] = late
    snap["retry_id"] = retry.event_id
    snap["run2_sql"] = (wh.target / "run/socialrec/models/marts/fct_interactions.sql").read_text()
    snap["fct2"] = _assert_fct_matches_stg(wh)
    snap["quarantined2"] = wh.table("quarantined_events")
    snap["quarantine2"] = wh.table("quarantine")

    # ---- round 3: post upserts, a tombstone, the unknown post lands; dbt build ------------
    in_samples = set(snap["samples1"].post_id) & set(snap["positives0"].post_id)
    in_samples -= {plant["post_id"]}
    changed, deleted, stale, tie_line, tie_file = (int(p) for p in sorted(in_samples)[:5])
    row = {int(r.post_id): r for r in ds.posts.itertuples()}

    def version(pid: int, **kw) -> dict:
        r = row[pid]
        out = {"post_id": pid, "creator_id": int(r.creator_id), "category_id": int(r.category_id),
               "media_type": r.media_type, "description": r.description,
               "created_at": _iso(r.created_at)}  # fmt: skip
        return {**out, **kw}

    new_category = int(next(c for c in ds.categories.category_id if c != row[changed].category_id))
    first = [
        version(changed, category_id=new_category, updated_at=_iso(UPDATED)),
        {"post_id": deleted, "deleted": True, "updated_at": _iso(UPDATED)},
        version(stale, description="stale", updated_at=_iso(row[stale].created_at - pd.Timedelta(days=1))),
        version(tie_line, description="line 4", updated_at=_iso(UPDATED)),
        version(tie_line, description="line 5", updated_at=_iso(UPDATED)),
        version(tie_file, description="earlier file", updated_at=_iso(UPDATED)),
        {**version(changed), "post_id": UNKNOWN_POST, "created_at": "2025-12-31T00:00:00Z"},
    ]  # fmt: skip
    wh.land("posts/dt=2026-01-05/updates-a.jsonl.gz", first)
    wh.land(
        "posts/dt=2026-01-05/updates-b.jsonl.gz",
        [version(tie_file, description="later file", updated_at=_iso(UPDATED))],
    )
    wh.load_dimension("posts")
    # 3 quarantined lines of ~1500: above this rate, so the quarantine-rate test must warn
    snap["build3"] = wh.dbt("build", "--vars", "{quarantine_warn_rate: 0.001}")
    snap["ids3"] = {
        "changed": changed, "deleted": deleted, "stale": stale, "tie_line": tie_line,
        "tie_file": tie_file, "new_category": new_category,
    }  # fmt: skip
    snap["posts3"] = wh.table("dim_posts")
    snap["samples3"] = wh.table("ml_ranking_samples")
    snap["positives3"] = wh.table("ml_retrieval_positives")
    snap["fct3"] = _assert_fct_matches_stg(wh)
    snap["quarantined3"] = wh.table("quarantined_events")

    # ---- round 4: docs -------------------------------------------------------------------
    wh.dbt("docs", "generate")
    return snap


def test_full_build_runs_every_model_and_dbt_test(rounds):
    results = rounds["build0"]
    assert not _failed(results), _failed(results)
    ids = {r["unique_id"] for r in results}
    for model in ("fct_interactions", "quarantine", "quarantined_events", "user_category_affinity",
                  "user_creator_affinity", "user_engagement_windows", "post_engagement_windows",
                  "creator_engagement_windows", "ml_ranking_samples"):  # fmt: skip
        assert f"model.socialrec.{model}" in ids, model
    for test in ("assert_label_balance", "assert_quarantine_rate",
                 "assert_fct_interactions_matches_stg_events"):  # fmt: skip
        assert f"test.socialrec.{test}" in ids, test
    assert any(i.startswith("test.socialrec.no_future_events_fct_interactions_ts") for i in ids)
    assert any(i.startswith("test.socialrec.relationships_fct_interactions_post_id") for i in ids)


def test_point_in_time_features_match_a_pandas_recomputation(rounds):
    samples = rounds["samples0"]
    events = rounds["stg0"].merge(
        rounds["posts0"][["post_id", "category_id"]], on="post_id", how="left"
    )
    samples = samples.merge(rounds["posts0"][["post_id", "category_id"]], on="post_id")
    expected = _expected_pit(events, samples)
    for col in PIT_FEATURES:
        assert (samples[col].to_numpy() == expected[col].to_numpy()).all(), col
    assert samples.user_prior_events.gt(0).any() and samples.post_prior_positives.gt(0).any()


def test_a_future_event_does_not_leak_into_earlier_samples(rounds):
    plant = rounds["plant"]
    before = rounds["samples0"].set_index(["user_id", "post_id"])
    after = rounds["samples1"].set_index(["user_id", "post_id"])
    new_pairs = after.index.difference(before.index)
    assert list(new_pairs) == [(plant["user_id"], plant["post_id"])]
    planted = after.loc[(plant["user_id"], plant["post_id"])]
    assert planted.ts == plant["ts"] and planted.label == 1

    common = after.loc[before.index]
    assert (common.ts == before.ts).all() and (common.split == before.split).all()
    assert (common.label == before.label).all()
    earlier = before.ts <= plant["ts"]  # events at the same instant are not "before" either
    assert earlier.sum() > 10
    pd.testing.assert_frame_equal(
        common.loc[earlier, PIT_FEATURES], before.loc[earlier, PIT_FEATURES]
    )

    # the test can see leaks: the same user's later rows do count the planted LIKE
    later_mine = (~earlier) & (before.index.get_level_values("user_id") == plant["user_id"])
    assert later_mine.sum() > 0
    delta = common.loc[later_mine, PIT_FEATURES] - before.loc[later_mine, PIT_FEATURES]
    assert (delta.user_prior_events == 1).all() and (delta.user_prior_positives == 1).all()


def test_late_file_into_an_old_dt_is_added_incrementally_without_duplicates(rounds):
    assert "delete from" in rounds["run2_sql"].lower()  # the incremental path, not a rebuild
    fct, before = rounds["fct2"], rounds["fct_before2"]
    late_ids = [e["event_id"] for e in rounds["late"] if e["event_id"].startswith("late-")]
    valid = [i for i in late_ids if "unknown" not in i]
    got = fct[fct.event_id.isin(late_ids)]
    assert sorted(got.event_id) == sorted(valid)
    assert (_day(got.dt) == DAYS[0]).all()
    assert got._source_file.str.endswith("late.jsonl.gz").all()
    assert (fct.event_id == rounds["retry_id"]).sum() == 1  # the retry is deduplicated
    assert _day(fct.dt[fct.event_id == rounds["retry_id"]]).iloc[0] == DAYS[1]
    assert len(fct) == len(before) + len(valid)
    assert set(before.event_id) <= set(fct.event_id)


def test_unknown_references_and_future_events_are_quarantined(rounds):
    q = rounds["quarantined2"].set_index("event_id")
    assert q.loc["late-unknown-user", "reason"] == "unknown user_id"
    assert q.loc["late-unknown-post", "reason"] == "unknown post_id"
    assert q.loc["future-1", "reason"] == "future ts"
    assert len(q) == 3
    lines = {e["event_id"]: n for n, e in enumerate(rounds["late"], start=1)}
    assert q.loc["late-unknown-user", "_line"] == lines["late-unknown-user"]
    assert q.loc["late-unknown-post", "_source_file"].endswith("late.jsonl.gz")
    assert not rounds["fct2"].event_id.isin(q.index).any()

    quarantine = rounds["quarantine2"]
    assert list(quarantine.columns[:4]) == ["dataset", "source_file", "line", "reason"]
    by_dbt = quarantine[quarantine.detected_by == "dbt"]
    assert sorted(by_dbt.reason) == ["future ts", "unknown post_id", "unknown user_id"]
    loader = quarantine[quarantine.detected_by == "loader"]
    assert len(loader) == 1 and loader.reason.iloc[0].startswith("bad json")
    assert loader.line.iloc[0] == len(rounds["late"]) + 1


def test_upserts_tombstones_and_a_late_post(rounds):
    results = rounds["build3"]
    assert _failed(results) == ["test.socialrec.assert_quarantine_rate"]  # warns, see below
    ids = rounds["ids3"]
    before = rounds["posts0"].set_index("post_id")
    posts = rounds["posts3"].set_index("post_id")
    assert posts.index.is_unique

    changed = posts.loc[ids["changed"]]
    assert changed.category_id == ids["new_category"] and changed.updated_at == UPDATED
    assert not changed.is_deleted

    gone = posts.loc[ids["deleted"]]
    assert gone.is_deleted and gone.updated_at == UPDATED
    assert gone.category_id == before.loc[ids["deleted"], "category_id"]  # the last live version
    fct = rounds["fct3"]
    impressions = fct[(fct.post_id == ids["deleted"]) & (fct.event_type == "IMPRESSION")]
    assert gone.n_impressions == len(impressions) > 0  # its history is kept
    for ml in ("samples3", "positives3"):
        assert ids["deleted"] not in set(rounds[ml].post_id), ml
    assert ids["deleted"] in set(rounds["samples0"].post_id)

    assert posts.loc[ids["stale"], "description"] != "stale"  # an older updated_at loses
    assert posts.loc[ids["tie_line"], "description"] == "line 5"  # same time: later line
    assert posts.loc[ids["tie_file"], "description"] == "later file"  # same time: later file
    assert posts.is_deleted.sum() == 1

    # the post landed after its event: the event is valid now, in its old dt, exactly once
    assert UNKNOWN_POST in posts.index
    assert (fct.event_id == "late-unknown-post").sum() == 1
    assert _day(fct.dt[fct.event_id == "late-unknown-post"]).iloc[0] == DAYS[0]
    assert sorted(rounds["quarantined3"].reason) == ["future ts", "unknown user_id"]


def test_docs_generate_writes_the_catalog(rounds):
    target = rounds["wh"].target
    catalog = json.loads((target / "catalog.json").read_text())
    manifest = json.loads((target / "manifest.json").read_text())
    assert (target / "index.html").exists()
    models = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert {f"model.socialrec.{m}" for m in models} <= set(catalog["nodes"])
    for node in manifest["nodes"].values():
        if node["resource_type"] == "model":
            assert node["description"], node["name"]
            undocumented = [c for c, v in node["columns"].items() if not v["description"]]
            assert not undocumented, (node["name"], undocumented)
            built = {c.lower() for c in catalog["nodes"][node["unique_id"]]["columns"]}
            assert built == set(node["columns"]), (node["name"], built ^ set(node["columns"]))
    assert len(models) >= 17


def test_the_quarantine_rate_test_warns_without_failing_the_build(rounds):
    # round 0: nothing quarantined, the test passes; round 3 (warn rate 0.001): it warns, and
    # the build still succeeded (Warehouse.dbt asserts the exit code)
    status = {r["unique_id"]: r for r in rounds["build0"]}
    assert status["test.socialrec.assert_quarantine_rate"]["status"] == "pass"
    status = {r["unique_id"]: r for r in rounds["build3"]}
    warned = status["test.socialrec.assert_quarantine_rate"]
    assert warned["status"] == "warn" and warned["failures"] == 1
