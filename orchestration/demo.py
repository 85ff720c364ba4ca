"""Serve the demo: the Dagster UI on 127.0.0.1:3000 and the built bento on 127.0.0.1:3001,
over the local Milvus server of the data directory (started here, stopped last).

``--materialize`` (``make demo``) also runs the ``materialize_all`` job
(``python -m orchestration.materialize``, demo data written if the bucket has none) over that
Milvus server (started beside it), all of it but :data:`AFTER_SERVERS`. The Dagster UI (which
shows the run as it goes) starts as soon as the run has; the bento as soon as the run's step
has built it (while the run ends). The assets of :data:`AFTER_SERVERS` feed nothing the
servers use: a run of the same job launched in the Dagster UI materializes them once both
servers answer (the banner names the run; a line says when it ends).

Both servers run in their own process groups, so this script (the foreground process of
``make demo``) decides how they stop: Ctrl-C, SIGINT or SIGTERM here stops both cleanly (a
second signal while they stop is ignored: the stop is bounded, then SIGKILL). Their output
goes to log files under the data directory (``logs/dagster-dev.log``, ``logs/bentoml-serve.log``,
named in the banner); the terminal shows only their warning and error lines until they are
told to stop (:data:`ECHO`), and the banner is the last thing on it once both are up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.console import copy_lines
from orchestration.processes import stop_tree
from socialrec.settings import LOCAL_API_TOKEN, Settings
from socialrec.timeutil import iso, utc_now

HOST = "127.0.0.1"
DAGSTER_PORT = int(os.environ.get("DAGSTER_PORT", "3000"))
BENTO_PORT = int(os.environ.get("BENTO_PORT", "3001"))
# materialized once the servers are up (the docstring); the bento depends on none (test_demo)
AFTER_SERVERS = ("offline_evaluation",)
# steps in the run worker's process (the default executor loads the definitions for each step)
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
ENDED = ("SUCCESS", "FAILURE", "CANCELED")  # a run's final statuses
# set while the servers' notable lines reach the terminal: the lines of their shutdown (a run
# cancelled as it starts, a code server's exit) stay in their logs
ECHO = threading.Event()
ECHO.set()


def built_bento_tag() -> str:
    """The bento built by the last materialization of the recommender_bento asset."""
    with dg.DagsterInstance.get() as instance:
        tag = bento_built(since=0)(instance)
    if tag is None:
        raise SystemExit("recommender_bento was never materialized: run `make materialize`")
    return tag


def while_running(materializing: subprocess.Popen, found: Callable[[Any], Any]) -> Any:
    """Ask ``found(instance)`` every half second while ``materializing`` runs: its first
    answer that is not None, or None when the process ended first."""
    with dg.DagsterInstance.get() as instance:
        while True:
            ended = materializing.poll() is not None
            if (value := found(instance)) is not None:
                return value
            if ended:
                return None
            time.sleep(0.5)


def run_created(since: float) -> Callable[[Any], bool | None]:
    """Whether a materialize_all run was created at or after ``since`` (epoch seconds)."""
    after = dt.datetime.fromtimestamp(since - 1, dt.UTC)

    def found(instance) -> bool | None:
        created = dg.RunsFilter(job_name="materialize_all", created_after=after)
        return True if instance.get_run_records(created, limit=1) else None

    return found


def bento_built(since: float) -> Callable[[Any], str | None]:
    """The tag of a recommender_bento materialized at or after ``since`` (epoch seconds)."""

    def found(instance) -> str | None:
        event = instance.get_latest_materialization_event(dg.AssetKey("recommender_bento"))
        if event is None or event.timestamp < since or event.asset_materialization is None:
            return None
        return str(event.asset_materialization.metadata["bento_tag"].value)

    return found


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def interrupted(*_) -> None:
    """The SIGINT and SIGTERM handler: stop, once (a second Ctrl-C while the servers stop
    would leave one of them, or the code server it restarts, running; :func:`stop` is bounded)."""
    ECHO.clear()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT to each server and all it started (the bento's workers run in sessions of their
    own), SIGKILL to whatever is left after 20 s."""
    ECHO.clear()
    if any(p.poll() is None for p in procs):
        print("\nstopping the Dagster UI and the recommender...", flush=True)
    for p in procs:
        stop_tree(p, signal.SIGINT, timeout=20)


def start_logged(name: str, argv: list[str], log_path: Path, nice: int = 0) -> subprocess.Popen:
    """Start a server in a session of its own (``nice`` added to its niceness), its output
    (stdout and stderr) appended to ``log_path``; its warning and error lines are also printed
    to stderr, prefixed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )

    threading.Thread(
        target=copy_lines,
        args=(proc.stdout, log_path, sys.stderr, f"[{name}] ", ECHO),
        name=f"log-{name}",
        daemon=True,
    ).start()
    return proc


def sample_user(settings: Settings) -> int:
    from socialrec.data.warehouse import read_table

    users = read_table(settings, "dim_users")
    return int(users.sort_values("n_events", ascending=False)["user_id"].iloc[0])


def sample_post(settings: Settings) -> tuple[int, int, str]:
    """(post_id, category_id, a short search query from its description) of the most engaged
    live post; the query has no quotes, so it fits in a shell-quoted JSON body."""
    from socialrec.data.warehouse import read_table

    posts = read_table(settings, "dim_posts")
    if "is_deleted" in posts.columns:
        posts = posts[~posts["is_deleted"].fillna(False).astype(bool)]
    row = posts.sort_values(["n_positives", "post_id"], ascending=[False, True]).iloc[0]
    words = str(row["description"] or "").replace("'", " ").replace('"', " ").split()
    return int(row["post_id"]), int(row["category_id"]), " ".join(words[:6]) or "street food"


def curl_examples(base: str, user_id: int, post_id: int, category_id: int, query: str) -> str:
    """The sample requests printed when the demo is up (every endpoint, with the token where
    it is needed)."""
    json_h = "-H 'content-type: application/json'"
    auth_h = f"-H 'Authorization: Bearer {LOCAL_API_TOKEN}'"
    recommend = json.dumps({"user_id": user_id, "k": 10})
    new_user = json.dumps({"user_id": 999_999_999, "k": 10, "categories": [category_id]})
    ts = iso(utc_now().replace(microsecond=0))  # within the partitions
    view = {"event_id": "demo-1", "user_id": user_id, "post_id": post_id, "event_type": "VIEW"}
    event = json.dumps({"events": [{**view, "ts": ts}]})
    similar = json.dumps({"post_id": post_id, "k": 5})
    search = json.dumps({"query": query, "k": 5, "user_id": user_id})
    lines = [
        f"curl -s -X POST {base}/recommend {json_h} \\\n       -d '{recommend}'",
        f"curl -s -X POST {base}/recommend {json_h} \\\n       -d '{new_user}'",
        f"curl -s -X POST {base}/events {json_h} \\\n       {auth_h} \\\n       -d '{event}'",
        f"curl -s -X POST {base}/similar {json_h} -d '{similar}'",
        f"curl -s -X POST {base}/search {json_h} \\\n       -d '{search}'",
        f"curl -s {base}/readyz; curl -s {base}/metrics | grep ^socialrec_",
    ]
    return "\n".join("  " + line for line in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--materialize",
        action="store_true",
        help="run the materialize_all job first (all but "
        + ", ".join(AFTER_SERVERS)
        + ", launched in the Dagster UI once the servers are up)",
    )
    p.add_argument(
        "--then",
        default="",
        help="without --materialize: comma-separated assets to materialize by a run launched in "
        "the Dagster UI once the servers answer",
    )
    args = p.parse_args(argv)
    after = AFTER_SERVERS if args.materialize else tuple(filter(None, args.then.split(",")))
    # Ctrl-C, SIGINT or SIGTERM stops the demo, also when it was started with SIGINT ignored
    # (the background job of a non-interactive shell): the servers run in sessions of their own
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    from orchestration import warm
    from socialrec.stores.milvus_server import serving_milvus

    warming = warm.start()  # the later steps' bytecode, compiled beside the definitions' import

    settings = Settings()
    logs = Path(settings.data_dir) / "logs"
    procs: list[subprocess.Popen] = []
    materializing = None
    try:
        # the materialization, the Milvus server beside it (its run's resources need one),
        # the Dagster UI once its run has started, the bento once the run has built it
        t_start = time.time()
        materializing = start_materialize() if args.materialize else None
        bin_dir = os.path.dirname(sys.executable)
        dagster_dev = [sys.executable, "-m", "orchestration.dagster_cli", "dev", "-w"]
        dagster_dev += ["workspace.yaml", "-h", HOST, "-p", str(DAGSTER_PORT)]
        # the local Milvus server (unless SOCIALREC_MILVUS_URI names one): started for the
        # demo, shared by its materialization, the bento's workers and the Dagster UI's runs,
        # stopped when the demo stops, after the servers
        with serving_milvus(settings) as milvus:
            try:
                # on 2 cores, the UI's start-up (three processes loading the definitions)
                # beside the run's own slowed that by ~10 s; the graph leaves a core idle
                if materializing is not None and not while_running(
                    materializing, run_created(t_start)
                ):
                    return materializing.wait() or 1
                # niced: neither its start nor its runs should take a core from the graph
                procs.append(start_logged("dagster", dagster_dev, logs / "dagster-dev.log", 10))
                if materializing is None:
                    tag = built_bento_tag()
                elif (tag := while_running(materializing, bento_built(t_start))) is None:
                    return materializing.wait() or 1
                bento_serve = [os.path.join(bin_dir, "bentoml"), "serve", tag]
                bento_serve += ["--host", HOST, "--port", str(BENTO_PORT)]
                procs.append(start_logged("bento", bento_serve, logs / "bentoml-serve.log"))
                # the run's summary is printed while the bento starts; a run that failed
                # after building it stops the demo as one that failed before
                if materializing is not None and materializing.wait():
                    return materializing.returncode
                return serve(settings, milvus, procs, after, tag)
            finally:
                stop(procs)
    except KeyboardInterrupt:
        if materializing is not None and materializing.poll() is None:
            materializing.terminate()  # a Ctrl-C reached it too; a SIGTERM only reached us
            materializing.wait()
        return 0
    finally:
        stop(procs)
        warm.stop(warming)


def start_materialize() -> subprocess.Popen:
    """``python -m orchestration.materialize --generate`` of all but AFTER_SERVERS, on this
    terminal."""
    argv = [sys.executable, "-m", "orchestration.materialize", "--generate"]
    return subprocess.Popen(argv + [f"--exclude={asset}" for asset in AFTER_SERVERS])


def launch_after_servers(assets: tuple[str, ...], timeout_s: float = 90):
    """Launch the ``materialize_all`` run of ``assets`` in the Dagster UI (its GraphQL API;
    asked again while the UI still loads the code location): (client, run_id), or None with
    the reason printed."""
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    client = DagsterGraphQLClient(HOST, port_number=DAGSTER_PORT, timeout=60)
    deadline, selection = time.time() + timeout_s, list(assets)
    while True:
        try:
            return client, client.submit_job_execution(
                "materialize_all", run_config=IN_PROCESS, asset_selection=selection
            )
        except (DagsterGraphQLClientError, OSError) as e:
            if time.time() > deadline:
                print(f"could not launch {', '.join(assets)} in the UI: {e}", file=sys.stderr)
                return None
            time.sleep(2)


def report_when_done(launched, assets: tuple[str, ...], t0: float) -> bool:
    """Whether the launched run has ended (and a line says how); True when there is none."""
    if launched is None:
        return True
    client, run_id = launched
    try:
        status = client.get_run_status(run_id).value
    except Exception:  # noqa: BLE001 - the UI busy or restarting: ask again later
        return False
    if status not in ENDED:
        return False
    outcome = "materialized" if status == "SUCCESS" else status
    print(
        f"{', '.join(assets)}: {outcome} (run {run_id[:8]} in the Dagster UI, "
        f"{time.time() - t0:.0f}s)",
        file=sys.stdout if status == "SUCCESS" else sys.stderr,
        flush=True,
    )
    return True


def serve(
    settings: Settings, milvus: str, procs: list[subprocess.Popen], after: tuple[str, ...], tag: str
) -> int:
    """Wait for the Dagster UI and the bento (``procs``, serving the bento ``tag``), launch the
    run of the ``after`` assets in the Dagster UI, print the banner, then serve until a server
    exits."""
    user_id = sample_user(settings)
    post_id, category_id, query = sample_post(settings)
    logs = [Path(settings.data_dir) / "logs" / n for n in ("dagster-dev.log", "bentoml-serve.log")]
    ok_bento = wait_http(f"http://{HOST}:{BENTO_PORT}/healthz", 180, procs[1])
    ok_ui = wait_http(f"http://{HOST}:{DAGSTER_PORT}/server_info", 180, procs[0])
    if not (ok_bento and ok_ui):
        print(f"a server did not come up (see {logs[0]} and {logs[1]}); stopping", file=sys.stderr)
        return 1
    t_launch = time.time()
    launched = launch_after_servers(after) if after else None
    running = (
        f"\n  Now running:  {', '.join(after)} (run {launched[1][:8]} in the Dagster UI)"
        if launched
        else ""
    )
    examples = curl_examples(f"http://{HOST}:{BENTO_PORT}", user_id, post_id, category_id, query)
    print(
        f"""
socialrec demo is up (bento {tag})
  Dagster UI:   http://{HOST}:{DAGSTER_PORT}   (asset graph, runs, checks, freshness)
  Recommender:  http://{HOST}:{BENTO_PORT}     (OpenAPI docs at /docs)
  Feed page:    http://{HOST}:{BENTO_PORT}/feed/   (a user's feed as cards; docs/feed-page.md)
  Milvus:       {milvus}
  Server logs:  {logs[0]}
                {logs[1]}{running}

{examples}

Ctrl-C stops both servers.""",
        flush=True,
    )
    pending = launched is not None
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(1)
            if pending and int(time.time()) % 5 == 0:
                pending = not report_when_done(launched, after, t_launch)
        print("a server exited (see its log); stopping the other", file=sys.stderr)
        return 1
    finally:
        if pending and procs[0].poll() is None:
            cancel(launched)


def cancel(launched, timeout_s: float = 20) -> None:
    """Ask the Dagster UI to terminate the launched run (it ends CANCELED, not as a failure of
    a run interrupted by the UI's stop) once it is past STARTING (a starting run cannot be
    terminated), and wait for it to end, boundedly."""
    from dagster_graphql import DagsterGraphQLClientError

    client, run_id = launched
    deadline, asked = time.time() + timeout_s, False
    try:
        while time.time() < deadline:
            status = client.get_run_status(run_id).value
            if status in ENDED:
                return
            if not asked and status != "STARTING":
                try:
                    client.terminate_run(run_id)
                    asked = True
                except DagsterGraphQLClientError:  # it began to start meanwhile: asked again
                    pass
            time.sleep(1)
    except Exception as e:  # noqa: BLE001 - the UI already gone: the stop goes on
        print(f"could not cancel run {run_id[:8]}: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
