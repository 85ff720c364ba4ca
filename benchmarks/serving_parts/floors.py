"""Phase ``floors`` (child): the parts of ``/recommend`` alone, in-process, no HTTP."""

from __future__ import annotations

import itertools
import time

import numpy as np

from benchmarks.serving_parts.measure import latency_stats


# ============================================================================================
# phase: floors (child) — the parts alone, in-process
# ============================================================================================
def time_calls(fn, reps: int, warm: int = 2, max_seconds: float = 20.0) -> tuple[dict, object]:
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
    return latency_stats(seconds), out


def floors(spec: dict) -> dict:
    import pandas as pd

    from socialrec.features import store as fs
    from socialrec.features.online import online_post_features, online_user_features
    from socialrec.features.ranking import ranking_features
    from socialrec.models.neighbours import NeighbourTable
    from socialrec.models.ranker import Ranker
    from socialrec.models.two_tower import TwoTowerModel
    from socialrec.recommender import FeastFeatures, Recommender
    from socialrec.serving.app import limit_compute_threads
    from socialrec.settings import Settings
    from socialrec.stores.catalog import Catalog
    from socialrec.stores.index import PostIndex
    from socialrec.stores.milvus_server import milvus_uri
    from socialrec.stores.seen import open_seen_store

    s = Settings()
    limit_compute_threads(s.service_threads)  # as the service's workers run
    reps = int(spec["reps"])
    users = spec["users"][: max(8, reps)]
    store = fs.feature_store(s)
    model = TwoTowerModel.load(spec["models"]["socialrec_two_tower"])
    ranker = Ranker.load(spec["models"]["socialrec_ranker"], thread_count=s.service_threads)
    neighbours = NeighbourTable.load(spec["models"]["socialrec_neighbours"])
    catalog_dir = sorted((s.models_dir / "catalog").iterdir())[-1]
    catalog = Catalog.load(catalog_dir)
    seen = open_seen_store(s)
    index = PostIndex(milvus_uri(s), s.milvus_token)
    out: dict = {"per_k": {}}
    try:
        t0 = time.perf_counter()
        index.follow(s.collection_alias, force=True)
        out["index_open_s"] = time.perf_counter() - t0
        ids = [u["user_id"] for u in users]
        user_rows = online_user_features(store, ids)
        vectors = model.user_embeddings(user_rows.reset_index())
        cats = {u["user_id"]: u["categories"] for u in users}
        out["user_fetch"], _ = time_calls(lambda: online_user_features(store, ids[:1]), reps)
        uit0 = itertools.cycle(ids)
        out["seen_state"], _ = time_calls(lambda: seen.state(next(uit0)), reps)
        out["user_tower"], _ = time_calls(
            lambda: model.user_embeddings(user_rows.iloc[:1].reset_index()), reps
        )
        # would adaptive batching pay? the user tower on 8 users in one call vs 8 calls
        out["user_tower_batch8"], _ = time_calls(
            lambda: model.user_embeddings(user_rows.iloc[:8].reset_index()), reps
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

            row: dict = {"K": int(k)}
            row["search_filtered"], _ = time_calls(filtered, reps)
            row["search_unfiltered"], hits = time_calls(unfiltered, reps)
            cand = [p for p, _ in hits[0]]
            row["post_fetch"], posts = time_calls(
                lambda cand=cand: online_post_features(store, cand), reps
            )
            user_df = user_rows.iloc[:1].reset_index()
            pairs = pd.DataFrame({"user_id": np.full(len(cand), ids[0]), "post_id": cand})
            pairs["retrieval_score"] = [sc for _, sc in hits[0]]
            posts_df = posts[posts["found"]].reset_index()
            row["ranking_features"], feats = time_calls(
                lambda u=user_df, p=posts_df, pr=pairs: ranking_features(u, p, pr, now), reps
            )
            row["ranker_predict"], _ = time_calls(lambda feats=feats: ranker.predict(feats), reps)
            # 8 requests' candidates in one predict call (what adaptive batching would send)
            feats8 = pd.concat([feats] * 8, ignore_index=True)
            row["ranker_predict_batch8"], _ = time_calls(
                lambda f=feats8: ranker.predict(f), max(3, reps // 4)
            )
            row["floor_sum_p50_ms"] = sum(
                row[part]["p50_ms"]
                for part in ("search_filtered", "search_unfiltered", "post_fetch", "ranker_predict")
            )
            s.retrieval_top_n = int(k)
            rec = Recommender(
                FeastFeatures(store), model, index, seen, ranker, catalog, s, neighbours=neighbours
            )
            uit = itertools.cycle(ids)
            row["recommend_in_process"], _ = time_calls(
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
