"""The 4 stages one by one, the catalog, and the composed Recommender (its stages as methods:
context, candidates from the merged sources, scores; the cold-start paths; a source's outage).

Real Milvus Lite index, real SQLite seen store, real Catalog. The two-tower, the ranker and
the online features are small deterministic stand-ins built here (the real TF/CatBoost/Feast
chain is exercised by the end-to-end test).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from socialrec.features.ranking import parse_categories
from socialrec.models.neighbours import NeighbourParams, NeighbourTable
from socialrec.recommender.pipeline import (
    COLD_START,
    PERSONALIZED,
    Recommender,
    filter_candidates,
    preferred_categories,
    rank_candidates,
    request_seed,
    rerank,
    retrieve,
)
from socialrec.recommender.sources import CatalogSource, NeighbourSource, TwoTowerSource
from socialrec.settings import Settings
from socialrec.stores.catalog import Catalog
from socialrec.stores.index import PostIndex
from socialrec.stores.seen import SQLiteSeenStore

N_CATS = 4
N_POSTS = 80


def _dim_posts() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    ids = np.arange(1000, 1000 + N_POSTS)
    imp = rng.integers(0, 200, N_POSTS)
    return pd.DataFrame(
        {
            "post_id": ids,
            "creator_id": ids % 10,  # users 0..9 are the creators
            "category_id": ids % N_CATS,
            "media_type": "text",
            "description": "x",
            "created_at": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 14 * 24, N_POSTS), unit="h"),
            "n_impressions": imp,
            "n_positives": (imp * rng.uniform(0, 0.5, N_POSTS)).astype(int),
            "n_negatives": rng.integers(0, 3, N_POSTS),
        }
    )


def _post_vectors(dim_posts: pd.DataFrame) -> np.ndarray:
    rng = np.random.default_rng(3)
    v = np.eye(N_CATS, dtype=np.float32)[dim_posts["category_id"].to_numpy()]
    v = v + 0.3 * rng.normal(size=v.shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class StandInTwoTower:
    """User vector = normalised one-hot of the onboarding categories."""

    def user_embeddings(self, users_df: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(users_df), N_CATS), dtype=np.float32)
        for i, cats in enumerate(users_df["onboarding_categories"]):
            for c in parse_categories(cats):
                out[i, c] = 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


class StandInFeatures:
    """Online features from frames, the shape socialrec.features.store returns."""

    def __init__(self, users: pd.DataFrame, posts: pd.DataFrame):
        self._users = users.set_index("user_id")
        self._posts = posts.set_index("post_id")
        self.post_calls = 0

    def _lookup(self, frame: pd.DataFrame, ids, name: str) -> pd.DataFrame:
        ids = list(dict.fromkeys(int(i) for i in ids))
        out = frame.reindex(ids)
        out.index.name = name
        out["found"] = out.index.isin(frame.index)
        return out

    def users(self, ids):
        return self._lookup(self._users, ids, "user_id")

    def posts(self, ids):
        self.post_calls += 1
        return self._lookup(self._posts, ids, "post_id")


def positive_rate_builder(users, posts, pairs, now_ts) -> pd.DataFrame:
    """A ranking-features stand-in: one row per pair, in pair order."""
    rate = posts.set_index("post_id")["positive_rate"]
    return pd.DataFrame({"positive_rate": rate.loc[pairs["post_id"]].to_numpy()})


class RateRanker:
    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return df["positive_rate"].to_numpy(dtype=float)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    dim_posts = _dim_posts()
    index = PostIndex(str(root / "milvus" / "posts.db"))
    created = (dim_posts["created_at"].astype("int64") // 10**9).to_numpy()
    coll = index.write_version(
        1,
        dim_posts["post_id"],
        dim_posts["category_id"],
        dim_posts["creator_id"],
        created,
        _post_vectors(dim_posts),
    )
    index.swap_alias("posts", coll)
    posts = dim_posts[["post_id", "creator_id", "category_id"]].copy()
    posts["positive_rate"] = (
        dim_posts["n_positives"] / dim_posts["n_impressions"].clip(lower=1)
    ).astype(np.float32)
    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "onboarding_categories": ["1", "2,3", ""],
            "profile_embedding": [np.zeros(4, np.float32)] * 3,
            # user_history's latest posts (the neighbours source starts from them)
            "recent_post_ids": [None, "1009,1005", None],
            "recent_positive_ids": [None, "1005", None],
        }
    )
    yield {
        "root": root,
        "index": index,
        "dim_posts": dim_posts,
        "catalog": Catalog.from_dim_posts(dim_posts),
        "features": StandInFeatures(users, posts),
    }
    index.close()


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


def _ids(items: list[dict]) -> list[int]:
    return [i["post_id"] for i in items]


def _non_increasing(items: list[dict]) -> bool:
    scores = [i["score"] for i in items]
    return scores == sorted(scores, reverse=True)


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
    assert _ids(items) == [2, 1, 3, 4, 5]
    assert [i["boosted"] for i in items] == [True, False, False, False, False]
    assert items[0]["score"] == pytest.approx(0.75 * 1.15) and items[0]["ranker_score"] == 0.75
    assert _non_increasing(items)
    # a wider window reaches post 3
    wide = rerank(scored, 5, now_ts=now, new_post_boost_hours=48, new_post_boost=1.15)
    assert _ids(wide) == [2, 3, 1, 4, 5]
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
        assert _ids(plain) == [1, 2, 3, 4, 5] and not any(i["boosted"] for i in plain)


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
    assert _ids(items) == [4, 1, 2, 3, 5, 6]
    assert [i["promoted"] for i in items] == [True] + [False] * 5
    assert _non_increasing(items)
    assert items[1]["score"] == 0.6 and items[1]["ranker_score"] == 0.9  # clamped, raw kept
    # several promoted posts: in score order
    assert _ids(rerank(scored, 3, promoted={3, 4}, promoted_min_score=0.5)) == [3, 4, 1]
    # promoted posts count in the caps: post 4 takes category 2's only slot, post 3 waits
    capped = rerank(scored, 4, max_per_category=1, promoted={4}, promoted_min_score=0.5)
    assert _ids(capped) == [4, 1, 5, 2]
    assert [i["cap_relaxed"] for i in capped] == [False, False, False, True]
    # ... and obey them: the second promoted post of category 2 waits too
    assert _ids(rerank(scored, 4, max_per_category=1, promoted={3, 4})) == [3, 1, 5, 4]
    # cold-start rows have no ranker score: never promoted
    cold = rerank(scored.assign(cold=True), 6, promoted={4}, promoted_min_score=0.0)
    assert _ids(cold) == [1, 2, 3, 4, 5, 6] and not any(i["promoted"] for i in cold)


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
    assert _ids(sample) != _ids(rerank(scored, 10, softmax_temperature=0.5, seed=2))
    assert (
        len({tuple(_ids(rerank(scored, 10, softmax_temperature=0.5, seed=s))) for s in range(5)})
        == 5
    )
    assert _non_increasing(sample) and all(i["ranker_score"] == 0.5 for i in sample)
    # temperature -> 0: the sorted order, whatever the seed
    graded = _many()
    for s in range(5):
        cold = rerank(graded, 10, softmax_temperature=1e-6, seed=s)
        assert _ids(cold) == _ids(rerank(graded, 10)) == list(range(1, 11))
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
        assert _non_increasing(items)
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


# --- composed -----------------------------------------------------------------------------
def _recommender(world, seen, settings, **kw) -> Recommender:
    parts = {
        "features": world["features"],
        "two_tower": StandInTwoTower(),
        "index": world["index"],
        "seen_store": seen,
        "ranker": RateRanker(),
        "catalog": world["catalog"],
        "settings": settings,
        "feature_builder": positive_rate_builder,
        **kw,
    }
    return Recommender(**parts)


@pytest.fixture
def recommender(world, tmp_path):
    seen = SQLiteSeenStore(tmp_path / "seen.sqlite")
    # the catalog sources give 5 candidates each: the two-tower's 40 stay the bulk
    settings = Settings(data_dir=tmp_path, retrieval_top_n=40, source_top_n=5, diversity_decay=0.8)
    yield _recommender(world, seen, settings)
    seen.close()


def test_personalized_path(recommender, world):
    user = 1  # creator of posts 1001, 1011, ... which are in category 1
    recommender.seen_store.mark(user, [1005, 1009], "VIEW")
    recommender.seen_store.mark(user, [1013], "DISLIKE")
    calls = world["features"].post_calls
    rec = recommender.recommend(user, k=10, debug=True)
    assert rec.path == PERSONALIZED and len(rec.items) == 10 and not rec.degraded
    assert world["features"].post_calls == calls + 1  # ONE online post-feature fetch
    ids = [i["post_id"] for i in rec.items]
    assert not {1005, 1009, 1013} & set(ids + rec.candidates)
    assert all(i["creator_id"] != user for i in rec.items)
    scores = [i["score"] for i in rec.items]
    assert scores == sorted(scores, reverse=True)
    assert all(i["score"] <= i["ranker_score"] + 1e-12 for i in rec.items)
    stages = rec.debug["stages"]
    assert set(stages) == {"features", "retrieval", "ranking", "reranking"}
    retrieval = stages["retrieval"]
    # every configured source answered (the neighbours source needs a table: none here)
    assert retrieval["sources"]["two_tower"] > 0 and retrieval["skipped"] == {}
    assert {k: v for k, v in retrieval["sources"].items() if k != "two_tower"} == {
        "trending": 5,
        "popular": 5,
        "fresh": 5,
    }
    # the ANN does not know what the user saw, disliked or made: the filter drops them
    assert retrieval["dropped"]["own"] > 0 and retrieval["dropped"]["seen"] == 2
    assert retrieval["dropped"]["negative"] == 1
    # ranked: the ranker's order of every scored candidate, before the feed policies
    rate = world["features"].posts(rec.ranked)["positive_rate"].to_numpy()
    assert sorted(rec.ranked) == sorted(rec.candidates) and (np.diff(rate) <= 0).all()
    assert ids[0] == rec.ranked[0]

    # read-your-writes: what was just reacted to is gone from the next feed
    recommender.mark_events([(user, ids[0], "LIKE", None)])
    assert ids[0] not in [i["post_id"] for i in recommender.recommend(user, k=10).items]


def test_unknown_user_gets_the_non_personal_sources_through_the_ranker(recommender, world):
    recommender.seen_store.mark(777, [1000, 1001], "IMPRESSION")
    rec = recommender.recommend(777, k=5, debug=True, now=NOW)
    assert rec.path == COLD_START and len(rec.items) == 5
    assert not {1000, 1001} & {i["post_id"] for i in rec.items}
    assert rec.debug["stages"]["features"]["found"] is False
    # no vector, no two-tower candidates: the catalog's trending, popular and fresh lists
    assert rec.debug["stages"]["retrieval"]["sources"] == {
        "two_tower": 0,
        "trending": 5,
        "popular": 5,
        "fresh": 5,
    }
    cat = world["catalog"]
    lists = {
        p
        for name in ("trending", "popular", "fresh")
        for p, _ in cat.top(name, 5, exclude={1000, 1001}, created_by=int(NOW.timestamp()))
    }
    assert set(rec.candidates) == lists
    # ... ranked by the ranker like any other candidates
    assert all(i["ranker_score"] is not None for i in rec.items)
    rate = world["features"].posts(rec.candidates)["positive_rate"]
    assert rec.items[0]["post_id"] == rec.ranked[0] == rate.idxmax()
    scores = [i["score"] for i in rec.items]
    assert scores == sorted(scores, reverse=True)


def test_the_catalog_interleave_answers_when_nothing_is_left(world, tmp_path):
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as seen:
        seen.mark(777, [1000, 1001], "IMPRESSION")
        bare = _recommender(world, seen, Settings(data_dir=tmp_path), sources=[])
        assert bare.sources == []
        rec = bare.recommend(777, k=5, now=NOW)
    assert rec.path == COLD_START and len(rec.items) == 5
    assert rec.candidates == [] and rec.ranked == []
    assert all(i["ranker_score"] is None for i in rec.items)  # list positions, not scores
    picks = [p for p, _ in world["catalog"].cold_start(10, None, exclude={1000, 1001})]
    assert {i["post_id"] for i in rec.items} <= set(picks)
    assert rec.items[0]["post_id"] == picks[0]


def test_new_user_with_categories_goes_through_the_four_stages(recommender, world):
    """Unknown to the feature store, but the request names categories: embedded from them,
    retrieved, filtered, ranked (the ranker sees the sources' signals), re-ranked."""
    recommender.seen_store.mark(778, [1002], "IMPRESSION")
    rec = recommender.recommend(778, k=6, debug=True, categories=[2])
    assert rec.path == PERSONALIZED and len(rec.items) == 6
    assert rec.debug["stages"]["features"]["new_user"] is True
    assert rec.debug["categories"] == [2]
    ctx = recommender.context(778, NOW, categories=[2])
    assert ctx.new_user and not ctx.found and ctx.personalized
    assert ctx.categories == [2] and ctx.vector is not None and ctx.seen == {1002}
    cands, info = recommender.candidates(ctx)
    cats = world["dim_posts"].set_index("post_id")["category_id"]
    # the stand-in tower puts the user on category 2's axis and the filter keeps category 2
    # (plus the exploration slice)
    two_tower = cands.loc[cands["two_tower_rank"].notna(), "post_id"]
    share = np.mean([cats[p] == 2 for p in two_tower])
    assert share >= 0.6 and share > 2 * np.mean(cats == 2)
    # the fresh source reads the request's categories too
    assert {cats[p] for p in cands.loc[cands["fresh_rank"].notna(), "post_id"]} == {2}
    assert 1002 not in set(cands["post_id"]) and info["dropped"]["seen"] == 1
    assert 1002 not in {i["post_id"] for i in rec.items}
    assert all(i["ranker_score"] is not None for i in rec.items)


def _neighbours() -> NeighbourTable:
    """Post 1005's neighbours: 1010 (0.7) and 1020 (0.2); 1009's: 1010 (0.1)."""
    posts = pd.Index([1005, 1009, 1010, 1020])
    sim = np.zeros((4, 4), dtype=np.float32)
    sim[0, 2], sim[0, 3], sim[1, 2] = 0.7, 0.2, 0.1
    import scipy.sparse as sp

    return NeighbourTable(posts, sp.csr_matrix(sim), NeighbourParams(signal="positive"))


def test_candidates_merge_the_sources_with_the_signals_the_ranker_reads(world, tmp_path):
    settings = Settings(data_dir=tmp_path, retrieval_top_n=20, source_top_n=5)
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as seen:
        seen.mark(2, [1005, 1009], "LIKE")
        seen.block(2, [3])  # posts 1003, 1013, ...
        rec = _recommender(world, seen, settings, neighbours=_neighbours())
        assert [s.name for s in rec.sources] == [
            "two_tower",
            "neighbours",
            "trending",
            "popular",
            "fresh",
        ]
        assert isinstance(rec.sources[0], TwoTowerSource)
        assert isinstance(rec.sources[1], NeighbourSource)
        assert isinstance(rec.sources[2], CatalogSource)
        ctx = rec.context(2, NOW)
        assert ctx.found and ctx.categories == [2, 3] and ctx.seen == {1005, 1009}
        assert ctx.blocked == {3} and ctx.negatives == set()
        cands, info = rec.candidates(ctx)
        scored = rec.score(ctx, cands)
    # the user's recent positive (1005) through the table: its neighbours, with their ranks
    assert info["sources"]["neighbours"] == 2
    by_id = cands.set_index("post_id")
    assert by_id.loc[1010, "neighbours_rank"] == 0 and by_id.loc[1020, "neighbours_rank"] == 1
    assert by_id.loc[1010, "neighbours_score"] == pytest.approx(0.7)
    # every candidate gets the neighbours score of the history (0 when not a neighbour) and
    # the catalog's counts, whichever source found it
    others = cands["neighbours_rank"].isna()
    assert others.any() and (cands.loc[others, "neighbours_score"] == 0).all()
    catalog = world["catalog"].posts
    assert (
        cands["catalog_popular"].tolist() == catalog.loc[cands["post_id"], "n_positives"].tolist()
    )
    assert (cands["catalog_trending"] == 0).all()  # a catalog from dim_posts: no trending
    assert list(cands.columns[:3]) == ["post_id", "merged_score", "n_sources"]
    assert (np.diff(cands["merged_score"]) <= 0).all()  # the merged (source fusion) order
    assert (cands["n_sources"] >= 1).all() and (cands["n_sources"] > 1).any()
    assert info["dropped"]["blocked"] > 0 and not (cands["post_id"] % 10 == 3).any()
    # stage 3 keeps the candidates with features, scored by the ranker
    assert scored["post_id"].tolist() == cands["post_id"].tolist()
    rate = world["features"].posts(cands["post_id"])["positive_rate"].to_numpy()
    assert scored["ranker_score"].to_numpy() == pytest.approx(rate)
    # the settings choose the sources; parts that are missing are left out
    only = _recommender(world, seen, settings.model_copy(update={"candidate_sources": ["popular"]}))
    assert [s.name for s in only.sources] == ["popular"]
    no_parts = _recommender(world, seen, settings, index=None)
    assert [s.name for s in no_parts.sources] == ["trending", "popular", "fresh"]


class Outage(Exception):
    pass


class DownIndex:
    def search(self, *args, **kwargs):
        raise Outage("milvus: failed to connect")


def test_a_source_whose_dependency_is_down_is_skipped(world, tmp_path):
    settings = Settings(data_dir=tmp_path, source_top_n=5)
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as seen:
        rec = _recommender(world, seen, settings, index=DownIndex(), outage=(Outage,))
        out = rec.recommend(2, k=5, now=NOW, debug=True)
        # the other sources answered: still the user's personalized path, ranked
        assert out.path == PERSONALIZED and len(out.items) == 5
        assert list(out.degraded) == ["two_tower"] and isinstance(out.degraded["two_tower"], Outage)
        retrieval = out.debug["stages"]["retrieval"]
        assert "two_tower" not in retrieval["sources"]
        assert retrieval["skipped"] == {"two_tower": "Outage: milvus: failed to connect"}
        assert all(i["ranker_score"] is not None for i in out.items)
        # an error the recommender was not told is an outage propagates
        with pytest.raises(Outage):
            _recommender(world, seen, settings, index=DownIndex()).recommend(2, k=5, now=NOW)
        # the only source down: its outage propagates (the service's fallback answers)
        alone = settings.model_copy(update={"candidate_sources": ["two_tower"]})
        with pytest.raises(Outage):
            _recommender(world, seen, alone, index=DownIndex(), outage=(Outage,)).recommend(2, 5)


def test_cold_start_when_no_candidates_survive(recommender, world):
    # user 3 has no categories: unfiltered retrieval; everything seen -> cold start, no error
    all_ids = world["dim_posts"]["post_id"].tolist()
    recommender.seen_store.mark(3, all_ids[:-5], "IMPRESSION")
    rec = recommender.recommend(3, k=10)
    assert rec.path in (PERSONALIZED, COLD_START)
    assert {i["post_id"] for i in rec.items} <= set(all_ids[-5:])


NOW = pd.Timestamp("2026-06-01", tz="UTC")  # months after every test post: nothing is new


def _configure(recommender, **settings) -> None:
    recommender.settings = recommender.settings.model_copy(update=settings)


def _created(world) -> dict[int, pd.Timestamp]:
    d = world["dim_posts"]
    return dict(zip(d["post_id"].tolist(), d["created_at"].tolist(), strict=True))


def test_recommend_samples_with_a_per_request_seed(recommender):
    _configure(recommender, softmax_temperature=1.0)
    first = recommender.recommend(2, k=10, now=NOW, seed=1, debug=True)
    assert first.path == PERSONALIZED and len(first.items) == 10
    assert first.items == recommender.recommend(2, k=10, now=NOW, seed=1).items
    assert _ids(first.items) != _ids(recommender.recommend(2, k=10, now=NOW, seed=2).items)
    assert first.debug["stages"]["reranking"]["seed"] == 1
    assert _non_increasing(first.items)
    s = recommender.settings
    assert max(Counter(i["category_id"] for i in first.items).values()) <= s.max_per_category
    assert max(Counter(i["creator_id"] for i in first.items).values()) <= s.max_per_creator
    # no seed: derived from the user and the request time, so a fixed "now" is deterministic
    derived = recommender.recommend(2, k=10, now=NOW, debug=True)
    assert derived.items == recommender.recommend(2, k=10, now=NOW).items
    assert derived.debug["stages"]["reranking"]["seed"] == request_seed(2, NOW)
    # temperature 0: no sampling, no seed
    _configure(recommender, softmax_temperature=0.0)
    plain = recommender.recommend(2, k=10, now=NOW, seed=1, debug=True)
    assert plain.items == recommender.recommend(2, k=10, now=NOW, seed=2).items
    assert plain.debug["stages"]["reranking"]["seed"] is None


def test_recommend_boosts_new_posts(recommender, world):
    created = _created(world)
    _configure(recommender, diversity_decay=1.0)  # so the boost alone decides the order
    base = recommender.recommend(2, k=10, now=NOW)
    assert not any(i["boosted"] for i in base.items)
    # a candidate that did not make the top 10, with a positive score, made 1h before "now"
    ranked = world["features"].posts(base.candidates)["positive_rate"]
    target = next(
        p for p in reversed(base.candidates) if ranked[p] > 0 and p not in _ids(base.items)
    )
    now = created[target] + pd.Timedelta(hours=1)
    _configure(recommender, new_post_boost=100.0, new_post_boost_hours=24)
    rec = recommender.recommend(2, k=10, now=now, debug=True)
    by_id = {i["post_id"]: i for i in rec.items}
    assert target in by_id and by_id[target]["boosted"]  # boosted into the top 10
    window = pd.Timedelta(hours=24)
    for item in rec.items:
        age = now - created[item["post_id"]]
        assert item["boosted"] == (pd.Timedelta(0) <= age < window)
    assert rec.debug["stages"]["reranking"]["boosted"] == sum(i["boosted"] for i in rec.items)
    assert _non_increasing(rec.items)


def test_recommend_promoted_post_rule(recommender, world):
    base = recommender.recommend(2, k=10, now=NOW)
    ranked = world["features"].posts(base.candidates)["positive_rate"]
    worst = min(base.candidates, key=lambda p: (ranked[p], p))
    _configure(recommender, promoted_post_ids=[worst], promoted_min_score=float(ranked[worst]))
    rec = recommender.recommend(2, k=10, now=NOW, debug=True)
    assert rec.items[0]["post_id"] == worst and rec.items[0]["promoted"]
    assert rec.debug["stages"]["reranking"]["promoted"] == 1
    assert _non_increasing(rec.items)
    # below the threshold: not moved
    _configure(recommender, promoted_min_score=float(ranked[worst]) + 0.01)
    assert recommender.recommend(2, k=10, now=NOW).items == base.items


def test_cold_start_boosts_new_posts_and_promotes_only_a_ranked_post(recommender, world):
    created = _created(world)
    newest = max(created, key=lambda p: (created[p], p))
    now = created[newest] + pd.Timedelta(hours=1)
    _configure(recommender, promoted_post_ids=[newest], promoted_min_score=0.0)
    rec = recommender.recommend(778, k=10, now=now)
    assert rec.path == COLD_START
    # through the sources (the fresh list found it) and the ranker: it has a ranker score, so
    # the promoted rule applies
    by_id = {i["post_id"]: i for i in rec.items}
    assert by_id[newest]["boosted"] and by_id[newest]["promoted"]
    assert rec.items[0]["post_id"] == newest
    for item in rec.items:
        assert item["boosted"] == (now - created[item["post_id"]] < pd.Timedelta(hours=24))
    assert _non_increasing(rec.items)
    # the catalog's interleave (no source answered): boosted, never promoted (no score)
    bare = _recommender(world, recommender.seen_store, recommender.settings, sources=[])
    rec = bare.recommend(778, k=10, now=now)
    assert rec.path == COLD_START
    by_id = {i["post_id"]: i for i in rec.items}
    assert by_id[newest]["boosted"] and not any(i["promoted"] for i in rec.items)
    for item in rec.items:
        assert item["boosted"] == (now - created[item["post_id"]] < pd.Timedelta(hours=24))
    assert _non_increasing(rec.items)


def test_preferred_categories_are_onboarding_then_liked():
    user = pd.Series({"onboarding_categories": "4,2", "category_counts": "1:0:9,3:5:8,7:2:2,2:1:1"})
    assert preferred_categories(user) == [4, 2, 3, 7]  # 1: events but no positive
    assert preferred_categories(pd.Series({"onboarding_categories": None})) == []


def test_cached_post_features_fetch_misses_in_one_call_and_expire(world, monkeypatch):
    from socialrec.recommender import pipeline as rec_module
    from socialrec.recommender.pipeline import CachedPostFeatures

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, []

        def users(self, ids):
            return self.inner.users(ids)

        def posts(self, ids):
            self.calls.append(list(ids))
            return self.inner.posts(ids)

    inner = Counting(world["features"])
    clock = [1000.0]
    monkeypatch.setattr(rec_module.time, "monotonic", lambda: clock[0])
    cache = CachedPostFeatures(inner, max_posts=3, ttl_seconds=60)
    direct = world["features"].posts([1000, 1001, 99999])
    first = cache.posts([1000, 1001, 99999])
    pd.testing.assert_frame_equal(first, direct)
    second = cache.posts([1001, 1002, 1000])  # two hits, one miss: one call for the miss
    assert inner.calls == [[1000, 1001, 99999], [1002]]
    assert second.index.tolist() == [1001, 1002, 1000]
    for col in ("category_id", "creator_id", "found"):
        assert second[col].tolist() == world["features"].posts([1001, 1002, 1000])[col].tolist()
    # bounded: 1002 pushed out the least recently used row (99999)
    cache.posts([99999])
    assert inner.calls[-1] == [99999]
    # expired rows are fetched again; invalidate drops one at once
    clock[0] += 61
    cache.posts([1000])
    assert inner.calls[-1] == [1000]
    cache.invalidate([1000])
    cache.posts([1000])
    assert inner.calls[-1] == [1000] and len(inner.calls) == 5
    assert cache.users([1]).equals(world["features"].users([1]))


def test_catalog_with_post_equals_a_rebuild(world):
    cat = world["catalog"]
    base = cat.posts.reset_index(drop=True)
    newest = int(base["created_at"].max()) + 10
    edited = int(base["post_id"].iloc[4])
    for post_id, category, creator, created in (
        (55_555, 3, 77, newest),  # a new post: popularity 0, the freshest
        (edited, 1, 2, int(base["created_at"].min())),  # an edit keeps its popularity
    ):
        incremental = cat.with_post(post_id, category, creator, created)
        known = post_id in set(base["post_id"])
        counts = {
            c: float(base.loc[base["post_id"] == post_id, c].iloc[0]) if known else 0.0
            for c in ("popularity", "n_positives", "trending")
        }
        row = {
            "post_id": post_id,
            "category_id": category,
            "creator_id": creator,
            "created_at": created,
            **counts,
        }
        rebuilt = Catalog(
            pd.concat([base[base["post_id"] != post_id], pd.DataFrame([row])], ignore_index=True),
            cat.fresh_share,
        )
        assert len(incremental) == len(rebuilt)
        pd.testing.assert_frame_equal(incremental._popular, rebuilt._popular, check_like=False)
        pd.testing.assert_frame_equal(incremental._fresh, rebuilt._fresh)
        for name in ("popular", "trending", "fresh"):  # the candidate sources' lists
            pd.testing.assert_frame_equal(incremental._orders[name], rebuilt._orders[name])
            assert incremental.top(name, 30) == rebuilt.top(name, 30), name
        assert incremental.cold_start(30) == rebuilt.cold_start(30)
        assert incremental.creators([post_id]) == {post_id: creator}
    assert 55_555 not in cat.posts.index  # the original view is untouched
