"""The report: one markdown table with every figure and the issue's targets."""

from __future__ import annotations

import numpy as np

from benchmarks.serving_parts.common import TARGET_FRESH_S, TARGET_K_RATIO, TARGET_P99_MS
from benchmarks.serving_parts.measure import latency_stats


# ============================================================================================
# report
# ============================================================================================
def _f(v, fmt="{:.1f}") -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def table(report: dict) -> str:
    """Every figure of the run as ONE markdown table (ms unless a cell says otherwise)."""
    rows = [
        "| posts | figure | K | c | n | p50 | p95 | p99 | req/s | target | met |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]

    def row(posts, figure, k="", c="", n="", p50="", p95="", p99="", rps="", target="", met=""):
        cells = (posts, figure, k, c, n, p50, p95, p99, rps, target, met)
        rows.append("| " + " | ".join(str(x) for x in cells) + " |")

    def stats_row(posts, figure, st, k="", c=1, rps=""):
        row(posts, figure, k, c, st["n"], _f(st["p50_ms"]), _f(st["p95_ms"]), _f(st["p99_ms"]), rps)

    for size in report["sizes"]:
        n = size["n_posts"]
        label = f"{n:,}"
        target = TARGET_P99_MS.get(n)
        prep = size["prepare"]
        tm = prep["timings_s"]
        feast_s = tm["feast_materialize_post_features_s"] + tm["feast_materialize_post_content_s"]
        milvus_s = (
            tm["milvus_insert_posts_s"]
            + tm["milvus_insert_texts_s"]
            + tm["milvus_close_flush_index_s"]
        )
        row(
            label,
            f"prepare (s): all {size['prepare_s']:.0f}; Feast materialize of the posts "
            f"{feast_s:.0f} ({tm['feast_materialize_chunks']} chunks, online.db "
            f"{prep['online_db_mib']:.0f} MiB); Milvus Lite insert {tm['milvus_insert_posts_s']:.0f}"
            f" + {tm['milvus_insert_texts_s']:.0f} (posts + {prep['text_posts']:,} texts), "
            f"close = flush + index build {tm['milvus_close_flush_index_s']:.0f} "
            f"(Milvus total {milvus_s:.0f})",
        )
        for part, what in (
            ("user_fetch", "floor: one online_user_features call, 1 user"),
            ("user_tower", "floor: user tower, 1 user"),
        ):
            if part in size["floors"]:
                stats_row(label, what, size["floors"][part], "any")
        for k, serve in size["serve"].items():
            fl = size["floors"]["per_k"].get(k, {})
            for cell in serve["recommend"]:
                ok = None if target is None else cell["p99_ms"] <= target
                bad = {o: c for o, c in cell["outcomes"].items() if o != "personalized"}
                row(
                    label,
                    "**service /recommend** (k=20)" + (f" NOT personalized: {bad}" if bad else ""),
                    k,
                    cell["concurrency"],
                    cell["n"],
                    _f(cell["p50_ms"]),
                    _f(cell["p95_ms"]),
                    _f(cell["p99_ms"]),
                    _f(cell["throughput_rps"]),
                    f"p99 <= {target:.0f} ms" if target else "",
                    _met(ok),
                )
            stages = serve["recommend"][0].get("stages_mean_ms", {})
            if stages:
                row(
                    label,
                    "service stage means (/metrics): "
                    + ", ".join(f"{st} {v:.1f}" for st, v in stages.items()),
                    k,
                    1,
                )
            for part, what in (
                ("search_filtered", "floor: PostIndex.search, user's categories, top K - 20%"),
                ("search_unfiltered", "floor: PostIndex.search, unfiltered, top K"),
                ("post_fetch", "floor: one online_post_features call, K ids"),
                ("ranker_predict", "floor: Ranker.predict, K rows"),
                ("ranking_features", "(ranking_features, K rows)"),
                ("recommend_in_process", "Recommender.recommend in-process (no HTTP)"),
            ):
                if part in fl:
                    stats_row(label, what, fl[part], k)
            if fl:
                p50 = serve["recommend"][0]["p50_ms"]
                floor = fl["floor_sum_p50_ms"]
                inproc = fl["recommend_in_process"]["p50_ms"]
                row(
                    label,
                    "floor sum (2 searches + fetch + predict, p50s); service p50 (c=1) / "
                    "floor sum; / in-process",
                    k,
                    1,
                    p50=_f(floor),
                    target=f"{p50 / floor:.2f}x; {p50 / inproc:.2f}x",
                )
        ks = sorted(int(k) for k in size["serve"])
        if len(ks) >= 2:
            lo, hi = str(ks[0]), str(ks[-1])
            for i, cell in enumerate(size["serve"][hi]["recommend"]):
                base = size["serve"][lo]["recommend"][i]
                for q in ("p50_ms", "p99_ms"):
                    ratio = cell[q] / base[q] if base[q] else float("nan")
                    ok = ratio <= TARGET_K_RATIO if (lo, hi) == ("100", "1000") else None
                    row(
                        label,
                        f"latency(K={hi}) / latency(K={lo}), {q[:3]} (a ratio)",
                        f"{hi}/{lo}",
                        cell["concurrency"],
                        p50=_f(ratio, "{:.2f}") if q == "p50_ms" else "",
                        p99=_f(ratio, "{:.2f}") if q == "p99_ms" else "",
                        target=f"<= {TARGET_K_RATIO}" if ok is not None else "",
                        met=_met(ok),
                    )
        for path, st in size.get("reads", {}).items():
            bad = {o: c for o, c in st["outcomes"].items() if o != "ok"}
            note = f" ({prep['text_posts']:,} posts in its collection)" if path == "/search" else ""
            figure = f"service {path} (k=10){note}" + (f" {bad}" if bad else "")
            stats_row(label, figure, st, rps=_f(st["throughput_rps"]))
        fr = size.get("freshness")
        if fr:
            post = latency_stats([v / 1000 for v in fr["post_latency_ms"]])
            stats_row(label, "POST /posts", post)
            for via in ("similar", "search"):
                vals = fr[f"post_to_{via}_s"]
                live = [v for v in vals if v is not None]
                worst = max(live) if vals and len(live) == len(vals) else None
                row(
                    label,
                    f"new post live (s): POST /posts until /{via} returns it",
                    "",
                    1,
                    f"{len(live)}/{len(vals)}",
                    _f(float(np.median(live)) if live else None, "{:.3f} s"),
                    "",
                    _f(worst, "{:.3f} s (max)"),
                    target=f"<= {TARGET_FRESH_S:.0f} s",
                    met=_met(worst is not None and worst <= TARGET_FRESH_S),
                )
            ev = fr["events"]
            excluded = sum(e["excluded"] for e in ev)
            row(
                label,
                "POST /events, then the very next /recommend excludes the post "
                "(n = excluded/tried; ms = events + next recommend)",
                size["freshness_k"],
                1,
                f"{excluded}/{len(ev)}",
                _f(float(np.median([e["total_ms"] for e in ev])) if ev else None),
                "",
                _f(max(e["total_ms"] for e in ev) if ev else None, "{:.1f} (max)"),
                target="excluded on the next request",
                met=_met(bool(ev) and excluded == len(ev)),
            )
    exp = report.get("milvus_experiment")
    if exp:
        label = f"{exp['size']:,}"
        share = f"{exp['filter_share']:.0%} of the rows"
        for r in exp["results"]:
            kind = f"filtered ({share})" if r["filtered"] else "unfiltered"
            row(
                label,
                f"Milvus Lite side experiment: {r['variant']}, {kind}, nq={r['nq']}, "
                f"ef={r['ef']} (ms per call; per query in target)",
                r["top_k"],
                1,
                r["n"],
                _f(r["p50_ms"]),
                _f(r["p95_ms"]),
                _f(r["p99_ms"]),
                target=f"{r['per_query_p50_ms']:.1f} ms/query",
            )
        builds = "; ".join(f"{k} {v:.0f}" for k, v in exp["build_s"].items())
        row(label, f"Milvus Lite side experiment, build seconds: {builds}")
    return "\n".join(rows)
