"""The demo's default dates: its data ends today (UTC, the generator's clock) and the raw_events
partitions start at its first day, so a fresh demo has no missing partition and yesterday's
partition (the freshness check's) is landed. The test session pins SOCIALREC_DEMO_START_DATE
(tests/conftest.py); these tests remove the pin to see the default."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from socialrec.data.generator import main as generate_main
from socialrec.data.landing import landed_partitions, open_bucket
from socialrec.settings import DEMO_RECORD, Settings

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = "from assets.raw import EVENT_PARTITIONS as p; print(','.join(p.get_partition_keys()))"


@pytest.fixture
def unpinned(tmp_path, monkeypatch) -> dict:
    """The environment of a fresh demo in ``tmp_path`` (no start date set anywhere)."""
    for name in ("SOCIALREC_DEMO_START_DATE", "SOCIALREC_EVENT_START_DATE", "SOCIALREC_DEMO_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SOCIALREC_DATA_DIR", str(tmp_path))
    return {k: v for k, v in os.environ.items()}


def test_default_demo_ends_today_and_partitions_start_at_its_first_day(unpinned, tmp_path):
    today = dt.datetime.now(dt.UTC).date()
    default = Settings()
    assert default.demo_start_date is None
    generate_main(["--users", "40", "--posts", "80", "--events", "1500", "--days", "3"])
    days = landed_partitions(open_bucket(str(tmp_path / "landing")), "events")
    # the generator's clock: the last day is today unless midnight passed meanwhile
    assert days[-1] in {today.isoformat(), (today + dt.timedelta(days=1)).isoformat()}
    assert days[0] == (dt.date.fromisoformat(days[-1]) - dt.timedelta(days=3)).isoformat()
    record = json.loads((tmp_path / DEMO_RECORD).read_text())
    assert record["days"] == 3
    assert Settings().first_event_day == days[0]  # the recorded start, not the clock's
    # the Dagster definitions (a fresh process, as `make materialize` and the UI load them):
    # the partitions are exactly the landed days, none missing
    out = subprocess.run(
        [sys.executable, "-c", PARTITIONS],
        cwd=ROOT,
        env=unpinned,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert out.stdout.strip().split(",") == days


def test_a_later_day_keeps_the_recorded_days(unpinned, tmp_path):
    start = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
    (tmp_path / DEMO_RECORD).write_text(json.dumps({"start": "2026-03-04T05:06:07Z", "days": 9}))
    # a re-run of `make demo` on a later day: the landed data keeps its partitions
    assert Settings().demo_start() == start
    assert Settings().first_event_day == "2026-03-04"
    # a new demo (the generator) starts from the clock, not from an old record
    fresh = Settings(demo_days=2).demo_start(recorded=False)
    assert abs(fresh - (dt.datetime.now(dt.UTC) - dt.timedelta(days=2))) < dt.timedelta(minutes=5)


def test_a_set_start_date_wins(unpinned, tmp_path):
    (tmp_path / DEMO_RECORD).write_text(json.dumps({"start": "2026-03-04T05:06:07Z", "days": 9}))
    s = Settings(demo_start_date="2026-01-01")
    assert s.first_event_day == "2026-01-01"
    assert s.demo_start() == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert Settings(event_start_date="2026-02-01").first_event_day == "2026-02-01"


def test_a_gcp_deployment_keeps_its_partitions(unpinned, tmp_path):
    # no shared record across pods, no moving clock: the partitions of a deployment stay put
    s = Settings.model_construct(profile="gcp", demo_start_date=None, data_dir=tmp_path)
    assert s.first_event_day == "2026-01-01"
