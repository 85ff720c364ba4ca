"""Where the derived artifacts that are not registered models live: a directory per build and a
``current`` pointer the readers follow (the co-engagement neighbours; the asset writes them,
the ranker's training, the offline evaluation and the bento read the current one)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from socialrec.settings import Settings

NEIGHBOURS = "neighbours"
_POINTER = "current.json"


def new_dir(settings: Settings, kind: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    return Path(settings.models_dir) / kind / stamp


def publish(settings: Settings, kind: str, directory: Path, info: dict) -> Path:
    """Point ``current`` at ``directory`` (atomic replace) with ``info`` beside the path."""
    base = Path(settings.models_dir) / kind
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".{_POINTER}.tmp"
    tmp.write_text(json.dumps({"path": str(directory), **info}, indent=2))
    os.replace(tmp, base / _POINTER)
    return base / _POINTER


def current(settings: Settings, kind: str) -> dict | None:
    """``{"path": ..., **info}`` of the current build, or None before the first one."""
    pointer = Path(settings.models_dir) / kind / _POINTER
    return json.loads(pointer.read_text()) if pointer.exists() else None
