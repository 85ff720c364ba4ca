"""Serve the demo: the Dagster UI on 127.0.0.1:3000 and the built bento on 127.0.0.1:3001,
over the local Milvus server of the data directory (started first, stopped last).

Both servers run in their own process groups, so this script (the foreground process of
``make demo``) decides how they stop: Ctrl-C or SIGTERM here stops both cleanly (a second
Ctrl-C while they stop is ignored: the stop is bounded, then SIGKILL). (``dagster dev``
started in the background of a non-interactive shell ignores SIGINT, hence no ``&``.)

The servers' output goes to log files under the data directory (``logs/dagster-dev.log``,
``logs/bentoml-serve.log``, named in the banner); the terminal shows only their warning and
error lines, and the banner is the last thing on it once both are up (no daemon ticks).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import dagster as dg

from orchestration.processes import stop_tree
from socialrec.settings import LOCAL_API_TOKEN, Settings
from socialrec.timeutil import iso, utc_now

HOST = "127.0.0.1"
DAGSTER_PORT = int(os.environ.get("DAGSTER_PORT", "3000"))
BENTO_PORT = int(os.environ.get("BENTO_PORT", "3001"))


def built_bento_tag() -> str:
    """The bento built by the last materialization of the recommender_bento asset."""
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("recommender_bento"))
    if event is None or event.asset_materialization is None:
        raise SystemExit("recommender_bento was never materialized: run `make materialize`")
    return str(event.asset_materialization.metadata["bento_tag"].value)


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


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT to each server and all it started (the bento's workers run in sessions of their
    own), SIGKILL to whatever is left after 20 s. Ctrl-C is ignored meanwhile: a second one
    would leave a server (or the Dagster code server it restarts) running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for p in procs:
        stop_tree(p, signal.SIGINT, timeout=20)


# a server's line worth the terminal: a warning or an error (Dagster's and BentoML's log
# formats, Python's warnings and tracebacks); the rest stays in the server's log file
NOTABLE = re.compile(
    r" - (\x1b\[[0-9;]*m)?(WARNING|ERROR|CRITICAL)(\x1b\[[0-9;]*m)? - "
    r"|\[(WARNING|ERROR|CRITICAL)\]|Traceback|Error:"
)


def start_logged(name: str, argv: list[str], log_path: Path) -> subprocess.Popen:
    """Start a server in a session of its own, its output (stdout and stderr) appended to
    ``log_path``; its warning and error lines are also printed to stderr, prefixed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )

    def copy() -> None:
        with open(log_path, "a") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if NOTABLE.search(line):
                    print(f"[{name}] {line.rstrip()}", file=sys.stderr, flush=True)

    threading.Thread(target=copy, name=f"log-{name}", daemon=True).start()
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
    event = json.dumps(
        {
            "events": [
                {
                    "event_id": "demo-1",
                    "user_id": user_id,
                    "post_id": post_id,
                    "event_type": "VIEW",
                    "ts": iso(utc_now().replace(microsecond=0)),  # within the partitions
                }
            ]
        }
    )
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


def main() -> int:
    from socialrec.stores.milvus_server import serving_milvus

    settings = Settings()
    # the local Milvus server (unless SOCIALREC_MILVUS_URI names one): started for the demo,
    # shared by the bento's workers and the Dagster UI's runs, stopped when the demo stops
    with serving_milvus(settings) as milvus:
        return serve(settings, milvus)


def serve(settings: Settings, milvus: str) -> int:
    """Run the Dagster UI and the bento until Ctrl-C / SIGTERM or one of them exits."""
    tag = built_bento_tag()
    user_id = sample_user(settings)
    post_id, category_id, query = sample_post(settings)
    bin_dir = os.path.dirname(sys.executable)
    logs = {
        "dagster": Path(settings.data_dir) / "logs" / "dagster-dev.log",
        "bento": Path(settings.data_dir) / "logs" / "bentoml-serve.log",
    }
    dagster_dev = [os.path.join(bin_dir, "dagster"), "dev", "-w", "workspace.yaml"]
    bento_serve = [os.path.join(bin_dir, "bentoml"), "serve", tag]
    procs = [
        start_logged(
            "dagster", dagster_dev + ["-h", HOST, "-p", str(DAGSTER_PORT)], logs["dagster"]
        ),
        start_logged(
            "bento", bento_serve + ["--host", HOST, "--port", str(BENTO_PORT)], logs["bento"]
        ),
    ]
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        ok_bento = wait_http(f"http://{HOST}:{BENTO_PORT}/healthz", 180, procs[1])
        ok_ui = wait_http(f"http://{HOST}:{DAGSTER_PORT}/server_info", 180, procs[0])
        if not (ok_bento and ok_ui):
            print(
                f"a server did not come up (see {logs['dagster']} and {logs['bento']}); stopping",
                file=sys.stderr,
            )
            return 1
        examples = curl_examples(
            f"http://{HOST}:{BENTO_PORT}", user_id, post_id, category_id, query
        )
        print(
            f"""
socialrec demo is up (bento {tag})
  Dagster UI:   http://{HOST}:{DAGSTER_PORT}   (asset graph, runs, checks, freshness)
  Recommender:  http://{HOST}:{BENTO_PORT}     (OpenAPI docs at /docs)
  Feed page:    http://{HOST}:{BENTO_PORT}/feed/   (a user's feed as cards; docs/feed-page.md)
  Milvus:       {milvus}
  Server logs:  {logs["dagster"]}
                {logs["bento"]}

{examples}

Ctrl-C stops both servers.""",
            flush=True,
        )
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        print("a server exited (see its log); stopping the other", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping the Dagster UI and the recommender...", flush=True)
        return 0
    finally:
        stop(procs)


if __name__ == "__main__":
    sys.exit(main())
