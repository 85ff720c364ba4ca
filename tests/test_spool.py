"""The /events write path: a durable local spool (SQLite) flushed to the landing bucket.

Real parts only: LocalLandingBucket, GCSLandingBucket on gcp-storage-emulator, the raw loader of
socialrec.data.warehouse; an outage is a LandingBucket wrapper whose write_bytes raises, a crash is a
spool dropped without close() or a child process that dies with os._exit."""

from __future__ import annotations

import datetime as dt
import gc
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from socialrec.data import warehouse
from socialrec.data.landing import GCSLandingBucket, LocalLandingBucket, iter_lines
from socialrec.serving.spool import EventSpool, open_spool
from socialrec.settings import Settings
from socialrec.timeutil import iso
from tests.conftest import emulator_client

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FlakyBucket:
    """A real bucket behind a switch: while ``down`` every write_bytes raises. ``lose_acks``
    writes first and raises after (the upload succeeded, its acknowledgement was lost);
    ``fail_keys`` fails the writes of keys containing these strings (a partial failure)."""

    def __init__(self, inner):
        self.inner = inner
        self.uri = inner.uri
        self.down = False
        self.lose_ack_keys: set[str] = set()
        self.fail_keys: set[str] = set()
        self.writes: list[str] = []

    def list(self, prefix: str = ""):
        return self.inner.list(prefix)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        if self.down:
            raise ConnectionError("landing bucket unreachable")
        if any(s in key for s in self.fail_keys):
            raise TimeoutError(f"upload of {key} timed out")
        self.inner.write_bytes(key, data)
        self.writes.append(key)
        if any(s in key for s in self.lose_ack_keys):
            self.lose_ack_keys = set()
            raise ConnectionResetError("connection reset after the upload")


def event(i: int, day: int = 1, **overrides) -> dict:
    row = {
        "event_id": f"e{i}",
        "user_id": 1 + i % 7,
        "post_id": 100 + i % 11,
        "event_type": "LIKE" if i % 3 == 0 else "IMPRESSION",
        "ts": f"2026-01-{day:02d}T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "dwell_ms": 1200 if i % 2 else None,
    }
    row.update(overrides)
    return row


def landed(bucket) -> list[dict]:
    """Every event line in the bucket (with its key), in key then line order."""
    out = []
    for blob in bucket.list("events/"):
        for _, text in iter_lines(blob.key, bucket.read_bytes(blob.key)):
            out.append({**json.loads(text), "_key": blob.key})
    return out


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def spools():
    """Opens spools and closes them all after the test; no flusher thread may outlive it."""
    opened: list[EventSpool] = []

    def make(directory, bucket, **kwargs) -> EventSpool:
        spool = EventSpool(directory, bucket, **kwargs)
        opened.append(spool)
        return spool

    yield make
    for spool in opened:
        spool.close(timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("event-spool-")]


@pytest.fixture
def local(tmp_path):
    return LocalLandingBucket(tmp_path / "landing")


# --- flushing by count and by time -----------------------------------------------------------


def test_flush_by_count(tmp_path, local, spools):
    clock = FakeClock()
    spool = spools(tmp_path / "spool", local, flush_events=10, flush_seconds=60, clock=clock)
    assert spool.append([event(i) for i in range(9)]) == 9
    assert not spool.due() and spool.maybe_flush() == 0
    assert spool.stats()["pending"] == 9 and landed(local) == []
    spool.append([event(9)])
    assert spool.due()
    assert spool.maybe_flush() == 10
    rows = landed(local)
    assert sorted(r["event_id"] for r in rows) == sorted(f"e{i}" for i in range(10))
    assert {r["_key"] for r in rows} == {spool.key("2026-01-01", 0)}
    assert spool.stats() | {"oldest_pending_seconds": 0} == {
        "pending": 0,
        "flushed": 10,
        "failures": 0,
        "last_error": None,
        "consecutive_failures": 0,
        "batches": 1,
        "oldest_pending_seconds": 0,
    }


def test_background_flusher_flushes_by_count(tmp_path, local, spools):
    spool = spools(tmp_path / "spool", local, flush_events=20, flush_seconds=3600).start()
    spool.append([event(i) for i in range(19)])
    time.sleep(0.1)
    assert spool.stats()["pending"] == 19  # neither enough nor old enough
    spool.append([event(19)])
    wait_for(lambda: spool.stats()["pending"] == 0)
    assert len(landed(local)) == 20


def test_workers_sharing_a_spool_report_the_same_pending_count(tmp_path, local, spools):
    # the service's workers each open the same directory; /metrics shows one value
    a = spools(tmp_path / "spool", local, flush_events=1000, flush_seconds=3600)
    b = spools(tmp_path / "spool", local, flush_events=1000, flush_seconds=3600)
    a.append([event(i) for i in range(3)])
    assert a.stats()["pending"] == b.stats()["pending"] == 3
    assert a.flush() == 3  # delivered by one worker: both see an empty spool
    assert a.stats()["pending"] == b.stats()["pending"] == 0
    b.append([event(9)])
    assert a.stats()["pending"] == 1


def test_flush_by_time(tmp_path, local, spools):
    clock = FakeClock()
    spool = spools(tmp_path / "spool", local, flush_events=100, flush_seconds=5, clock=clock)
    spool.append([event(1)])
    clock.advance(4.9)
    spool.append([event(2)])  # a later append does not reset the oldest row's age
    assert not spool.due()
    assert spool.stats()["oldest_pending_seconds"] == pytest.approx(4.9)
    clock.advance(0.1)
    assert spool.due() and spool.maybe_flush() == 2
    assert not spool.due() and spool.stats()["oldest_pending_seconds"] == 0


def test_background_flusher_flushes_by_time(tmp_path, local, spools):
    spool = spools(tmp_path / "spool", local, flush_events=1000, flush_seconds=0.2).start()
    t0 = time.monotonic()
    spool.append([event(1), event(2)])
    wait_for(lambda: spool.stats()["pending"] == 0)
    assert time.monotonic() - t0 >= 0.2
    assert [r["event_id"] for r in landed(local)] == ["e1", "e2"]


# --- outages, retries, crashes --------------------------------------------------------------


def test_bucket_down_keeps_everything_then_delivers_exactly_once(tmp_path, local, spools):
    bucket = FlakyBucket(local)
    clock = FakeClock()
    spool = spools(tmp_path / "spool", bucket, flush_events=5, retry_seconds=2, clock=clock)
    bucket.down = True
    spool.append([event(i, day=1 + i % 2) for i in range(12)])
    assert spool.maybe_flush() == 0 and spool.flush() == 0  # raises nothing
    stats = spool.stats()
    assert (stats["pending"], stats["failures"], stats["consecutive_failures"]) == (12, 2, 2)
    assert "ConnectionError: landing bucket unreachable" in stats["last_error"]
    assert landed(local) == []
    assert not spool.due()  # waiting out retry_seconds
    clock.advance(2)
    assert spool.due()

    spool.append([event(i, day=3) for i in range(12, 20)])  # accepted during the outage
    bucket.down = False
    assert spool.maybe_flush() == 20
    rows = landed(local)
    assert sorted(r["event_id"] for r in rows) == sorted(f"e{i}" for i in range(20))
    for r in rows:  # each in the folder of its own day
        assert r["_key"].startswith(f"events/dt={r['ts'][:10]}/")
    stats = spool.stats()
    assert (stats["pending"], stats["flushed"], stats["last_error"]) == (0, 20, None)
    assert stats["failures"] == 2 and stats["consecutive_failures"] == 0
    assert spool.flush() == 0 and len(landed(local)) == 20


def test_background_flusher_retries_until_the_bucket_is_back(tmp_path, local, spools):
    bucket = FlakyBucket(local)
    bucket.down = True
    spool = spools(tmp_path / "spool", bucket, flush_events=1, retry_seconds=0.05).start()
    spool.append([event(i) for i in range(30)])
    wait_for(lambda: spool.stats()["failures"] >= 3)
    assert spool.stats()["pending"] == 30
    bucket.down = False
    wait_for(lambda: spool.stats()["pending"] == 0)
    assert sorted(r["event_id"] for r in landed(local)) == sorted(f"e{i}" for i in range(30))


def test_a_retry_rewrites_the_same_keys(tmp_path, local, spools):
    """Partial failure (day 2 times out after day 1 landed) and a lost acknowledgement: the
    retry writes the same keys with the same bytes; no file and no line is duplicated."""
    bucket = FlakyBucket(local)
    spool = spools(tmp_path / "spool", bucket)
    spool.append([event(i, day=1 + i % 2) for i in range(10)])
    bucket.fail_keys = {"dt=2026-01-02/"}
    assert spool.flush() == 0
    first = {b.key: local.read_bytes(b.key) for b in local.list("events/")}
    assert list(first) == [spool.key("2026-01-01", 0)]

    spool.append([event(i, day=2) for i in range(10, 13)])  # not part of the failed batch
    bucket.fail_keys = set()
    bucket.lose_ack_keys = {"dt=2026-01-02/"}  # the whole batch lands, the last ack is lost
    assert spool.flush() == 0 and spool.stats()["pending"] == 13
    assert spool.flush() == 13
    assert bucket.writes == [
        spool.key("2026-01-01", 0),  # the partial attempt
        spool.key("2026-01-01", 0),  # the attempt whose last acknowledgement was lost
        spool.key("2026-01-02", 0),
        spool.key("2026-01-01", 0),  # the retry: the same keys
        spool.key("2026-01-02", 0),
        spool.key("2026-01-02", 1),  # then the rows appended after the batch was claimed
    ]
    assert local.read_bytes(spool.key("2026-01-01", 0)) == first[spool.key("2026-01-01", 0)]
    ids = [r["event_id"] for r in landed(local)]
    assert sorted(ids) == sorted(f"e{i}" for i in range(13))  # each exactly once


def test_a_dropped_spool_keeps_its_rows_for_the_next_one(tmp_path, local, spools):
    directory = tmp_path / "spool"
    first = EventSpool(directory, local, flush_events=1000, flush_seconds=3600)
    first.append([event(i) for i in range(25)])
    spool_id = first.spool_id
    del first  # no close(): nothing is flushed
    gc.collect()
    assert landed(local) == []

    clock = FakeClock()
    second = spools(directory, local, flush_events=1000, flush_seconds=3600, clock=clock)
    assert second.spool_id == spool_id
    assert second.stats()["pending"] == 25
    assert second.due()  # left-over rows are overdue
    assert second.maybe_flush() == 25
    assert len(landed(local)) == 25


def test_rows_another_spool_left_are_flushed_by_a_running_one(tmp_path, local, spools):
    """A replica sharing the directory appends and dies before its flush: the spool already
    running there sees the rows on its next check and delivers them within flush_seconds."""
    directory = tmp_path / "spool"
    clock = FakeClock()
    running = spools(directory, local, flush_events=1000, flush_seconds=5, clock=clock)
    assert running.maybe_flush() == 0  # nothing yet
    other = EventSpool(directory, local, flush_events=1000, flush_seconds=3600)
    other.append([event(i) for i in range(7)])
    del other  # killed: no close(), no flush
    gc.collect()
    assert running.maybe_flush() == 0  # seen now, not yet flush_seconds old
    assert running.stats()["pending"] == 7
    clock.advance(5)
    assert running.maybe_flush() == 7
    assert len(landed(local)) == 7


CHILD = """
import os, sys
from socialrec.data.landing import LocalLandingBucket
from socialrec.serving.spool import EventSpool

class DiesAfterUpload(LocalLandingBucket):
    def write_bytes(self, key, data):
        super().write_bytes(key, data)
        os._exit(3)  # the upload landed, the spool never learns it

spool_dir, landing, mode = sys.argv[1:]
bucket = DiesAfterUpload(landing) if mode == "die-in-upload" else LocalLandingBucket(landing)
spool = EventSpool(spool_dir, bucket, flush_events=10_000, flush_seconds=3600).start()
for i in range(40):
    ts = f"2026-01-0{1 + i % 2}T08:00:{i:02d}Z"
    spool.append([{"event_id": f"c{i}", "user_id": 1, "post_id": 2, "event_type": "VIEW",
                   "ts": ts}])
if mode == "die-in-upload":
    spool.flush()
os._exit(3)  # a crash: no close(), the flusher thread is killed
"""


@pytest.mark.parametrize("mode", ["die-after-append", "die-in-upload"])
def test_a_crashed_process_loses_nothing(tmp_path, local, spools, mode):
    directory = tmp_path / "spool"
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(directory), local.uri, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 3, child.stderr
    before = [b.key for b in local.list("events/")]
    spool = spools(directory, local)
    assert spool.stats()["pending"] == 40
    if mode == "die-in-upload":
        assert before == [spool.key("2026-01-01", 0)]  # one of the batch's two files landed
    spool.start()
    wait_for(lambda: spool.stats()["pending"] == 0)  # left-over rows are flushed at once
    assert [b.key for b in local.list("events/")] == [
        spool.key("2026-01-01", 0),  # overwritten by the retry, not duplicated
        spool.key("2026-01-02", 0),
    ]
    assert sorted(r["event_id"] for r in landed(local)) == sorted(f"c{i}" for i in range(40))


def test_close_flushes(tmp_path, local):
    spool = EventSpool(tmp_path / "spool", local, flush_events=1000, flush_seconds=3600)
    spool.start()
    spool.append([event(i) for i in range(7)])
    spool.close()
    spool.close()  # idempotent
    assert len(landed(local)) == 7
    assert not [t for t in threading.enumerate() if t.name.startswith("event-spool-")]
    with pytest.raises(RuntimeError):
        spool.append([event(8)])


def test_close_while_the_bucket_is_down_leaves_everything_for_the_next_spool(
    tmp_path, local, spools
):
    bucket = FlakyBucket(local)
    bucket.down = True
    with EventSpool(tmp_path / "spool", bucket, flush_events=3).start() as spool:
        spool.append([event(i) for i in range(9)])
    assert spool.stats()["pending"] == 9 and spool.stats()["failures"] >= 1
    assert landed(local) == []
    bucket.down = False
    reopened = spools(tmp_path / "spool", bucket).start()
    wait_for(lambda: reopened.stats()["pending"] == 0)
    assert sorted(r["event_id"] for r in landed(local)) == sorted(f"e{i}" for i in range(9))


# --- appends --------------------------------------------------------------------------------


def test_append_is_all_or_nothing(tmp_path, local, spools):
    spool = spools(tmp_path / "spool", local)
    for bad in ({"event_id": "", "ts": "2026-01-01T00:00:00Z"}, event(2, ts="yesterday")):
        with pytest.raises(ValueError):
            spool.append([event(1), bad])
    with pytest.raises(ValueError):
        spool.append([event(1, ts=None)])
    assert spool.append([]) == 0
    assert spool.stats()["pending"] == 0


def test_timestamps_are_iso_utc_and_partition_by_utc_day():
    assert iso("2026-01-03T10:11:12Z") == "2026-01-03T10:11:12Z"
    assert iso("2026-01-03T00:30:00+01:00") == "2026-01-02T23:30:00Z"
    assert iso(dt.datetime(2026, 1, 3, 10, 11, 12, 5)) == "2026-01-03T10:11:12.000005Z"
    tz = dt.timezone(dt.timedelta(hours=-5))
    assert iso(dt.datetime(2026, 1, 3, 22, 0, tzinfo=tz)) == "2026-01-04T03:00:00Z"


def test_concurrent_appends_all_land_exactly_once(tmp_path, local, spools):
    spool = spools(tmp_path / "spool", local, flush_events=25, flush_seconds=0.05).start()

    def client(c: int) -> None:
        for b in range(20):
            spool.append([event(1000 * c + 5 * b + k) for k in range(5)])

    threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spool.close()
    ids = [r["event_id"] for r in landed(local)]
    assert len(ids) == len(set(ids)) == 6 * 20 * 5
    assert spool.stats()["flushed"] == 600 and spool.stats()["pending"] == 0


# --- the real GCS client, the real raw loader -------------------------------------------------


def test_gcs_emulator_outage_then_delivery(tmp_path, gcs_emulator, spools):
    """The bucket does not exist yet (a real 404 of the real client): kept; then delivered."""
    client = emulator_client(gcs_emulator)
    bucket = GCSLandingBucket("events-later", client=client)
    spool = spools(tmp_path / "spool", bucket)
    spool.append([event(i, day=1 + i % 3) for i in range(30)])
    assert spool.flush() == 0
    assert "NotFound" in spool.stats()["last_error"]
    client.create_bucket("events-later")
    assert spool.flush() == 30
    keys = [b.key for b in bucket.list("events/")]
    assert keys == [spool.key(f"2026-01-0{d}", 0) for d in (1, 2, 3)]
    assert sorted(r["event_id"] for r in landed(bucket)) == sorted(f"e{i}" for i in range(30))
    assert spool.flush() == 0 and len(landed(bucket)) == 30


def test_landed_files_load_with_the_raw_loader(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    spool = open_spool(settings)  # settings.spool_dir -> settings.landing_uri
    assert spool.directory == settings.spool_dir
    try:
        rows = [event(i, day=1 + i % 2) for i in range(20)]
        rows += [
            event(20, ts=dt.datetime(2026, 1, 2, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
            event(21, ts="2026-01-02T12:00:00.250000+00:00"),
            event(22, ts=dt.datetime(2026, 1, 2, 23, 59, 59)),  # naive: UTC
            event(3),  # a client retry: the same event_id again
        ]
        spool.append(rows[:12])
        spool.append(rows[12:])
        assert spool.flush() == 24
    finally:
        spool.close()
    bucket = spool.bucket
    partitions = sorted({b.partition for b in bucket.list("events/")})
    assert partitions == ["2026-01-01", "2026-01-02"]
    report = warehouse.load_event_partitions(settings, bucket, partitions)
    assert (report.rows_loaded, report.rows_quarantined) == (24, 0)

    raw = warehouse.read_table(settings, "raw.events")
    assert len(raw) == 24 and raw.event_id.nunique() == 23  # stg_events keeps one e3
    by_id = raw.drop_duplicates("event_id").set_index("event_id")
    assert str(by_id.loc["e20", "ts"]) == "2026-01-01 22:30:00"
    assert str(by_id.loc["e20", "dt"])[:10] == "2026-01-01"  # the UTC day of ts
    assert str(by_id.loc["e21", "ts"]) == "2026-01-02 12:00:00.250000"
    assert str(by_id.loc["e22", "ts"]) == "2026-01-02 23:59:59"
    assert by_id.loc["e1", "dwell_ms"] == 1200 and pd.isna(by_id.loc["e2", "dwell_ms"])
    assert (raw.dt.astype(str).str[:10] == raw.ts.astype(str).str[:10]).all()
