"""`make materialize`'s terminal: a line per finished step while the run goes and a summary of
every asset and check (status, time) with the total, from a real run's event log."""

from __future__ import annotations

import io
import re
import uuid

import dagster as dg

from orchestration.materialize import Progress


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
def numbers():
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(check_name="positive", passed=True)


@dg.asset(deps=[numbers])
def doubled() -> None:
    return None


@dg.asset_check(asset=doubled)
def doubled_is_small() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN)


@dg.asset(deps=[doubled])
def broken() -> None:
    raise RuntimeError("on purpose")


@dg.asset(deps=[broken])
def after_broken() -> None:
    return None


def test_a_line_per_step_then_every_asset_and_check_with_its_status():
    defs = dg.Definitions(
        assets=[numbers, doubled, broken, after_broken],
        asset_checks=[doubled_is_small],
        jobs=[dg.define_asset_job("all", selection=dg.AssetSelection.all())],
    )
    out = io.StringIO()
    progress = Progress(out)
    run_id = str(uuid.uuid4())
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_event_listener(run_id, progress)
        result = defs.resolve_job_def("all").execute_in_process(
            instance=instance, run_id=run_id, raise_on_error=False
        )
    assert not result.success
    live = out.getvalue().splitlines()
    assert any(
        " ok " in line and "numbers" in line and "checks 1/1 passed" in line for line in live
    )
    assert any("FAILED" in line and "broken" in line for line in live)
    progress.summary(["numbers", "doubled", "broken", "after_broken"])
    summary = out.getvalue().split("materialize_all: asset, status")[1].splitlines()[1:]

    def row(asset: str) -> str:
        return next(line for line in summary if re.search(rf"\s{asset}(,|$)", line))

    assert row("numbers").split()[0] == "ok" and "positive passed" in row("numbers")
    assert row("doubled").split()[0] == "ok" and "doubled_is_small WARN" in row("doubled")
    assert row("broken").startswith("  not materialized")
    assert row("after_broken").startswith("  not materialized")
    assert "checks: 1/2 passed, 1 warned, 0 failed; steps: 3/4 ok; total" in summary[-1]
