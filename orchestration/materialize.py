"""Materialize the whole asset graph once (``make materialize``; the first half of ``make demo``).

Runs the ``materialize_all`` job in this process against the Dagster instance in
``DAGSTER_HOME``, so the runs, materializations and asset checks appear in the Dagster UI
afterwards. The daily event partitions present in the landing bucket, within the partitions
(SOCIALREC_EVENT_START_DATE .. tomorrow), are loaded in one run (the raw_events asset has a
single-run backfill policy); folders outside are left out and counted.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TextIO

import dagster as dg

from assets.raw import EVENT_PARTITIONS, partition_range_tags
from orchestration.console import output_to_log
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


STEP_STATUS = {"STEP_SUCCESS": "ok", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}


class Progress:
    """Listens to a run's events (the event log the Dagster UI shows): a compact line per
    finished step (status, time, its checks) while the run goes, and a summary of every asset
    and check with its status and time at the end."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout
        self.t0 = time.time()
        self.started: dict[str, float] = {}
        self.steps: dict[str, tuple[str, float]] = {}  # step -> (status, seconds)
        self.assets: dict[str, str] = {}  # asset -> the step that materialized it
        self.checks: list[tuple[str, str, str, str]] = []  # (asset, check, status, step)

    def __call__(self, entry) -> None:
        event = entry.dagster_event
        if event is None:
            return
        kind, step = event.event_type_value, event.step_key
        if kind == "STEP_START":
            self.started[step] = entry.timestamp
        elif kind == "ASSET_MATERIALIZATION":
            self.assets.setdefault(event.asset_key.to_user_string(), step)
        elif kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            status = "passed" if data.passed else data.severity.value  # WARN or ERROR
            self.checks.append((data.asset_key.to_user_string(), data.check_name, status, step))
        elif kind in STEP_STATUS:
            seconds = entry.timestamp - self.started.get(step, entry.timestamp)
            self.steps[step] = (STEP_STATUS[kind], seconds)
            self._line(step)

    def _line(self, step: str) -> None:
        status, seconds = self.steps[step]
        n_assets = sum(st == step for st in self.assets.values())
        checks = [c for c in self.checks if c[3] == step]
        text = f", {n_assets} assets" if n_assets > 1 else ""
        text += _checks_text([(c, st) for _, c, st, _ in checks], 0)
        m, sec = divmod(int(time.time() - self.t0), 60)
        # one write per line: Dagster's own log lines (stderr) never split it in a terminal
        self.out.write(f"[{m:2d}:{sec:02d}] {status:7s} {step} {seconds:.1f}s{text}\n")
        self.out.flush()

    def summary(self, asset_keys: list[str]) -> None:
        """Every asset of the run (materialized or not) with its step's status and time and
        its checks (named when not passed, or when an asset has at most 3); then the total."""
        print("\nmaterialize_all: asset, status, time of its step, checks", file=self.out)
        for asset in sorted(set(asset_keys) | set(self.assets)):
            status, seconds = self.steps.get(self.assets.get(asset, ""), ("not materialized", 0.0))
            checks = [(c, st) for a, c, st, _ in self.checks if a == asset]
            print(f"  {status:7s} {seconds:6.1f}s  {asset}{_checks_text(checks)}", file=self.out)
        total = len(self.checks)
        passed = sum(st == "passed" for _, _, st, _ in self.checks)
        warned = sum(st == "WARN" for _, _, st, _ in self.checks)
        ok = sum(st == "ok" for st, _ in self.steps.values())
        print(
            f"checks: {passed}/{total} passed, {warned} warned, {total - passed - warned} "
            f"failed; steps: {ok}/{len(self.steps)} ok; total {time.time() - self.t0:.0f}s",
            file=self.out,
            flush=True,
        )


def _checks_text(checks: list[tuple[str, str]], named: int = 3) -> str:
    """ ", checks 3/3 passed: a, b, c" or ", checks 40/41 passed; x WARN" ("" for none)."""
    if not checks:
        return ""
    passed = sum(st == "passed" for _, st in checks)
    shown = [f"{c} {st}" for c, st in checks if st != "passed" or len(checks) <= named]
    return f", checks {passed}/{len(checks)} passed" + (": " + ", ".join(shown) if shown else "")


def selected_keys(
    defs: dg.Definitions, selection: str | None, exclude: tuple[str, ...] = ()
) -> list[dg.AssetKey] | None:
    """The asset keys of ``selection`` (comma-separated Dagster selections; none: all) but
    those of ``exclude`` (asset names); None: the whole job."""
    if not selection and not exclude:
        return None
    graph = defs.resolve_asset_graph()
    chosen = (
        {
            key
            for part in selection.split(",")
            for key in dg.AssetSelection.from_string(part.strip()).resolve(graph)
        }
        if selection
        else set(graph.materializable_asset_keys)
    )
    return sorted(chosen - {dg.AssetKey(name) for name in exclude})


def materialize_all(
    defs: dg.Definitions,
    settings: Settings,
    instance: dg.DagsterInstance,
    keys: list[dg.AssetKey] | None = None,
    progress: Progress | None = None,
) -> dg.ExecuteInProcessResult:
    """The ``materialize_all`` job, or only its assets ``keys`` (:func:`selected_keys`);
    ``progress`` hears every event of the run."""
    landed = landed_event_partitions(settings)
    first = EVENT_PARTITIONS.get_first_partition_key()
    last = EVENT_PARTITIONS.get_last_partition_key()
    span = event_partition_range(landed, first, last)
    if span is None:
        hint = (
            f" (the landed days are {landed[0]}..{landed[-1]}: export SOCIALREC_DEMO_START_DATE="
            f"{landed[0]}, or `make clean` for a demo up to today)"
            if landed
            else ": run `make data` first"
        )
        raise SystemExit(
            f"no events of the days {first}..{last} under "
            f"{settings.landing_uri}/{dataset_prefix('events')}{hint}"
        )
    left_out = [d for d in landed if not span[0] <= d <= span[1]]
    if left_out:
        print(
            f"materialize_all: {len(left_out)} landed event folder(s) outside the partitions "
            f"{first}..{last} left out (the raw_events_landing_window check lists them): "
            + ", ".join(left_out[:10])
        )
    job = defs.resolve_job_def("materialize_all")
    run_id = str(uuid.uuid4())
    if progress is not None:
        instance.add_event_listener(run_id, progress)
    result = job.execute_in_process(
        run_id=run_id,
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
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="ASSET",
        help="leave this asset out (repeatable; make demo materializes offline_evaluation "
        "once its servers are up)",
    )
    args = p.parse_args(argv)
    settings = Settings()
    settings.ensure_dirs()
    generating = None
    if args.generate and not landed_event_partitions(settings):
        # the demo data is written by another process while this one loads the definitions
        generator = [sys.executable, "-m", "socialrec.data.generator"]
        generating = subprocess.Popen(generator)
    from orchestration.definitions import defs

    if generating is not None and generating.wait():
        raise SystemExit(f"the demo data generator failed (exit {generating.returncode})")

    t0 = time.time()
    log = Path(settings.data_dir) / "logs" / "materialize.log"
    print(f"materialize_all: a line per finished step here; the run's whole log in {log}")
    keys = selected_keys(defs, args.select, tuple(args.exclude))
    with output_to_log(log) as terminal:
        progress = Progress(terminal)
        with dg.DagsterInstance.get() as instance:
            result = materialize_all(defs, settings, instance, keys, progress)
    every = keys or defs.resolve_asset_graph().materializable_asset_keys
    progress.summary([k.to_user_string() for k in every])
    failed = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    print(
        f"materialize_all: {'success' if result.success else 'FAILED'} in {time.time() - t0:.0f}s"
    )
    for event in failed:
        print(f"  failed step {event.step_key}: {event.event_specific_data.error.message.strip()}")
    if failed:
        print(f"  (the errors in full: {log})")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
