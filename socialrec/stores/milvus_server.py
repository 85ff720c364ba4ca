"""A local Milvus standalone server as a managed service (the ``milvus`` wheel, Milvus 2.3.5).

The ``milvus`` PyPI package ships the standalone server binary (``milvus run standalone``)
with embedded etcd, RocksMQ and local storage: no MinIO, no Pulsar, nothing else to run. This
module starts it with all its state under ``<data_dir>/milvus-server/`` and gives the URI
(``http://127.0.0.1:<port>``) that ``PostIndex`` uses like any Milvus server or cluster.

Layout of ``<data_dir>/milvus-server/``::

    bin/            the unpacked binary and its libraries (the wheel ships them xz-compressed)
    configs/        milvus.yaml and etcd.yaml, written at each start
    data/           etcd, RocksMQ and segment files (kept across restarts)
    logs/           server.log (stdout + stderr of the server) and the server's own logs
    server.json     pid, process group, start time and ports of the running server
    server.lock     serialises starts and stops between processes

Network (what the 2.3.5 standalone binary opens, checked with ``ss -ltnp``):

* the embedded etcd ignores ``etcd.endpoints`` and listens on localhost:2379/2380 unless it
  gets an etcd config file: we write one (``etcd.config.path``) with free loopback ports, so
  several servers (a test run next to ``make demo``) do not collide;
* the proxy (the client port) and the internal gRPC ports of the coordinators and nodes, and
  the metrics/health port (``METRICS_PORT``, ``/healthz``): 2.3 binds them on all interfaces
  (no listen-address setting); they advertise 127.0.0.1 (``<role>.ip``) and the client only
  ever connects to 127.0.0.1. All ports are free ports picked at start (the proxy port may
  be given).

Stopping: the server runs in its own session / process group; ``stop`` sends SIGTERM to the
group, waits up to ``STOP_TIMEOUT_S``, then SIGKILL, and checks that no process of the group
is left (SIGTERM to the ``milvus-server`` console script alone leaves the ``milvus run
standalone`` child running). Data, aliases and the ports (so the URI) survive a restart of the
same directory.

Entry points: :class:`LocalMilvusServer` (owned by one process: ``with LocalMilvusServer(d)
as srv: srv.uri``), :func:`ensure_running` (the URI of the live server of a data dir, started
and left running if there is none), :func:`stop_server` (stop the server of a data dir from any
process), and ``python -m socialrec.stores.milvus_server start|stop|status --data-dir D``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

SERVER_SUBDIR = "milvus-server"
HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
# SIGTERM -> SIGKILL grace: the 2.3 standalone's graceful stop sometimes hangs for tens of
# seconds on fixed internal timeouts (query coord/node waiting for a segment hand-off that a
# single node cannot do); acknowledged writes are in its WAL, so a kill loses nothing
STOP_TIMEOUT_S = 10.0
GRACEFUL_STOP_S = 3  # common.gracefulStopTimeout of the server (seconds)
_LOG_TAIL_LINES = 40
# the ports of the 2.3 config template (``{{ <name>_port }}``), besides etcd's
_PORT_KEYS = (
    "root_coord_port",
    "proxy_port",
    "proxy_internal_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)
# the roles whose advertised address (``<role>.ip``) is pinned to loopback
_ROLES = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


class MilvusServerError(RuntimeError):
    """The local Milvus server did not start, did not answer, or did not stop."""


def server_dir(data_dir: str | os.PathLike) -> Path:
    """``<data_dir>/milvus-server``: where the server of a data directory keeps its state."""
    return Path(data_dir) / SERVER_SUBDIR


def free_port() -> int:
    """A TCP port free on the loopback interface now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    """Nobody listens on ``port`` (TIME_WAIT of a stopped server allowed, as for the Go
    servers, which bind with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, int(port)))
        except OSError:
            return False
    return True


def _reuse_bind(port: int) -> socket.socket | None:
    """A listening loopback socket on ``port`` with SO_REUSEADDR, None if it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, int(port)))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None


# --- processes -------------------------------------------------------------------------------
def _proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22); None if
    there is no such process or it is a zombie. Tells a recorded server from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd on (state first)
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _group_pids(pgid: int) -> list[int]:
    """The live (non-zombie) processes of a process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _stop_group(pgid: int, child: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM the process group, wait up to ``timeout``, SIGKILL what is left; raises
    MilvusServerError if a process of the group survives SIGKILL."""

    def reap() -> None:
        if child is not None:
            child.poll()

    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            reap()
            if not _group_pids(pgid):
                return
            time.sleep(0.05)
        if sig == signal.SIGTERM:
            log.info("Milvus server group %d still up %.0fs after SIGTERM: SIGKILL", pgid, wait_s)
    left = _group_pids(pgid)
    if left:
        raise MilvusServerError(f"Milvus server processes {left} survived SIGKILL")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --- health ----------------------------------------------------------------------------------
def _healthy(metrics_port: int, timeout: float = 2.0) -> bool:
    """``/healthz`` of the server says OK (no proxy: loopback only)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{HOST}:{metrics_port}/healthz", timeout=timeout) as resp:
            return "OK" in resp.read().decode("utf-8", "replace")
    except (OSError, urllib.error.URLError):
        return False


def answers(uri: str, timeout: float = 5.0) -> bool:
    """A pymilvus client connects to ``uri`` and lists the collections."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=timeout)
    except Exception:
        return False
    try:
        client.list_collections(timeout=timeout)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            client.close()


def log_tail(base: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of the server's stdout/stderr log (for error messages)."""
    path = base / "logs" / "server.log"
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


# --- state file ------------------------------------------------------------------------------
def _state_path(base: Path) -> Path:
    return base / "server.json"


@contextlib.contextmanager
def _locked(base: Path) -> Iterator[None]:
    """An exclusive lock on ``server.lock`` (between processes; held briefly)."""
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "server.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(data_dir: str | os.PathLike) -> dict | None:
    """The recorded server of ``data_dir`` if its process is still the one recorded, else
    None (a stale file is not removed here)."""
    path = _state_path(server_dir(data_dir))
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if _proc_start_time(int(state.get("pid", -1))) != state.get("start_time"):
        return None
    return state


def running_uri(data_dir: str | os.PathLike, timeout: float = 5.0) -> str | None:
    """The URI of the recorded server of ``data_dir`` if it is alive and answers."""
    state = read_state(data_dir)
    if state and answers(state["uri"], timeout=timeout):
        return str(state["uri"])
    return None


# --- the server ------------------------------------------------------------------------------
class LocalMilvusServer:
    """One Milvus 2.3 standalone server with its state under ``<data_dir>/milvus-server``.

    ``start()`` returns the URI once the server answers (``/healthz`` OK and a pymilvus
    ``list_collections``), or raises MilvusServerError with the tail of its log after
    ``start_timeout`` seconds. ``stop()`` stops the server and every process of its group;
    it is idempotent. A context manager (start on enter, stop on exit).

    ``port``: the client (proxy) port; None picks a free one (the port of the previous run of
    this directory when it is free, so a URI stays the same across restarts).
    ``die_with_parent``: the server gets SIGTERM when the starting thread's process exits
    (Linux PDEATHSIG; note it fires when the *thread* that started it exits): for tests.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        port: int | None = None,
        start_timeout: float = START_TIMEOUT_S,
        die_with_parent: bool = False,
    ):
        self.base = server_dir(data_dir).resolve()
        self.port = int(port) if port else None
        self.start_timeout = float(start_timeout)
        self.die_with_parent = bool(die_with_parent)
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.metrics_port: int | None = None

    @property
    def uri(self) -> str:
        if self.port is None:
            raise MilvusServerError("the server has not been started")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- start -------------------------------------------------------------------------------
    def _ports(self) -> dict[str, int]:
        """All ports of this start: the previous run's when free (stable URI), else new."""
        previous: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads((self.base / "configs" / "ports.json").read_text())
        ports: dict[str, int] = {}
        for key in (*_PORT_KEYS, "etcd_port", "etcd_peer_port", "metrics_port"):
            if key == "proxy_port" and self.port:
                if not _port_free(self.port):
                    raise MilvusServerError(f"port {self.port} is in use")
                ports[key] = self.port
                continue
            old = previous.get(key)
            if old and old not in ports.values() and _port_free(old):
                ports[key] = int(old)
            else:
                port = free_port()
                while port in ports.values():
                    port = free_port()
                ports[key] = port
        return ports

    def _write_config(self, ports: dict[str, int]) -> Path:
        """Unpack the binary (once per wheel version) and write milvus.yaml and etcd.yaml."""
        import milvus  # the wheel: config template + the compressed binary

        config = milvus.MilvusServerConfig(
            data_dir=str(self.base), **{k: ports[k] for k in (*_PORT_KEYS, "etcd_port")}
        )
        # the wrapper test-binds every port without SO_REUSEADDR, so the port of a server
        # stopped a moment ago (TIME_WAIT) would fail; the Go servers bind with it
        config.try_bind_port = _reuse_bind
        for role in _ROLES:
            config.set(f"{role}.ip", HOST)
        # a graceful stop of a standalone query node waits for its loaded segments to move to
        # another node (there is none): without a bound, SIGTERM takes the SIGKILL fallback
        config.set("common.gracefulStopTimeout", GRACEFUL_STOP_S)
        config.resolve()  # writes configs/milvus.yaml, makes logs/ and data/
        milvus._initialize_data_files(str(self.base))  # bin/ (skipped when up to date)
        configs = self.base / "configs"
        etcd_yaml = configs / "etcd.yaml"
        client = f"http://{HOST}:{ports['etcd_port']}"
        peer = f"http://{HOST}:{ports['etcd_peer_port']}"
        etcd_yaml.write_text(
            "name: socialrec\n"
            f"listen-client-urls: {client}\nadvertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: socialrec={peer}\n"
        )
        milvus_yaml = configs / "milvus.yaml"
        text = milvus_yaml.read_text()
        if "\netcd:\n" not in text:
            raise MilvusServerError("unexpected milvus.yaml template: no etcd section")
        text = text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd_yaml}\n", 1)
        milvus_yaml.write_text(text)
        (configs / "ports.json").write_text(json.dumps(ports, indent=1))
        return self.base / "bin" / "milvus"

    def start(self) -> str:
        """Start the server (a no-op when this object's server runs); returns the URI."""
        if self.running():
            return self.uri
        with _locked(self.base):
            other = read_state(self.base.parent)
            if other is not None:
                raise MilvusServerError(
                    f"a Milvus server (pid {other['pid']}, {other['uri']}) already runs on "
                    f"{self.base}; use ensure_running() or stop_server() first"
                )
            self._spawn()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("Milvus server pid %d ready at %s (%s)", self.pid, self.uri, self.base)
        return self.uri

    def _spawn(self) -> None:
        ports = self._ports()
        exe = self._write_config(ports)
        self.port = ports["proxy_port"]
        self.metrics_port = ports["metrics_port"]
        env = dict(os.environ)
        env.update(
            DEPLOY_MODE="STANDALONE",
            METRICS_PORT=str(self.metrics_port),
            MILVUS_RUN_DIR=str(self.base / "run"),
            LD_LIBRARY_PATH=":".join(
                p for p in (str(exe.parent), os.environ.get("LD_LIBRARY_PATH", "")) if p
            ),
        )
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(var, None)
        with open(self.base / "logs" / "server.log", "ab") as out:
            self.proc = subprocess.Popen(
                [str(exe), "run", "standalone"],
                cwd=self.base,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() signals the group
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        self.pgid = self.proc.pid
        state = {
            "pid": self.proc.pid,
            "pgid": self.pgid,
            "start_time": _proc_start_time(self.proc.pid),
            "uri": self.uri,
            "port": self.port,
            "metrics_port": self.metrics_port,
            "base": str(self.base),
            "started_at": time.time(),
        }
        _state_path(self.base).write_text(json.dumps(state, indent=1))

    def _wait_ready(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout
        while time.monotonic() < deadline:
            if not self.running():
                code = self.proc.returncode if self.proc else None
                raise MilvusServerError(
                    f"Milvus server exited with code {code} while starting; "
                    f"log tail ({self.base}/logs/server.log):\n{log_tail(self.base)}"
                )
            if _healthy(self.metrics_port) and answers(self.uri, timeout=5.0):
                log.info("Milvus server answered after %.1fs", time.monotonic() - t0)
                return
            time.sleep(0.25)
        raise MilvusServerError(
            f"Milvus server at {self.uri} did not answer within {self.start_timeout:.0f}s; "
            f"log tail ({self.base}/logs/server.log):\n{log_tail(self.base)}"
        )

    # --- stop --------------------------------------------------------------------------------
    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server and its process group (idempotent)."""
        if self.proc is None:
            return
        with _locked(self.base):
            _stop_group(self.pgid, self.proc, timeout)
            self.proc.wait(timeout=5)
            state = _state_path(self.base)
            with contextlib.suppress(OSError, ValueError):
                if json.loads(state.read_text()).get("pid") == self.proc.pid:
                    state.unlink()
        log.info("Milvus server pid %d stopped", self.proc.pid)
        self.proc = None

    def detach(self) -> None:
        """Forget the process without stopping it (it stays recorded in server.json)."""
        self.proc = None

    def __enter__(self) -> LocalMilvusServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_running(
    data_dir: str | os.PathLike,
    port: int | None = None,
    start_timeout: float = START_TIMEOUT_S,
) -> str:
    """The URI of the live server of ``data_dir``, or of a new one started for it.

    A started server is left running when this process exits (it is in its own session);
    stop it with :func:`stop_server`. Two processes calling this at once get the same server.
    """
    base = server_dir(data_dir).resolve()
    with _locked(base):
        state = read_state(data_dir)
        if state is not None:
            deadline = time.monotonic() + start_timeout
            while time.monotonic() < deadline and read_state(data_dir) is not None:
                if answers(state["uri"]):  # a server that is still starting gets its time
                    return str(state["uri"])
                time.sleep(0.5)
            raise MilvusServerError(
                f"the recorded Milvus server (pid {state['pid']}, {state['uri']}) does not "
                f"answer; log tail:\n{log_tail(base)}"
            )
        server = LocalMilvusServer(data_dir, port=port, start_timeout=start_timeout)
        server._spawn()  # under the lock: a second caller waits, then finds this one
    try:
        server._wait_ready()
    except BaseException:
        server.stop()
        raise
    server.detach()
    return server.uri


def stop_server(data_dir: str | os.PathLike, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop the recorded server of ``data_dir`` (from any process); False if none ran."""
    base = server_dir(data_dir).resolve()
    with _locked(base):
        state = read_state(data_dir)
        if state is None:
            _state_path(base).unlink(missing_ok=True)
            return False
        _stop_group(int(state["pgid"]), None, timeout)
        _state_path(base).unlink(missing_ok=True)
    log.info("Milvus server pid %s stopped", state["pid"])
    return True


# --- the URI of a deployment's settings ------------------------------------------------------
def configured_uri(settings) -> str | None:
    """``SOCIALREC_MILVUS_URI`` when set: a Milvus server or cluster (``http(s)://host:port``)
    or a Milvus Lite file path; None means the local server of ``settings.data_dir``."""
    return str(settings.milvus_uri) if settings.milvus_uri else None


def milvus_uri(settings) -> str:
    """The URI to open ``PostIndex`` on: the configured one, else the running local server of
    ``settings.data_dir``. MilvusServerError (saying how to start one) when none runs: a
    long-lived reader (the service) never starts a server it would not stop."""
    uri = configured_uri(settings) or running_uri(settings.data_dir)
    if uri is None:
        raise MilvusServerError(
            f"no Milvus server runs for {settings.data_dir} and SOCIALREC_MILVUS_URI is not set: "
            "`make demo` starts one, or `python -m socialrec.stores.milvus_server start "
            f"--data-dir {settings.data_dir}`"
        )
    return uri


@contextlib.contextmanager
def serving_milvus(settings) -> Iterator[str]:
    """The Milvus URI of ``settings`` for the duration of the block: the configured one, else
    the local server of ``settings.data_dir`` (the running one, or one started here and
    stopped when the block ends, so whoever starts the server stops it)."""
    uri = configured_uri(settings) or running_uri(settings.data_dir)
    if uri is not None:
        yield uri
        return
    with LocalMilvusServer(settings.data_dir) as server:
        yield server.uri


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("start", "stop", "status"))
    p.add_argument("--data-dir", default=os.environ.get("SOCIALREC_DATA_DIR", ".socialrec"))
    p.add_argument("--port", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "start":
        print(ensure_running(args.data_dir, port=args.port))
    elif args.command == "stop":
        print("stopped" if stop_server(args.data_dir) else "not running")
    else:
        uri = running_uri(args.data_dir)
        print(uri or "not running")
        return 0 if uri else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
