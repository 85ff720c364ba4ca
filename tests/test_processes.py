"""orchestration.processes.stop_tree: a server is stopped with every process it started, also
those in sessions of their own (as ``bentoml serve`` runs its workers)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from orchestration.processes import stop_tree
from tests.conftest import free_port

# a "server" whose "worker" runs in a session of its own and listens on the port
SERVER = textwrap.dedent(
    """
    import subprocess, sys, time
    worker = '''
    import signal, socket, sys, time
    if sys.argv[2] == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    s = socket.socket()
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    while True:
        time.sleep(0.1)
    '''
    subprocess.Popen([sys.executable, "-c", worker, sys.argv[1], sys.argv[2]],
                     start_new_session=True)
    while True:
        time.sleep(0.1)
    """
)


def _serve(port: int, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port), mode], start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    stop_tree(proc, signal.SIGKILL)
    pytest.fail("the test server did not listen")


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_group_kill_misses_a_worker_in_its_own_session():
    """What the helper is for: SIGKILL to the server's group leaves the worker listening."""
    import os

    port = free_port()
    proc = _serve(port, "polite")
    (worker,) = psutil.Process(proc.pid).children()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert worker.is_running() and not _port_is_free(port)
    finally:
        worker.kill()
        worker.wait(5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stop_tree_stops_the_worker_in_its_own_session(sig):
    port = free_port()
    proc = _serve(port, "polite")
    (worker,) = psutil.Process(proc.pid).children()
    killed = stop_tree(proc, sig, timeout=10)
    assert proc.poll() is not None and not worker.is_running()
    assert _port_is_free(port)
    # a polite tree stops on the first signal: nothing had to be killed (SIGKILL is itself one)
    assert killed == [] or sig == signal.SIGKILL


def test_stop_tree_kills_a_worker_that_ignores_the_signal():
    port = free_port()
    proc = _serve(port, "stubborn")
    (worker,) = psutil.Process(proc.pid).children()
    killed = stop_tree(proc, signal.SIGTERM, timeout=2)
    assert worker.pid in killed and not worker.is_running()
    assert _port_is_free(port)
