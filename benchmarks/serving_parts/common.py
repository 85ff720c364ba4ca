"""Constants and process handling of the serving benchmark (parent side): the environment
of the children, their process groups (stopped on exit), and ``Service``, a ``bentoml serve``
on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestration.processes import stop_tree
from socialrec.stores.milvus_server import free_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
ENV_DEFAULTS = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_TELEMETRY": "false",
}
# the tiny graph that trains the models (a bit larger than tests/conftest.py's E2E_TINY)
TINY = {
    "SOCIALREC_DEMO_USERS": "300",
    "SOCIALREC_DEMO_POSTS": "600",
    "SOCIALREC_DEMO_EVENTS": "15000",
    "SOCIALREC_DEMO_DAYS": "6",
    "SOCIALREC_TWO_TOWER_EPOCHS": "3",
    "SOCIALREC_RANKER_ITERATIONS": "100",
}
MODELS = ("socialrec_two_tower", "socialrec_ranker", "socialrec_neighbours")
DEFAULT_K = 500  # settings.retrieval_top_n's default: the K of the latency targets
# the targets (2 cores)
TARGET_P99_MS = {100_000: 50.0, 1_000_000: 100.0}  # /recommend p99, c=1, K=500
TARGET_C8_RPS, TARGET_C8_P99_MS = 50.0, 250.0  # c=8 at 100k posts, 0 errors
TARGET_K_RATIO = 1.5  # p99(K=1000) / p99(K=100)
TARGET_FLOOR_RATIO = 1.5  # end-to-end p50 / the sum of the component floors
TARGET_INDEX_BUILD_S = 180.0  # the post collection at 1M posts
TARGET_FRESH_S = 1.0  # a new post is retrievable within this after /posts returns
DAYS = 30  # synthetic posts are created over the last DAYS days
MATERIALIZE_CHUNK = 100_000  # posts per Feast materialize call

PROCS: list[subprocess.Popen] = []  # every child / server started, for the cleanup


# ============================================================================================
# process handling (parent)
# ============================================================================================
def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ}
    for k, v in ENV_DEFAULTS.items():
        env.setdefault(k, v)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the server and every process it started (``bentoml serve``'s workers run in
    sessions of their own), SIGKILL what is left after ``grace`` seconds."""
    stop_tree(proc, signal.SIGTERM, timeout=grace)
    if proc in PROCS:
        PROCS.remove(proc)


def stop_all() -> None:
    for proc in list(PROCS):
        stop(proc, grace=15.0)


def on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(f"signal {signum}")


def run_logged(module: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
    """``python -m <module...>`` in its own session, output to ``log``; stopped (with its
    children) when it ends, times out or we are interrupted. Its exit code."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        PROCS.append(proc)
        try:
            proc.wait(timeout=timeout)
        finally:
            stop(proc)
    return proc.returncode


def run_child(phase: str, spec: dict, env: dict[str, str], log: Path, timeout: float) -> dict:
    """Run ``python -m benchmarks.serving --phase <phase>`` with ``spec``; its RESULT JSON."""
    spec_path = log.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    module = ["benchmarks.serving", "--phase", phase, "--spec", str(spec_path)]
    returncode = run_logged(module, env, log, timeout)
    text = log.read_text(errors="replace")
    found = [line for line in text.splitlines() if line.startswith("RESULT ")]
    if returncode != 0 or not found:
        raise SystemExit(f"phase {phase} failed (exit {returncode}):\n{text[-5000:]}")
    return json.loads(found[-1][len("RESULT ") :])


class Service:
    """``bentoml serve <tag>`` on 127.0.0.1 in its own process group; stopped on exit."""

    def __init__(self, tag: str, env: dict[str, str], cwd: Path, log: Path):
        self.tag, self.env, self.cwd, self.log = tag, env, cwd, log
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.startup_s = float("nan")
        self.workers = int(env.get("SOCIALREC_SERVICE_WORKERS") or 2)  # the service's default

    def __enter__(self) -> Service:
        import httpx

        self._log_file = open(self.log, "w")  # a file, not a pipe: a full pipe blocks
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), "serve", self.tag]
            + ["--host", HOST, "--port", str(self.port)],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        PROCS.append(self.proc)
        try:
            deadline = t0 + 900
            with httpx.Client(base_url=self.url, timeout=30) as client:
                while time.perf_counter() < deadline:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"bentoml serve exited:\n{self._tail()}")
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(1)
                else:
                    raise RuntimeError(f"service not ready after 900 s:\n{self._tail()}")
        except BaseException:
            self.__exit__()
            raise
        self.startup_s = time.perf_counter() - t0
        return self

    def _tail(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-5000:]

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            stop(self.proc)
        self._log_file.close()
