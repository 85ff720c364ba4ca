"""Raw loading into BigQuery (the emulator of the stand-ins) from a GCS landing bucket: the same
parsers, counts and quarantine as DuckDB, idempotent partitions, the same frames when read."""

import json

import pandas as pd
import pytest

from socialrec.data import warehouse
from socialrec.data.bigquery import client, table_id
from socialrec.data.generator import generate_dataset, write_landing
from socialrec.data.landing import encode_jsonl
from socialrec.settings import Settings
from tests.gcp_profile import gcp_settings, landing, mirror
from tests.test_warehouse import BAD_LINES, _event

pytestmark = [pytest.mark.gcp, pytest.mark.integration]

DAYS = ["2026-01-01", "2026-01-02"]
BQ_TYPES = {"string": "STRING", "int64": "INT64", "timestamp": "TIMESTAMP", "date": "DATE"}
BQ_TYPES["bool"] = "BOOL"
LEGACY = {"INTEGER": "INT64", "BOOLEAN": "BOOL"}  # BigQuery's REST API may answer these


@pytest.fixture(scope="module")
def gcp(gcp_standins, tmp_path_factory):
    """Settings of the gcp profile, a landing bucket with tiny demo data plus malformed lines
    and a corrupt file, loaded once into BigQuery."""
    with gcp_settings(gcp_standins, tmp_path_factory.mktemp("wh"), "wh_test", "wh-landing") as s:
        bucket = landing(s)
        ds = generate_dataset(n_users=30, n_posts=60, n_events=600, days=2, start_date=DAYS[0])
        write_landing(ds, bucket)
        lines = [json.dumps(_event(20))] + [t for t, _ in BAD_LINES] + [json.dumps(_event(21))]
        bucket.write_bytes(f"events/dt={DAYS[0]}/b.jsonl", ("\n".join(lines) + "\n").encode())
        bucket.write_bytes(f"events/dt={DAYS[1]}/corrupt.jsonl.gz", b"\x1f\x8bnot gzip")
        reports = [warehouse.load_event_partitions(s, bucket, DAYS)]
        reports += [warehouse.load_dimension(s, bucket, d) for d in warehouse.DIMENSIONS]
        yield s, bucket, ds, reports


def test_raw_tables_have_the_duckdb_columns_and_events_are_partitioned(gcp):
    s, *_ = gcp
    bq = client(s)
    for name, columns in warehouse.RAW_COLUMNS.items():
        table = bq.get_table(table_id(s, f"raw.{name}"))
        assert [(f.name, LEGACY.get(f.field_type, f.field_type)) for f in table.schema] == [
            (c, BQ_TYPES[kind]) for c, kind in columns
        ]
    events = bq.get_table(table_id(s, "raw.events"))
    assert events.time_partitioning.field == "dt"
    assert events.clustering_fields == ["user_id"]
    assert table_id(s, "raw.events").split(".")[1] == "wh_test_raw"


def test_event_load_counts_and_quarantines_bad_lines(gcp):
    s, _, ds, (events, posts, users, categories) = gcp
    assert (events.files, events.rows_loaded) == (len(DAYS) + 2, len(ds.events) + 2)
    assert events.rows_quarantined == len(BAD_LINES) + 1  # + the corrupt file
    assert (posts.rows_loaded, users.rows_loaded) == (len(ds.posts), len(ds.users))
    assert categories.rows_loaded == len(ds.categories)

    q = warehouse.read_table(s, "raw.quarantine").sort_values(["source_file", "line"])
    bad = q[q.source_file == f"events/dt={DAYS[0]}/b.jsonl"]
    assert bad.line.tolist() == list(range(2, 2 + len(BAD_LINES)))
    for (_, expected), reason in zip(BAD_LINES, bad.reason, strict=True):
        assert reason.startswith(expected), (expected, reason)
    assert bad.payload.iloc[0] == "{not json"
    assert (
        q[q.source_file.str.endswith("corrupt.jsonl.gz")]
        .reason.str.startswith("unreadable file")
        .all()
    )
    stats = warehouse.quarantine_rate(s, "events")
    assert (stats["rows"], stats["quarantined"]) == (len(ds.events) + 2, len(BAD_LINES) + 1)


def _raw(settings: Settings, name: str) -> pd.DataFrame:
    keys = {
        "events": ["_source_file", "_line"],
        "quarantine": ["dataset", "source_file", "line"],
        "posts": ["_source_file", "_line"],
        "users": ["_source_file", "_line"],
        "categories": ["category_id"],
    }[name]
    df = warehouse.read_table(settings, f"raw.{name}").drop(columns="_loaded_at", errors="ignore")
    return df.sort_values(keys).reset_index(drop=True)


def test_frames_are_the_duckdb_backends_on_the_same_landing_data(gcp, tmp_path):
    s, bucket, *_ = gcp
    local = Settings(profile="local", data_dir=tmp_path, landing_uri=str(tmp_path / "landing"))
    local.ensure_dirs()
    copy = mirror(bucket, local.landing_uri)
    warehouse.load_event_partitions(local, copy, DAYS)
    for dataset in warehouse.DIMENSIONS:
        warehouse.load_dimension(local, copy, dataset)
    for name in warehouse.RAW_COLUMNS:
        pd.testing.assert_frame_equal(_raw(s, name), _raw(local, name), obj=name)
    # the same column subset, in the asked order
    got = warehouse.read_table(s, "raw.events", ["ts", "event_id"])
    assert list(got.columns) == ["ts", "event_id"]
    assert warehouse.quarantine_rate(s) == warehouse.quarantine_rate(local)


def test_reloading_partitions_is_idempotent_and_replaces_only_them(gcp):
    s, bucket, *_ = gcp
    before = {name: _raw(s, name) for name in ("events", "quarantine")}
    warehouse.load_event_partitions(s, bucket, DAYS)
    warehouse.load_event_partitions(s, bucket, DAYS[1:])
    for name, frame in before.items():
        pd.testing.assert_frame_equal(_raw(s, name), frame, obj=name)

    # a new partition, then changed: it replaces only itself; emptied: it is cleared
    day3 = "2026-01-03"
    bucket.write_bytes(f"events/dt={day3}/x.jsonl.gz", encode_jsonl(_event(i) for i in range(5)))
    bucket.write_bytes(f"events/dt={day3}/y.jsonl", b"{broken\n")
    assert warehouse.load_event_partitions(s, bucket, [day3]).rows_loaded == 5
    bucket.write_bytes(f"events/dt={day3}/x.jsonl.gz", encode_jsonl([_event(40)]))
    report = warehouse.load_event_partitions(s, bucket, [day3])
    assert (report.rows_loaded, report.rows_quarantined) == (1, 1)
    events = _raw(s, "events")
    assert events.event_id[events.dt == day3].tolist() == ["e40"]
    pd.testing.assert_frame_equal(
        events[events.dt != day3].reset_index(drop=True), before["events"], obj="other days"
    )
    from google.cloud import storage

    gcs = storage.Client().bucket("wh-landing")
    for key in ("x.jsonl.gz", "y.jsonl"):
        gcs.blob(f"events/dt={day3}/{key}").delete()
    assert warehouse.load_event_partitions(s, bucket, [day3]).files == 0
    for name, frame in before.items():
        pd.testing.assert_frame_equal(_raw(s, name), frame, obj=f"{name} after clearing")
    with pytest.raises(ValueError):
        warehouse.load_event_partitions(s, bucket, ["2026-01-01'; DROP TABLE x; --"])


def test_read_table_rejects_injection(gcp):
    s, *_ = gcp
    with pytest.raises(ValueError):
        warehouse.read_table(s, "raw.events`; DROP TABLE raw.events")
