"""Milvus Lite vs the local Milvus standalone server vs exact numpy search, side by side.

The same ``n`` x ``dim`` L2-normalised vectors (random, ``--categories`` categories) go
through ``PostIndex.write_version`` on both engines (the product's schema, HNSW M=16,
efConstruction=100; Lite: INVERTED on the category, the 2.3 server: STL_SORT), then the same
queries are searched top-``k`` with and without a category filter; numpy does the exact inner
product over the same matrix (the filter as a boolean mask). Prints a table and writes JSON.

    uv run python -m benchmarks.milvus_engines [--posts 100000] [--dim 64] [--k 500]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from socialrec.stores.index import PostIndex
from socialrec.stores.milvus_server import LocalMilvusServer


def _data(n: int, dim: int, categories: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64)
    return ids, ids % categories, ids % 1000, 1_767_225_600 + ids, emb


def _stats(times: list[float]) -> dict:
    ms = 1000 * np.asarray(times)
    return {"p50_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95))}


def _search_figures(search, queries, k, cats) -> dict:
    search(queries[0], k, None)  # warm-up
    out = {}
    for label, filt in (("no_filter", None), ("filter", cats)):
        times = []
        for q in queries:
            t = time.perf_counter()
            search(q, k, filt)
            times.append(time.perf_counter() - t)
        out[label] = _stats(times)
    return out


def _engine(uri: str, data, queries, k, cats) -> dict:
    index = PostIndex(uri)
    try:
        t = time.perf_counter()
        name = index.write_version("bench", *data)
        build_s = time.perf_counter() - t
        index.swap_alias("posts", name)
        figures = _search_figures(
            lambda q, kk, f: index.search("posts", q, kk, f), queries, k, cats
        )
        # recall of the unfiltered top-k against the exact answer
        exact = data[4] @ queries.T
        recall = []
        for i, q in enumerate(queries[:10]):
            got = {p for p, _ in index.search("posts", q, k)[0]}
            truth = set(np.argpartition(-exact[:, i], k)[:k].tolist())
            recall.append(len(got & truth) / k)
        return {
            "write_index_load_s": build_s,
            "version": index.server_version,
            "recall_at_k": float(np.mean(recall)),
            **figures,
        }
    finally:
        index.close()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--posts", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--k", type=int, default=500)
    p.add_argument("--categories", type=int, default=20)
    p.add_argument("--queries", type=int, default=30)
    p.add_argument("--skip-lite", action="store_true")
    p.add_argument("--out", default="bench-results/milvus_engines.json")
    args = p.parse_args(argv)

    data = _data(args.posts, args.dim, args.categories)
    rng = np.random.default_rng(1)
    queries = data[4][rng.choice(args.posts, args.queries, replace=False)]
    queries = queries + 0.3 * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    cats = [1, 5, 9]  # 3 of the categories: ~15% of the posts at 20 categories
    report: dict = {
        "posts": args.posts,
        "dim": args.dim,
        "k": args.k,
        "filter": f"category_id in {cats} of {args.categories}",
        "machine": f"{platform.machine()}, {platform.processor() or '?'}",
    }

    emb, cat_arr = data[4], np.asarray(data[1])

    def numpy_search(q, k, filt):
        scores = emb @ q
        if filt is not None:
            scores = np.where(np.isin(cat_arr, filt), scores, -np.inf)
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    report["numpy"] = _search_figures(numpy_search, queries, args.k, cats)

    root = Path(tempfile.mkdtemp(prefix="milvus_engines_"))
    try:
        server = LocalMilvusServer(root / "server", die_with_parent=True)
        t = time.perf_counter()
        with server:
            report["server_start_s"] = time.perf_counter() - t
            report["server"] = _engine(server.uri, data, queries, args.k, cats)
            rss = Path(f"/proc/{server.pid}/status").read_text()
            report["server_rss_mib"] = next(
                int(line.split()[1]) / 1024 for line in rss.splitlines() if line.startswith("VmRSS")
            )
        if not args.skip_lite:
            report["lite"] = _engine(str(root / "lite" / "posts.db"), data, queries, args.k, cats)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(
        f"\n{args.posts:,} x {args.dim}-d, top-{args.k}, filter {report['filter']}; "
        f"server start {report['server_start_s']:.1f}s, RSS {report['server_rss_mib']:.0f} MiB"
    )
    print(
        f"{'engine':<8} {'write+index+load':>17} {'recall':>7} {'p50':>9} {'p95':>9} "
        f"{'p50 filt':>9} {'p95 filt':>9}"
    )
    for name in ("numpy", "server", "lite"):
        if name not in report:
            continue
        r = report[name]
        build = f"{r['write_index_load_s']:.1f} s" if "write_index_load_s" in r else "-"
        recall = f"{r['recall_at_k']:.3f}" if "recall_at_k" in r else "1"
        print(
            f"{name:<8} {build:>17} {recall:>7} {r['no_filter']['p50_ms']:>7.1f}ms "
            f"{r['no_filter']['p95_ms']:>7.1f}ms {r['filter']['p50_ms']:>7.1f}ms "
            f"{r['filter']['p95_ms']:>7.1f}ms"
        )
    return report


if __name__ == "__main__":
    main()
