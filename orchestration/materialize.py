"""Materialize the whole asset graph once (``make materialize``; the first half of ``make demo``).

Runs the ``materialize_all`` job in this process against the Dagster instance in
``DAGSTER_HOME``, so the runs, materializations and asset checks appear in the Dagster UI
afterwards. The daily event partitions present in the landing bucket, within the partitions
(SOCIALREC_EVENT_START_DATE .. tomorrow), are loaded in one run (the raw_events asset has a
single-run backfill policy); folders outside are left out and counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dagster as dg

from assets.raw import EVENT_PARTITIONS, partition_range_tags
from socialrec.data.generator import main as generate_main
from socialrec.data.landing import dataset_prefix, landed_partitions, open_bucket
from socialrec.settings import Settings

WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"  # what the Dagster UI loads


def landed_event_partitions(settings: Settings) -> list[str]:
    return landed_partitions(open_bucket(str(settings.landing_uri)), "events")


def event_partition_range(landed: list[str], first: str, last: str) -> tuple[str, str] | None:
    """The range of ``raw_events`` partitions to load: the landed days clipped to the
    partitions ``first..last`` (``first``: SOCIALREC_EVENT_START_DATE; ``last``: tomorrow), so
    a folder dated year 1 or 2099 never stretches it (the raw_events_landing_window check
    counts such folders); None when no landed day is a partition."""
    days = [d for d in landed if first <= d <= last]
    return (days[0], days[-1]) if days else None


def materialize_all(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    selection: str | None = None,
) -> dg.ExecuteInProcessResult:
    """The ``materialize_all`` job, or only the assets of ``selection`` (comma-separated
    Dagster asset selections, e.g. ``"ranker_model+"``: an asset and everything downstream)."""
    landed = landed_event_partitions(settings)
    first = EVENT_PARTITIONS.get_first_partition_key()
    last = EVENT_PARTITIONS.get_last_partition_key()
    span = event_partition_range(landed, first, last)
    if span is None:
        raise SystemExit(
            f"no events of the days {first}..{last} under "
            f"{settings.landing_uri}/{dataset_prefix('events')}: run `make data` first"
        )
    left_out = [d for d in landed if not span[0] <= d <= span[1]]
    if left_out:
        print(
            f"materialize_all: {len(left_out)} landed event folder(s) outside the partitions "
            f"{first}..{last} left out (the raw_events_landing_window check lists them): "
            + ", ".join(left_out[:10])
        )
    job = defs.resolve_job_def("materialize_all")
    keys = None
    if selection:
        graph = defs.resolve_asset_graph()
        keys = sorted(
            {
                key
                for part in selection.split(",")
                for key in dg.AssetSelection.from_string(part.strip()).resolve(graph)
            }
        )
    result = job.execute_in_process(
        instance=instance,
        tags=partition_range_tags(*span),
        raise_on_error=False,
        asset_selection=keys,
    )
    return with_workspace_origin(instance, result, defs.get_repository_def().name)


def with_workspace_origin(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, repository: str
) -> dg.ExecuteInProcessResult:
    """Give the run the origin of its job in the workspace the UI loads (``workspace.yaml``:
    ``make demo``'s ``dagster dev``). A run executed in process has no remote origin, and the
    UI leaves such runs out of the Overview's timeline and of its code location's runs, so the
    demo's first run looked like "No runs". Written with the run storage's own run-history
    migration (what ``dagster run migrate-repository`` does): origin and repository tag."""
    from dagster._core.remote_origin import RemoteRepositoryOrigin
    from dagster._core.workspace.load import location_origins_from_yaml_paths

    run = instance.get_run_by_id(result.run_id)
    locations = location_origins_from_yaml_paths([str(WORKSPACE)])
    if run is not None and len(locations) == 1:
        origin = RemoteRepositoryOrigin(locations[0], repository).get_job_origin(run.job_name)
        instance.run_storage.replace_job_origin(run, origin)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--generate", action="store_true", help="write the demo data first if the bucket is empty"
    )
    p.add_argument(
        "--select",
        help='only these assets (comma-separated Dagster selections, e.g. "ranker_model+" for an '
        "asset and everything downstream), against the state the last run left",
    )
    args = p.parse_args(argv)
    settings = Settings()
    settings.ensure_dirs()
    if args.generate and not landed_event_partitions(settings):
        generate_main([])
    from orchestration.definitions import defs

    t0 = time.time()
    with dg.DagsterInstance.get() as instance:
        result = materialize_all(defs, settings, instance, args.select)
    failed = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    print(
        f"materialize_all: {'success' if result.success else 'FAILED'} in {time.time() - t0:.0f}s"
    )
    for event in failed:
        print(f"  failed step {event.step_key}: {event.event_specific_data.error.message.strip()}")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
