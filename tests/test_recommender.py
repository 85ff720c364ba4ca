"""The composed Recommender: its stages as methods (context, candidates from the merged
sources, scores), the cold-start paths, a source's outage (the 4 stages one by one and the
catalog: tests/test_recommender_stages.py).

Real Milvus Lite index, real SQLite seen store, real Catalog. The two-tower, the ranker and
the online features are small deterministic stand-ins (tests/recommender_world.py; the real
TF/CatBoost/Feast chain is exercised by the end-to-end test).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from socialrec.models.neighbours import NeighbourParams, NeighbourTable
from socialrec.recommender import (
    COLD_START,
    PERSONALIZED,
    Recommender,
    preferred_categories,
    request_seed,
)
from socialrec.recommender.sources import CatalogSource, NeighbourSource, TwoTowerSource
from socialrec.settings import Settings
from socialrec.stores.catalog import Catalog
from socialrec.stores.seen import SQLiteSeenStore
from tests.recommender_world import (
    RateRanker,
    StandInTwoTower,
    build_world,
    item_ids,
    non_increasing,
    positive_rate_builder,
)

_world = pytest.fixture(scope="module", name="world")(build_world)


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
    assert ctx.categories == [2] and ctx.vector is not None
    assert 1002 in ctx.seen and len(ctx.seen) == 1  # the user's Bloom filter
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
        assert ctx.found and ctx.categories == [2, 3]
        assert 1005 in ctx.seen and 1009 in ctx.seen and len(ctx.seen) == 2
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
    assert item_ids(first.items) != item_ids(recommender.recommend(2, k=10, now=NOW, seed=2).items)
    assert first.debug["stages"]["reranking"]["seed"] == 1
    assert non_increasing(first.items)
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
        p for p in reversed(base.candidates) if ranked[p] > 0 and p not in item_ids(base.items)
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
    assert non_increasing(rec.items)


def test_recommend_promoted_post_rule(recommender, world):
    base = recommender.recommend(2, k=10, now=NOW)
    ranked = world["features"].posts(base.candidates)["positive_rate"]
    worst = min(base.candidates, key=lambda p: (ranked[p], p))
    _configure(recommender, promoted_post_ids=[worst], promoted_min_score=float(ranked[worst]))
    rec = recommender.recommend(2, k=10, now=NOW, debug=True)
    assert rec.items[0]["post_id"] == worst and rec.items[0]["promoted"]
    assert rec.debug["stages"]["reranking"]["promoted"] == 1
    assert non_increasing(rec.items)
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
    assert non_increasing(rec.items)
    # the catalog's interleave (no source answered): boosted, never promoted (no score)
    bare = _recommender(world, recommender.seen_store, recommender.settings, sources=[])
    rec = bare.recommend(778, k=10, now=now)
    assert rec.path == COLD_START
    by_id = {i["post_id"]: i for i in rec.items}
    assert by_id[newest]["boosted"] and not any(i["promoted"] for i in rec.items)
    for item in rec.items:
        assert item["boosted"] == (now - created[item["post_id"]] < pd.Timedelta(hours=24))
    assert non_increasing(rec.items)


def test_preferred_categories_are_onboarding_then_liked():
    user = pd.Series({"onboarding_categories": "4,2", "category_counts": "1:0:9,3:5:8,7:2:2,2:1:1"})
    assert preferred_categories(user) == [4, 2, 3, 7]  # 1: events but no positive
    assert preferred_categories(pd.Series({"onboarding_categories": None})) == []


def test_cached_post_features_fetch_misses_in_one_call_and_expire(world, monkeypatch):
    from socialrec.recommender import CachedPostFeatures
    from socialrec.recommender import parts as rec_module

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
    observed = []
    cache = CachedPostFeatures(
        inner, max_posts=3, ttl_seconds=60, observer=lambda h, m: observed.append((h, m))
    )
    direct = world["features"].posts([1000, 1001, 99999])
    first = cache.posts([1000, 1001, 99999])
    pd.testing.assert_frame_equal(first, direct)
    second = cache.posts([1001, 1002, 1000])  # two hits, one miss: one call for the miss
    assert inner.calls == [[1000, 1001, 99999], [1002]]
    assert observed == [(0, 3), (2, 1)]  # (hits, misses) of each lookup: the metrics' counts
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


class CountingSeenStore:
    """A seen store proxy that counts the calls a request makes."""

    def __init__(self, store):
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return call


@pytest.mark.parametrize("fp_rate", [0.01, 0.0])
def test_one_request_reads_the_seen_store_once(world, tmp_path, fp_rate):
    """The request path does only what it must: one seen-store read (``state``; SQLite: one
    statement), the Bloom filter answering "seen" for the sources and filtering."""
    settings = Settings(data_dir=tmp_path, retrieval_top_n=40, source_top_n=5)
    with SQLiteSeenStore(tmp_path / "seen.sqlite", bloom_fp_rate=fp_rate) as store:
        seen_posts = [1002, 1006, 1010, 1014, 1018, 1022, 1003, 1007]  # categories 2 and 3
        store.mark(2, seen_posts, "IMPRESSION")
        store.mark(2, [1005, 1009], "LIKE")  # the neighbours' history: 1010 is their best
        store.mark(2, [1011], "DISLIKE")
        counting = CountingSeenStore(store)
        rec = _recommender(world, counting, settings, neighbours=_neighbours())
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        out = rec.recommend(2, k=10, now=NOW, debug=True)
        store._conn.set_trace_callback(None)
    assert counting.calls == Counter({"state": 1})  # no seen / negatives / blocked_creators
    assert len(statements) == 1 and statements[0].lstrip().startswith("SELECT")
    assert out.path == PERSONALIZED and len(out.items) == 10
    assert out.debug["n_seen"] == len(seen_posts) + 3
    dropped = {*seen_posts, 1005, 1009, 1011}
    assert not dropped & set(item_ids(out.items) + out.candidates)
