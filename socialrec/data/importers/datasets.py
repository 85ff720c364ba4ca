"""Dataset folders: the files of a log plus an ``import.json`` that says how to import them.

``import.json``::

    {"name": "my-log",                       # required: names the report (and the source)
     "interactions": "log.csv",              # required: a file or a list of files
     "items": "items.parquet",               # optional
     "users": "users.csv",                   # optional
     "options": {...}}                       # ImportOptions fields (docs/importing.md)

Paths are relative to the folder (absolute paths are allowed). Unknown keys are an error, and
so is a file that does not exist (the error names it and the import.json). Without a
``source`` option the name is the source (it must then be a valid source name).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from socialrec.data.importers.core import import_interactions
from socialrec.data.landing import LandingBucket

CONFIG_FILE = "import.json"
DATASET_KEYS = ("name", "interactions", "items", "users", "options")


def load_dataset(folder: str | Path) -> dict[str, Any]:
    """The checked ``import.json`` of ``folder`` with every file path resolved (absolute)."""
    folder = Path(folder)
    config = folder / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_FILE}")
    try:
        data = json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{config}: must be a JSON object with keys {DATASET_KEYS}")
    unknown = sorted(set(data) - set(DATASET_KEYS))
    if unknown:
        raise ValueError(f"{config}: unknown key(s) {unknown}; allowed: {list(DATASET_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{config}: 'name' must be a non-empty string")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise ValueError(f"{config}: 'options' must be an object of import options")
    if "interactions" not in data:
        raise ValueError(f"{config}: 'interactions' (a file or a list of files) is required")
    inter = data["interactions"]
    many = isinstance(inter, list)
    if (many and not inter) or not all(isinstance(p, str) for p in (inter if many else [inter])):
        raise ValueError(f"{config}: 'interactions' must be a file or a non-empty list of files")

    def resolve(key: str, path: Any) -> Path:
        if not isinstance(path, str) or not path:
            raise ValueError(f"{config}: {key!r} must be a file path")
        full = (folder / path).resolve()
        if not full.is_file():
            raise FileNotFoundError(f"{config}: {key} file {path!r} not found (looked at {full})")
        return full

    out: dict[str, Any] = {"name": name, "options": options}
    out["interactions"] = (
        [resolve(f"interactions[{i}]", p) for i, p in enumerate(inter)]
        if many
        else resolve("interactions", inter)
    )
    for key in ("items", "users"):
        out[key] = resolve(key, data[key]) if data.get(key) is not None else None
    return out


def import_dataset(
    folder: str | Path,
    bucket: LandingBucket | str,
    now: dt.datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Import the dataset folder ``folder`` (its ``import.json``) into ``bucket``; the report
    of :func:`import_interactions` plus ``name`` and ``dataset_dir``. ``overrides``: options
    that win over the file's (e.g. ``shift_to``)."""
    ds = load_dataset(folder)
    options = {"source": ds["name"], **ds["options"], **overrides}
    report = import_interactions(
        ds["interactions"],
        bucket,
        items=ds["items"],
        users=ds["users"],
        options=options,
        now=now,
    )
    return {"name": ds["name"], "dataset_dir": str(Path(folder).resolve()), **report}
