"""Offline evaluation: ranking metrics, the baselines (real implicit ALS), the exact index and
the 4-stage pipeline run offline on tiny generated data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec import evaluation as ev
from socialrec import metrics as m
from socialrec.baselines import ALS, GlobalPopularity, RecentPopularity
from socialrec.catalog import Catalog
from socialrec.index import InMemoryIndex
from socialrec.ranking_features import parse_categories
from socialrec.recommender import Recommender
from socialrec.seen import InMemorySeenStore
from socialrec.settings import Settings
from tests.test_two_tower import tiny_frames


def test_ranking_metrics_by_hand():
    ranked = {1: [5, 6, 7], 2: [8, 9, 10], 3: []}
    relevant = {1: {6}, 2: {11}, 3: {1}}
    assert m.precision_at_k(ranked, relevant, 2) == pytest.approx((0.5 + 0 + 0) / 3)
    assert m.mrr(ranked, relevant) == pytest.approx((1 / 2) / 3)
    assert m.mrr(ranked, relevant, k=1) == 0.0
    assert m.catalog_coverage(ranked, 12, 2) == pytest.approx(4 / 12)
    pop = {i: float(100 - i) for i in range(1, 101)}  # item 1 most popular
    bias = m.popularity_bias({1: [1, 2], 2: [1, 50]}, pop, 2, top=0.01)
    assert bias["top_share"] == pytest.approx(2 / 4)
    assert 0.9 < bias["gini"] <= 1.0  # 3 of 100 items get every slot
    even = m.popularity_bias({u: [u] for u in range(1, 101)}, pop, 1)
    assert even["gini"] == pytest.approx(0.0, abs=1e-9)


def test_in_memory_index_is_exact_and_filters_validated_ints():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    ids, cats = np.arange(100, 150), np.arange(50) % 5
    index = InMemoryIndex(ids, cats, emb)
    q = rng.normal(size=(2, 8)).astype(np.float32)
    hits = index.search("posts", q, 5)
    brute = np.argsort(-(q @ emb.T), axis=1)[:, :5]
    assert [[p for p, _ in h] for h in hits] == (ids[brute]).tolist()
    only = index.search("posts", q[0], 100, [1, 3])[0]
    assert len(only) == 20 and {(p - 100) % 5 for p, _ in only} == {1, 3}
    assert index.search("posts", q[0], 5, [])[0] == []
    with pytest.raises(ValueError):
        index.search("posts", q[0], 5, ["1 or 1==1"])


def test_in_memory_seen_store_contract():
    store = InMemorySeenStore()
    store.mark(1, [10, 11], "IMPRESSION")
    store.mark_events([(1, 12, "DISLIKE", None)])
    assert store.seen(1) == {10, 11, 12} and store.negatives(1) == {12}
    with pytest.raises(ValueError):
        store.mark(1, [13], "TELEPORT")


@pytest.fixture(scope="module")
def world():
    from socialrec.ranker import Ranker
    from socialrec.training import ranker_dataset
    from socialrec.two_tower import TwoTowerModel

    f = tiny_frames()
    train = f.positives[f.positives["split"] == "train"]
    two_tower = TwoTowerModel(16, id_dim=16, text_dim=32, hidden_dim=64).fit(
        train, f.users, f.posts, epochs=3, batch_size=256, seed=1
    )
    data = ranker_dataset(f.samples, f.users, f.posts)
    ranker = Ranker(iterations=60).fit(
        data[data["split"] == "train"], data[data["split"] == "validation"]
    )
    dim_posts = f.posts.rename(columns={"created_at_ts": "created_at"})
    categories = {
        int(u): parse_categories(c)
        for u, c in zip(f.users["user_id"], f.users["onboarding_categories"], strict=True)
    }
    eval_data = ev.build_eval_data(
        f.positives, f.samples, f.posts["post_id"], user_categories=categories
    )
    return f, two_tower, ranker, dim_posts, eval_data


def test_eval_split_is_temporal_and_excludes_what_was_seen(world):
    f, _, _, _, data = world
    assert len(data.users) > 20
    test = f.positives[f.positives["split"] == "test"]
    for u, rel in data.relevant.items():
        assert rel and not rel & data.seen.get(u, set())
        assert rel <= set(test.loc[test["user_id"] == u, "post_id"])
    assert set(data.train["post_id"]) <= set(f.posts["post_id"])
    assert {s["activity"] for s in data.segments.values()} <= {"new", "active"}


def test_baselines_rank_unseen_posts_and_als_beats_random(world):
    _, _, _, _, data = world
    results = ev.evaluate_baselines(data, [GlobalPopularity(), RecentPopularity("2D"), ALS(16)])
    assert set(results) == {"popularity", "recent_popularity", "als"}
    for name, r in results.items():
        for u, recs in r["ranked"].items():
            assert len(recs) == 100 == len(set(recs)), name
            assert not set(recs) & data.seen.get(u, set()), name
    random_recall = 100 / data.n_items
    assert results["als"]["metrics"]["recall@100"] > random_recall
    assert (
        results["popularity"]["metrics"]["top1%_share"] >= results["als"]["metrics"]["top1%_share"]
    )


def test_the_four_stage_pipeline_runs_offline_and_beats_random(world, tmp_path):
    f, two_tower, ranker, dim_posts, data = world
    index = InMemoryIndex(
        f.posts["post_id"], f.posts["category_id"], two_tower.post_embeddings(f.posts)
    )
    settings = Settings(data_dir=tmp_path, retrieval_top_n=150, exploration_share=0.2)
    rec = Recommender(
        ev.FrameFeatures(f.users, f.posts),
        two_tower,
        index,
        ev.seen_store_of(data),
        ranker,
        Catalog.from_dim_posts(dim_posts),
        settings,
    )
    candidates, final = ev.run_pipeline(rec, data, now=pd.Timestamp("2026-01-07", tz="UTC"))
    for u in data.users:
        assert len(final[u]) == ev.FINAL_K
        assert not set(final[u]) & data.seen.get(u, set())
        assert set(final[u]) <= set(f.posts["post_id"])
    ours = ev.score_rankings(candidates, data, final)
    assert ours["recall@100"] > 2 * 100 / data.n_items, ours
    assert 0 <= ours["ndcg@10"] <= 1 and 0 < ours["coverage@10"] <= 1

    table = ev.results_table({"pipeline": ours, "random": {**ours, "recall@10": 0.0}})
    md = ev.to_markdown(table)
    assert md.splitlines()[0].startswith("| method | recall@10 |") and "| pipeline |" in md
    seg = ev.by_segment({"pipeline": (candidates, final)}, data)
    assert set(seg["segment"].str.split("=").str[0]) == {"activity", "category"}
    curve = ev.plot_recall_curves({"pipeline": candidates}, data, tmp_path / "recall.png")
    bias = ev.plot_popularity_bias({"pipeline": final}, data, tmp_path / "bias.png")
    assert curve.read_bytes()[:4] == b"\x89PNG" and bias.stat().st_size > 1000


def test_frame_features_treat_rows_of_nulls_as_unknown_like_the_online_store():
    users = pd.DataFrame(
        {
            "user_id": [1, 2],
            "n_events": [3, None],
            "onboarding_categories": ["1", None],
            "profile_embedding": [np.ones(4), None],
        }
    )
    posts = pd.DataFrame({"post_id": [10], "category_id": [1]})
    found = ev.FrameFeatures(users, posts).users([2, 1, 3])
    assert found.index.tolist() == [2, 1, 3]
    assert found["found"].tolist() == [False, True, False]
