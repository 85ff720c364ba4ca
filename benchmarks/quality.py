"""Benchmark `quality`: the whole asset graph on every real log, the shipped pipeline beside
tuned baselines (``make bench-quality``; not a test).

For each dataset folder (a folder of files plus ``import.json``, docs/importing.md):

1. ``socialrec.data.importers.import_dataset`` writes the log into a fresh landing directory;
2. ``orchestration.materialize`` runs the ``materialize_all`` job on it in a temporary data
   directory (its own Dagster instance, warehouse, Feast, MLflow, Milvus, BentoML home);
3. the ``offline_evaluation`` asset's report (protocol, users, per-segment metrics of every
   method, chosen parameters, candidate sources alone and merged; docs/benchmarks.md) is read
   back, printed as tables and merged into ``bench-results/quality.json`` under the dataset's
   name.

Datasets: ``SOCIALREC_BENCH_DATASETS`` (comma-separated folder paths, or names of
``benchmarks/datasets/`` folders), default every folder of ``benchmarks/datasets/`` whose data
files are present (the committed folders point at the development copies in
``../shared/datasets``; a folder whose files are missing is skipped with the reason). The
product never reads these files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT / "benchmarks" / "datasets"
OUT = ROOT / "bench-results" / "quality.json"

READ_REPORT = """
import dagster as dg, json
with dg.DagsterInstance.get() as i:
    e = i.get_latest_materialization_event(dg.AssetKey("offline_evaluation"))
    print(e.asset_materialization.metadata["report_json"].value)
"""


def dataset_folders(spec: str | None) -> list[Path]:
    """The folders of ``spec`` (comma-separated paths, or names of ``benchmarks/datasets/``
    folders), else every folder of ``benchmarks/datasets/``; SystemExit naming a folder
    without ``import.json``."""
    if not spec:
        return sorted(p for p in DATASETS.iterdir() if (p / "import.json").exists())
    folders = []
    for item in filter(None, (p.strip() for p in spec.split(","))):
        path = Path(item)
        if not path.exists() and not path.is_absolute() and (DATASETS / item).exists():
            path = DATASETS / item  # a name: one of the committed folders
        if not (path / "import.json").is_file():
            raise SystemExit(
                f"{item}: not a dataset folder (no import.json there; give a folder path "
                f"or the name of a folder of {DATASETS.relative_to(ROOT)}/, docs/importing.md)"
            )
        folders.append(path.resolve())
    return folders


def missing_files(folder: Path) -> list[str]:
    """The data files an import.json names that do not exist."""
    config = json.loads((folder / "import.json").read_text())
    names = []
    for key in ("interactions", "items", "users"):
        value = config.get(key)
        names += value if isinstance(value, list) else ([value] if value else [])
    return [n for n in names if not (folder / n).exists()]


def run_dataset(folder: Path, keep: bool) -> tuple[str, dict, float]:
    from socialrec.data.importers import import_dataset
    from socialrec.data.landing import LocalLandingBucket

    data_dir = Path(tempfile.mkdtemp(prefix=f"socialrec-bench-{folder.name}-"))
    try:
        t0 = time.perf_counter()
        report = import_dataset(folder, LocalLandingBucket(data_dir / "landing"))
        name = report.get("name") or folder.name
        counts = {k: v for k, v in report.items() if isinstance(v, int | float | str)}
        print(f"imported {name}: {json.dumps(counts)} in {time.perf_counter() - t0:.0f}s")
        env = {
            **os.environ,
            "SOCIALREC_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(data_dir / "dagster"),
            "BENTOML_HOME": str(data_dir / "bentoml"),
            "SOCIALREC_DEMO_START_DATE": report["first_day"],  # partitions start with the log
            "SOCIALREC_EVALUATION_NAME": name,
            "SOCIALREC_EVALUATION_MAX_USERS": os.environ.get(
                "SOCIALREC_EVALUATION_MAX_USERS", "100000"
            ),
        }
        (data_dir / "dagster").mkdir(parents=True, exist_ok=True)
        t1 = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "orchestration.materialize"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t1
        print(run.stdout[-1500:])
        if run.returncode != 0:
            print(run.stderr[-6000:], file=sys.stderr)
            raise SystemExit(f"materialize_all failed on {name} (data kept in {data_dir})")
        path = subprocess.run(
            [sys.executable, "-c", READ_REPORT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        result = json.loads(Path(path).read_text())[name]
        result["graph_seconds"] = round(seconds, 1)
        print(f"\n## {name} (whole graph in {seconds:.0f}s)\n")
        print((Path(path).parent / "report.md").read_text())
        return name, result, seconds
    finally:
        if keep:
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", default=os.environ.get("SOCIALREC_BENCH_DATASETS"))
    p.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    ran = 0
    for folder in dataset_folders(args.datasets):
        missing = missing_files(folder)
        if missing:
            print(f"skipped {folder.name}: missing {', '.join(missing)}")
            continue
        name, result, _ = run_dataset(folder, args.keep)
        results[name] = result
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2))
        ran += 1
    if not ran:
        raise SystemExit("no dataset ran (set SOCIALREC_BENCH_DATASETS to dataset folders)")
    print(f"written to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
