"""The sensors: the landing sensor, the automation-condition sensor and the raw freshness one.

The landing sensor: new files in the landing bucket -> runs of the raw loaders.

Each tick lists ``events/``, ``posts/``, ``users/`` and ``categories/`` through the ``landing``
resource (GCS in the gcp profile, a directory in the local one) and requests

* for events: one run of ``raw_events`` per affected ``dt=`` partition (``partition_key`` =
  the day of ``events/dt=YYYY-MM-DD/...``), whatever the age of the folder: a file landing
  late into an old day reloads that day;
* for posts, users, categories: one run of ``raw_posts`` / ``raw_users`` / ``raw_categories``
  (full reloads) when any of their files is new.

Event files whose ``dt`` is not a partition (before the partitions' start,
SOCIALREC_EVENT_START_DATE; further ahead than SOCIALREC_EVENT_MAX_FUTURE_HOURS allows, in whole
days past today; malformed; no ``dt=`` folder) cannot be
requested (Dagster has no such partition): logged as a warning, counted in the cursor
(``invalid_total``) and, durably, by the ``raw_events_landing_window`` asset check, which lists
them on every raw_events materialization. Lines whose ``ts`` is outside the accepted event
window in a folder that *is* a partition are quarantined by the loader. A file of a day just past the partitions' end (a producer in a timezone
ahead) waits in the cursor's ``pending`` list until that day is a partition.

Cursor: exact and durable, it is the sensor's whole state (a restart of the daemon loses
nothing): a watermark of ``updated``, the versions ``(key, updated)`` already processed within
``settings.landing_sensor_lag_seconds`` below it, and the pending files; see
``socialrec.data.landing_cursor`` and docs/contracts.md ("Landing sensor cursor"). A re-upload of a
key is a new version and reloads its partition or dataset again. At most
``MAX_KEYS_PER_TICK`` files are processed per tick; the rest on the next ones.

``run_key`` = asset, partition and a digest of the file versions behind the request, so a
request evaluated twice (a tick retried from an older cursor) is dropped by Dagster. The
cursor moves on once a run is requested: a failed run is retried or backfilled, not
requested again by the sensor.

Default status: RUNNING in the gcp profile, STOPPED in the local one (``make demo``
materializes directly). Turn it on in the UI (Automation -> landing_sensor -> Start) or with
``dagster sensor start landing_sensor -w workspace.yaml`` while ``dagster dev`` runs.
"""

from __future__ import annotations

import hashlib

import dagster as dg

from assets.raw import EVENT_PARTITIONS, raw_events_freshness_checks
from assets.resources import LandingResource
from socialrec.data.landing import BlobInfo, list_datasets
from socialrec.data.landing_cursor import (
    MAX_KEYS_PER_TICK,
    LandingCursor,
    days_ahead,
    plan_tick,
    to_us,
)

RAW_EVENTS = dg.AssetKey("raw_events")
RAW_DIMENSIONS = {d: dg.AssetKey(f"raw_{d}") for d in ("posts", "users", "categories")}
MAX_LOGGED_KEYS = 20


def run_key(asset: dg.AssetKey, partition: str | None, blobs: list[BlobInfo]) -> str:
    """Deterministic: the same file versions give the same key (Dagster drops the repeat)."""
    versions = "\n".join(sorted(f"{b.key}@{to_us(b.updated)}" for b in blobs))
    digest = hashlib.sha256(versions.encode()).hexdigest()[:20]
    return ":".join(p for p in (asset.to_user_string(), partition, digest) if p)


def _evaluate(context: dg.SensorEvaluationContext, landing: LandingResource) -> dg.SensorResult:
    settings = landing.settings.get()
    bucket = landing.get()
    blobs = list_datasets(bucket)
    plan = plan_tick(
        blobs,
        LandingCursor.from_json(context.cursor),
        lag_seconds=settings.landing_sensor_lag_seconds,
        first_partition=EVENT_PARTITIONS.get_first_partition_key(),
        last_partition=EVENT_PARTITIONS.get_last_partition_key(),
        max_keys=MAX_KEYS_PER_TICK,
        max_days_ahead=days_ahead(settings.event_max_future_hours),
    )
    requests = [
        dg.RunRequest(
            run_key=run_key(RAW_EVENTS, day, files),
            asset_selection=[RAW_EVENTS],
            partition_key=day,
            tags={"socialrec/landing_files": str(len(files))},
        )
        for day, files in sorted(plan.events.items())
    ] + [
        dg.RunRequest(
            run_key=run_key(RAW_DIMENSIONS[dataset], None, files),
            asset_selection=[RAW_DIMENSIONS[dataset]],
            tags={"socialrec/landing_files": str(len(files))},
        )
        for dataset, files in sorted(plan.dimensions.items())
        if dataset in RAW_DIMENSIONS
    ]
    if plan.invalid:
        shown = ", ".join(b.key for b in plan.invalid[:MAX_LOGGED_KEYS])
        context.log.warning(
            f"landing_sensor: {len(plan.invalid)} event file(s) not in a valid dt partition "
            f"(first {EVENT_PARTITIONS.get_first_partition_key()}), not requested, counted by "
            "the raw_events_landing_window check "
            f"({plan.cursor.invalid_total} in total): {shown}"
        )
    if plan.deferred:
        context.log.info(
            f"landing_sensor: {len(plan.deferred)} event file(s) of a day that is not a "
            "partition yet, requested once it is"
        )
    if plan.remaining:
        context.log.info(f"landing_sensor: {plan.remaining} new file(s) left for the next tick")
    if plan.seen_overflow:
        context.log.warning("landing_sensor: more tied versions than the cursor bound holds")
    context.log.info(
        f"landing_sensor: {plan.n_processed} new file version(s) of {len(blobs)} listed, "
        f"{len(requests)} run request(s), {len(plan.invalid)} invalid"
    )
    return dg.SensorResult(
        run_requests=requests,
        cursor=plan.cursor.to_json(),
        skip_reason=None
        if requests
        else f"no new landing files ({len(plan.invalid)} invalid, {len(plan.deferred)} deferred)",
    )


def build_landing_sensor(running: bool = False) -> dg.SensorDefinition:
    """The landing sensor; ``running``: its default status (True in the gcp profile)."""

    @dg.sensor(
        name="landing_sensor",
        target=[RAW_EVENTS, *RAW_DIMENSIONS.values()],
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
        description="New files in the landing bucket -> raw_events runs per dt partition and "
        "raw_posts/raw_users/raw_categories reloads (exact JSON cursor, see docs/contracts.md).",
    )
    def landing_sensor(
        context: dg.SensorEvaluationContext, landing: LandingResource
    ) -> dg.SensorResult:
        return _evaluate(context, landing)

    return landing_sensor


landing_sensor = build_landing_sensor()


def build_sensors(landing_running: bool = False) -> list[dg.SensorDefinition]:
    """Every sensor of the project; ``landing_running``: the landing sensor's default status."""
    return [
        dg.AutomationConditionSensorDefinition(
            "automation_condition_sensor",
            target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING,
        ),
        build_landing_sensor(running=landing_running),
        dg.build_sensor_for_freshness_checks(
            freshness_checks=raw_events_freshness_checks,
            name="freshness_checks_sensor",
            default_status=dg.DefaultSensorStatus.RUNNING,
        ),
    ]
