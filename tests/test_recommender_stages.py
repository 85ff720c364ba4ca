"""The 4 stages one by one and the catalog (the composed Recommender: tests/test_recommender.py).

Real Milvus Lite index and Catalog; stand-ins from tests/recommender_world.py.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from socialrec.recommender import (
    filter_candidates,
    rank_candidates,
    rerank,
    retrieve,
)
from socialrec.stores.catalog import Catalog
from tests.recommender_world import (
    RateRanker,
    StandInTwoTower,
    build_world,
    item_ids,
    non_increasing,
    positive_rate_builder,
)

_world = pytest.fixture(scope="module", name="world")(build_world)


# --- stage 1 ------------------------------------------------------------------------------
def test_retrieve_filters_and_explores(world):
    cat_of = dict(
        zip(world["dim_posts"]["post_id"], world["dim_posts"]["category_id"], strict=True)
    )
    vec = StandInTwoTower().user_embeddings(pd.DataFrame({"onboarding_categories": ["1"]}))[0]
    cands = retrieve(world["index"], "posts", vec, 30, [1], exploration_share=0.4)
    assert len(cands) == len({p for p, _ in cands}) == 30
    scores = [s for _, s in cands]
    assert scores == sorted(scores, reverse=True)
    cats = [cat_of[p] for p, _ in cands]
    assert cats.count(1) >= 18  # the filtered slice (20 posts in category 1)
    assert set(cats) - {1}  # the exploration slice reaches other categories
    only = retrieve(world["index"], "posts", vec, 10, [1], exploration_share=0.0)
    assert {cat_of[p] for p, _ in only} == {1}


# --- stage 2 ------------------------------------------------------------------------------
def test_filter_drops_seen_negative_own_blocked_and_deleted():
    cands = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6), (5, 0.5), (6, 0.4), (7, 0.3), (8, 0.2)]
    kept, dropped = filter_candidates(
        cands,
        user_id=42,
        seen={1, 2},
        negatives={2, 3},
        creator_of={1: 7, 2: 7, 3: 7, 4: 42, 5: 7, 6: 13, 8: 7},  # 7: not in the catalog
        blocked_creators={13},
    )
    assert kept == [(5, 0.5), (8, 0.2)]
    assert dropped == {
        "seen": 1,
        "negative": 2,
        "own": 1,
        "blocked": 1,
        "deleted": 1,
        "unpublished": 0,
    }


def test_filter_drops_posts_created_after_now():
    cands = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]
    creators = {1: 7, 2: 7, 3: 7, 4: 7}
    created = {1: 100.0, 2: 200.0, 3: 201.0}  # post 4: no creation time known (kept)
    kept, dropped = filter_candidates(
        cands, 42, set(), set(), creators, created_of=created, now=200
    )
    assert kept == [(1, 0.9), (2, 0.8), (4, 0.6)] and dropped["unpublished"] == 1
    # without a "now" (the service) nothing is unpublished
    kept, dropped = filter_candidates(cands, 42, set(), set(), creators, created_of=created)
    assert len(kept) == 4 and dropped["unpublished"] == 0


# --- stage 3 ------------------------------------------------------------------------------
def _merged(post_ids) -> pd.DataFrame:
    """A merged candidates frame (socialrec.recommender.sources.merge's shape) in the given order."""
    n = len(post_ids)
    return pd.DataFrame(
        {
            "post_id": post_ids,
            "merged_score": np.linspace(0.5, 0.1, n),
            "n_sources": 1,
            "two_tower_score": np.linspace(0.9, 0.7, n),
            "two_tower_rank": np.arange(n, dtype=float),
        }
    )


def test_rank_candidates_one_fetch_and_unknown_posts(world):
    feats = world["features"]
    user = feats.users([1]).reset_index()
    post_feats = feats.posts([1000, 1001, 99999])
    ranked = rank_candidates(
        user, post_feats, _merged([1001, 99999, 1000]), RateRanker(), positive_rate_builder, None
    )
    assert ranked["post_id"].tolist() == [1001, 1000]  # the unknown post is dropped, order kept
    expected = post_feats.loc[[1001, 1000], "positive_rate"].to_numpy(dtype=float)
    assert np.allclose(ranked["ranker_score"], expected)
    assert ranked["category_id"].tolist() == [1, 0]
    assert ranked["created_at"].isna().all()  # these features carry no created_at_ts
    dated = post_feats.assign(created_at_ts=[1_767_225_600, 0, 0])  # 0: unknown
    ranked = rank_candidates(
        user, dated, _merged([1001, 1000]), RateRanker(), positive_rate_builder, None
    )
    assert np.isnan(ranked["created_at"].iloc[0]) and ranked["created_at"].iloc[1] == 1_767_225_600


def test_rank_candidates_passes_the_sources_signals_to_the_ranker():
    users = pd.DataFrame({"user_id": [1], "found": [True]})
    posts = pd.DataFrame(
        {"category_id": [1, 2, 3], "creator_id": [5, 6, 7], "found": [True, True, False]},
        index=pd.Index([10, 11, 12], name="post_id"),
    )
    seen_pairs = []

    def builder(u, p, pairs, now):
        seen_pairs.append(pairs)
        return pd.DataFrame({"x": pairs["two_tower_score"].to_numpy()})

    class Echo:
        def predict(self, feats):
            return feats["x"].to_numpy()

    cands = pd.DataFrame(
        {
            "post_id": [11, 12, 10],
            "merged_score": [0.03, 0.02, 0.01],
            "two_tower_score": [0.7, 0.9, 0.3],
            "two_tower_rank": [1.0, 0.0, 2.0],
        }
    )
    out = rank_candidates(users, posts, cands, Echo(), builder, None)
    assert out["post_id"].tolist() == [11, 10]  # post 12 has no online features
    assert out["ranker_score"].tolist() == [0.7, 0.3]
    pairs = seen_pairs[0]
    assert pairs["user_id"].tolist() == [1, 1]
    assert pairs[
        ["post_id", "merged_score", "two_tower_score", "two_tower_rank"]
    ].values.tolist() == [
        [11, 0.03, 0.7, 1.0],
        [10, 0.01, 0.3, 2.0],
    ]
    # no ranker ("retrieval alone"): the merged score, in candidate order, no features built
    plain = rank_candidates(users, posts, cands, None, builder, None)
    assert plain["post_id"].tolist() == [11, 10] and plain["ranker_score"].tolist() == [0.03, 0.01]
    assert len(seen_pairs) == 1

    class TwoOutcomes:
        def predict_outcomes(self, feats):
            return pd.DataFrame({"positive": feats["x"], "negative": 1 - feats["x"]})

        def combine(self, probs):
            return (probs["positive"] - probs["negative"]).to_numpy()

    multi = rank_candidates(users, posts, cands, TwoOutcomes(), builder, None)
    assert multi["p_positive"].tolist() == [0.7, 0.3]
    assert multi["p_negative"].tolist() == pytest.approx([0.3, 0.7])
    assert multi["ranker_score"].tolist() == pytest.approx([0.4, -0.4])

    class Short:
        def predict(self, feats):
            return np.zeros(1)

    with pytest.raises(RuntimeError, match="scores"):
        rank_candidates(users, posts, cands, Short(), builder, None)
    empty = rank_candidates(users, posts, cands.iloc[:0], Echo(), builder, None)
    assert empty.empty and "ranker_score" in empty.columns


# --- stage 4 ------------------------------------------------------------------------------
def test_rerank_decays_repeated_categories_and_sorts():
    scored = pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4],
            "ranker_score": [0.9, 0.85, 0.8, 0.7],
            "category_id": [1, 1, 1, 2],
            "creator_id": [5, 6, 7, 8],
        }
    )
    items = rerank(scored, 4, diversity_decay=0.5)
    assert [i["post_id"] for i in items] == [1, 4, 2, 3]
    assert [i["score"] for i in items] == pytest.approx([0.9, 0.7, 0.425, 0.2])
    assert [i["ranker_score"] for i in items] == [0.9, 0.7, 0.85, 0.8]
    assert rerank(scored, 2, 0.5)[1]["post_id"] == 4
    assert rerank(scored.iloc[:0], 3, 0.5) == []


def test_rerank_caps_categories_and_creators_then_gives_way():
    scored = pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4, 5, 6],
            "ranker_score": [0.9, 0.85, 0.8, 0.7, 0.6, 0.5],
            "category_id": [1, 1, 1, 2, 2, 3],
            "creator_id": [5, 5, 6, 7, 8, 9],
        }
    )
    items = rerank(scored, 4, max_per_category=2, max_per_creator=1)
    # post 2 is the creator 5's second and post 3 the category 1's third: both wait
    assert [i["post_id"] for i in items] == [1, 3, 4, 5]
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    assert [i["ranker_score"] for i in items] == [0.9, 0.8, 0.7, 0.6]
    # only capped posts left: the caps give way so k posts come back, scores still non-increasing
    everything = rerank(scored, 6, max_per_category=1, max_per_creator=1)
    assert sorted(i["post_id"] for i in everything) == [1, 2, 3, 4, 5, 6]
    assert [i["post_id"] for i in everything[:3]] == [1, 4, 6]
    scores = [i["score"] for i in everything]
    assert scores == sorted(scores, reverse=True)


def test_rerank_boosts_new_posts_only_within_the_window():
    now = pd.Timestamp("2026-03-01 12:00", tz="UTC")
    created = [now - pd.Timedelta(hours=h) for h in (100, 2, 30, -48)] + [pd.NaT]
    scored = pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4, 5],
            "ranker_score": [0.8, 0.75, 0.7, 0.6, 0.55],
            "category_id": [1, 2, 3, 4, 5],
            "creator_id": [1, 2, 3, 4, 5],
            "created_at": created,
        }
    )
    boost = {"now_ts": now, "new_post_boost_hours": 24, "new_post_boost": 1.15}
    items = rerank(scored, 5, **boost)
    # post 2 (2h old) passes post 1; post 3 (30h old) would too (0.805) but is out of the
    # window; post 4 is dated 2 days after now and post 5 has no date: neither is boosted
    assert item_ids(items) == [2, 1, 3, 4, 5]
    assert [i["boosted"] for i in items] == [True, False, False, False, False]
    assert items[0]["score"] == pytest.approx(0.75 * 1.15) and items[0]["ranker_score"] == 0.75
    assert non_increasing(items)
    # a wider window reaches post 3
    wide = rerank(scored, 5, now_ts=now, new_post_boost_hours=48, new_post_boost=1.15)
    assert item_ids(wide) == [2, 3, 1, 4, 5]
    # epoch seconds (the catalog's created_at) work like datetimes
    epoch = scored.assign(
        created_at=[t.timestamp() if t is not pd.NaT else np.nan for t in created]
    )
    assert rerank(epoch, 5, **boost) == items
    # no window, no now, no created_at column: the plain order
    for plain in (
        rerank(scored, 5, now_ts=now, new_post_boost_hours=0, new_post_boost=1.15),
        rerank(scored, 5, new_post_boost_hours=24, new_post_boost=1.15),
        rerank(scored.drop(columns="created_at"), 5, **boost),
    ):
        assert item_ids(plain) == [1, 2, 3, 4, 5] and not any(i["boosted"] for i in plain)


def test_rerank_promoted_posts_go_first_above_the_threshold():
    scored = pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4, 5, 6],
            "ranker_score": [0.9, 0.8, 0.7, 0.6, 0.4, 0.3],
            "category_id": [1, 1, 2, 2, 3, 1],
            "creator_id": [1, 2, 3, 4, 5, 6],
        }
    )
    items = rerank(scored, 6, promoted={4, 5}, promoted_min_score=0.5)
    # post 4 (0.6 >= 0.5) goes to the top; post 5 (0.4) is below the threshold and stays put
    assert item_ids(items) == [4, 1, 2, 3, 5, 6]
    assert [i["promoted"] for i in items] == [True] + [False] * 5
    assert non_increasing(items)
    assert items[1]["score"] == 0.6 and items[1]["ranker_score"] == 0.9  # clamped, raw kept
    # several promoted posts: in score order
    assert item_ids(rerank(scored, 3, promoted={3, 4}, promoted_min_score=0.5)) == [3, 4, 1]
    # promoted posts count in the caps: post 4 takes category 2's only slot, post 3 waits
    capped = rerank(scored, 4, max_per_category=1, promoted={4}, promoted_min_score=0.5)
    assert item_ids(capped) == [4, 1, 5, 2]
    assert [i["cap_relaxed"] for i in capped] == [False, False, False, True]
    # ... and obey them: the second promoted post of category 2 waits too
    assert item_ids(rerank(scored, 4, max_per_category=1, promoted={3, 4})) == [3, 1, 5, 4]
    # cold-start rows have no ranker score: never promoted
    cold = rerank(scored.assign(cold=True), 6, promoted={4}, promoted_min_score=0.0)
    assert item_ids(cold) == [1, 2, 3, 4, 5, 6] and not any(i["promoted"] for i in cold)


def _many(n: int = 40, flat: bool = False) -> pd.DataFrame:
    ids = np.arange(1, n + 1)
    return pd.DataFrame(
        {
            "post_id": ids,
            "ranker_score": np.full(n, 0.5) if flat else np.linspace(0.9, 0.1, n),
            "category_id": ids % 5,
            "creator_id": ids % 10,
        }
    )


def test_rerank_softmax_sampling_is_seeded():
    scored = _many(flat=True)
    sample = rerank(scored, 10, softmax_temperature=0.5, seed=1)
    assert sample == rerank(scored, 10, softmax_temperature=0.5, seed=1)
    assert sample == rerank(scored, 10, softmax_temperature=0.5, rng=np.random.default_rng(1))
    assert item_ids(sample) != item_ids(rerank(scored, 10, softmax_temperature=0.5, seed=2))
    assert (
        len(
            {tuple(item_ids(rerank(scored, 10, softmax_temperature=0.5, seed=s))) for s in range(5)}
        )
        == 5
    )
    assert non_increasing(sample) and all(i["ranker_score"] == 0.5 for i in sample)
    # temperature -> 0: the sorted order, whatever the seed
    graded = _many()
    for s in range(5):
        cold = rerank(graded, 10, softmax_temperature=1e-6, seed=s)
        assert item_ids(cold) == item_ids(rerank(graded, 10)) == list(range(1, 11))
    # a low temperature keeps the best post first far more often than a high one
    firsts = {
        t: sum(
            rerank(graded, 1, softmax_temperature=t, seed=s)[0]["post_id"] == 1 for s in range(100)
        )
        for t in (0.01, 5.0)
    }
    assert firsts[0.01] > 50 > firsts[5.0]
    # promoted posts stay on top while the rest is sampled
    top = rerank(graded, 5, softmax_temperature=5.0, seed=3, promoted={30}, promoted_min_score=0.0)
    assert top[0]["post_id"] == 30 and top[0]["promoted"]


def test_rerank_caps_hold_after_sampling():
    scored = _many()
    for s in range(20):
        items = rerank(
            scored,
            10,
            max_per_category=2,
            max_per_creator=1,
            softmax_temperature=0.3,
            seed=s,
        )
        assert len(items) == 10 and not any(i["cap_relaxed"] for i in items)
        assert max(Counter(i["category_id"] for i in items).values()) <= 2
        assert max(Counter(i["creator_id"] for i in items).values()) <= 1
        assert non_increasing(items)
        raw = dict(zip(scored["post_id"], scored["ranker_score"], strict=True))
        assert all(i["ranker_score"] == raw[i["post_id"]] for i in items)


# --- catalog ------------------------------------------------------------------------------
def test_catalog_cold_start_and_roundtrip(world, tmp_path):
    cat = world["catalog"]
    picks = cat.cold_start(10, [2], exclude={1002, 1006})
    ids = [p for p, _ in picks]
    assert len(ids) == 10 == len(set(ids)) and not {1002, 1006} & set(ids)
    assert set(cat.categories(ids).values()) == {2}
    assert [s for _, s in picks] == sorted((s for _, s in picks), reverse=True)
    newest = cat.posts[cat.posts.category_id == 2].sort_values("created_at").post_id.iloc[-1]
    assert newest in ids or newest in {1002, 1006}  # the fresh share
    # not enough posts in the category: topped up from everything
    assert len(cat.cold_start(40, [2])) == 40
    loaded = Catalog.load(cat.save(tmp_path / "catalog"))
    assert loaded.cold_start(10, [2], exclude={1002, 1006}) == picks
    assert loaded.creators([1003]) == {1003: 3}


def test_catalog_leaves_out_deleted_posts(world):
    dim_posts = world["dim_posts"].assign(is_deleted=lambda d: d["post_id"] % 2 == 0)
    dim_posts.loc[dim_posts.index[1], "is_deleted"] = None  # unknown counts as live
    cat = Catalog.from_dim_posts(dim_posts)
    assert len(cat) == (dim_posts["is_deleted"] != True).sum()  # noqa: E712
    picks = [p for p, _ in cat.cold_start(len(dim_posts), None)]
    assert picks and all(p % 2 == 1 for p in picks)
    assert not cat.metadata([1000, 1002]).shape[0]
