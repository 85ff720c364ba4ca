"""Phases ``train`` (the tiny graph, in a child) and ``prepare`` (child): the synthetic
catalog of one size, written the product's way."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.serving_parts.common import (
    DAYS,
    MATERIALIZE_CHUNK,
    MODELS,
    ROOT,
    TINY,
    child_env,
    run_logged,
)


# ============================================================================================
# phase: train (the tiny graph; parent runs orchestration.materialize in a child)
# ============================================================================================
def train_tiny(tiny: Path, log: Path) -> float:
    (tiny / "dagster").mkdir(parents=True, exist_ok=True)
    env = child_env(
        **TINY,
        SOCIALREC_DATA_DIR=str(tiny),
        DAGSTER_HOME=str(tiny / "dagster"),
        BENTOML_HOME=str(tiny / "bentoml"),
    )
    t0 = time.perf_counter()
    returncode = run_logged(["orchestration.materialize", "--generate"], env, log, 1800)
    if returncode != 0 or not tiny_ready(tiny):
        raise SystemExit(f"the tiny graph failed:\n{log.read_text(errors='replace')[-5000:]}")
    return time.perf_counter() - t0


def tiny_ready(tiny: Path) -> bool:
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


def prepare(spec: dict) -> dict:
    import pandas as pd

    from feature_repo import all_definitions
    from socialrec.features import store as fs
    from socialrec.features.tables import (
        POST_CONTENT,
        POST_FEATURES,
        TIMESTAMP,
        USER_FEATURES,
        USER_HISTORY,
        USER_PROFILE,
        feature_table_path,
        write_feature_tables,
    )
    from socialrec.models.two_tower import TwoTowerModel
    from socialrec.settings import MEDIA_TYPES, TEXT_EMBEDDING_DIM, Settings
    from socialrec.stores.catalog import Catalog
    from socialrec.stores.index import PostIndex
    from socialrec.stores.milvus_server import milvus_uri

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
    for name in (USER_FEATURES, USER_PROFILE, USER_HISTORY):
        shutil.copy(tiny / "features" / f"{name}.parquet", feature_table_path(s, name))
    uf = pd.read_parquet(tiny / "features" / f"{USER_FEATURES}.parquet")
    uf = uf.sort_values(TIMESTAMP).drop_duplicates("user_id", keep="last")
    uf = uf.sort_values("n_events", ascending=False)
    users = [
        {
            "user_id": int(r.user_id),
            "categories": [int(c) for c in str(r.onboarding_categories).split(",") if c],
            "n_events": int(r.n_events),
        }
        for r in uf.itertuples()
    ]
    tiny_posts = pd.read_parquet(tiny / "features" / f"{POST_FEATURES}.parquet")
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
            TIMESTAMP: created,
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
        {"post_id": ids, TIMESTAMP: created, "description_embedding": list(text)}
    )
    t = _timed(timings, "generate_s", t)
    write_feature_tables(s, {POST_FEATURES: post_features, POST_CONTENT: post_content})
    del post_content
    t = _timed(timings, "feature_tables_s", t)

    # --- Feast: apply + materialize into the SQLite online store -----------------------------
    store = fs.feature_store(s)
    fs.apply_definitions(store, all_definitions(s))
    t = _timed(timings, "feast_apply_s", t)
    user_views = (USER_FEATURES, USER_PROFILE, USER_HISTORY)
    fs.materialize(store, dt.datetime.now(dt.UTC), views=user_views)
    t = _timed(timings, "feast_materialize_users_s", t)
    # in time windows of ~MATERIALIZE_CHUNK posts each (posts are created uniformly over the
    # last DAYS days, one feature row each): bounded memory, same rows in the online store
    chunks = max(1, -(-n // MATERIALIZE_CHUNK))
    edges = pd.date_range(
        now - pd.Timedelta(days=DAYS, hours=1), now + pd.Timedelta(minutes=1), periods=chunks + 1
    )
    written = {}
    for view in (POST_FEATURES, POST_CONTENT):
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
    # the product's write path (PostIndex.write_version: insert, flush, one index build,
    # load) on the local Milvus server the parent started for this data directory
    index = PostIndex(milvus_uri(s))
    try:
        posts_col = index.write_version(version, *meta, vectors)
        index.swap_alias(s.collection_alias, posts_col)
        t = _timed(timings, "milvus_index_build_posts_s", t)
        m = min(n, int(spec.get("text_posts") or n))
        text_col = index.write_text_version(version, *(a[:m] for a in meta), text[:m])
        index.swap_alias(s.text_collection_alias, text_col)
        t = _timed(timings, "milvus_index_build_texts_s", t)
    finally:
        index.close()
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
