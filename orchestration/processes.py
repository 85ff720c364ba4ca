"""Stopping a server with everything it started, wherever its children went.

``bentoml serve`` runs its workers through a process manager that puts them in sessions of
their own: a signal to the server's process group misses them, and a SIGKILL of the group
leaves a worker serving and holding the port. :func:`stop_tree` remembers every descendant
before it signals anything, so that the last resort (SIGKILL) reaches them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    """Every live descendant of ``pid`` (any session or process group)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_tree(
    proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0
) -> list[int]:
    """Stop ``proc`` (started with ``start_new_session=True``) and all it started.

    ``sig`` goes to its process group and to every descendant outside it; whatever is still
    alive after ``timeout`` seconds (the server first, then each descendant) is SIGKILLed.
    Returns the pids that had to be killed."""
    tree = descendants(proc.pid)
    if proc.poll() is None:
        _signal_group(proc.pid, sig)
    for child in tree:
        _signal(child, sig)
    deadline = time.monotonic() + timeout
    killed = []
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        killed.append(proc.pid)
    _, alive = psutil.wait_procs(tree, timeout=max(0.1, deadline - time.monotonic()))
    for child in alive:
        _signal(child, signal.SIGKILL)
        killed.append(child.pid)
    psutil.wait_procs(alive, timeout=5)
    return killed


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal(child: psutil.Process, sig: int) -> None:
    try:
        child.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
