"""Poison landing lines: every value the warehouse cannot hold is a quarantine row with its
reason, never an exception; a load of a file holding them succeeds (DuckDB); events outside the
accepted time window are quarantined."""

import datetime as dt
import json

import pytest

from socialrec.data import warehouse
from socialrec.data.landing import LocalLandingBucket
from socialrec.data.raw_records import PARSERS, EventWindow, parse_file
from socialrec.settings import Settings

LOADED_AT = dt.datetime(2026, 1, 3, 12, 0)
BIG = 2**63

GOOD = {
    "events": {
        "event_id": "e1",
        "user_id": 1,
        "post_id": 2,
        "event_type": "LIKE",
        "ts": "2026-01-02T10:00:00Z",
        "dwell_ms": 10,
    },
    "posts": {
        "post_id": 1,
        "creator_id": 2,
        "category_id": 3,
        "media_type": "text",
        "description": "hi",
        "created_at": "2026-01-02T10:00:00Z",
    },
    "users": {
        "user_id": 1,
        "created_at": "2026-01-02T10:00:00Z",
        "headline": "h",
        "onboarding_categories": [1, 2],
    },
    "categories": {"category_id": 1, "name": "news"},
}

# (dataset, field, poison value as JSON text, the reason's start)
POISON = [
    ("events", "dwell_ms", str(BIG), "dwell_ms out of range"),
    ("events", "user_id", str(-BIG - 1), "user_id out of range"),
    ("events", "post_id", "1e300", "post_id out of range"),
    ("events", "post_id", '"' + "9" * 30 + '"', "bad post_id"),
    ("events", "post_id", '"' + "9" * 5000 + '"', "bad post_id"),  # int()'s digit limit
    ("events", "dwell_ms", "NaN", "bad dwell_ms"),
    ("events", "dwell_ms", "Infinity", "bad dwell_ms"),
    ("events", "event_id", "-Infinity", "bad event_id"),
    ("events", "event_id", '"\\ud800"', "bad event_id"),  # a lone surrogate
    ("events", "ts", '"0001-01-01T00:00:00+05:00"', "bad ts"),  # OverflowError in astimezone
    ("events", "ts", '"0001-01-01T00:00:00Z"', "ts past retention"),
    ("events", "ts", '"9999-12-31T23:59:59Z"', "future ts"),
    ("events", "ts", '"2099-01-01T00:00:00Z"', "future ts"),
    ("events", "ts", '"1970-01-01T00:00:00Z"', "ts past retention"),
    ("posts", "post_id", str(BIG), "post_id out of range"),
    ("posts", "category_id", str(2**70), "category_id out of range"),
    ("posts", "created_at", '"1600-01-01T00:00:00Z"', "created_at out of range"),
    ("posts", "created_at", '"2300-01-01T00:00:00Z"', "created_at out of range"),
    ("posts", "updated_at", '"0001-01-01T00:00:00Z"', "updated_at out of range"),
    ("posts", "description", '"\\udfff"', "bad description"),
    ("users", "user_id", str(2**64), "user_id out of range"),
    ("users", "onboarding_categories", f"[1, {BIG}]", "onboarding_categories out of range"),
    ("users", "created_at", '"2262-04-12T00:00:00Z"', "created_at out of range"),
    ("categories", "category_id", str(BIG), "category_id out of range"),
    ("categories", "name", "NaN", "bad name"),
]
WINDOW = EventWindow(retention=dt.timedelta(days=30))


def _line(dataset: str, field: str, poison: str) -> str:
    """The good record of ``dataset`` with ``field`` set to the JSON text ``poison``."""
    text = json.dumps({**GOOD[dataset], field: "__POISON__"})
    return text.replace('"__POISON__"', poison)


def _write(bucket: LocalLandingBucket, key: str, lines: list[str]) -> None:
    bucket.write_bytes(key, ("\n".join(lines) + "\n").encode())


@pytest.mark.parametrize(("dataset", "field", "poison", "reason"), POISON)
def test_each_poison_value_is_quarantined_not_raised(tmp_path, dataset, field, poison, reason):
    bucket = LocalLandingBucket(tmp_path)
    good = json.dumps(GOOD[dataset])
    _write(bucket, f"{dataset}/f.jsonl", [good, _line(dataset, field, poison), good])
    rows, bad = parse_file(
        bucket, f"{dataset}/f.jsonl", dataset, PARSERS[dataset], LOADED_AT, WINDOW
    )
    assert rows.num_rows == 2
    assert bad.column("line").to_pylist() == [2]
    (got,) = bad.column("reason").to_pylist()
    assert got.startswith(reason), got
    assert len(got) < 200  # a huge value is cut short in the reason


def test_without_a_window_event_times_are_still_bounded():
    w = EventWindow()
    assert w.reason(dt.datetime(1, 1, 1), LOADED_AT, "x").startswith("ts out of range")
    assert w.reason(dt.datetime(1970, 1, 1), LOADED_AT, "x") is None  # an old imported log


def test_deeply_nested_json_is_quarantined(tmp_path):
    bucket = LocalLandingBucket(tmp_path)
    _write(bucket, "events/f.jsonl", ["[" * 100_000 + "]" * 100_000])
    rows, bad = parse_file(bucket, "events/f.jsonl", "events", PARSERS["events"], LOADED_AT)
    assert rows.num_rows == 0 and bad.num_rows == 1


def test_the_window_of_the_settings():
    s = Settings(event_max_future_hours=24, event_retention_days=2)
    w = EventWindow.of(s)
    assert w.reason(LOADED_AT + dt.timedelta(hours=23), LOADED_AT, "x") is None
    assert w.reason(LOADED_AT + dt.timedelta(hours=25), LOADED_AT, "x").startswith("future ts")
    assert w.reason(dt.datetime(2026, 1, 1, 11), LOADED_AT, "x").startswith("ts past retention")
    assert w.reason(dt.datetime(2026, 1, 1, 13), LOADED_AT, "x") is None
    s = Settings(demo_start_date="2026-01-01", event_start_date="2026-01-02")
    assert s.first_event_day == "2026-01-02"
    assert Settings(demo_start_date="2026-01-05").first_event_day == "2026-01-05"
    assert EventWindow.of(s).retention is None  # 0: no bound but the warehouse's range
    with pytest.raises(ValueError):
        _ = Settings(event_start_date="2026-1-2").first_event_day


def test_a_load_of_files_with_poison_lines_succeeds_with_them_quarantined(tmp_path):
    settings = Settings(data_dir=tmp_path, event_retention_days=3650)  # 1970 is past it
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    for dataset in GOOD:
        lines = [json.dumps(GOOD[dataset])]
        lines += [_line(d, f, p) for d, f, p, _ in POISON if d == dataset]
        key = (
            f"{dataset}/dt=2026-01-02/f.jsonl" if dataset != "categories" else f"{dataset}/c.jsonl"
        )
        _write(bucket, key, lines)
    report = warehouse.load_event_partitions(settings, bucket, ["2026-01-02"])
    n_events = sum(d == "events" for d, *_ in POISON)
    assert (report.rows_loaded, report.rows_quarantined) == (1, n_events)
    for dataset in ("posts", "users", "categories"):
        report = warehouse.load_dimension(settings, bucket, dataset)
        assert report.rows_loaded == 1
        assert report.rows_quarantined == sum(d == dataset for d, *_ in POISON)
    q = warehouse.read_table(settings, "raw.quarantine")
    assert len(q) == len(POISON)
    assert q.reason.str.contains("out of range").sum() >= 10
    assert len(warehouse.read_table(settings, "raw.events")) == 1
