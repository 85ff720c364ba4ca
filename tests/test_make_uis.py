"""``make mlflow-ui`` and ``make dagster-ui`` as a new user runs them (issue 14): through the
Makefile (its uv, never the dev packages), on 127.0.0.1, over the settings' stores in the data
directory. Each server is started here, asked over HTTP, and stopped (its whole process group)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def make_target(target: str, env: dict, log: Path):
    """``make <target>`` in its own session; stopped with everything it started."""
    from orchestration.processes import stop_tree

    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["make", "--no-print-directory", target],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop_tree(proc, signal.SIGTERM, timeout=30)


def wait_for(url: str, proc, log: Path, timeout: float = 420) -> httpx.Response:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            r = httpx.get(url, timeout=10)
            if r.status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer:\n{log.read_text()[-3000:]}")


def ui_env(tmp_path, **extra) -> dict:
    import os

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOCIALREC_", "DAGSTER_"))}
    env.pop("MAKEFLAGS", None)
    return {**env, "SOCIALREC_DATA_DIR": str(data), **extra}


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_make_mlflow_ui_serves_the_settings_tracking_store(tmp_path):
    port = free_port()
    log = tmp_path / "mlflow-ui.log"
    with make_target("mlflow-ui", ui_env(tmp_path, MLFLOW_PORT=str(port)), log) as proc:
        wait_for(f"http://127.0.0.1:{port}/health", proc, log)
        r = httpx.post(
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
            json={"max_results": 5},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["experiments"], r.text
    text = log.read_text()
    db = tmp_path / "data" / "mlflow" / "mlflow.db"
    assert f"sqlite:///{db}" in text and db.exists()  # the store of the settings' data dir
    assert f"http://127.0.0.1:{port}" in text
    with pytest.raises(httpx.HTTPError):  # stopped
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_make_dagster_ui_serves_the_workspace_over_dagster_home(tmp_path):
    port = free_port()
    log = tmp_path / "dagster-ui.log"
    home = tmp_path / "data" / "dagster"
    with make_target("dagster-ui", ui_env(tmp_path, DAGSTER_PORT=str(port)), log) as proc:
        wait_for(f"http://127.0.0.1:{port}/server_info", proc, log)
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
        deadline, entries = time.time() + 420, []
        while time.time() < deadline:  # the code location loads after the server answers
            r = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30)
            entries = r.json()["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                break
            time.sleep(2)
        assert [e["name"] for e in entries] == ["orchestration.definitions:defs"], entries
    assert home.is_dir() and (home / "history").exists()  # the instance lives in DAGSTER_HOME
    assert f"DAGSTER_HOME={home}" in log.read_text()
