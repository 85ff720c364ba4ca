"""Load generation and measurements against the running service (parent side)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import re
import time
import uuid
from collections import Counter

import numpy as np

from benchmarks.serving_parts.common import Service


# ============================================================================================
# load generation and measurements against the service (parent)
# ============================================================================================
def latency_stats(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    ms = np.asarray(seconds) * 1000
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


async def run_load(
    url: str,
    path: str,
    bodies: list[dict],
    concurrency: int,
    n_requests: int,
    max_seconds: float,
    check=None,
) -> dict:
    """``n_requests`` POSTs of ``bodies`` (round robin) from ``concurrency`` workers, stopping
    early after ``max_seconds``; latency stats (200s only), throughput, errors, sources."""
    import httpx

    latencies: list[float] = []
    outcomes: Counter = Counter()
    counter = itertools.count()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        t0 = time.perf_counter()
        deadline = t0 + max_seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                i = next(counter)
                if i >= n_requests:
                    return
                t = time.perf_counter()
                r = await client.post(path, json=bodies[i % len(bodies)])
                took = time.perf_counter() - t
                if r.status_code != 200:
                    outcomes[f"http_{r.status_code}"] += 1
                    continue
                latencies.append(took)
                outcomes[check(r.json()) if check else "ok"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {
        **latency_stats(latencies),
        "concurrency": concurrency,
        "seconds": wall,
        "throughput_rps": len(latencies) / wall if wall else 0.0,
        "outcomes": dict(outcomes),
    }


def _stage_sums(url: str) -> dict[str, tuple[float, float]]:
    """``{stage: (sum seconds, count)}`` of /recommend from the service's /metrics."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    out: dict[str, list[float]] = {}
    pat = re.compile(
        r"^socialrec_stage_duration_seconds_(sum|count)\{(.*?)\}\s+([0-9.eE+-]+)$", re.M
    )
    for kind, labels, value in pat.findall(text):
        if 'endpoint="/recommend"' not in labels:
            continue
        stage = re.search(r'stage="([^"]+)"', labels).group(1)
        out.setdefault(stage, [0.0, 0.0])[0 if kind == "sum" else 1] += float(value)
    # the ranking stage's post-feature cache (hits, misses): summed over the workers
    cache = re.findall(
        r'^socialrec_post_feature_cache_total\{result="(hit|miss)"\}\s+([0-9.eE+-]+)$', text, re.M
    )
    counts = {"hit": 0.0, "miss": 0.0}
    for result, value in cache:
        counts[result] += float(value)
    out["post_cache"] = [counts["hit"], counts["miss"]]
    return {k: (v[0], v[1]) for k, v in out.items()}


def _stage_means(before: dict, after: dict) -> dict[str, float]:
    """Mean ms per /recommend stage between two /metrics snapshots."""
    out = {}
    (h0, m0), (h1, m1) = before.get("post_cache", (0, 0)), after.get("post_cache", (0, 0))
    if (h1 - h0) + (m1 - m0) > 0:
        out["post_cache_hit_rate"] = round((h1 - h0) / ((h1 - h0) + (m1 - m0)), 3)
    for stage, (s1, c1) in after.items():
        if stage == "post_cache":
            continue
        s0, c0 = before.get(stage, (0.0, 0.0))
        if c1 > c0:
            out[stage] = round((s1 - s0) / (c1 - c0) * 1000, 2)
    return out


def _proc_stats() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, process group, user + system clock ticks) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))
    return out


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a live process, its descendants (BentoML's workers run in
    sessions of their own) and the rest of its process group."""
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo = set(), [root, *(p for p, (_, pg, _) in stats.items() if pg == root)]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return sum(stats[p][2] for p in seen if p in stats) / os.sysconf("SC_CLK_TCK")


def _recommend_check(body: dict) -> str:
    return body.get("source", "?")


def measure_recommend(
    svc: Service, users: list[dict], k_items: int, args, milvus_pgid: int | None = None
) -> list[dict]:
    """/recommend at each concurrency: latency, throughput, the stage means of the service's
    metrics, and the CPU time per request of the service's processes and of the Milvus
    server's (the CPU work a request costs, wherever it runs)."""
    bodies = [{"user_id": u["user_id"], "k": k_items} for u in users]
    cells = []
    for c in args.concurrency:
        before = _stage_sums(svc.url)
        cpu0 = tree_cpu_seconds(svc.proc.pid)
        mcpu0 = tree_cpu_seconds(milvus_pgid) if milvus_pgid else 0.0
        cell = asyncio.run(
            run_load(
                svc.url,
                "/recommend",
                bodies,
                c,
                args.requests,
                args.max_seconds,
                _recommend_check,
            )
        )
        served = max(1, sum(cell["outcomes"].values()))
        cell["cpu_ms_per_request"] = (tree_cpu_seconds(svc.proc.pid) - cpu0) * 1000 / served
        if milvus_pgid:
            milvus_cpu = tree_cpu_seconds(milvus_pgid) - mcpu0
            cell["milvus_cpu_ms_per_request"] = milvus_cpu * 1000 / served
        cell["stages_mean_ms"] = _stage_means(before, _stage_sums(svc.url))
        cells.append(cell)
        print(
            f"    c={c}: n={cell['n']} p50 {cell['p50_ms']:.1f} p95 {cell['p95_ms']:.1f} "
            f"p99 {cell['p99_ms']:.1f} ms, {cell['throughput_rps']:.1f} req/s, "
            f"{cell['outcomes']}, CPU {cell['cpu_ms_per_request']:.0f} ms/request (+ Milvus "
            f"{cell.get('milvus_cpu_ms_per_request', float('nan')):.0f}), "
            f"stages {cell['stages_mean_ms']}",
            flush=True,
        )
    return cells


def measure_reads(svc: Service, n_posts: int, args) -> dict:
    """/similar and /search latency at concurrency 1."""
    rng = np.random.default_rng(7)
    similar = [{"post_id": int(p), "k": 10} for p in rng.integers(1, n_posts + 1, 64)]
    words = ["street food", "mountain hike", "jazz concert", "football match", "cat photos"]
    search = [{"query": f"{w} {i}", "k": 10} for i, w in enumerate(words * 8)]
    n = min(args.requests, 40)
    out = {}
    for path, bodies in (("/similar", similar), ("/search", search)):
        out[path] = asyncio.run(run_load(svc.url, path, bodies, 1, n, args.max_seconds))
        r = out[path]
        print(
            f"    {path} c=1: n={r['n']} p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms "
            f"{r['outcomes']}",
            flush=True,
        )
    return out


def measure_freshness(svc: Service, n_posts: int, users: list[dict], reps: int) -> dict:
    """Seconds from POST /posts until /similar (or /search) returns the post; whether the very
    next /recommend after POST /events excludes the post."""
    import httpx

    from socialrec.settings import LOCAL_API_TOKEN

    auth = {"Authorization": f"Bearer {LOCAL_API_TOKEN}"}
    out: dict = {"post_to_similar_s": [], "post_to_search_s": [], "post_latency_ms": []}
    out["events"] = []
    timeout_s = 60.0
    with httpx.Client(base_url=svc.url, timeout=120) as client:
        for i in range(reps):
            for via in ("similar", "search"):
                post_id = n_posts + 100_000 + 2 * i + (via == "search")
                text = f"bench fresh post {uuid.uuid4().hex[:8]}: {via} ramen night market {i}"
                body = {
                    "post_id": post_id,
                    "creator_id": int(users[i % len(users)]["user_id"]),
                    "category_id": int(users[i % len(users)]["categories"][0])
                    if users[i % len(users)]["categories"]
                    else 1,
                    "media_type": "image",
                    "description": text,
                }
                t0 = time.perf_counter()
                r = client.post("/posts", json=body, headers=auth)
                out["post_latency_ms"].append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"POST /posts answered {r.status_code}: {r.text[:500]}")
                found = None
                while time.perf_counter() - t0 < timeout_s:
                    if via == "similar":
                        q = client.post("/similar", json={"post_id": post_id, "k": 10})
                        ok = q.status_code == 200
                    else:
                        q = client.post("/search", json={"query": text, "k": 10})
                        ok = q.status_code == 200 and any(
                            it["post_id"] == post_id for it in q.json()["items"]
                        )
                    if ok:
                        found = time.perf_counter() - t0
                        break
                out[f"post_to_{via}_s"].append(found)  # None: not found within timeout_s
        for u in users[:reps]:
            uid = int(u["user_id"])
            first = client.post("/recommend", json={"user_id": uid, "k": 20}).json()
            if not first["items"]:
                continue
            target = int(first["items"][0]["post_id"])
            event = {
                "event_id": f"bench-{uuid.uuid4().hex}",
                "user_id": uid,
                "post_id": target,
                "event_type": "VIEW",
                "ts": dt.datetime.now(dt.UTC).isoformat(),
            }
            t0 = time.perf_counter()
            r = client.post("/events", json={"events": [event]}, headers=auth)
            t1 = time.perf_counter()
            if r.status_code != 200:
                raise RuntimeError(f"POST /events answered {r.status_code}: {r.text[:500]}")
            second = client.post("/recommend", json={"user_id": uid, "k": 20}).json()
            t2 = time.perf_counter()
            out["events"].append(
                {
                    "user_id": uid,
                    "post_id": target,
                    "source": first["source"],
                    "excluded": target not in {it["post_id"] for it in second["items"]},
                    # the rest of the first list still there (nothing else moved it out)
                    "others_kept": len(
                        {it["post_id"] for it in first["items"][1:]}
                        & {it["post_id"] for it in second["items"]}
                    ),
                    "events_ms": (t1 - t0) * 1000,
                    "next_recommend_ms": (t2 - t1) * 1000,
                    "total_ms": (t2 - t0) * 1000,
                }
            )
    return out
