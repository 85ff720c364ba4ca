"""The landing sensor: the framework-free cursor (socialrec.data.landing_cursor) on synthetic listings,
then the Dagster sensor, evaluated through the Definitions (so the ``landing`` resource wiring
is tested too) against gcp-storage-emulator on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import random

import dagster as dg
import pytest

from socialrec.data.landing import BlobInfo, GCSLandingBucket, LocalLandingBucket, encode_jsonl
from socialrec.data.landing_cursor import LandingCursor, plan_tick, to_us
from tests.conftest import emulator_client

T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
LAG = 600
FIRST, LAST = "2026-01-01", "2026-01-10"


def blob(key: str, seconds: float) -> BlobInfo:
    return BlobInfo(key, 10, T0 + dt.timedelta(seconds=seconds))


def tick(blobs, cursor: LandingCursor | None = None, **kw):
    """One tick, the cursor going through its JSON string like the daemon's."""
    cursor = LandingCursor.from_json((cursor or LandingCursor()).to_json())
    kw = {"lag_seconds": LAG, "first_partition": FIRST, "last_partition": LAST, **kw}
    plan = plan_tick(blobs, cursor, **kw)
    return plan, LandingCursor.from_json(plan.cursor.to_json())


def processed(plan) -> set[tuple[str, int]]:
    files = [b for bs in [*plan.events.values(), *plan.dimensions.values()] for b in bs]
    files += plan.invalid + plan.deferred
    keys = [(b.key, to_us(b.updated)) for b in files]
    assert len(keys) == len(set(keys))
    return set(keys)


# --- the cursor core (no Dagster) ----------------------------------------------------------


def test_cursor_json_roundtrip_is_exact_and_bad_cursors_raise():
    c = LandingCursor(
        watermark=to_us(T0) + 1,
        floor=to_us(T0) - 7,
        seen={("events/dt=2026-01-01/a", to_us(T0)), ("posts/b", to_us(T0))},
        pending={("events/dt=2026-01-11/c", to_us(T0) + 1)},
        invalid_total=3,
    )
    assert LandingCursor.from_json(c.to_json()) == c
    assert json.loads(c.to_json())["seen"] == {
        "2026-01-05T12:00:00.000000Z": ["events/dt=2026-01-01/a", "posts/b"]
    }
    assert LandingCursor.from_json(None) == LandingCursor() == LandingCursor.from_json("")
    for bad in ("events/dt=2026-01-01/a", '{"v": 99}', "[]"):
        with pytest.raises(ValueError, match="not a landing sensor cursor"):
            LandingCursor.from_json(bad)


def test_new_files_grouped_by_partition_and_dataset_then_nothing_twice():
    blobs = [
        blob("events/dt=2026-01-01/a.jsonl", 0),
        blob("events/dt=2026-01-01/b.jsonl", 1),
        blob("events/dt=2026-01-02/a.jsonl", 2),
        blob("posts/dt=2026-01-01/p.jsonl", 3),
        blob("users/u.jsonl", 4),
        blob("categories/c.jsonl", 5),
    ]
    plan, cursor = tick(blobs)
    assert {d: [b.key for b in bs] for d, bs in plan.events.items()} == {
        "2026-01-01": ["events/dt=2026-01-01/a.jsonl", "events/dt=2026-01-01/b.jsonl"],
        "2026-01-02": ["events/dt=2026-01-02/a.jsonl"],
    }
    assert sorted(plan.dimensions) == ["categories", "posts", "users"]
    assert cursor.watermark == to_us(T0) + 5_000_000
    assert cursor.floor == cursor.watermark - LAG * 1_000_000
    plan2, cursor2 = tick(blobs, cursor)
    assert processed(plan2) == set() and cursor2 == cursor


def test_equal_update_times_a_tied_file_visible_later_is_new():
    a, b, c = (blob(f"events/dt=2026-01-03/{n}.jsonl", 100) for n in "abc")
    plan, cursor = tick([a, b])
    assert processed(plan) == {(a.key, to_us(a.updated)), (b.key, to_us(b.updated))}
    # c has the very same `updated` as the watermark but was not listed yet
    plan, cursor = tick([a, b, c], cursor)
    assert processed(plan) == {(c.key, to_us(c.updated))}
    plan, _ = tick([a, b, c], cursor)
    assert processed(plan) == set()


def test_late_files_into_an_old_dt_folder_and_the_lag_assumption():
    plan, cursor = tick([blob("events/dt=2026-01-09/x.jsonl", 1000)])
    # a file landing now (fresh `updated`) into an old day: new, its day requested
    late = blob("events/dt=2026-01-01/late.jsonl", 1001)
    plan, cursor = tick([late], cursor)
    assert list(plan.events) == ["2026-01-01"]
    # a file visible out of order, within the lag below the watermark: still new
    within = blob("events/dt=2026-01-02/within.jsonl", 1001 - LAG + 1)
    plan, cursor = tick([within], cursor)
    assert list(plan.events) == ["2026-01-02"]
    # one that turns up more than the lag late is assumed settled (documented assumption)
    beyond = blob("events/dt=2026-01-02/beyond.jsonl", 1001 - LAG - 1)
    plan, cursor = tick([beyond], cursor)
    assert processed(plan) == set()


def test_a_reupload_under_the_same_key_is_a_new_version():
    v1 = blob("posts/p.jsonl", 10)
    plan, cursor = tick([v1])
    assert list(plan.dimensions) == ["posts"]
    plan, cursor = tick([v1], cursor)
    assert processed(plan) == set()
    v2 = blob("posts/p.jsonl", 11)  # same key, same bytes, newer `updated`
    plan, cursor = tick([v2], cursor)
    assert processed(plan) == {("posts/p.jsonl", to_us(v2.updated))}


def test_at_most_max_keys_per_tick_with_ties_at_the_cut():
    # 7 files, four of them tied at the 3-file cut: 3 + 3 + 1, each exactly once, in order
    blobs = [
        blob(f"events/dt=2026-01-04/{i}.jsonl", t) for i, t in enumerate([1, 2, 5, 5, 5, 5, 9])
    ]
    cursor, seen, sizes = None, set(), []
    for _ in range(4):
        plan, cursor = tick(blobs, cursor, max_keys=3)
        got = processed(plan)
        assert not got & seen
        seen |= got
        sizes.append((len(got), plan.remaining))
    assert sizes == [(3, 4), (3, 1), (1, 0), (0, 0)]
    assert seen == {(b.key, to_us(b.updated)) for b in blobs}
    # a leftover older than the watermark (a late burst) is not passed by the floor either
    old = [blob(f"events/dt=2026-01-04/old{i}.jsonl", 9 - LAG + 1 + i) for i in range(4)]
    plan, cursor = tick(blobs + old, cursor, max_keys=2)
    plan2, cursor = tick(blobs + old, cursor, max_keys=2)
    assert processed(plan) | processed(plan2) == {(b.key, to_us(b.updated)) for b in old}


def test_invalid_days_are_skipped_and_counted_and_a_day_ahead_waits():
    blobs = [
        blob("events/dt=2025-12-31/before.jsonl", 1),
        blob("events/dt=2026-13-45/bad.jsonl", 2),
        blob("events/dt=2026-1-2/bad.jsonl", 3),
        blob("events/nodt.jsonl", 4),
        blob("events/sub/dt=2026-01-02/nested.jsonl", 5),
        blob("events/dt=2027-06-01/far.jsonl", 6),
        blob("events/dt=2026-01-11/tomorrow.jsonl", 7),
        blob("events/dt=2026-01-10/today.jsonl", 8),
    ]
    plan, cursor = tick(blobs)
    assert list(plan.events) == ["2026-01-10"]
    assert len(plan.invalid) == 6 and cursor.invalid_total == 6
    assert [b.key for b in plan.deferred] == ["events/dt=2026-01-11/tomorrow.jsonl"]
    plan, cursor = tick(blobs, cursor)  # still not a partition: nothing, nothing counted twice
    assert processed(plan) == set() and cursor.invalid_total == 6 and cursor.pending
    plan, cursor = tick(blobs, cursor, last_partition="2026-01-11")
    assert list(plan.events) == ["2026-01-11"] and not cursor.pending
    plan, cursor = tick(blobs, cursor, last_partition="2026-01-11")
    assert processed(plan) == set()


def test_the_cursor_stays_bounded():
    cursor = None
    for i in range(50):  # 50 ticks of 40 files, one a second: seen keeps one lag window
        blobs = [blob(f"users/{i}-{j}.jsonl", i * 40 + j) for j in range(40)]
        plan, cursor = tick(blobs, cursor, lag_seconds=100)
        assert len(processed(plan)) == 40
        assert len(cursor.seen) <= 101
    # max_seen raises the floor early, but never to the watermark (ties there stay caught)
    blobs = [blob(f"users/burst-{j}.jsonl", 5000 + j // 10) for j in range(100)]
    plan, cursor = tick(blobs, cursor, max_seen=25)
    assert len(processed(plan)) == 100 and len(cursor.seen) <= 25 and not plan.seen_overflow
    tied = blob("users/burst-late.jsonl", 5009)
    plan, cursor = tick([*blobs, tied], cursor, max_seen=25)
    assert processed(plan) == {(tied.key, to_us(tied.updated))}
    # ... nor past a leftover of the cap (a late burst below the watermark, 10 per tick)
    recent = [blob(f"users/recent-{j}.jsonl", 1000) for j in range(20)]
    late = [blob(f"users/late-{j}.jsonl", 900 + j) for j in range(40)]
    _, cursor = tick(recent)
    got, overflow = set(), False
    for _ in range(5):
        plan, cursor = tick([*recent, *late], cursor, max_seen=12, max_keys=10)
        got |= processed(plan)
        overflow |= plan.seen_overflow  # 20 tied at the watermark: more than max_seen
    assert got == {(b.key, to_us(b.updated)) for b in late} and overflow


def test_random_arrivals_every_listed_version_exactly_once():
    """Out-of-order visibility (< lag), ties, re-uploads, a small cap, a restart every tick."""
    rng = random.Random(7)
    lag = 30
    versions = []  # (visible_at, BlobInfo)
    for i in range(600):
        updated = rng.randrange(0, 400)  # whole seconds: many ties
        key = rng.choice(
            [f"events/dt=2026-01-0{rng.randint(1, 9)}/{i}.jsonl", f"posts/{i % 40}.jsonl"]
        )
        versions.append((updated + rng.random() * (lag - 1), blob(key, updated)))
    cursor, done, listed_ever, capped = None, [], set(), 0
    for now in range(0, 800, 5):
        current: dict[str, BlobInfo] = {}  # a listing shows the newest visible version of a key
        for visible, b in sorted(versions, key=lambda v: v[0]):
            if visible <= now and (b.key not in current or b.updated >= current[b.key].updated):
                current[b.key] = b
        listed_ever |= {(b.key, to_us(b.updated)) for b in current.values()}
        plan, cursor = tick(list(current.values()), cursor, lag_seconds=lag, max_keys=6)
        capped += plan.remaining > 0
        done += sorted(processed(plan))
    assert len(done) == len(set(done)), "a version was processed twice"
    newest = {}
    for key, us in done:
        newest[key] = max(us, newest.get(key, us))
    # each listed version was processed, or replaced by a newer one before its turn
    skipped = {(k, us) for k, us in listed_ever - set(done) if newest.get(k, -1) <= us}
    assert not skipped, f"listed versions never processed: {sorted(skipped)[:5]}"
    assert set(done) <= listed_ever
    assert capped > 10  # the cap was in play


# --- the Dagster sensor against the GCS emulator ------------------------------------------


@pytest.fixture(scope="module")
def defs(tmp_path_factory):
    from orchestration.definitions import build_definitions

    return build_definitions(str(tmp_path_factory.mktemp("sensor_defs")))


@pytest.fixture
def gcs(gcs_emulator, monkeypatch) -> GCSLandingBucket:
    """The landing bucket on the emulator; the settings point the `landing` resource at it."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("SOCIALREC_LANDING_URI", "gs://landing")
    return GCSLandingBucket("landing", client=emulator_client(gcs_emulator))


def evaluate(defs: dg.Definitions, cursor: str | None = None):
    """A tick as the daemon runs it after a restart: a fresh context, only the cursor string."""
    sensor = defs.resolve_sensor_def("landing_sensor")
    # the resources the code server hands the sensor: the Definitions' own (the ones it names;
    # the nested settings and GCS resources come with the landing resource)
    with dg.build_sensor_context(
        cursor=cursor,
        definitions=defs,
        resources={k: defs.resources[k] for k in sensor.required_resource_keys},
        instance=dg.DagsterInstance.ephemeral(),
        sensor_name=sensor.name,
    ) as context:
        return sensor.evaluate_tick(context)


def requested(data) -> dict[str, str | None]:
    """{run_key: partition} of a tick, checking each request targets one raw asset."""
    out = {}
    for r in data.run_requests:
        (asset,) = r.asset_selection
        assert asset.to_user_string().startswith("raw_")
        assert r.run_key.startswith(asset.to_user_string())
        out[r.run_key] = (asset.to_user_string(), r.partition_key)
    assert len(out) == len(data.run_requests)
    return out


def put(bucket, key: str, rows=({"a": 1},)) -> None:
    bucket.write_bytes(key, encode_jsonl(list(rows)))


def test_landing_resource_gives_the_bucket_of_the_settings(defs, gcs, monkeypatch):
    from google.auth.credentials import AnonymousCredentials

    landing = defs.resources["landing"]
    bucket = landing.get()
    assert isinstance(bucket, GCSLandingBucket) and bucket.uri == "gs://landing"
    assert isinstance(bucket.client._credentials, AnonymousCredentials)  # the emulator's
    put(gcs, "posts/p.jsonl")
    assert [b.key for b in bucket.list("posts/")] == ["posts/p.jsonl"]
    monkeypatch.delenv("SOCIALREC_LANDING_URI")
    assert isinstance(landing.get(), LocalLandingBucket)  # the local profile: a directory
    assert defs.resolve_sensor_def("landing_sensor").default_status == (
        dg.DefaultSensorStatus.STOPPED
    )


def test_new_files_request_their_partitions_and_datasets(defs, gcs):
    assert evaluate(defs).skip_message  # an empty bucket
    put(gcs, "events/dt=2026-01-01/e-0000.jsonl.gz")
    put(gcs, "events/dt=2026-01-01/e-0001.jsonl.gz")
    put(gcs, "events/dt=2026-01-02/e-0000.jsonl.gz")
    put(gcs, "posts/dt=2026-01-01/p-0000.jsonl.gz")
    put(gcs, "users/dt=2026-01-01/u-0000.jsonl.gz")
    put(gcs, "categories/categories.jsonl")
    put(gcs, "elsewhere/ignored.jsonl")
    data = evaluate(defs)
    assert sorted(requested(data).values()) == [
        ("raw_categories", None),
        ("raw_events", "2026-01-01"),
        ("raw_events", "2026-01-02"),
        ("raw_posts", None),
        ("raw_users", None),
    ]
    by_partition = {r.partition_key: r for r in data.run_requests if r.partition_key}
    assert by_partition["2026-01-01"].tags["socialrec/landing_files"] == "2"
    again = evaluate(defs, data.cursor)
    assert not again.run_requests and again.skip_message and again.cursor == data.cursor


def test_late_file_into_an_old_dt_folder_is_requested(defs, gcs):
    put(gcs, "events/dt=2026-01-01/e-0000.jsonl.gz")
    put(gcs, "events/dt=2026-01-05/e-0000.jsonl.gz")
    first = evaluate(defs)
    put(gcs, "events/dt=2026-01-01/e-late.jsonl.gz")
    late = evaluate(defs, first.cursor)
    assert list(requested(late).values()) == [("raw_events", "2026-01-01")]
    assert not set(requested(late)) & set(requested(first))


def test_duplicates_are_dropped_and_reuploads_requested_again(defs, gcs):
    put(gcs, "posts/p.jsonl", [{"post_id": 1}])
    first = evaluate(defs)
    # the same tick evaluated twice (e.g. retried from the old cursor): the same run_key, which
    # Dagster drops as a duplicate; with the new cursor nothing at all
    assert requested(evaluate(defs)) == requested(first)
    assert not evaluate(defs, first.cursor).run_requests
    # the same content uploaded again under the same key: a new version (newer `updated`),
    # requested again under a new run_key (a reload is idempotent; a changed file must reload)
    put(gcs, "posts/p.jsonl", [{"post_id": 1}])
    second = evaluate(defs, first.cursor)
    assert list(requested(second).values()) == [("raw_posts", None)]
    assert set(requested(second)) != set(requested(first))
    assert not evaluate(defs, second.cursor).run_requests


def test_invalid_partitions_are_not_requested_but_logged_and_counted(defs, gcs, capfd):
    put(gcs, "events/dt=2025-12-31/before-start.jsonl")
    put(gcs, "events/dt=2026-02-30/no-such-day.jsonl")
    put(gcs, "events/no-dt-folder.jsonl")
    put(gcs, "events/dt=2026-01-03/ok.jsonl")
    capfd.readouterr()
    data = evaluate(defs)
    log = capfd.readouterr().err  # the sensor's context.log (the dagster logger, on stderr)
    assert list(requested(data).values()) == [("raw_events", "2026-01-03")]
    assert json.loads(data.cursor)["invalid_total"] == 3
    assert "WARNING - landing_sensor: 3 event file(s) not in a valid dt partition" in log
    assert "events/dt=2025-12-31/before-start.jsonl" in log
    again = evaluate(defs, data.cursor)
    assert not again.run_requests and json.loads(again.cursor)["invalid_total"] == 3


def test_restart_with_only_the_cursor_string(defs, gcs):
    for day in ("2026-01-01", "2026-01-02"):
        put(gcs, f"events/dt={day}/e-0000.jsonl.gz")
    put(gcs, "users/u.jsonl")
    first = evaluate(defs)
    assert len(first.run_requests) == 3
    cursor = str(first.cursor)  # all that survives a restart of the daemon
    restarted = evaluate(defs, cursor)
    assert not restarted.run_requests
    put(gcs, "events/dt=2026-01-02/e-0001.jsonl.gz")
    put(gcs, "events/dt=2026-01-03/e-0000.jsonl.gz")
    after = evaluate(defs, cursor)
    assert sorted(requested(after).values()) == [
        ("raw_events", "2026-01-02"),
        ("raw_events", "2026-01-03"),
    ]


# --- folders far outside the partitions (issue 13: they must not vanish) -------------------


def test_far_future_and_far_past_folders_are_outside_counted_and_never_pending():
    from orchestration.materialize import event_partition_range
    from socialrec.data.landing_cursor import outside_partitions

    far = ["0001-01-01", "1970-01-01", "2099-01-01", "9999-12-31"]
    blobs = [blob(f"events/dt={day}/e.jsonl", i) for i, day in enumerate(far)]
    blobs += [blob("events/dt=2026-01-02/ok.jsonl", 9), blob("posts/dt=2099-01-01/p.jsonl", 10)]
    plan, cursor = tick(blobs)
    assert list(plan.events) == ["2026-01-02"] and list(plan.dimensions) == ["posts"]
    assert sorted(b.key for b in plan.invalid) == [f"events/dt={d}/e.jsonl" for d in far]
    assert cursor.invalid_total == 4 and not cursor.pending and not plan.deferred
    outside = outside_partitions(blobs, FIRST, LAST)
    assert sorted(b.key for b in outside) == [f"events/dt={d}/e.jsonl" for d in far]
    # the materialize job's range: the landed days clipped to the partitions, not 0001..2099
    landed = sorted([*far, "2026-01-02", "2026-01-04"])
    assert event_partition_range(landed, FIRST, LAST) == ("2026-01-02", "2026-01-04")
    assert event_partition_range(far, FIRST, LAST) is None


def test_the_landing_window_check_counts_the_files_no_partition_loads(defs, gcs):
    from assets.raw import raw_events_landing_window

    put(gcs, "events/dt=2026-01-03/ok.jsonl")
    passed = raw_events_landing_window(landing=defs.resources["landing"])
    assert passed.passed and passed.metadata["files"].value == 0
    for day in ("0001-01-01", "1970-01-01", "2099-01-01"):
        put(gcs, f"events/dt={day}/e.jsonl")
    data = evaluate(defs)
    assert list(requested(data).values()) == [("raw_events", "2026-01-03")]
    assert json.loads(data.cursor)["invalid_total"] == 3
    result = raw_events_landing_window(landing=defs.resources["landing"])
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["files"].value == 3 and result.metadata["folders"].value == 3
    assert "events/dt=2099-01-01" in result.metadata["first_folders"].value
