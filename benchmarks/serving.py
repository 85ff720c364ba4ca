"""Benchmark `serving`: the BUILT bento on loopback over synthetic catalogs of 100k and 1M posts.

Not a test: ``make bench-serving`` (``python -m benchmarks.serving --quick`` for 100k posts
only). Every phase that touches the heavy libraries runs in a child process (like
``benchmarks/load.py``), so the load generator's process stays small.

1. ``train``: the whole asset graph at TINY size (``SOCIALREC_DEMO_*``, as
   ``tests/test_e2e.py`` does, ~2 min) gives a trained two-tower model, a ranker, users with
   online features and their seen history. (``--tiny-dir`` reuses one kept with ``--keep``.)
2. per size N, the local Milvus server of the size's data directory is started (the embedded
   default, ``socialrec.stores.milvus_server``) and stopped when the size is done.
3. ``prepare`` (per size): a synthetic catalog of N posts, NO MiniLM: random unit description
   embeddings; categories, creators and media types drawn from the tiny data's; creation times
   over the last 30 days; engagement counts. Written the product's way: the ``post_features`` /
   ``post_content`` feature tables, Feast ``apply`` + ``materialize`` into the SQLite online
   store (in time windows of 100k posts to bound memory), post-tower embeddings of all N posts
   (the tiny model) and the description vectors into two collections behind the aliases with
   ``PostIndex.write_version`` (insert, flush, one HNSW build, load: timed, ``index_build_s``)
   and ``swap_alias``, the catalog, the seen store, and a bento built by ``bentos/package.py``.
   The ``/search`` (MiniLM, 384-d) collection holds the first ``--text-posts`` posts (default
   100,000; ``0`` for all of them).
4. ``floors`` (per size, in-process, no HTTP): the seen-store read, the user's online features
   and the user tower, ``PostIndex.search`` alone (filtered to the user's categories and
   unfiltered, the two searches of the two-tower source), one batched online post-feature fetch
   for K ids, ``ranking_features`` and ``Ranker.predict`` on K rows, and the whole 4-stage
   ``Recommender.recommend`` in-process.
5. ``serve`` (per size and K): ``bentoml serve <bento>`` on 127.0.0.1 with
   ``SOCIALREC_RETRIEVAL_TOP_N=K`` (restarted per K), warmed up, then ``/recommend`` from an
   async httpx client at concurrency 1 and 8 (``--requests`` per cell, at most
   ``--max-seconds``); the mean stage timings come from the service's own ``/metrics``. With the
   first K also ``/similar`` and ``/search``; with the last K the freshness checks: POST /posts,
   then poll ``/similar`` (or ``/search``) until it returns the post; POST /events for a post of
   the user's current ``/recommend`` list, then the very next ``/recommend`` must exclude it.

Writes ``bench-results/serving.json``: ``runs`` (posts, K, concurrency, p50_ms, p99_ms, rps,
errors), ``floors`` (per size at K=500: search_ms, features_ms, rank_ms), ``freshness``
(post_live_s, event_filter_ok), ``index_build_s`` (per size), ``machine``, the printed
``table`` and every raw figure under ``details``; prints the table with the issue's targets
(met or missed). Every server and child process started is stopped (also on errors, Ctrl-C and
SIGTERM); the temporary directory is removed unless ``--keep``.

This module is the entry point and the parent's run; the phases and the report live in
``benchmarks/serving_parts/`` (common: processes and ``Service``; measure; prepare; floors;
report).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving_parts.common import (
    ROOT,
    Service,
    child_env,
    on_sigterm,
    run_child,
    stop_all,
)
from benchmarks.serving_parts.floors import floors
from benchmarks.serving_parts.measure import (
    measure_freshness,
    measure_reads,
    measure_recommend,
    run_load,
)
from benchmarks.serving_parts.prepare import prepare, tiny_ready, train_tiny
from benchmarks.serving_parts.report import summary, table
from socialrec.stores.milvus_server import LocalMilvusServer

SERVERS: list[LocalMilvusServer] = []  # the Milvus servers started, for the cleanup


# ============================================================================================
# main
# ============================================================================================
def run(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="socialrec-bench-serving-"))
    logs = root / "logs"
    logs.mkdir()
    report: dict = {
        "benchmark": "serving",
        "cpus": os.cpu_count(),
        "started": dt.datetime.now(dt.UTC).isoformat(),
        "args": {k: v for k, v in vars(args).items() if k not in ("phase", "spec")},
        "sizes": [],
    }
    t_start = time.perf_counter()
    print(f"work directory {root}", flush=True)
    try:
        tiny = Path(args.tiny_dir) if args.tiny_dir else root / "tiny"
        if tiny_ready(tiny):
            print(f"reusing the trained tiny graph in {tiny}", flush=True)
            report["train_s"] = None
        else:
            print("training the models on a tiny synthetic graph ...", flush=True)
            report["train_s"] = train_tiny(tiny, logs / "train.log")
            print(f"  done in {report['train_s']:.0f} s", flush=True)
        for n_posts in args.sizes:
            data = root / f"catalog_{n_posts}"
            data.mkdir()
            env = child_env(
                SOCIALREC_DATA_DIR=str(data),
                BENTOML_HOME=str(data / "bentoml"),
                DAGSTER_HOME=str(data / "dagster"),
            )
            # the local Milvus server of this data directory (the embedded default), shared by
            # the prepare and floors children and the service's workers; stopped after the size
            milvus = LocalMilvusServer(data)
            SERVERS.append(milvus)
            milvus.start()
            print(f"\n== {n_posts:,} posts: Milvus at {milvus.uri}; preparing {data}", flush=True)
            t0 = time.perf_counter()
            prep = run_child(
                "prepare",
                {
                    "n_posts": n_posts,
                    "tiny_dir": str(tiny),
                    "seed": args.seed,
                    "text_posts": args.text_posts or None,
                },
                env,
                logs / f"prepare_{n_posts}.log",
                timeout=6 * 3600,
            )
            size: dict = {"n_posts": n_posts, "prepare": prep, "serve": {}}
            size["prepare_s"] = time.perf_counter() - t0
            report["sizes"].append(size)
            print(f"  prepared in {size['prepare_s']:.0f} s: {prep['bento_tag']}", flush=True)
            users = [u for u in prep["users"] if u["n_events"] > 0] or prep["users"]
            print("  floors (in-process) ...", flush=True)
            size["floors"] = run_child(
                "floors",
                {
                    "ks": args.ks,
                    "reps": args.floor_reps,
                    "users": users,
                    "models": prep["models"],
                    "k_items": args.k_items,
                },
                env,
                logs / f"floors_{n_posts}.log",
                timeout=3 * 3600,
            )
            for i, k in enumerate(args.ks):
                env_k = {**env, "SOCIALREC_RETRIEVAL_TOP_N": str(k)}
                if args.workers:
                    env_k["SOCIALREC_SERVICE_WORKERS"] = str(args.workers)
                log = logs / f"serve_{n_posts}_{k}.log"
                with Service(prep["bento_tag"], env_k, data, log) as svc:
                    print(f"  K={k}: service ready in {svc.startup_s:.0f} s", flush=True)
                    cell: dict = {"startup_s": svc.startup_s, "workers": svc.workers}
                    warm = [{"user_id": u["user_id"], "k": args.k_items} for u in users]
                    asyncio.run(run_load(svc.url, "/recommend", warm, 1, args.warmup, 600))
                    cell["recommend"] = measure_recommend(
                        svc, users, args.k_items, args, milvus.pgid
                    )
                    if i == 0:
                        size["reads"] = measure_reads(svc, n_posts, args)
                    if i == len(args.ks) - 1:
                        size["freshness_k"] = k
                        size["freshness"] = measure_freshness(
                            svc, n_posts, users, args.freshness_reps
                        )
                        fr = size["freshness"]
                        print(
                            f"    freshness: similar {fr['post_to_similar_s']} s, search "
                            f"{fr['post_to_search_s']} s, events excluded "
                            f"{[e['excluded'] for e in fr['events']]}",
                            flush=True,
                        )
                    size["serve"][str(k)] = cell
            milvus.stop()
            if not args.keep:
                shutil.rmtree(data, ignore_errors=True)
    finally:
        stop_all()
        for server in SERVERS:
            server.stop()
        report["total_s"] = time.perf_counter() - t_start
        if args.keep:
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return report


def _ints(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=_ints, default=[100_000, 1_000_000], help="catalog sizes")
    p.add_argument("--ks", type=_ints, default=[100, 500, 1000], help="retrieval candidates K")
    p.add_argument("--concurrency", type=_ints, default=[1, 8])
    p.add_argument("--requests", type=int, default=200, help="/recommend calls per (K, c) cell")
    p.add_argument("--max-seconds", type=float, default=20.0, help="cap per (K, c) cell")
    p.add_argument("--warmup", type=int, default=5, help="/recommend calls before measuring")
    p.add_argument("--k-items", type=int, default=20, help="posts per /recommend answer")
    p.add_argument("--floor-reps", type=int, default=20, help="repetitions of each floor")
    p.add_argument("--freshness-reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="100k posts only (for iteration)")
    p.add_argument(
        "--workers", type=int, default=None, help="service workers (default: the service's own)"
    )
    p.add_argument(
        "--text-posts",
        type=int,
        default=100_000,
        help="cap the /search (MiniLM, 384-d) collection at this many posts (0: all; building\n"
        "its HNSW takes ~50 s per 100k posts on 2 cores, ~10 min at 1M)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny-dir", default=None, help="reuse a trained tiny graph (kept by --keep)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--out", default=str(ROOT / "bench-results" / "serving.json"))
    p.add_argument("--phase", choices=("prepare", "floors"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = [100_000]

    if args.phase:  # a child process: one phase, its result as one RESULT line
        spec = json.loads(Path(args.spec).read_text())
        fn = {"prepare": prepare, "floors": floors}[args.phase]
        print("RESULT " + json.dumps(fn(spec)), flush=True)
        return 0

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("interrupted: every server and child process was stopped", file=sys.stderr)
        return 130
    result = summary(report)
    text = table(result)
    print(f"\nwhole benchmark in {report['total_s'] / 60:.1f} min\n\n{text}")
    result["table"] = text
    result["details"] = report  # every raw figure: prepare timings, floors per K, stages
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
