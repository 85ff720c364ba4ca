"""Put the models into the BentoML model store and ``bentoml build`` the recommender bento.

Run as ``python -m bentos.package --spec spec.json`` by the ``recommender_bento`` asset, in its
own process so that ``BENTOML_HOME`` is the one of the socialrec settings (BentoML reads it once,
at import). ``spec.json``::

    {"models": {"socialrec_two_tower": {"path": "...", "labels": {"mlflow_run_id": "..."}},
                ...},
     "labels": {...}}

Each model directory is copied into a new model-store entry (``bentoml.models.create``),
labelled so it links back to its MLflow run; the bento then packs those exact versions.
Prints one JSON line: ``{"bento_tag": ..., "models": {name: tag}}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import bentoml

ROOT = Path(__file__).resolve().parent.parent
BENTOFILE = Path(__file__).resolve().parent / "bentofile.yaml"


def import_model(name: str, path: str | Path, labels: dict[str, str]) -> str:
    """Copy a model directory into the model store; returns the new tag."""
    with bentoml.models.create(
        name, labels={k: str(v) for k, v in labels.items()}, metadata={"source": str(path)}
    ) as model:
        shutil.copytree(path, model.path, dirs_exist_ok=True)
    return str(model.tag)


def package(spec: dict) -> dict:
    tags = {
        name: import_model(name, entry["path"], entry.get("labels", {}))
        for name, entry in spec["models"].items()
    }
    labels = {k: str(v) for k, v in spec.get("labels", {}).items()}
    labels.update(
        {f"model.{n.removeprefix('socialrec_')}": t.split(":")[1] for n, t in tags.items()}
    )
    bento = bentoml.bentos.build_bentofile(
        str(BENTOFILE), build_ctx=str(ROOT), labels=labels, reload=True
    )
    packed = {str(m.tag) for m in bento.info.all_models}
    missing = set(tags.values()) - packed
    if missing:
        raise RuntimeError(f"the bento did not pack the new models {sorted(missing)}")
    return {"bento_tag": str(bento.tag), "models": tags, "path": bento.path}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--spec", required=True, help="JSON file: models to import and labels")
    args = p.parse_args(argv)
    out = package(json.loads(Path(args.spec).read_text()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
