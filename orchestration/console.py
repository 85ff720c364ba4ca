"""What reaches the terminal of ``make materialize`` and ``make demo``: every line of a run or a
server goes to a log file under the data directory; only the notable ones (warnings, errors,
tracebacks) are also copied to the terminal, where the progress lines and the banner stay
readable.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TextIO

# a line worth the terminal: a warning or an error (Dagster's, BentoML's and Python's logging
# formats, Python's warnings, tracebacks); the rest stays in the log file
NOTABLE = re.compile(
    r" - (\x1b\[[0-9;]*m)?(WARNING|ERROR|CRITICAL)(\x1b\[[0-9;]*m)? - "
    r"|\[(WARNING|ERROR|CRITICAL)\]|Traceback|Error:|\w+Warning: "
)


def copy_lines(
    lines: IO[str],
    log_path: Path,
    terminal: TextIO,
    prefix: str = "",
    echo: threading.Event | None = None,
) -> None:
    """Append every line of ``lines`` to ``log_path`` (flushed line by line) and write the
    notable ones to ``terminal`` too, after ``prefix``, while ``echo`` (if given) is set;
    returns at the end of ``lines``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        for line in lines:
            log.write(line)
            log.flush()
            if NOTABLE.search(line) and (echo is None or echo.is_set()):
                terminal.write(f"{prefix}{line.rstrip()}\n")
                terminal.flush()


@contextlib.contextmanager
def output_to_log(log_path: Path) -> Iterator[TextIO]:
    """For the block, this process's standard output and error (file descriptors 1 and 2, so
    the processes it starts too: dbt, Feast, the libraries' own prints) go to ``log_path``
    (overwritten) and only their notable lines to the terminal; yields the terminal, for the
    lines meant for it."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")
    read, write = os.pipe()
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(write)
    lines = os.fdopen(read, errors="replace")
    copier = threading.Thread(
        target=copy_lines, args=(lines, log_path, terminal), name="output-to-log", daemon=True
    )
    copier.start()
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        # the end of the pipe, unless a process started in the block (and still running)
        # holds it: then the copy goes on in the background until that process ends
        copier.join(timeout=10)
        terminal.flush()
