"""A replay through the landing sensor and the raw load: a duplicate file (same content, another
name), a late file for an old partition, far-future and far-past folders, a folder a day and two
days ahead, and malformed lines. Every tick is a daemon restart (a fresh context, only the
cursor string, one Dagster instance); the raw load of the requested partitions runs on the real
DuckDB warehouse. No file is requested twice, none is skipped: each is requested once, waits
for its day, or is counted as outside the partitions (the sensor's cursor and the
``raw_events_landing_window`` check); bad lines are quarantined and counted. The figures are
printed and written to ``sensor_replay.json`` in the test's tmp directory."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest

from socialrec.data.landing import LocalLandingBucket, encode_jsonl

OLD = "2026-01-02"  # an old partition (the demo's first days)


@pytest.fixture
def replay(tmp_path, monkeypatch):
    """(definitions, bucket, instance): the local profile on a tmp data dir."""
    from orchestration.definitions import build_definitions

    for name in ("SOCIALREC_PROFILE", "SOCIALREC_LANDING_URI", "SOCIALREC_EVENT_MAX_FUTURE_HOURS"):
        monkeypatch.delenv(name, raising=False)
    defs = build_definitions(str(tmp_path / "data"))
    bucket = defs.resources["landing"].get()
    assert isinstance(bucket, LocalLandingBucket)
    with dg.DagsterInstance.ephemeral() as instance:
        yield defs, bucket, instance


def tick(defs, instance, cursor):
    """A tick after a restart of the daemon: a fresh context, the cursor string only."""
    sensor = defs.resolve_sensor_def("landing_sensor")
    with dg.build_sensor_context(
        cursor=cursor,
        definitions=defs,
        resources={k: defs.resources[k] for k in sensor.required_resource_keys},
        instance=instance,
        sensor_name=sensor.name,
    ) as context:
        return sensor.evaluate_tick(context)


def line(event_id: str, ts: dt.datetime) -> dict:
    iso = ts.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {"event_id": event_id, "user_id": 1, "post_id": 2, "event_type": "VIEW", "ts": iso}


def test_a_replay_requests_every_file_once_and_counts_what_no_partition_loads(replay, tmp_path):
    from assets.raw import raw_events_landing_window
    from assets.sensors import RAW_EVENTS, run_key

    defs, bucket, instance = replay
    now = dt.datetime.now(dt.UTC)
    today = now.date()
    day = {n: (today + dt.timedelta(days=n)).isoformat() for n in (-2, -1, 1, 2)}
    noon = {
        n: dt.datetime.combine(today + dt.timedelta(days=n), dt.time(12), dt.UTC) for n in (-2, -1)
    }
    good = [line(f"a-{i}", noon[-2]) for i in range(5)]
    malformed = [
        b"not json at all",
        b'["an", "array"]',
        json.dumps({**line("bad-ts", noon[-2]), "ts": "yesterday"}).encode(),
        json.dumps({**line("no-user", noon[-2]), "user_id": None}).encode(),
        json.dumps(line("future", now + dt.timedelta(days=3))).encode(),  # past the window
    ]
    body = b"\n".join([json.dumps(r).encode() for r in good] + malformed) + b"\n"
    files: dict[str, bytes] = {
        f"events/dt={day[-2]}/a.jsonl": body,
        f"events/dt={day[-1]}/b.jsonl.gz": encode_jsonl([line("b-0", noon[-1])]),
        "events/dt=1970-01-01/far-past.jsonl.gz": encode_jsonl([line("p-0", noon[-1])]),
        "events/dt=2099-01-01/far-future.jsonl.gz": encode_jsonl([line("f-0", noon[-1])]),
        f"events/dt={day[1]}/ahead.jsonl.gz": encode_jsonl([line("h-0", now)]),  # waits
        f"events/dt={day[2]}/too-far.jsonl.gz": encode_jsonl([line("t-0", now)]),  # > 1 h
    }
    late = {
        f"events/dt={day[-2]}/a-copy.jsonl": body,  # the duplicate: same content, other name
        f"events/dt={OLD}/late.jsonl.gz": encode_jsonl(
            [line("late-0", dt.datetime(2026, 1, 2, 8, tzinfo=dt.UTC))]
        ),
    }

    def put(batch):
        for key, data in batch.items():
            bucket.write_bytes(key, data)

    def expected(keys):
        """{run_key: partition} of the requests for these event files (their versions)."""
        by_day: dict[str, list] = {}
        listed = {b.key: b for b in bucket.list("events/")}
        for key in keys:
            by_day.setdefault(key.split("/")[1][3:], []).append(listed[key])
        return {run_key(RAW_EVENTS, d, blobs): d for d, blobs in by_day.items()}

    put(files)
    first = tick(defs, instance, None)
    got = {r.run_key: r.partition_key for r in first.run_requests}
    assert got == expected([f"events/dt={day[-2]}/a.jsonl", f"events/dt={day[-1]}/b.jsonl.gz"])
    cursor = json.loads(first.cursor)
    assert cursor["invalid_total"] == 3  # far past, far future, two days ahead: counted
    assert [k for k, _ in _pending(first.cursor)] == [f"events/dt={day[1]}/ahead.jsonl.gz"]

    restarted = tick(defs, instance, first.cursor)  # a restart: nothing again
    assert not restarted.run_requests and json.loads(restarted.cursor)["invalid_total"] == 3

    put(late)
    second = tick(defs, instance, restarted.cursor)
    got2 = {r.run_key: r.partition_key for r in second.run_requests}
    assert got2 == expected(list(late))  # the copy reloads its day, the late file its old one
    assert not set(got2) & set(got)
    third = tick(defs, instance, second.cursor)
    assert not third.run_requests and json.loads(third.cursor)["invalid_total"] == 3

    # what the raw_events_landing_window check reports: the files no partition loads
    check = raw_events_landing_window(landing=defs.resources["landing"])
    assert not check.passed and check.metadata["files"].value == 3

    # the raw load of every requested partition, on the real DuckDB warehouse
    requested = sorted({*got.values(), *got2.values()})
    with defs.resources["warehouse"].open() as wh:
        report = wh.load_event_partitions(bucket, requested)
        rows = wh.read_table("raw.events")
        quarantine = wh.read_table("raw.quarantine")
    assert report.files == 4 and requested == sorted([OLD, day[-2], day[-1]])
    assert report.rows_loaded == 2 * len(good) + 2  # both copies; stg_events keeps one each
    assert report.rows_quarantined == 2 * len(malformed)
    assert len(quarantine) == 2 * len(malformed)
    assert sorted(quarantine["line"].tolist()) == sorted(2 * list(range(6, 6 + len(malformed))))
    assert rows["event_id"].nunique() == len(good) + 2
    assert any("future ts" in r for r in quarantine["reason"])

    figures = {
        "files": len(files) + len(late),
        "requested": sum(
            int(r.tags["socialrec/landing_files"])
            for r in [*first.run_requests, *second.run_requests]
        ),
        "runs requested": len(got) + len(got2),
        "partitions loaded": requested,
        "outside the partitions (counted)": json.loads(third.cursor)["invalid_total"],
        "waiting for their day": len(_pending(third.cursor)),
        "ticks (each a restart)": 4,
        "lines loaded": report.rows_loaded,
        "distinct event ids loaded": int(rows["event_id"].nunique()),
        "lines quarantined": report.rows_quarantined,
        "quarantine reasons": dict(report.reasons),
    }
    (tmp_path / "sensor_replay.json").write_text(json.dumps(figures, indent=2, default=str))
    print("sensor replay:", json.dumps(figures, default=str))
    assert (
        figures["requested"]
        + figures["outside the partitions (counted)"]
        + figures["waiting for their day"]
        == figures["files"]
    )  # none skipped, none twice


def _pending(cursor: str) -> list[tuple[str, int]]:
    from socialrec.data.landing_cursor import LandingCursor

    return sorted(LandingCursor.from_json(cursor).pending)


def test_the_tolerance_ahead_comes_from_the_event_window_settings(replay, monkeypatch):
    defs, bucket, instance = replay
    two_days = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=2)).isoformat()
    bucket.write_bytes(f"events/dt={two_days}/e.jsonl.gz", encode_jsonl([{"a": 1}]))
    assert json.loads(tick(defs, instance, None).cursor)["invalid_total"] == 1  # 1 h: outside
    monkeypatch.setenv("SOCIALREC_EVENT_MAX_FUTURE_HOURS", "48")
    data = tick(defs, instance, None)
    assert json.loads(data.cursor)["invalid_total"] == 0 and len(_pending(data.cursor)) == 1
