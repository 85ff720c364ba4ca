"""Benchmark `load`: synthetic events through raw loading + ``dbt build`` on DuckDB.

Phases, each in its own child process so that its wall time and peak RSS (``wait4``'s
``ru_maxrss`` of that child and the processes it waited for, e.g. dbt) are its own. The data is
generated in a child too: Linux carries a process's peak RSS across fork + exec, so a large
parent would inflate every child's figure.

1. ``raw_full``: every landed event partition but the last day, plus posts/users/categories,
   into the raw tables (``socialrec.data.warehouse``, what the raw assets run).
2. ``dbt_full``: ``dbt build`` (models + tests) on that warehouse.
3. ``raw_incremental``: the last day lands; only its partition is loaded.
4. ``dbt_incremental``: ``dbt build`` again (incremental models process the new day only).

Prints one table and writes it as JSON to ``bench-results/load.json``. Not a test: run with
``make bench-load`` (``EVENTS=200000 make bench-load`` for a quicker run).
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


def _child(code: str, env: dict[str, str]) -> dict:
    """Run python ``code`` in a child process; its wall seconds, peak RSS (MiB) and output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark phase failed:\n{out[-4000:]}")
    return {"seconds": wall, "peak_rss_mib": usage.ru_maxrss / 1024, "output": out}


GEN = """
import json
from socialrec.data.generator import generate_dataset, write_landing
from socialrec.data.landing import LocalLandingBucket
ds = generate_dataset(n_users={users}, n_posts={posts}, n_events={events}, days={days})
write_landing(ds, LocalLandingBucket({staging!r}))
per_day = ds.events["ts"].dt.strftime("%Y-%m-%d").value_counts().to_dict()
print("JSON", json.dumps({{"events": len(ds.events), "users": len(ds.users),
                          "posts": len(ds.posts), "per_day": per_day}}))
"""

RAW = """
from socialrec.data import warehouse
from socialrec.data.landing import open_bucket
from socialrec.settings import Settings
s = Settings()
b = open_bucket(str(s.landing_uri))
parts = {parts!r}
r = warehouse.load_event_partitions(s, b, parts)
n = r.rows_loaded
if {dims!r}:
    for d in ("categories", "users", "posts"):
        warehouse.load_dimension(s, b, d)
print("ROWS", n)
"""

DBT = """
import subprocess, sys
from pathlib import Path
from assets.dbt import DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_env
from socialrec.settings import Settings
import os
env = {{**os.environ, **dbt_env(Settings())}}
out = subprocess.run([DBT_EXECUTABLE, "build", "--quiet", "--project-dir", str(DBT_PROJECT_DIR),
                      "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", {target!r}],
                     env=env, capture_output=True, text=True)
print(out.stdout[-3000:], out.stderr[-3000:])
sys.exit(out.returncode)
"""


def run(n_events: int, days: int, keep: bool) -> list[dict]:
    from socialrec.data.landing import LocalLandingBucket, landed_partitions, partition_prefix

    data_dir = Path(tempfile.mkdtemp(prefix="socialrec-bench-load-"))
    env = {
        **os.environ,
        "SOCIALREC_DATA_DIR": str(data_dir),
        "SOCIALREC_PROFILE": "local",
        "DBT_LOG_PATH": str(data_dir / "dbt_logs"),
    }
    try:
        staging = LocalLandingBucket(data_dir / "staging")
        gen = _child(
            GEN.format(
                users=max(2000, n_events // 50),
                posts=max(5000, n_events // 20),
                events=n_events,
                days=days,
                staging=str(staging.root),
            ),
            env,
        )
        info = json.loads(gen["output"].split("JSON ", 1)[1].splitlines()[0])
        landing = data_dir / "landing"
        landing.mkdir(parents=True, exist_ok=True)
        parts = landed_partitions(staging, "events")
        last = parts[-1]
        for blob in staging.list():
            if blob.key.startswith(partition_prefix("events", last)):
                continue
            dst = landing / blob.key
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(staging.root / blob.key, dst)
        print(
            f"generated {info['events']:,} events, {info['users']:,} users, "
            f"{info['posts']:,} posts over {days} days in {gen['seconds']:.0f}s "
            f"(peak RSS {gen['peak_rss_mib']:.0f} MiB)",
            flush=True,
        )
        n_last = int(info["per_day"].get(last, 0))
        n_before = info["events"] - n_last
        target = str(data_dir / "dbt_target")
        results = []

        def phase(name: str, code: str, events: int) -> None:
            r = _child(code, env)
            r.update(phase=name, events=events, events_per_s=events / r["seconds"])
            results.append(r)
            print(
                f"{name:16s} {events:>10,} events {r['seconds']:7.1f} s "
                f"{r['events_per_s']:>10,.0f} events/s  peak RSS {r['peak_rss_mib']:7.0f} MiB",
                flush=True,
            )

        phase("raw_full", RAW.format(parts=parts[:-1], dims=True), n_before)
        phase("dbt_full", DBT.format(target=target), n_before)
        for blob in staging.list(partition_prefix("events", last)):
            dst = landing / blob.key
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(staging.root / blob.key, dst)
        phase("raw_incremental", RAW.format(parts=[last], dims=False), n_last)
        phase("dbt_incremental", DBT.format(target=target), n_last)
        return results
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=int(os.environ.get("EVENTS", 1_000_000)))
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    p.add_argument("--out", default=str(ROOT / "bench-results" / "load.json"))
    args = p.parse_args(argv)
    results = run(args.events, args.days, args.keep)
    table = [
        "| phase | events | seconds | events/s | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['phase']} | {r['events']:,} | {r['seconds']:.1f} | {r['events_per_s']:,.0f} "
            f"| {r['peak_rss_mib']:.0f} |"
            for r in results
        ),
    ]
    print("\n" + "\n".join(table))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "load",
        "events": args.events,
        "days": args.days,
        "cpus": os.cpu_count(),
        "results": [{k: v for k, v in r.items() if k != "output"} for r in results],
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
