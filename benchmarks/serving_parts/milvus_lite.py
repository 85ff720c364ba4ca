"""Phase ``milvus`` (child): what Milvus Lite, the embedded default, can do."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

from benchmarks.serving_parts.floors import time_calls
from benchmarks.serving_parts.prepare import write_collection


# ============================================================================================
# phase: milvus (child) — what Milvus Lite (the embedded default) can do
# ============================================================================================
def milvus_experiment(spec: dict) -> dict:
    from pymilvus import DataType, MilvusClient

    from socialrec.stores.index import PostIndex
    from socialrec.stores.milvus import collection_rows

    src = Path(spec["vectors_dir"])
    m = int(spec["size"])
    reps = int(spec["reps"])
    vectors = np.load(src / "post_vectors.npy", mmap_mode="r")[:m].astype(np.float32)
    cats = np.load(src / "post_categories.npy")[:m].astype(np.int64)
    m = len(vectors)
    ids = np.arange(1, m + 1, dtype=np.int64)
    meta = [ids, cats, np.zeros(m, np.int64), np.zeros(m, np.int64)]
    path = Path(spec["dir"]) / "exp.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    queries = vectors[rng.integers(0, m, 64)] + rng.normal(0, 0.3, (64, vectors.shape[1]))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    distinct = np.unique(cats)
    user_cats = [int(c) for c in distinct[:3]]
    share = float(np.isin(cats, user_cats).mean())
    results: list[dict] = []
    qi = itertools.count()

    def q(nq: int = 1) -> list:
        return [queries[next(qi) % len(queries)].tolist() for _ in range(nq)]

    def measure(client, name, variant, top, *, filt=None, nq=1, ef=None, partitions=None, n=reps):
        params = {"metric_type": "IP", "params": {"ef": ef or max(64, top), "nprobe": 16}}
        expr = f"category_id in [{', '.join(map(str, filt))}]" if filt else ""
        kw = {"partition_names": partitions} if partitions else {}
        st, res = time_calls(
            lambda: client.search(
                name, data=q(nq), limit=top, filter=expr, search_params=params, **kw
            ),
            n,
            warm=1,
        )
        row = {
            "variant": variant,
            "top_k": top,
            "filtered": bool(filt or partitions),
            "nq": nq,
            "ef": params["params"]["ef"],
            **st,
            "per_query_p50_ms": st["p50_ms"] / nq,
            "hits": len(res[0]),
        }
        results.append(row)
        print(
            f"  {variant:32s} top{top:<5d} {'filtered' if row['filtered'] else 'all':8s} "
            f"nq={nq} ef={row['ef']}: p50 {st['p50_ms']:.1f} ms ({row['per_query_p50_ms']:.1f} "
            f"ms/query), {row['hits']} hits",
            flush=True,
        )

    def schema(partition_key: bool = False):
        sc = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        sc.add_field("post_id", DataType.INT64, is_primary=True)
        sc.add_field("category_id", DataType.INT64, is_partition_key=partition_key)
        sc.add_field("creator_id", DataType.INT64)
        sc.add_field("created_at", DataType.INT64)
        sc.add_field("embedding", DataType.FLOAT_VECTOR, dim=vectors.shape[1])
        return sc

    def index_params(client, index_type, params):
        ip = client.prepare_index_params()
        ip.add_index("embedding", index_type=index_type, metric_type="IP", params=params)
        ip.add_index("category_id", index_type="INVERTED")
        return ip

    builds: dict[str, float] = {}
    index = PostIndex(str(path))
    client = index.client
    try:
        t0 = time.perf_counter()
        default = write_collection(index, "default", "posts_", meta, vectors)
        builds["default (product: HNSW M16 efC100)"] = time.perf_counter() - t0
        # the product's writer searching its new collection before closing: rows in memtable
        measure(client, default, "default, rows in memtable", 100, filt=user_cats, n=3)
        measure(client, default, "default, rows in memtable", 100, n=3)
        variants = {
            "posts_flat": ("FLAT", {}, False),
            "posts_ivf": ("IVF_FLAT", {"nlist": 1024}, False),
            "posts_pkey": ("HNSW", {"M": 16, "efConstruction": 100}, True),
        }
        rows = collection_rows(*meta, vectors)
        for name, (itype, params, pkey) in variants.items():
            t0 = time.perf_counter()
            client.create_collection(
                name, schema=schema(pkey), index_params=index_params(client, itype, params)
            )
            for b in range(0, m, 2000):
                client.insert(name, rows[b : b + 2000])
            builds[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.create_collection(
            "posts_parts",
            schema=schema(False),
            index_params=index_params(client, "HNSW", {"M": 16, "efConstruction": 100}),
        )
        for c in distinct:
            client.create_partition("posts_parts", f"c{int(c)}")
        for c in distinct:
            sel = [r for r in rows if r["category_id"] == int(c)]
            for b in range(0, len(sel), 2000):
                client.insert("posts_parts", sel[b : b + 2000], partition_name=f"c{int(c)}")
        builds["posts_parts"] = time.perf_counter() - t0
        del rows
    finally:
        t0 = time.perf_counter()
        index.close()  # flush + index build of every collection, as the product's writer
        builds["close (flush + index build, all)"] = time.perf_counter() - t0
    index = PostIndex(str(path))
    client = index.client
    try:
        for name in ("posts_default", "posts_flat", "posts_ivf", "posts_pkey", "posts_parts"):
            client.load_collection(name)
        for top in (100, 1000):
            for filt in (user_cats, None):
                measure(client, default, "default (HNSW, flushed)", top, filt=filt)
        measure(client, default, "default (HNSW, flushed)", 100, filt=user_cats, ef=16)
        measure(client, default, "default (HNSW, flushed)", 100, ef=16)
        for nq in (8, 32):
            measure(client, default, "default, batched queries", 100, nq=nq)
            measure(client, default, "default, batched queries", 100, filt=user_cats, nq=nq)
        for name, label in (
            ("posts_flat", "FLAT (brute force)"),
            ("posts_ivf", "IVF_FLAT nlist=1024 nprobe=16"),
            ("posts_pkey", "HNSW + partition key category_id"),
        ):
            measure(client, name, label, 100, filt=user_cats)
            measure(client, name, label, 100)
        parts = [f"c{c}" for c in user_cats]
        measure(client, "posts_parts", "HNSW, partition per category", 100, partitions=parts)
        measure(client, "posts_parts", "HNSW, partition per category", 1000, partitions=parts)
        measure(client, "posts_parts", "HNSW, partition per category", 100, partitions=parts, nq=8)
        measure(client, "posts_parts", "HNSW, partition per category", 100)
        # what /posts does between two index builds: new rows stay in the memtable (searched
        # by brute force, row by row) until it reaches 128 MB or the next post_index build
        new = 0
        for grow in (1_000, 10_000):
            extra = rng.standard_normal((grow - new, vectors.shape[1])).astype(np.float32)
            extra /= np.linalg.norm(extra, axis=1, keepdims=True)
            new_ids = np.arange(m + new + 1, m + grow + 1, dtype=np.int64)
            zeros = np.zeros(len(new_ids), np.int64)
            extra_rows = collection_rows(new_ids, cats[: len(new_ids)], zeros, zeros, extra)
            for b in range(0, len(extra_rows), 500):
                client.upsert(default, extra_rows[b : b + 500])
            new = grow
            label = f"default + {grow:,} upserted (memtable)"
            measure(client, default, label, 100, filt=user_cats, n=5)
            measure(client, default, label, 100, n=5)
    finally:
        index.close()
    return {
        "size": m,
        "dim": int(vectors.shape[1]),
        "filter_categories": user_cats,
        "filter_share": share,
        "build_s": builds,
        "results": results,
    }
