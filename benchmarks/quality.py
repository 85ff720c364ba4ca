"""Benchmark `quality`: the whole asset graph on MovieLens latest-small, our pipeline vs baselines.

1. ``socialrec.importers.import_movielens`` writes the dataset (movies -> posts with the first
   genre as category and title + genres + tags as description; every rating a VIEW, >= 4 a
   LIKE, <= 2 a DISLIKE) into a fresh landing directory.
2. ``orchestration.materialize`` runs the ``materialize_all`` job on it in a temporary data
   directory (its own Dagster instance, warehouse, Feast, MLflow, Milvus Lite, BentoML home).
3. The ``offline_evaluation`` asset's results (same run, same split) are printed as one table
   with the split protocol, and written to ``bench-results/quality.json``.

The dataset directory is a setting: ``SOCIALREC_DATASETS_DIR`` (default ``../shared/datasets``
beside the repository); the product never ships these files. Not a test: ``make bench-quality``.
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
DEFAULT_DATASETS = ROOT.parent / "shared" / "datasets"

READ_RESULTS = """
import dagster as dg
with dg.DagsterInstance.get() as i:
    e = i.get_latest_materialization_event(dg.AssetKey("offline_evaluation"))
    md = e.asset_materialization.metadata
    print(md["protocol"].value)
    print(md["results"].value)
    print(md["segments"].value)
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--datasets-dir", default=os.environ.get("SOCIALREC_DATASETS_DIR", str(DEFAULT_DATASETS))
    )
    p.add_argument("--dataset", default="movielens-latest-small")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    p.add_argument("--out", default=str(ROOT / "bench-results" / "quality.json"))
    args = p.parse_args(argv)
    dataset_dir = Path(args.datasets_dir) / args.dataset
    if not dataset_dir.exists():
        raise SystemExit(f"no dataset at {dataset_dir} (set SOCIALREC_DATASETS_DIR)")

    from socialrec.importers import import_movielens
    from socialrec.landing import LocalLandingBucket

    data_dir = Path(tempfile.mkdtemp(prefix="socialrec-bench-quality-"))
    try:
        t0 = time.perf_counter()
        report = import_movielens(dataset_dir, LocalLandingBucket(data_dir / "landing"))
        first_day = report["first_day"]
        print(
            f"imported {args.dataset}: {json.dumps(_counts(report))} in {time.perf_counter() - t0:.0f}s"
        )
        env = {
            **os.environ,
            "SOCIALREC_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(data_dir / "dagster"),
            "BENTOML_HOME": str(data_dir / "bentoml"),
            "SOCIALREC_DEMO_START_DATE": first_day,  # the event partitions start with the log
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
        print(run.stdout[-1500:])
        if run.returncode != 0:
            print(run.stderr[-6000:], file=sys.stderr)
            raise SystemExit("materialize_all failed on the dataset")
        seconds = time.perf_counter() - t1
        out = subprocess.run(
            [sys.executable, "-c", READ_RESULTS],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(f"\nwhole graph in {seconds:.0f}s\n\n{out}")
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "benchmark": "quality",
                    "dataset": args.dataset,
                    "graph_seconds": seconds,
                    "import": _counts(report),
                    "report": out,
                },
                indent=2,
            )
        )
        print(f"written to {path}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def _counts(report: dict) -> dict:
    return {k: v for k, v in report.items() if isinstance(v, int | float | str)}


if __name__ == "__main__":
    sys.exit(main())
