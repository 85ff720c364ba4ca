"""Benchmark `serving`: the BUILT bento on loopback over synthetic catalogs of 100k and 1M posts.

Not a test: ``make bench-serving`` (``python -m benchmarks.serving --sizes 20000 --ks 100,500``
for a quick run). Every phase that touches the heavy libraries runs in a child process (like
``benchmarks/load.py``), so the load generator's process stays small and Milvus Lite's
one-process-per-path rule holds: a phase opens the index only while no server holds it.

1. ``train``: the whole asset graph at TINY size (``SOCIALREC_DEMO_*``, as
   ``tests/test_e2e.py`` does, ~2 min) gives a trained two-tower model, a ranker, users with
   online features and their seen history. (``--tiny-dir`` reuses one kept with ``--keep``.)
2. ``prepare`` (per size N): a synthetic catalog of N posts, NO MiniLM: random unit description
   embeddings; categories, creators and media types drawn from the tiny data's; creation times
   over the last 30 days; engagement counts. Written the product's way: the ``post_features`` /
   ``post_content`` feature tables (``socialrec.features.store.write_feature_tables``; the user tables
   are the tiny run's), Feast ``apply`` + ``materialize`` into the SQLite online store (timed;
   in time windows of 100k posts to bound memory), post-tower embeddings of all N posts (the
   tiny model) and the description vectors into two Milvus Lite collections behind the aliases
   (``PostIndex.write_version`` + ``swap_alias``; the rows after the first chunk go in chunk by
   chunk with the same schema, see ``_write_collection``), the catalog, the seen store, and a
   bento built by ``bentos/package.py`` with the tiny models and the big catalog. The
   ``/search`` (MiniLM, 384-d) collection holds the first ``--text-posts`` posts (default
   100,000): its HNSW build alone takes ~50 s per 100k posts on 2 cores (~10 min at 1M); pass
   ``--text-posts 0`` for all of them.
3. ``floors`` (per size, in-process, no HTTP): ``PostIndex.search`` alone (filtered to the
   user's categories and unfiltered, the two searches ``retrieve`` makes), one batched
   ``online_post_features`` call for K ids, ``ranking_features`` and ``Ranker.predict`` on K
   rows, and the whole 4-stage ``Recommender.recommend`` in-process.
4. ``milvus`` (once, ``--experiment-size`` posts): what the embedded default can do: the
   product's collection (HNSW M=16 + INVERTED category_id) right after the inserts (rows in the
   memtable) and after the writer closed (flushed segments), ``ef``, other index types (FLAT,
   IVF_FLAT), a partition key on category_id, one explicit partition per category searched with
   ``partition_names``, and several queries batched in one call.
5. ``serve`` (per size and K): ``bentoml serve <bento>`` on 127.0.0.1 with
   ``SOCIALREC_DATA_DIR`` = the big data directory and ``SOCIALREC_RETRIEVAL_TOP_N=K``
   (restarted per K), warmed up, then ``/recommend`` from an async httpx client at concurrency 1
   and 8 (``--requests`` per cell, at most ``--max-seconds``); the mean stage timings come from
   the service's own ``/metrics``. With the first K also ``/similar`` and ``/search`` at
   concurrency 1; with the last K the freshness checks: POST /posts, then poll ``/similar`` (or
   ``/search``) until it returns the post; POST /events for a post of the user's current
   ``/recommend`` list, then the very next ``/recommend`` must exclude it.

Prints ONE markdown table with every figure and the issue's targets (met or not) and writes it
as JSON to ``bench-results/serving.json``. Every server and child process started is stopped
(also on errors, Ctrl-C and SIGTERM); the temporary directory is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ENV_DEFAULTS = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_TELEMETRY": "false",
}
# the tiny graph that trains the models (a bit larger than tests/conftest.py's E2E_TINY)
TINY = {
    "SOCIALREC_DEMO_USERS": "300",
    "SOCIALREC_DEMO_POSTS": "600",
    "SOCIALREC_DEMO_EVENTS": "15000",
    "SOCIALREC_DEMO_DAYS": "6",
    "SOCIALREC_TWO_TOWER_EPOCHS": "3",
    "SOCIALREC_RANKER_ITERATIONS": "100",
}
MODELS = ("socialrec_two_tower", "socialrec_ranker")
TARGET_P99_MS = {100_000: 50.0, 1_000_000: 100.0}  # the issue's p99 targets (2 cores)
TARGET_K_RATIO = 1.5  # latency(K=1000) / latency(K=100)
TARGET_FRESH_S = 2.0  # a new post is live within this
CHUNK_ROWS = {32: 50_000, 384: 10_000}  # Milvus insert chunk per vector dimension (memory)
DAYS = 30  # synthetic posts are created over the last DAYS days
MATERIALIZE_CHUNK = 100_000  # posts per Feast materialize call

_PROCS: list[subprocess.Popen] = []  # every child / server started, for the cleanup


# ============================================================================================
# process handling (parent)
# ============================================================================================
def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ}
    for k, v in ENV_DEFAULTS.items():
        env.setdefault(k, v)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the process group, SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    if proc in _PROCS:
        _PROCS.remove(proc)


def _stop_all() -> None:
    for proc in list(_PROCS):
        _stop(proc, grace=15.0)


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(f"signal {signum}")


def _run_logged(module: list[str], env: dict[str, str], log: Path, timeout: float) -> int:
    """``python -m <module...>`` in its own session, output to ``log``; stopped (with its
    children) when it ends, times out or we are interrupted. Its exit code."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _PROCS.append(proc)
        try:
            proc.wait(timeout=timeout)
        finally:
            _stop(proc)
    return proc.returncode


def _child(phase: str, spec: dict, env: dict[str, str], log: Path, timeout: float) -> dict:
    """Run ``python -m benchmarks.serving --phase <phase>`` with ``spec``; its RESULT JSON."""
    spec_path = log.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    module = ["benchmarks.serving", "--phase", phase, "--spec", str(spec_path)]
    returncode = _run_logged(module, env, log, timeout)
    text = log.read_text(errors="replace")
    found = [line for line in text.splitlines() if line.startswith("RESULT ")]
    if returncode != 0 or not found:
        raise SystemExit(f"phase {phase} failed (exit {returncode}):\n{text[-5000:]}")
    return json.loads(found[-1][len("RESULT ") :])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Service:
    """``bentoml serve <tag>`` on 127.0.0.1 in its own process group; stopped on exit."""

    def __init__(self, tag: str, env: dict[str, str], cwd: Path, log: Path):
        self.tag, self.env, self.cwd, self.log = tag, env, cwd, log
        self.port = _free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.startup_s = float("nan")

    def __enter__(self) -> Service:
        import httpx

        self._log_file = open(self.log, "w")  # a file, not a pipe: a full pipe blocks
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), "serve", self.tag]
            + ["--host", HOST, "--port", str(self.port)],
            cwd=self.cwd,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _PROCS.append(self.proc)
        try:
            deadline = t0 + 900
            with httpx.Client(base_url=self.url, timeout=30) as client:
                while time.perf_counter() < deadline:
                    if self.proc.poll() is not None:
                        raise RuntimeError(f"bentoml serve exited:\n{self._tail()}")
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    time.sleep(1)
                else:
                    raise RuntimeError(f"service not ready after 900 s:\n{self._tail()}")
        except BaseException:
            self.__exit__()
            raise
        self.startup_s = time.perf_counter() - t0
        return self

    def _tail(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")[-5000:]

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            _stop(self.proc)
        self._log_file.close()


# ============================================================================================
# load generation and measurements against the service (parent)
# ============================================================================================
def _stats(seconds: list[float]) -> dict:
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


async def _load(
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
        **_stats(latencies),
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
    return {k: (v[0], v[1]) for k, v in out.items()}


def _stage_means(before: dict, after: dict) -> dict[str, float]:
    """Mean ms per /recommend stage between two /metrics snapshots."""
    out = {}
    for stage, (s1, c1) in after.items():
        s0, c0 = before.get(stage, (0.0, 0.0))
        if c1 > c0:
            out[stage] = round((s1 - s0) / (c1 - c0) * 1000, 2)
    return out


def _recommend_check(body: dict) -> str:
    return body.get("source", "?")


def _measure_recommend(svc: Service, users: list[dict], k_items: int, args) -> list[dict]:
    bodies = [{"user_id": u["user_id"], "k": k_items} for u in users]
    cells = []
    for c in args.concurrency:
        before = _stage_sums(svc.url)
        cell = asyncio.run(
            _load(
                svc.url,
                "/recommend",
                bodies,
                c,
                args.requests,
                args.max_seconds,
                _recommend_check,
            )
        )
        cell["stages_mean_ms"] = _stage_means(before, _stage_sums(svc.url))
        cells.append(cell)
        print(
            f"    c={c}: n={cell['n']} p50 {cell['p50_ms']:.1f} p95 {cell['p95_ms']:.1f} "
            f"p99 {cell['p99_ms']:.1f} ms, {cell['throughput_rps']:.1f} req/s, "
            f"{cell['outcomes']}, stages {cell['stages_mean_ms']}",
            flush=True,
        )
    return cells


def _measure_reads(svc: Service, n_posts: int, args) -> dict:
    """/similar and /search latency at concurrency 1."""
    rng = np.random.default_rng(7)
    similar = [{"post_id": int(p), "k": 10} for p in rng.integers(1, n_posts + 1, 64)]
    words = ["street food", "mountain hike", "jazz concert", "football match", "cat photos"]
    search = [{"query": f"{w} {i}", "k": 10} for i, w in enumerate(words * 8)]
    n = min(args.requests, 40)
    out = {}
    for path, bodies in (("/similar", similar), ("/search", search)):
        out[path] = asyncio.run(_load(svc.url, path, bodies, 1, n, args.max_seconds))
        r = out[path]
        print(
            f"    {path} c=1: n={r['n']} p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms "
            f"{r['outcomes']}",
            flush=True,
        )
    return out


def _measure_freshness(svc: Service, n_posts: int, users: list[dict], reps: int) -> dict:
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


# ============================================================================================
# phase: train (the tiny graph; parent runs orchestration.materialize in a child)
# ============================================================================================
def train_tiny(tiny: Path, log: Path) -> float:
    (tiny / "dagster").mkdir(parents=True, exist_ok=True)
    env = _env(
        **TINY,
        SOCIALREC_DATA_DIR=str(tiny),
        DAGSTER_HOME=str(tiny / "dagster"),
        BENTOML_HOME=str(tiny / "bentoml"),
    )
    t0 = time.perf_counter()
    returncode = _run_logged(["orchestration.materialize", "--generate"], env, log, 1800)
    if returncode != 0 or not _tiny_ready(tiny):
        raise SystemExit(f"the tiny graph failed:\n{log.read_text(errors='replace')[-5000:]}")
    return time.perf_counter() - t0


def _tiny_ready(tiny: Path) -> bool:
    return all((tiny / "bentoml" / "models" / m / "latest").exists() for m in MODELS)


# ============================================================================================
# phase: prepare (child) — the synthetic catalog of one size
# ============================================================================================
def _tiny_model_dir(tiny: Path, name: str) -> tuple[Path, dict]:
    import yaml

    base = tiny / "bentoml" / "models" / name
    path = base / (base / "latest").read_text().strip()
    info = yaml.safe_load((path / "model.yaml").read_text())
    return path, dict(info.get("labels") or {})


def _timed(timings: dict, name: str, t0: float) -> float:
    now = time.perf_counter()
    timings[name] = round(now - t0, 2)
    print(f"  {name}: {timings[name]:.1f} s", flush=True)
    return now


def _write_collection(index, version, prefix, meta, vectors) -> str:
    """``PostIndex.write_version`` of the first chunk, the other rows inserted chunk by chunk
    into the same collection (same schema and index params). ``write_version`` builds every
    row as a Python dict of Python floats at once (~32 bytes per float: ~12 GB for 1M x 384-d),
    so the catalog goes in chunks; the collection is the same."""
    from socialrec.stores.index import PostIndex

    n, d = vectors.shape
    step = CHUNK_ROWS.get(d, 20_000)
    name = index.write_version(version, *(m[:step] for m in meta), vectors[:step], prefix=prefix)
    for start in range(step, n, step):
        rows = PostIndex._rows(
            *(m[start : start + step] for m in meta), vectors[start : start + step]
        )
        for b in range(0, len(rows), 2000):  # PostIndex.INSERT_BATCH
            index.client.insert(name, rows[b : b + 2000])
    return name


def prepare(spec: dict) -> dict:
    import pandas as pd

    from feature_repo import all_definitions
    from socialrec.features import store as fs
    from socialrec.models.two_tower import TwoTowerModel
    from socialrec.settings import MEDIA_TYPES, TEXT_EMBEDDING_DIM, Settings
    from socialrec.stores.catalog import Catalog
    from socialrec.stores.index import COLLECTION_PREFIX, TEXT_COLLECTION_PREFIX, PostIndex

    n = int(spec["n_posts"])
    tiny = Path(spec["tiny_dir"])
    s = Settings()  # SOCIALREC_DATA_DIR = the big data directory
    s.ensure_dirs()
    bench = s.data_dir / "bench"
    bench.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(spec.get("seed", 0)))
    timings: dict[str, float] = {}
    t = time.perf_counter()

    # --- the tiny run's users (their feature tables are reused as they are) -----------------
    for name in (fs.USER_FEATURES, fs.USER_PROFILE, fs.USER_HISTORY):
        shutil.copy(tiny / "features" / f"{name}.parquet", fs.feature_table_path(s, name))
    uf = pd.read_parquet(tiny / "features" / f"{fs.USER_FEATURES}.parquet")
    uf = uf.sort_values(fs.TIMESTAMP).drop_duplicates("user_id", keep="last")
    uf = uf.sort_values("n_events", ascending=False)
    users = [
        {
            "user_id": int(r.user_id),
            "categories": [int(c) for c in str(r.onboarding_categories).split(",") if c],
            "n_events": int(r.n_events),
        }
        for r in uf.itertuples()
    ]
    tiny_posts = pd.read_parquet(tiny / "features" / f"{fs.POST_FEATURES}.parquet")
    categories = np.sort(tiny_posts["category_id"].unique())
    user_ids = np.sort(uf["user_id"].unique())

    # --- N synthetic posts -------------------------------------------------------------------
    now = pd.Timestamp.now(tz="UTC").floor("s")
    ids = np.arange(1, n + 1, dtype=np.int64)
    cat = rng.choice(categories, n).astype(np.int64)
    # creators: a skewed draw over the tiny users (some are creators the model knows)
    weights = rng.lognormal(0, 1.0, len(user_ids))
    creator = rng.choice(user_ids, n, p=weights / weights.sum()).astype(np.int64)
    media = np.asarray(MEDIA_TYPES)[rng.integers(0, len(MEDIA_TYPES), n)]
    created = now - pd.to_timedelta(rng.uniform(0, DAYS * 86400, n).astype(np.int64), unit="s")
    created_s = ((created - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy()
    imp = rng.poisson(rng.lognormal(3.0, 1.2, n)).astype(np.int64)
    pos = rng.binomial(imp, rng.beta(2, 12, n)).astype(np.int64)
    neg = rng.binomial(imp, 0.01).astype(np.int64)
    ev7 = rng.binomial(imp, 0.3).astype(np.int64)
    pos7 = rng.binomial(ev7, 0.15).astype(np.int64)
    ev1 = rng.binomial(ev7, 0.2).astype(np.int64)
    pos1 = rng.binomial(ev1, 0.15).astype(np.int64)

    def rate(p, e):
        return np.divide(p, e, out=np.zeros(len(p)), where=e > 0).astype(np.float32)

    text = rng.standard_normal((n, TEXT_EMBEDDING_DIM), dtype=np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    post_features = pd.DataFrame(
        {
            "post_id": ids,
            fs.TIMESTAMP: created,
            "creator_id": creator,
            "category_id": cat,
            "media_type": media,
            "created_at_ts": created_s,
            "n_impressions": imp,
            "n_positives": pos,
            "positive_rate": rate(pos, imp),
            "n_events_1d": ev1,
            "n_positives_1d": pos1,
            "positive_rate_1d": rate(pos1, ev1),
            "n_events_7d": ev7,
            "n_positives_7d": pos7,
            "positive_rate_7d": rate(pos7, ev7),
        }
    )
    post_content = pd.DataFrame(
        {"post_id": ids, fs.TIMESTAMP: created, "description_embedding": list(text)}
    )
    t = _timed(timings, "generate_s", t)
    fs.write_feature_tables(s, {fs.POST_FEATURES: post_features, fs.POST_CONTENT: post_content})
    del post_content
    t = _timed(timings, "feature_tables_s", t)

    # --- Feast: apply + materialize into the SQLite online store -----------------------------
    store = fs.feature_store(s)
    fs.apply_definitions(store, all_definitions(s))
    t = _timed(timings, "feast_apply_s", t)
    user_views = (fs.USER_FEATURES, fs.USER_PROFILE, fs.USER_HISTORY)
    fs.materialize(store, dt.datetime.now(dt.UTC), views=user_views)
    t = _timed(timings, "feast_materialize_users_s", t)
    # in time windows of ~MATERIALIZE_CHUNK posts each (posts are created uniformly over the
    # last DAYS days, one feature row each): bounded memory, same rows in the online store
    chunks = max(1, -(-n // MATERIALIZE_CHUNK))
    edges = pd.date_range(
        now - pd.Timedelta(days=DAYS, hours=1), now + pd.Timedelta(minutes=1), periods=chunks + 1
    )
    written = {}
    for view in (fs.POST_FEATURES, fs.POST_CONTENT):
        for start, end in itertools.pairwise(edges):
            start = start if start != edges[0] else now - pd.Timedelta(days=3650)
            got = fs.materialize(store, end.to_pydatetime(), start=start, views=(view,))
            written[view] = written.get(view, 0) + got[view]
        t = _timed(timings, f"feast_materialize_{view}_s", t)
    timings["feast_materialize_chunks"] = chunks
    online = fs.online_row_counts(s)
    online_db = s.feast_dir / "online.db"

    # --- the post tower over all N posts, then the two Milvus collections --------------------
    two_tower_dir, two_tower_labels = _tiny_model_dir(tiny, "socialrec_two_tower")
    model = TwoTowerModel.load(two_tower_dir)
    frame = post_features[["post_id", "category_id", "media_type", "creator_id"]].copy()
    frame["description_embedding"] = list(text)
    vectors = model.post_embeddings(frame)
    del frame
    t = _timed(timings, "post_tower_s", t)
    np.save(bench / "post_vectors.npy", vectors)
    np.save(bench / "post_categories.npy", cat)
    meta = [ids, cat, creator, created_s]
    version = f"bench_{now:%Y%m%d%H%M%S}"
    index = PostIndex(str(s.milvus_uri))
    try:
        posts_col = _write_collection(index, version, COLLECTION_PREFIX, meta, vectors)
        index.swap_alias(s.collection_alias, posts_col)
        t = _timed(timings, "milvus_insert_posts_s", t)
        if spec.get("text_posts") is not None and int(spec["text_posts"]) < n:
            m = int(spec["text_posts"])
            text_meta = [a[:m] for a in meta]
            text_col = _write_collection(
                index, version, TEXT_COLLECTION_PREFIX, text_meta, text[:m]
            )
        else:
            text_col = _write_collection(index, version, TEXT_COLLECTION_PREFIX, meta, text)
        index.swap_alias(s.text_collection_alias, text_col)
        t = _timed(timings, "milvus_insert_texts_s", t)
    finally:
        index.close()  # Milvus Lite flushes the memtables and builds the segment indexes here
    t = _timed(timings, "milvus_close_flush_index_s", t)
    del text

    # --- catalog, seen store, bento ----------------------------------------------------------
    catalog_dir = s.models_dir / "catalog" / f"{now:%Y%m%dT%H%M%S}"
    dim_posts = pd.DataFrame(
        {
            "post_id": ids,
            "creator_id": creator,
            "category_id": cat,
            "created_at": created_s,
            "n_impressions": imp,
            "n_positives": pos,
            "n_negatives": neg,
        }
    )
    Catalog.from_dim_posts(dim_posts, fresh_share=s.cold_start_fresh_share).save(catalog_dir)
    for suffix in ("", "-wal", "-shm"):
        src = tiny / f"seen.sqlite{suffix}"
        if src.exists():
            shutil.copy(src, Path(f"{s.seen_store_path}{suffix}"))
    models = {"socialrec_catalog": {"path": str(catalog_dir), "labels": {"source": "bench"}}}
    for name in MODELS:
        src, labels = (
            (two_tower_dir, two_tower_labels)
            if name == "socialrec_two_tower"
            else _tiny_model_dir(tiny, name)
        )
        dst = bench / "models" / name
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.yaml"), dirs_exist_ok=True)
        models[name] = {"path": str(dst), "labels": labels}
    spec_path = bench / "package.json"
    spec_path.write_text(json.dumps({"models": models, "labels": {"source": "bench-serving"}}))
    out = subprocess.run(
        [sys.executable, "-m", "bentos.package", "--spec", str(spec_path)],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(s.bentoml_home)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bentos.package failed:\n{out.stderr[-4000:]}")
    built = json.loads(out.stdout.strip().splitlines()[-1])
    t = _timed(timings, "catalog_and_bento_s", t)
    return {
        "n_posts": n,
        "timings_s": timings,
        "online_entities": online,
        "online_db_mib": online_db.stat().st_size / 2**20 if online_db.exists() else None,
        "feast_rows_written": written,
        "bento_tag": built["bento_tag"],
        "models": {name: models[name]["path"] for name in MODELS},
        "users": users,
        "categories": [int(c) for c in categories],
        "text_posts": int(min(n, spec.get("text_posts") or n)),
    }


# ============================================================================================
# phase: floors (child) — the parts alone, in-process
# ============================================================================================
def _timeit(fn, reps: int, warm: int = 2, max_seconds: float = 20.0) -> tuple[dict, object]:
    """Stats of ``reps`` calls of ``fn`` after ``warm`` ones (at least 3 calls, and no more
    once ``max_seconds`` have passed); and its last result."""
    out = None
    for _ in range(warm):
        out = fn()
    seconds: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(seconds) < reps and (len(seconds) < 3 or time.perf_counter() < deadline):
        t = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t)
    return _stats(seconds), out


def floors(spec: dict) -> dict:
    import pandas as pd

    from socialrec.features import store as fs
    from socialrec.features.ranking import ranking_features
    from socialrec.models.ranker import Ranker
    from socialrec.models.two_tower import TwoTowerModel
    from socialrec.recommender import FeastFeatures, Recommender
    from socialrec.settings import Settings
    from socialrec.stores.catalog import Catalog
    from socialrec.stores.index import PostIndex
    from socialrec.stores.seen import open_seen_store

    s = Settings()
    reps = int(spec["reps"])
    users = spec["users"][: max(8, reps)]
    store = fs.feature_store(s)
    model = TwoTowerModel.load(spec["models"]["socialrec_two_tower"])
    ranker = Ranker.load(spec["models"]["socialrec_ranker"])
    catalog_dir = sorted((s.models_dir / "catalog").iterdir())[-1]
    catalog = Catalog.load(catalog_dir)
    seen = open_seen_store(s)
    index = PostIndex(str(s.milvus_uri), s.milvus_token)
    out: dict = {"per_k": {}}
    try:
        t0 = time.perf_counter()
        index.follow(s.collection_alias, force=True)
        out["index_open_s"] = time.perf_counter() - t0
        ids = [u["user_id"] for u in users]
        user_rows = fs.online_user_features(store, ids)
        vectors = model.user_embeddings(user_rows.reset_index())
        cats = {u["user_id"]: u["categories"] for u in users}
        out["user_fetch"], _ = _timeit(lambda: fs.online_user_features(store, ids[:1]), reps)
        out["user_tower"], _ = _timeit(
            lambda: model.user_embeddings(user_rows.iloc[:1].reset_index()), reps
        )
        now = pd.Timestamp.now(tz="UTC")
        for k in spec["ks"]:
            n_explore = round(k * s.exploration_share)
            it = itertools.cycle(range(len(ids)))
            it2 = itertools.cycle(range(len(ids)))

            def filtered(k=k, n_explore=n_explore, it=it):
                i = next(it)
                return index.search(
                    s.collection_alias, vectors[i], k - n_explore, cats[ids[i]] or None
                )

            def unfiltered(k=k, it=it2):
                return index.search(s.collection_alias, vectors[next(it)], k, None)

            row: dict = {}
            row["search_filtered"], _ = _timeit(filtered, reps)
            row["search_unfiltered"], hits = _timeit(unfiltered, reps)
            cand = [p for p, _ in hits[0]]
            row["post_fetch"], posts = _timeit(
                lambda cand=cand: fs.online_post_features(store, cand), reps
            )
            user_df = user_rows.iloc[:1].reset_index()
            pairs = pd.DataFrame({"user_id": np.full(len(cand), ids[0]), "post_id": cand})
            pairs["retrieval_score"] = [sc for _, sc in hits[0]]
            posts_df = posts[posts["found"]].reset_index()
            row["ranking_features"], feats = _timeit(
                lambda u=user_df, p=posts_df, pr=pairs: ranking_features(u, p, pr, now), reps
            )
            row["ranker_predict"], _ = _timeit(lambda feats=feats: ranker.predict(feats), reps)
            row["floor_sum_p50_ms"] = sum(
                row[part]["p50_ms"]
                for part in ("search_filtered", "search_unfiltered", "post_fetch", "ranker_predict")
            )
            s.retrieval_top_n = int(k)
            rec = Recommender(FeastFeatures(store), model, index, seen, ranker, catalog, s)
            uit = itertools.cycle(ids)
            row["recommend_in_process"], _ = _timeit(
                lambda rec=rec, uit=uit: rec.recommend(next(uit), k=spec["k_items"]), reps
            )
            out["per_k"][str(k)] = row
            print(
                f"  K={k}: "
                + ", ".join(
                    f"{name} {v['p50_ms']:.1f}" for name, v in row.items() if isinstance(v, dict)
                )
                + f" ms (p50); floor sum {row['floor_sum_p50_ms']:.1f} ms",
                flush=True,
            )
    finally:
        index.close()
        seen.close()
    return out


# ============================================================================================
# phase: milvus (child) — what Milvus Lite (the embedded default) can do
# ============================================================================================
def milvus_experiment(spec: dict) -> dict:
    from pymilvus import DataType, MilvusClient

    from socialrec.stores.index import PostIndex

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
        st, res = _timeit(
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
        default = _write_collection(index, "default", "posts_", meta, vectors)
        builds["default (product: HNSW M16 efC100)"] = time.perf_counter() - t0
        # the product's writer searching its new collection before closing: rows in memtable
        measure(client, default, "default, rows in memtable", 100, filt=user_cats, n=3)
        measure(client, default, "default, rows in memtable", 100, n=3)
        variants = {
            "posts_flat": ("FLAT", {}, False),
            "posts_ivf": ("IVF_FLAT", {"nlist": 1024}, False),
            "posts_pkey": ("HNSW", {"M": 16, "efConstruction": 100}, True),
        }
        rows = PostIndex._rows(*meta, vectors)
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
            extra_rows = PostIndex._rows(new_ids, cats[: len(new_ids)], zeros, zeros, extra)
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
            post = _stats([v / 1000 for v in fr["post_latency_ms"]])
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
        if _tiny_ready(tiny):
            print(f"reusing the trained tiny graph in {tiny}", flush=True)
            report["train_s"] = None
        else:
            print("training the models on a tiny synthetic graph ...", flush=True)
            report["train_s"] = train_tiny(tiny, logs / "train.log")
            print(f"  done in {report['train_s']:.0f} s", flush=True)
        for n_posts in args.sizes:
            data = root / f"catalog_{n_posts}"
            data.mkdir()
            env = _env(
                SOCIALREC_DATA_DIR=str(data),
                BENTOML_HOME=str(data / "bentoml"),
                DAGSTER_HOME=str(data / "dagster"),
            )
            print(f"\n== {n_posts:,} posts: preparing {data}", flush=True)
            t0 = time.perf_counter()
            prep = _child(
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
            size["floors"] = _child(
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
            if args.experiment_size and "milvus_experiment" not in report:
                m = min(args.experiment_size, n_posts)
                print(f"  Milvus Lite side experiment at {m:,} posts ...", flush=True)
                report["milvus_experiment"] = _child(
                    "milvus",
                    {
                        "vectors_dir": str(data / "bench"),
                        "size": m,
                        "reps": args.floor_reps,
                        "dir": str(root / "milvus_exp"),
                    },
                    env,
                    logs / "milvus_experiment.log",
                    timeout=3 * 3600,
                )
                shutil.rmtree(root / "milvus_exp", ignore_errors=True)
            for i, k in enumerate(args.ks):
                env_k = {**env, "SOCIALREC_RETRIEVAL_TOP_N": str(k)}
                log = logs / f"serve_{n_posts}_{k}.log"
                with Service(prep["bento_tag"], env_k, data, log) as svc:
                    print(f"  K={k}: service ready in {svc.startup_s:.0f} s", flush=True)
                    cell: dict = {"startup_s": svc.startup_s}
                    warm = [{"user_id": u["user_id"], "k": args.k_items} for u in users]
                    asyncio.run(_load(svc.url, "/recommend", warm, 1, args.warmup, 600))
                    cell["recommend"] = _measure_recommend(svc, users, args.k_items, args)
                    if i == 0:
                        size["reads"] = _measure_reads(svc, n_posts, args)
                    if i == len(args.ks) - 1:
                        size["freshness_k"] = k
                        size["freshness"] = _measure_freshness(
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
            if not args.keep:
                shutil.rmtree(data, ignore_errors=True)
    finally:
        _stop_all()
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
    p.add_argument(
        "--experiment-size",
        type=int,
        default=100_000,
        help="posts in the Milvus Lite side experiment (0: skip it)",
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
    p.add_argument("--phase", choices=("prepare", "floors", "milvus"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.phase:  # a child process: one phase, its result as one RESULT line
        spec = json.loads(Path(args.spec).read_text())
        fn = {"prepare": prepare, "floors": floors, "milvus": milvus_experiment}[args.phase]
        print("RESULT " + json.dumps(fn(spec)), flush=True)
        return 0

    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("interrupted: every server and child process was stopped", file=sys.stderr)
        return 130
    text = table(report)
    print(f"\nwhole benchmark in {report['total_s'] / 60:.1f} min\n\n{text}")
    report["table"] = text
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
