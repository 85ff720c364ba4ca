"""The report: the issue's JSON (``runs``, ``floors``, ``freshness``, ``index_build_s``,
``machine``) from the run's raw figures, and the same as one markdown table with the targets."""

from __future__ import annotations

import os
import platform

import numpy as np

from benchmarks.serving_parts.common import (
    DEFAULT_K,
    TARGET_C8_P99_MS,
    TARGET_C8_RPS,
    TARGET_FLOOR_RATIO,
    TARGET_FRESH_S,
    TARGET_INDEX_BUILD_S,
    TARGET_K_RATIO,
    TARGET_P99_MS,
)


def machine() -> str:
    """What the run ran on (cores, memory, CPU model, OS)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, {cpu}, {platform.system()} {platform.release()}"


def _errors(cell: dict) -> int:
    return int(sum(v for k, v in cell["outcomes"].items() if k.startswith("http_")))


def _p50(stats: dict) -> float:
    return float(stats["p50_ms"])


def summary(report: dict) -> dict:
    """The issue's keys from the raw report (``report["sizes"]``)."""
    runs, floors, index_build, freshness = [], {}, {}, {}
    for size in report["sizes"]:
        n = int(size["n_posts"])
        for k, cell in size["serve"].items():
            for c in cell["recommend"]:
                runs.append(
                    {
                        "posts": n,
                        "K": int(k),
                        "concurrency": int(c["concurrency"]),
                        "p50_ms": c["p50_ms"],
                        "p99_ms": c["p99_ms"],
                        "rps": round(c["throughput_rps"], 2),
                        "errors": _errors(c),
                        "n": c["n"],
                        "workers": cell.get("workers"),
                        "cpu_ms_per_request": c.get("cpu_ms_per_request"),
                        "milvus_cpu_ms_per_request": c.get("milvus_cpu_ms_per_request"),
                        "stages_mean_ms": c.get("stages_mean_ms", {}),
                    }
                )
        fl = size["floors"]
        row = fl["per_k"].get(str(DEFAULT_K)) or next(iter(fl["per_k"].values()))
        floors[str(n)] = {
            "K": int(row["K"]),
            # retrieval: the user tower and both searches (filtered + exploration slice)
            "search_ms": _p50(fl["user_tower"])
            + _p50(row["search_filtered"])
            + _p50(row["search_unfiltered"]),
            # one batched fetch of the user's and one of the K candidates' online features
            "features_ms": _p50(fl["user_fetch"]) + _p50(row["post_fetch"]),
            "rank_ms": _p50(row["ranking_features"]) + _p50(row["ranker_predict"]),
            "seen_ms": _p50(fl["seen_state"]),
            "in_process_recommend_ms": _p50(row["recommend_in_process"]),
            # what adaptive batching of 8 requests would save (one call vs 8 calls)
            "batching": {
                "user_tower_1_ms": _p50(fl["user_tower"]),
                "user_tower_8_in_one_call_ms": _p50(fl["user_tower_batch8"]),
                "ranker_1_ms": _p50(row["ranker_predict"]),
                "ranker_8_in_one_call_ms": _p50(row["ranker_predict_batch8"]),
            },
        }
        tm = size["prepare"]["timings_s"]
        index_build[str(n)] = tm["milvus_index_build_posts_s"]
        if size.get("freshness"):
            fr = size["freshness"]
            # seconds from when POST /posts returned until /similar (/search) returned the
            # post: the measured time from before the POST minus the POST's own latency
            # (post_latency_ms holds similar, search, similar, search, ... in that order)
            found = [
                x
                for pair in zip(fr["post_to_similar_s"], fr["post_to_search_s"], strict=True)
                for x in pair
            ]  # noqa: E501
            live = [
                None if f is None else max(0.0, f - ms / 1000)
                for f, ms in zip(found, fr["post_latency_ms"], strict=True)
            ]
            freshness = {
                "posts": n,
                "post_live_s": None if not live or None in live else max(live),
                "post_request_ms": fr["post_latency_ms"],
                "event_filter_ok": bool(fr["events"]) and all(e["excluded"] for e in fr["events"]),
                "post_to_similar_s": fr["post_to_similar_s"],
                "post_to_search_s": fr["post_to_search_s"],
                "post_latency_ms": fr["post_latency_ms"],
                "events": len(fr["events"]),
            }
    return {
        "runs": runs,
        "floors": floors,
        "freshness": freshness,
        "index_build_s": index_build,
        "machine": machine(),
    }


def _f(v, fmt="{:.1f}") -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def targets(s: dict) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, scope, met) for every target of the issue that the run measured."""
    out = []
    runs = s["runs"]

    def run(n, k, c):
        return next((r for r in runs if (r["posts"], r["K"], r["concurrency"]) == (n, k, c)), None)

    for n, limit in TARGET_P99_MS.items():
        r = run(n, DEFAULT_K, 1)
        if r:
            out.append(
                (f"p99 <= {limit:.0f} ms, c=1, K={DEFAULT_K}", f"{r['p99_ms']:.1f} ms",
                 f"{n:,} posts", r["p99_ms"] <= limit)
            )  # fmt: skip
    r = run(100_000, DEFAULT_K, 8)
    if r:
        ok = r["rps"] >= TARGET_C8_RPS and r["p99_ms"] <= TARGET_C8_P99_MS and r["errors"] == 0
        out.append(
            (f">= {TARGET_C8_RPS:.0f} req/s, p99 <= {TARGET_C8_P99_MS:.0f} ms, 0 errors, c=8",
             f"{r['rps']:.1f} req/s, p99 {r['p99_ms']:.0f} ms, {r['errors']} errors",
             f"100,000 posts, K={DEFAULT_K}", ok)
        )  # fmt: skip
    for n in sorted({r["posts"] for r in runs}):
        lo, hi = run(n, 100, 1), run(n, 1000, 1)
        if lo and hi:
            ratio = hi["p99_ms"] / lo["p99_ms"]
            out.append(
                (f"p99(K=1000) / p99(K=100) <= {TARGET_K_RATIO}", f"{ratio:.2f}",
                 f"{n:,} posts, c=1", ratio <= TARGET_K_RATIO)
            )  # fmt: skip
        fl, r = s["floors"].get(str(n)), run(n, DEFAULT_K, 1)
        if fl and r:
            total = fl["search_ms"] + fl["features_ms"] + fl["rank_ms"]
            ratio = r["p50_ms"] / total
            out.append(
                (f"end-to-end p50 <= {TARGET_FLOOR_RATIO}x the floors' sum",
                 f"{r['p50_ms']:.1f} / {total:.1f} ms = {ratio:.2f}x",
                 f"{n:,} posts, K={fl['K']}, c=1", ratio <= TARGET_FLOOR_RATIO)
            )  # fmt: skip
    for n, build in s["index_build_s"].items():
        if int(n) == 1_000_000:
            out.append(
                (f"index build <= {TARGET_INDEX_BUILD_S:.0f} s", f"{build:.0f} s",
                 "1,000,000 posts", build <= TARGET_INDEX_BUILD_S)
            )  # fmt: skip
    fr = s["freshness"]
    if fr:
        live = fr["post_live_s"]
        out.append(
            (f"a new post retrievable <= {TARGET_FRESH_S:.0f} s after /posts returns",
             "never" if live is None else f"{live:.2f} s (worst of {len(fr['post_to_similar_s'])}"
             f" /similar + {len(fr['post_to_search_s'])} /search; POST /posts itself "
             f"{max(fr['post_request_ms']):.0f} ms at worst)",
             f"{fr['posts']:,} posts", live is not None and live <= TARGET_FRESH_S)
        )  # fmt: skip
        out.append(
            ("an event filters the next /recommend", f"{fr['events']} events checked",
             f"{fr['posts']:,} posts", fr["event_filter_ok"])
        )  # fmt: skip
    return out


def _table(header: str, rows: list[str]) -> list[str]:
    """A blank line, a markdown header with right-aligned columns, the rows."""
    return ["", header, "|" + "---:|" * header.count("|", 1), *rows]


def table(s: dict) -> str:
    """The summary as markdown: runs, floors, index builds, targets."""
    lines = [f"Machine: {s['machine']}"]
    lines += _table(
        "| posts | K | c | workers | n | p50 ms | p99 ms | req/s | errors "
        "| CPU ms/request: service | Milvus |",
        [
            f"| {r['posts']:,} | {r['K']} | {r['concurrency']} | {r['workers'] or '—'} | {r['n']} "
            f"| {_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {r['rps']:.1f} | {r['errors']} "
            f"| {_f(r['cpu_ms_per_request'], '{:.0f}')} "
            f"| {_f(r['milvus_cpu_ms_per_request'], '{:.0f}')} |"
            for r in s["runs"]
        ],
    )
    floors = s["floors"].items()
    lines += _table(
        "| posts | floors (p50, in-process), ms: search | features | rank | seen read "
        "| 4 stages in-process | index build (posts), s |",
        [
            f"| {int(n):,} (K={fl['K']}) | {fl['search_ms']:.1f} | {fl['features_ms']:.1f} "
            f"| {fl['rank_ms']:.1f} | {fl['seen_ms']:.2f} | {fl['in_process_recommend_ms']:.1f} "
            f"| {_f(s['index_build_s'].get(n), '{:.0f}')} |"
            for n, fl in floors
        ],
    )
    lines += _table(
        "| posts | adaptive batching, p50 ms: user tower 1 user | 8 users in one call "
        "| ranker 1 request | 8 requests in one call |",
        [
            f"| {int(n):,} | {b['user_tower_1_ms']:.1f} | {b['user_tower_8_in_one_call_ms']:.1f} "
            f"| {b['ranker_1_ms']:.1f} | {b['ranker_8_in_one_call_ms']:.1f} |"
            for n, b in ((n, fl["batching"]) for n, fl in floors)
        ],
    )
    lines += ["", "| target | measured | where | |", "|---|---|---|---|"]
    for target, measured, scope, ok in targets(s):
        lines.append(f"| {target} | {measured} | {scope} | {_met(ok)} |")
    return "\n".join(lines)
