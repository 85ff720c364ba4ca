"""Raw layer: landing files -> the warehouse's ``raw.*`` tables (DuckDB locally, BigQuery in the
gcp profile: the ``warehouse`` resource; thin wrappers of socialrec.data.warehouse).

``raw_events`` is partitioned by landing day (``events/dt=YYYY-MM-DD/``) and loads a whole
partition range in one run; the dimensions are small and fully reloaded. No automation
condition: the landing sensor (or a person) requests them when files land.

Checks: ``raw_events_quarantine_rate`` warns when the share of quarantined event lines exceeds
``settings.quarantine_warn_rate``; a time-partition freshness check warns when yesterday's
partition has not been loaded by 06:00 UTC (the freshness policy cannot see partitions);
``raw_events_landing_window`` warns when event files land where no partition loads them (their
``dt=`` day before SOCIALREC_EVENT_START_DATE or beyond the sensor's two days ahead). The lines
of loaded partitions outside the accepted event window are quarantined by the loader.
"""

import dagster as dg

from assets.common import RAW_FRESHNESS
from assets.resources import LandingResource, SettingsResource, WarehouseResource
from socialrec.data.landing import dataset_prefix
from socialrec.data.landing_cursor import days_ahead, outside_partitions
from socialrec.data.warehouse import LoadReport, backend_of
from socialrec.settings import Settings

# the asset kind of the raw tables: duckdb (local profile) or bigquery (gcp)
WAREHOUSE_KIND = backend_of(Settings())
# the first day comes from settings.first_event_day (SOCIALREC_EVENT_START_DATE, default the demo's)
EVENT_PARTITIONS = dg.DailyPartitionsDefinition(start_date=Settings().first_event_day, end_offset=1)
MAX_LISTED_KEYS = 20
# The run tags of one run over a range of partitions (what a single-run backfill sets): Dagster
# documents the tag names but exports no public constant for them.
PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """The tags that make one run of ``raw_events`` load the partitions ``first..last``."""
    return {PARTITION_RANGE_START_TAG: first, PARTITION_RANGE_END_TAG: last}


def _result(report: LoadReport) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=report.metadata())


@dg.asset(
    partitions_def=EVENT_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="raw",
    freshness_policy=RAW_FRESHNESS,
    kinds={WAREHOUSE_KIND},
    description="Interaction events of the landed dt partitions in raw.events; malformed "
    "lines go to raw.quarantine. Reloading a partition replaces it (idempotent).",
)
def raw_events(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource
) -> dg.MaterializeResult:
    with warehouse.open() as wh:
        report = wh.load_event_partitions(landing.get(), list(context.partition_keys))
    context.log.info(
        f"raw_events {report.partitions[0]}..{report.partitions[-1]}: {report.rows_loaded} rows, "
        f"{report.rows_quarantined} quarantined, {report.files} files"
    )
    return _result(report)


def _dimension_asset(dataset: str, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"raw_{dataset}",
        group_name="raw",
        freshness_policy=RAW_FRESHNESS,
        kinds={WAREHOUSE_KIND},
        description=description,
    )
    def _load(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource
    ) -> dg.MaterializeResult:
        with warehouse.open() as wh:
            report = wh.load_dimension(landing.get(), dataset)
        context.log.info(
            f"raw_{dataset}: {report.rows_loaded} rows, {report.rows_quarantined} quarantined, "
            f"{report.files} files"
        )
        return _result(report)

    return _load


raw_posts = _dimension_asset("posts", "All landed posts in raw.posts (full reload).")
raw_users = _dimension_asset(
    "users", "All landed user profiles in raw.users (full reload; categories as '3,7')."
)
raw_categories = _dimension_asset("categories", "The category catalogue in raw.categories.")


@dg.asset_check(
    asset=raw_events,
    description="Share of quarantined event lines (all partitions) is at most "
    "SOCIALREC_QUARANTINE_WARN_RATE; the reasons are in raw.quarantine.",
)
def raw_events_quarantine_rate(
    settings: SettingsResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    s = settings.get()
    with warehouse.open() as wh:
        stats = wh.quarantine_rate("events")
    return dg.AssetCheckResult(
        passed=stats["rate"] <= s.quarantine_warn_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={**stats, "warn_rate": s.quarantine_warn_rate},
    )


@dg.asset_check(
    asset=raw_events,
    description="No event file lands outside the partitions (dt= before the first day, further "
    "ahead than SOCIALREC_EVENT_MAX_FUTURE_HOURS allows, malformed, no dt= folder): the landing sensor cannot request such a "
    "file, so it is counted and listed here instead of vanishing.",
)
def raw_events_landing_window(landing: LandingResource) -> dg.AssetCheckResult:
    first = EVENT_PARTITIONS.get_first_partition_key()
    last = EVENT_PARTITIONS.get_last_partition_key()
    ahead = days_ahead(landing.settings.get().event_max_future_hours)  # the sensor's tolerance
    listed = landing.get().list(dataset_prefix("events"))
    outside = outside_partitions(listed, first, last, ahead)
    folders = sorted({b.key.rsplit("/", 1)[0] for b in outside})
    return dg.AssetCheckResult(
        passed=not outside,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "files": len(outside),
            "bytes": sum(b.size for b in outside),
            "folders": len(folders),
            "first_folders": ", ".join(folders[:MAX_LISTED_KEYS]),
            "partitions": f"{first}..{last}",
        },
    )


raw_events_freshness_checks = dg.build_time_partition_freshness_checks(
    assets=[raw_events], deadline_cron="0 6 * * *", timezone="UTC"
)
