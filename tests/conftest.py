"""Shared test set-up: offline, quiet, loopback only; every test's state in a tmp directory."""

from __future__ import annotations

import contextlib
import os
import socket

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
# The tests' events are stamped in January 2026: the demo's default days end today (its first
# day moves with the clock), so the test session pins the first day of the demo data and of the
# raw_events partitions (tests/test_demo_dates.py checks the default without this pin).
PINNED_DEMO_START = "2026-01-01"
os.environ.setdefault("SOCIALREC_DEMO_START_DATE", PINNED_DEMO_START)


# `make test` runs the suite on two pytest-xdist workers with --dist loadgroup. A worker
# builds a session fixture for itself, so every test that needs one of these expensive
# deployments (a materialized graph, the gcp stand-ins) goes to the one worker that builds it;
# every other test goes with its module (module fixtures are built once, as without xdist).
SHARED_DEPLOYMENTS = {"e2e_env": "e2e", "gcp_standins": "gcp"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which turns the marker into the group
def pytest_collection_modifyitems(config, items):
    first = list(SHARED_DEPLOYMENTS.values())
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        groups = [g for fixture, g in SHARED_DEPLOYMENTS.items() if fixture in names]
        group = "+".join(groups) if groups else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
        item.stash[GROUP] = first.index(group) if group in first else len(first)
    # the long groups first (a stable sort: the order within a group stays), so that with
    # --no-loadscope-reorder each worker starts on one of them
    items.sort(key=lambda item: item.stash[GROUP])


GROUP = pytest.StashKey[int]()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def gcs_emulator(port):
    """gcp-storage-emulator on 127.0.0.1 (in memory, bucket ``landing``): its endpoint URL.

    Stopped after the test. Clients: ``emulator_client(endpoint)``, or any
    google.cloud.storage.Client while ``STORAGE_EMULATOR_HOST`` is the endpoint."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="landing")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def emulator_client(endpoint: str):
    """A google-cloud-storage client of the emulator at ``endpoint`` (anonymous)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )


@pytest.fixture(scope="session")
def gcp_standins(tmp_path_factory):
    """Every stand-in of the gcp profile (``orchestration.standins``: GCS, BigQuery, metadata
    server, Redis, Milvus, MLflow) on loopback, started ONCE per session (~15 s, ~15 s to stop):
    the environment that points ``SOCIALREC_PROFILE=gcp`` at them. Apply it per test or module
    (``monkeypatch.setenv`` each); stopped at the end of the session."""
    from orchestration.standins import StandIns

    with StandIns(tmp_path_factory.mktemp("standins")) as env:
        yield env


# --- the end-to-end deployment, shared by tests/test_e2e.py and tests/service/test_http.py --
# Materialized ONCE per session (~100 s): a tiny graph through the real job, then the BUILT
# bento served on loopback. Every fixture below is session-scoped so that no module builds it
# again; the server is stopped at the end of the session.
E2E_TINY = {
    "SOCIALREC_DEMO_USERS": "150",
    "SOCIALREC_DEMO_POSTS": "300",
    "SOCIALREC_DEMO_EVENTS": "8000",
    "SOCIALREC_DEMO_DAYS": "6",
    "SOCIALREC_DEMO_START_DATE": PINNED_DEMO_START,  # the tests' events are in January 2026
    "SOCIALREC_TWO_TOWER_EPOCHS": "3",
    "SOCIALREC_RANKER_ITERATIONS": "60",
    "SOCIALREC_RETRIEVAL_TOP_N": "100",
}


E2E_SPOOL_FLUSH_SECONDS = 0.5  # SOCIALREC_SPOOL_FLUSH_SECONDS of the served bento


def bearer(token: str | None = None) -> dict[str, str]:
    """The Authorization header of the write endpoints (default: the local profile's token)."""
    from socialrec.settings import LOCAL_API_TOKEN

    return {"Authorization": f"Bearer {token or LOCAL_API_TOKEN}"}


def published_post_ids(env: dict) -> set[int]:
    """The posts published through ``POST /posts`` of the served bento (its landing files):
    the service knows them besides the warehouse's, and the session's tests add some."""
    import gzip
    import json
    from pathlib import Path

    landing = Path(env["SOCIALREC_DATA_DIR"]) / "landing" / "posts"
    return {
        json.loads(line)["post_id"]
        for path in landing.glob("dt=*/api-*.jsonl.gz")
        for line in gzip.decompress(path.read_bytes()).decode().splitlines()
        if line.strip()
    }


@pytest.fixture(scope="session")
def e2e_env(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("e2e")
    env = {
        **os.environ,
        **E2E_TINY,
        "SOCIALREC_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(data_dir / "dagster"),
        "BENTOML_HOME": str(data_dir / "bentoml"),
    }
    (data_dir / "dagster").mkdir()
    return env


def materialize_graph(env: dict, timeout: float = 900) -> dict:
    """``python -m orchestration.materialize --generate`` (what ``make materialize`` runs) in
    ``env``; fails the test with the output's tail unless it succeeds. Returns ``env``."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "orchestration.materialize", "--generate"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    print(f"materialize ({env.get('SOCIALREC_PROFILE', 'local')}) took {time.time() - t0:.0f}s")
    log = run_log(env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:] + log[-6000:]
    assert_quiet(out.stdout + out.stderr + log)
    return env


def run_log(env: dict) -> str:
    """The whole log of the last ``orchestration.materialize`` run in ``env`` (its terminal
    shows only the progress lines and the notable ones)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    log = root / env.get("SOCIALREC_DATA_DIR", ".socialrec") / "logs" / "materialize.log"
    return log.read_text(errors="replace") if log.exists() else ""


# what a normal run never prints (issue 14: a first run that is green and quiet)
NOISE = ("Traceback", "DeprecationWarning", "nanobind: leaked", "Method not implemented")


def assert_quiet(output: str) -> None:
    """Fail with the lines around the first piece of :data:`NOISE` in ``output``."""
    for noise in NOISE:
        at = output.find(noise)
        assert at < 0, f"{noise!r} in the output:\n{output[max(0, at - 1500) : at + 2500]}"


def materialize_assets(env: dict, assets, timeout: float = 600) -> float:
    """``python -m orchestration.materialize --select <assets>`` (a subset of the graph, as
    ``make materialize`` runs it) in ``env``; fails the test with the output's tail unless it
    succeeds. Returns the seconds it took."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    t0 = time.time()
    out = subprocess.run(
        [sys.executable, "-m", "orchestration.materialize", "--select", ",".join(assets)],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-3000:] + run_log(env)[-6000:]
    return time.time() - t0


@pytest.fixture(scope="session")
def e2e_materialized(e2e_env):
    return materialize_graph(e2e_env)


@pytest.fixture(scope="session")
def e2e_warehouse(e2e_materialized):
    """(posts, users) of the materialized warehouse."""
    from pathlib import Path

    import duckdb

    path = Path(e2e_materialized["SOCIALREC_DATA_DIR"]) / "warehouse.duckdb"
    with duckdb.connect(str(path), read_only=True) as con:
        posts = con.sql("select post_id, creator_id, category_id, description from dim_posts").df()
        users = con.sql("select user_id, n_events from dim_users order by n_events desc").df()
    return posts, users


@contextlib.contextmanager
def served_bento(env: dict, extra_env: dict | None = None, ready: bool = True):
    """Serve the bento the materialized graph of ``env`` built (``bentoml serve`` on
    127.0.0.1, from a neutral directory: it must carry its own code and models); yields an
    httpx client once ``/readyz`` answers 200 (``ready=False``: once ``/healthz`` does),
    stops the server's process group after."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    root = Path(__file__).resolve().parents[1]
    data_dir = Path(env["SOCIALREC_DATA_DIR"])
    code = "from orchestration.demo import built_bento_tag; print(built_bento_tag())"
    tag = (
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    # a BentoML home of its own, with the built bentos and models linked in: BentoML empties
    # $BENTOML_HOME/prometheus_multiproc_dir when a server starts, so two servers sharing a
    # home (e2e_service and a test's second bento) would lose each other's metric files
    home = data_dir / f"bentoml-serve-{port}"
    home.mkdir()
    for store in ("bentos", "models"):
        (home / store).symlink_to(Path(env["BENTOML_HOME"]) / store)
    log_path = data_dir / f"bentoml-serve-{port}.log"
    log_file = open(log_path, "w")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", tag]
        + ["--host", "127.0.0.1", "--port", str(port)],
        cwd=data_dir,
        env={**env, "BENTOML_HOME": str(home), **(extra_env or {})},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def stop():
        from orchestration.processes import stop_tree

        client.close()
        stop_tree(proc, signal.SIGTERM, timeout=30)  # the server and its workers
        log_file.close()
        with socket.socket() as s:  # nothing of it listens on the port any more
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))

    try:
        t0 = time.time()
        deadline = t0 + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"bentoml serve exited:\n{log_path.read_text()[-5000:]}")
            try:
                if client.get("/readyz" if ready else "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"service did not become ready:\n{log_path.read_text()[-5000:]}")
        print(f"service ready after {time.time() - t0:.0f}s")
        yield client
    finally:
        stop()


def spool_pending_when_drained(client, timeout: float) -> list[str]:
    """The ``socialrec_spool_pending`` lines of ``client``'s ``/metrics``, polled until the
    gauge reads 0 or ``timeout`` seconds pass (the last lines read either way)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        text = client.get("/metrics").text
        pending = [ln for ln in text.splitlines() if ln.startswith("socialrec_spool_pending")]
        if (pending and float(pending[0].split()[-1]) == 0) or time.monotonic() > deadline:
            return pending
        time.sleep(0.2)


@pytest.fixture(scope="session")
def e2e_service(e2e_materialized):
    """An httpx client of the built bento served on 127.0.0.1 (ready: /readyz 200)."""
    from pathlib import Path

    from socialrec.stores.milvus_server import LocalMilvusServer

    # the service's index: the local Milvus server of the data dir (the default), as make demo
    with LocalMilvusServer(Path(e2e_materialized["SOCIALREC_DATA_DIR"])):
        # the /events spool flushes to the landing bucket within a second (tests look for files)
        flush = {"SOCIALREC_SPOOL_FLUSH_SECONDS": str(E2E_SPOOL_FLUSH_SECONDS)}
        with served_bento(e2e_materialized, flush) as client:
            yield client


# --- tiny hand-made interaction logs (socialrec.data.eventlog and everything fitted on it) ---------
DAY0 = 1_767_225_600  # 2026-01-01T00:00:00Z, epoch seconds


def at(day: float, hour: float = 0.0) -> int:
    """Epoch seconds ``day`` days and ``hour`` hours after ``DAY0``."""
    return int(DAY0 + day * 86_400 + hour * 3_600)


def event_log(rows):
    """An ``EventLog`` of ``(user_id, post_id, event_type, ts)`` rows (ts: epoch seconds);
    positive / negative flags derived from the event types."""
    import pandas as pd

    from socialrec.data.eventlog import EventLog

    return EventLog.from_frame(
        pd.DataFrame(list(rows), columns=["user_id", "post_id", "event_type", "ts"])
    )
