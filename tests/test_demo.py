"""``make demo``'s serving half (orchestration/demo.py) on the materialized e2e deployment: the
Dagster UI and the built bento come up, the banner is the last thing printed, the assets left
for after the servers are materialized by a run launched in the Dagster UI, and a SIGINT to the
demo's process alone stops every server it started. Also the terminal filter both halves use
(orchestration/console.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import httpx
import psutil
import pytest

from orchestration.demo import AFTER_SERVERS
from orchestration.materialize import selected_keys
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_the_bento_is_built_from_nothing_left_for_after_the_servers():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    bento = dg.AssetSelection.assets("recommender_bento").upstream().resolve(graph)
    after = {dg.AssetKey(a) for a in AFTER_SERVERS}
    assert after <= graph.materializable_asset_keys
    assert not bento & after
    before = set(selected_keys(defs, None, AFTER_SERVERS))
    assert before | after == graph.materializable_asset_keys and not before & after
    assert selected_keys(defs, "ranker_model+", AFTER_SERVERS) == sorted(
        dg.AssetSelection.from_string("ranker_model+").resolve(graph) - after
    )


def test_the_servers_wait_for_the_run_and_the_bento_for_its_step(tmp_path, monkeypatch):
    """while_running answers as soon as the run is created (run_created) and as soon as its
    recommender_bento step has materialized the bento (bento_built), while the run goes on;
    older runs and bentos do not count, and a run that ends first gives None."""
    from orchestration.demo import bento_built, run_created, while_running

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    bento = dg.AssetKey("recommender_bento")

    @dg.asset(name="recommender_bento")
    def stand_in() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"bento_tag": "socialrec:new"})

    job = dg.Definitions(
        assets=[stand_in], jobs=[dg.define_asset_job("materialize_all")]
    ).resolve_job_def("materialize_all")

    def answer_once_run(found):
        """while_running(run, found) in a thread: still waiting after 1.5 s (nothing older
        counts), answered once the job has run."""
        got: list = []
        waiting = threading.Thread(target=lambda: got.append(while_running(run, found)))
        waiting.start()
        time.sleep(1.5)
        assert waiting.is_alive()
        job.execute_in_process(instance=instance)
        waiting.join(10)
        return got

    with dg.DagsterInstance.get() as instance:
        job.execute_in_process(instance=instance)  # an older run, and an older bento
        time.sleep(1.5)
        run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            assert answer_once_run(run_created(time.time())) == [True]
            time.sleep(1.5)
            assert answer_once_run(bento_built(time.time())) == ["socialrec:new"]
            assert run.poll() is None  # both answered while the run went on
        finally:
            run.kill()
            run.wait()
        ended = subprocess.Popen([sys.executable, "-c", "pass"])
        ended.wait()
        assert while_running(ended, bento_built(time.time() + 1)) is None
        assert instance.get_latest_materialization_event(bento) is not None


def test_only_notable_lines_of_a_run_reach_the_terminal(tmp_path):
    """What the block and the processes it starts write goes to the log; the terminal gets the
    warnings, errors and tracebacks, and what is written to it directly."""
    log = tmp_path / "logs" / "run.log"
    code = f"""
import subprocess, sys, warnings
from pathlib import Path
from orchestration.console import output_to_log
with output_to_log(Path({str(log)!r})) as terminal:
    print("a plain line")
    print("2026-12-01 - dagster - WARNING - a warning line", file=sys.stderr)
    subprocess.run(["echo", "a child's line"], check=True)
    subprocess.run([sys.executable, "-c", "import sys; print('Traceback (child)', file=sys.stderr)"])
    warnings.warn("careful")
    terminal.write("[ 0:01] ok      a step\\n")
print("after the block")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    terminal = out.stdout.splitlines()
    assert "a plain line" not in out.stdout and "a child's line" not in out.stdout
    assert "2026-12-01 - dagster - WARNING - a warning line" in terminal
    assert "Traceback (child)" in terminal
    assert any("UserWarning: careful" in line for line in terminal)
    assert "[ 0:01] ok      a step" in terminal and terminal[-1] == "after the block"
    logged = log.read_text()
    for line in ("a plain line", "a child's line", "a warning line", "Traceback (child)"):
        assert line in logged
    assert "a step" not in logged and "after the block" not in logged


def test_a_servers_lines_stop_reaching_the_terminal_once_told(tmp_path):
    """While ``echo`` is set a server's notable lines reach the terminal; once cleared (the
    demo stops the servers) they only go to its log, with every other line."""
    import io

    from orchestration.console import copy_lines

    echo = threading.Event()
    echo.set()

    def lines():
        yield "2026-12-01 - dagster - WARNING - while serving\n"
        yield "a plain line\n"
        echo.clear()
        yield "Traceback (most recent call last):\n"

    terminal, log = io.StringIO(), tmp_path / "server.log"
    copy_lines(lines(), log, terminal, "[dagster] ", echo)
    assert terminal.getvalue() == "[dagster] 2026-12-01 - dagster - WARNING - while serving\n"
    assert log.read_text().splitlines() == [
        "2026-12-01 - dagster - WARNING - while serving", "a plain line",
        "Traceback (most recent call last):",
    ]  # fmt: skip


def test_a_run_still_starting_is_cancelled_once_it_runs(monkeypatch):
    """Dagster refuses to terminate a STARTING run: the demo's stop asks again once it has
    started, then waits for its end."""
    from dagster_graphql import DagsterGraphQLClientError

    from orchestration import demo

    class UI:  # the Dagster UI's GraphQL client, as its answers arrive
        def __init__(self):
            self.statuses = iter(["STARTING", "STARTING", "STARTED", "STARTED", "CANCELED"])
            self.status, self.asked = None, []

        def get_run_status(self, run_id):
            self.status = next(self.statuses)
            return SimpleNamespace(value=self.status)

        def terminate_run(self, run_id):
            self.asked.append(self.status)
            if self.status == "STARTING":
                raise DagsterGraphQLClientError("TerminateRunFailure", "status STARTING")

    monkeypatch.setattr(demo.time, "sleep", lambda s: None)
    ui = UI()
    demo.cancel((ui, "run-1"), timeout_s=60)
    assert ui.asked == ["STARTED"] and ui.status == "CANCELED"


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_demo_serves_launches_the_rest_and_stops_on_sigint(e2e_materialized, tmp_path):
    ports = {"DAGSTER_PORT": str(free_port()), "BENTO_PORT": str(free_port())}
    env = {**e2e_materialized, **ports}
    lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestration.demo", "--then", ",".join(AFTER_SERVERS)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a signal to it reaches no other process
    )
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()

    def wait_line(text: str, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            found = [line for line in list(lines) if text in line]
            if found:
                return found[0]
            time.sleep(1)
        pytest.fail(f"no {text!r} from the demo:\n{''.join(lines)[-4000:]}")

    servers: list[psutil.Process] = []
    try:
        wait_line("Ctrl-C stops both servers.", 300)
        banner = "".join(lines)
        assert "Traceback" not in banner, banner
        assert f"Now running:  {', '.join(AFTER_SERVERS)}" in banner
        bento = f"http://127.0.0.1:{ports['BENTO_PORT']}"
        assert httpx.get(f"{bento}/readyz", timeout=30).status_code == 200
        assert httpx.get(f"{bento}/docs", timeout=30).status_code == 307
        ui = f"http://127.0.0.1:{ports['DAGSTER_PORT']}/server_info"
        assert httpx.get(ui, timeout=30).status_code == 200
        done = wait_line(f"{', '.join(AFTER_SERVERS)}: ", 360)
        assert ": materialized (run " in done, "".join(lines)[-4000:]
        servers = psutil.Process(proc.pid).children(recursive=True)
        assert len(servers) >= 3  # dagster dev (+ its code server), bentoml serve (+ workers)
        os.kill(proc.pid, signal.SIGINT)  # the demo's process only, not its group
        assert proc.wait(timeout=90) == 0, "".join(lines)[-3000:]
        reader.join(timeout=30)
        stopping = next(i for i, line in enumerate(lines) if line.startswith("stopping the"))
        # the servers' shutdown stays in their logs
        assert not [line for line in lines[stopping:] if line.startswith(("[dagster]", "[bento]"))]
    finally:
        if proc.poll() is None:
            from orchestration.processes import stop_tree

            stop_tree(proc, signal.SIGTERM, timeout=30)
    _, alive = psutil.wait_procs(servers, timeout=30)
    assert not alive, [p.pid for p in alive]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        for asset in AFTER_SERVERS:
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None and event.run_id[:8] in done
