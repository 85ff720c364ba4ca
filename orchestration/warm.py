"""Compile the bytecode of the run's later imports beside the definitions' import (make demo).

``make install`` does not byte-compile all of site-packages (two thirds of its files are never
imported: 40-55 s of compiling on 2 cores); the first process that imports a module compiles it
and keeps its bytecode, as Python does by default (the Makefile lets the demo's processes
write it, also where ``PYTHONDONTWRITEBYTECODE`` is set). The run's steps import their stacks
one after another, TensorFlow for the two-tower and MiniLM (transformers, sentence-transformers)
for the text embeddings, and each step would compile its stack in the run. This process
imports them first, niced, on the core the definitions' import leaves idle, so the steps find
them compiled (the definitions compile what they import themselves: Dagster, dbt, Feast,
torch, MLflow, CatBoost).

:func:`start` starts it only when there is something to compile: not when bytecode cannot be
written, nor when the stacks are compiled already (a second demo).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys

# TensorFlow first (the definitions' import compiles torch meanwhile), then what the text
# embeddings, the index and the bento import beyond the definitions
MODULES = (
    "socialrec.models.two_tower",
    "sentence_transformers",
    "pymilvus",
    "bentoml",
)
# a stack counts as compiled when its package's __init__ is: the process that first imported
# the package compiled what it imports of it
PACKAGES = ("tensorflow", "tensorflow_recommenders", "transformers", "pymilvus", "bentoml")


def compiled(package: str) -> bool:
    """Whether ``package``'s ``__init__`` has its bytecode next to it (False when missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    return os.path.exists(importlib.util.cache_from_source(spec.origin))


def needed() -> bool:
    """Whether warming would keep anything: bytecode can be written (``sys.dont_write_bytecode``,
    ``PYTHONDONTWRITEBYTECODE``) and a stack of :data:`PACKAGES` is not compiled yet."""
    return not sys.dont_write_bytecode and not all(compiled(p) for p in PACKAGES)


def start(nice: int = 5) -> subprocess.Popen | None:
    """Start the warming process (``nice`` added to its niceness), or None when it is not
    :func:`needed`. It ends by itself; its output is dropped (the steps' imports say the same)."""
    if not needed():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration.warm"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.nice(nice),
    )


def stop(proc: subprocess.Popen | None) -> None:
    """End a warming process that is still running (the demo stopped first)."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def main() -> int:
    for name in MODULES:
        importlib.import_module(name)
    # the text encoder's model classes are imported when it loads (transformers imports its
    # model code lazily)
    from socialrec.features.text import TextEncoder

    TextEncoder().model  # noqa: B018 - loaded for its imports
    return 0


if __name__ == "__main__":
    sys.exit(main())
