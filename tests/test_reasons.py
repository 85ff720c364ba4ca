"""Every recommended item's ``reasons`` (``socialrec.recommender.reasons``): each appears
exactly when its cause happens — the sources that found the post, its two-tower similarity,
the ranker's score and weighed outcomes, the re-ranking rules (boost, decay, cap, promoted,
sampled), the cold start — in order and compact, without ``debug``.

The stages one by one over small frames, then the composed Recommender over the real Milvus
Lite index, SQLite seen store and Catalog of tests/recommender_world.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.recommender import COLD_START, PERSONALIZED, Recommender, rerank
from socialrec.recommender.reasons import MAX_REASONS, compact, explain, fallback_reasons
from socialrec.recommender.sources import merge
from socialrec.settings import Settings
from socialrec.stores.seen import SQLiteSeenStore
from tests.recommender_world import (
    RateRanker,
    StandInTwoTower,
    build_world,
    item_ids,
    positive_rate_builder,
)

_world = pytest.fixture(scope="module", name="world")(build_world)
ORDER = ["source", "similarity", "ranker", "outcome", "rule"]
NOW = pd.Timestamp("2026-06-01", tz="UTC")  # months after every test post: nothing is new


def codes(item: dict) -> list[str]:
    return [r["code"] for r in item["reasons"]]


def rules(item: dict) -> list[str]:
    return [r["text"] for r in item.get("rules", item.get("reasons", [])) if r["code"] == "rule"]


def in_order(item: dict) -> bool:
    ranks = [ORDER.index(c) for c in codes(item)]
    return ranks == sorted(ranks)


# --- the sources and the similarity (stage 1's merged candidates) ---------------------------
def test_a_post_found_by_two_sources_lists_both_and_the_similarity_only_from_two_tower():
    merged = merge(
        {
            "two_tower": [(1, 0.8), (2, 0.6)],
            "trending": [(3, 9.0), (2, 5.0)],
            "popular": [(4, 2.0)],
        }
    )
    items = [{"post_id": p, "ranker_score": 0.5} for p in (2, 1, 3, 4)]
    explain(items, merged, None)
    both, tower, trending, popular = items
    assert both["reasons"] == [
        {"code": "source", "text": "found by two_tower retrieval (#2)", "value": 0.6},
        {"code": "source", "text": "found by trending posts (#2)", "value": 5.0},
        {"code": "similarity", "text": "retrieval similarity 0.60", "value": 0.6},
        {"code": "ranker", "text": "ranker score 0.50", "value": 0.5},
    ]
    assert codes(tower) == ["source", "similarity", "ranker"]
    assert tower["reasons"][1]["value"] == 0.8
    # not found by the two-tower source: no similarity
    assert codes(trending) == codes(popular) == ["source", "ranker"]
    assert trending["reasons"][0]["text"] == "found by trending posts (#1)"
    assert popular["reasons"][0] == {
        "code": "source",
        "text": "found by popular posts (#1)",
        "value": 2.0,
    }
    # the fresh list's score is minus the post's age in hours: said as its age
    fresh = merge({"fresh": [(5, -0.001), (6, -0.5), (7, -3.2), (8, -72.0)]})
    explain(items := [{"post_id": p, "ranker_score": None} for p in (5, 6, 7, 8)], fresh, None)
    assert [it["reasons"][0]["text"] for it in items] == [
        "found by fresh posts (#1, under 1 min old)",
        "found by fresh posts (#2, 30 min old)",
        "found by fresh posts (#3, 3 h old)",
        "found by fresh posts (#4, 3 d old)",
    ]
    assert items[2]["reasons"][0]["value"] == -3.2
    # the source the post ranked best in comes first
    explain(
        items := [{"post_id": 2, "ranker_score": 0.5}],
        merge({"a": [(9, 1), (2, 1)], "b": [(2, 1)]}),
        None,
    )
    assert [r["text"] for r in items[0]["reasons"][:2]] == ["found by b (#1)", "found by a (#2)"]


# --- the ranker and its outcomes (stage 3's scored frame) -----------------------------------
def test_the_ranker_reason_is_the_ranker_score_and_the_outcomes_the_weighed_top_three():
    scored = pd.DataFrame(
        {
            "post_id": [7, 8],
            "ranker_score": [0.41, 0.2],
            "p_positive": [0.3, 0.1],
            "p_like": [0.5, 0.02],
            "p_full_view": [0.9, 0.9],
            "p_share_comment": [0.2, 0.004],
            "p_negative": [0.05, 0.3],
        }
    )
    weights = {"positive": 1.0, "like": 0.5, "full_view": 0.0, "share_comment": 0.1, "negative": -1}
    items = [{"post_id": 8, "ranker_score": 0.2}, {"post_id": 7, "ranker_score": 0.41}]
    explain(items, None, scored, weights)
    low, high = items
    assert high["reasons"] == [
        {"code": "ranker", "text": "ranker score 0.41", "value": 0.41},
        {"code": "outcome", "text": "p(positive) 0.30", "value": 0.3},
        {"code": "outcome", "text": "p(like) 0.50", "value": 0.5},
        {"code": "outcome", "text": "p(share_comment) 0.20", "value": 0.2},
    ]
    # weight 0 (full_view) is not weighed; a negative weight counts against and sorts last
    texts = [r["text"] for r in low["reasons"]]
    assert texts == [
        "ranker score 0.20",
        "p(positive) 0.10",
        "p(like) 0.02",
        "p(share_comment) 0.004",
    ]
    explain(items := [{"post_id": 8, "ranker_score": 0.2}], None, scored, {"negative": -1.0})
    assert [r["text"] for r in items[0]["reasons"]] == [
        "ranker score 0.20",
        "p(negative) 0.30 counts against",
    ]
    # without a ranker the score is the sources' fusion; a cold-start row has no ranker reason
    explain(items := [{"post_id": 8, "ranker_score": 0.03}], None, None, ranked=False)
    assert items[0]["reasons"] == [
        {"code": "ranker", "text": "source fusion score 0.03 (no ranker)", "value": 0.03}
    ]
    explain(items := [{"post_id": 8, "ranker_score": None}], None, None)
    assert items[0]["reasons"] == []


# --- the re-ranking rules (stage 4) ---------------------------------------------------------
def test_the_boost_and_the_decay_rules_are_on_the_posts_they_applied_to():
    now = pd.Timestamp("2026-03-01 12:00", tz="UTC")
    scored = pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4],
            "ranker_score": [0.8, 0.75, 0.7, 0.6],
            "category_id": [1, 2, 1, 1],
            "creator_id": [1, 2, 3, 4],
            "created_at": [now - pd.Timedelta(hours=h) for h in (100, 2, 30, 1)],
        }
    )
    items = rerank(scored, 4, 0.5, now_ts=now, new_post_boost_hours=24, new_post_boost=1.15)
    by_id = {it["post_id"]: it for it in items}
    assert rules(by_id[1]) == []
    assert rules(by_id[2]) == ["new post boost x1.15"]
    assert by_id[2]["rules"][0]["value"] == 1.15
    assert rules(by_id[3]) == ["diversity: post 2 of its category, x0.50"]
    assert rules(by_id[4]) == ["diversity: post 3 of its category, x0.25", "new post boost x1.15"]
    assert [it["boosted"] for it in items] == ["new post boost x1.15" in rules(it) for it in items]
    # neither without a decay or a boost
    assert not any(rules(it) for it in rerank(scored, 4))


def test_a_cap_rule_names_the_post_it_moved_up_and_the_one_taken_over_the_cap():
    scored = pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4, 5],
            "ranker_score": [0.9, 0.85, 0.8, 0.7, 0.6],
            "category_id": [1, 1, 1, 2, 3],
            "creator_id": [5, 5, 6, 7, 8],
        }
    )
    items = rerank(scored, 5, max_per_category=2, max_per_creator=1)
    # post 2 breaks creator 5's cap: post 3 moves up past it; then post 2 (category 1 full too)
    # waits until nothing else is left and is taken over the cap
    assert item_ids(items) == [1, 3, 4, 5, 2]
    by_id = {it["post_id"]: it for it in items}
    assert rules(by_id[3]) == ["moved up past 1 post over the creator cap (1 per feed)"]
    assert by_id[3]["rules"][0]["value"] == 1
    assert rules(by_id[4]) == ["moved up past 1 post over the category cap (2 per feed)"]
    assert rules(by_id[5]) == rules(by_id[4])  # post 2 still waits
    assert rules(by_id[2]) == ["over the category cap: nothing else was left"]
    assert by_id[2]["cap_relaxed"] and by_id[2]["rules"][0]["value"] == 2
    assert rules(by_id[1]) == []
    # two posts held, one by each cap
    both = scored.assign(category_id=[1, 1, 4, 2, 3], creator_id=[5, 6, 5, 7, 8])
    many = rerank(both, 3, max_per_category=1, max_per_creator=1)
    assert item_ids(many) == [1, 4, 5]
    assert rules(many[1]) == [
        "moved up past 2 posts over the category cap (1 per feed) and creator cap (1 per feed)"
    ]
    # no caps: no cap rules
    assert not any(rules(it) for it in rerank(scored, 5))


def test_promoted_and_sampled_rules():
    scored = pd.DataFrame(
        {
            "post_id": np.arange(1, 11),
            "ranker_score": np.linspace(0.9, 0.1, 10),
            "category_id": np.arange(10),
            "creator_id": np.arange(10),
        }
    )
    items = rerank(scored, 5, promoted={4}, promoted_min_score=0.5)
    assert items[0]["post_id"] == 4 and rules(items[0]) == ["promoted: moved to the front"]
    assert not any(rules(it) for it in items[1:])
    # below the threshold or a cold-start row: not promoted, no rule
    assert not any(rules(it) for it in rerank(scored, 5, promoted={9}, promoted_min_score=0.5))
    assert not any(rules(it) for it in rerank(scored.assign(cold=True), 5, promoted={4}))
    # sampling: every sampled post says so and how it moved; the promoted one was not sampled
    sampled = rerank(scored, 10, softmax_temperature=1.0, seed=3, promoted={4})
    assert rules(sampled[0]) == ["promoted: moved to the front"]
    rest = [it for it in sampled if not it["promoted"]]
    assert all(len(it["rules"]) == 1 and it["rules"][0]["value"] == 1.0 for it in rest)
    deterministic = [p for p in range(1, 11) if p != 4]
    for at, it in enumerate(rest):
        moved = deterministic.index(it["post_id"]) - at
        where = (
            f"moved up {moved}"
            if moved > 0
            else f"moved down {-moved}"
            if moved < 0
            else "kept its place"
        )
        assert rules(it) == [f"sampled for exploration: {where}"]
    assert item_ids(rest) != deterministic  # it did move something
    # temperature 0: nothing sampled
    assert not any(rules(it) for it in rerank(scored, 10, softmax_temperature=0.0, seed=3))


def test_reasons_are_compact_and_keep_the_first_source_the_ranker_and_the_rules():
    def r(code, i=0):
        return {"code": code, "text": f"{code} {i}", "value": None}

    full = (
        [r("source", i) for i in range(5)]
        + [r("similarity"), r("ranker")]
        + [r("outcome", i) for i in range(3)]
        + [r("rule", i) for i in range(3)]
    )
    kept = compact(full)
    assert len(kept) == MAX_REASONS
    assert [x["text"] for x in kept] == [
        "source 0", "source 1", "source 2", "similarity 0", "ranker 0", "rule 0", "rule 1", "rule 2"
    ]  # fmt: skip
    assert compact(full[:8]) == full[:8]  # nothing dropped when it fits
    assert fallback_reasons(0.5, "milvus unavailable") == [
        {"code": "source", "text": "found by the popular and fresh list", "value": 0.5},
        {"code": "rule", "text": "fallback: milvus unavailable", "value": None},
    ]


# --- the composed Recommender -----------------------------------------------------------------
class OutcomeRanker:
    """A multi-outcome ranker stand-in: outcomes from the posts' positive rate, weighed."""

    weights = {"positive": 1.0, "like": 0.5, "full_view": 0.0, "negative": -1.0}

    def predict_outcomes(self, feats: pd.DataFrame) -> pd.DataFrame:
        rate = feats["positive_rate"].to_numpy(dtype=float)
        return pd.DataFrame(
            {"positive": rate, "like": rate / 2, "full_view": rate, "negative": rate / 4},
            index=feats.index,
        )

    def combine(self, probs: pd.DataFrame) -> np.ndarray:
        return sum(self.weights[o] * probs[o].to_numpy() for o in probs.columns)

    def predict(self, feats: pd.DataFrame) -> np.ndarray:
        return self.combine(self.predict_outcomes(feats))


@pytest.fixture
def seen(tmp_path):
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as store:
        yield store


def _recommender(world, seen, tmp_path, ranker=None, **settings) -> Recommender:
    options = {"retrieval_top_n": 40, "source_top_n": 5, "diversity_decay": 0.8, **settings}
    sources = options.pop("sources", None)
    return Recommender(
        world["features"], StandInTwoTower(), world["index"], seen, ranker, world["catalog"],
        Settings(data_dir=tmp_path, **options), positive_rate_builder, sources=sources,
    )  # fmt: skip


def test_every_item_says_why_from_the_stages_without_debug(world, seen, tmp_path):
    rec = _recommender(world, seen, tmp_path, OutcomeRanker())
    out = rec.recommend(2, k=20, now=NOW)
    assert out.path == PERSONALIZED and len(out.items) == 20 and out.debug is None
    ctx = rec.context(2, NOW)
    cands, _ = rec.candidates(ctx)
    scored = rec.score(ctx, cands).set_index("post_id")
    found = cands.set_index("post_id")
    names = [c[: -len("_rank")] for c in cands.columns if c.endswith("_rank")]
    several = 0
    for item in out.items:
        assert item["reasons"] and len(item["reasons"]) <= MAX_REASONS and in_order(item)
        assert "rules" not in item
        by = {code: [r for r in item["reasons"] if r["code"] == code] for code in ORDER}
        # the ranker's reason is its ranker_score
        assert [r["value"] for r in by["ranker"]] == [item["ranker_score"]]
        # the outcomes it weighs (not full_view: weight 0), the largest weight * p first, and
        # every source that found it: beyond 8 reasons the last outcomes go first, then sources
        row, post = scored.loc[item["post_id"]], found.loc[item["post_id"]]
        expected = [n for n in names if pd.notna(post[f"{n}_rank"])]
        assert len(expected) == post["n_sources"]
        full = len(expected) + len(by["similarity"]) + 1 + 3 + len(by["rule"])
        over = max(0, full - MAX_REASONS)
        outcomes = ["positive", "like", "negative"][: max(0, 3 - over)]
        assert [r["text"].split(" ")[0] for r in by["outcome"]] == [f"p({o})" for o in outcomes]
        assert [r["value"] for r in by["outcome"]] == [row[f"p_{o}"] for o in outcomes]
        assert all(
            r["text"].endswith("counts against") == ("negative" in r["text"]) for r in by["outcome"]
        )
        listed = [r["text"] for r in by["source"]]
        assert len(listed) == len(expected) - max(0, over - 3)
        assert all(
            any(n.replace("_", " ") in t.replace("_", " ") for n in expected) for t in listed
        )
        several += len(expected) > 1
        # the similarity exactly when the two-tower source found it, its inner product
        if pd.notna(post["two_tower_rank"]):
            assert [r["value"] for r in by["similarity"]] == [post["two_tower_score"]]
        else:
            assert by["similarity"] == []
        assert not any(t.startswith("fallback") for t in rules(item))
    assert several  # some posts were found by more than one source, and list each


def test_the_rules_match_the_item_flags_and_the_cold_starts_say_why(world, seen, tmp_path):
    posts = world["dim_posts"].sort_values(["created_at", "post_id"])
    # a known user (categories 2 and 3: the fresh source reads them), then an unknown one (a
    # cold start through the sources): the newest post they can get (not their own) is
    # promoted, "now" is an hour after it
    for user, cats in ((2, {2, 3}), (777, {0, 1, 2, 3})):
        theirs = posts["category_id"].isin(cats) & (posts["creator_id"] != user)
        newest = posts[theirs].iloc[-1]
        rec = _recommender(
            world, seen, tmp_path, RateRanker(),
            promoted_post_ids=[int(newest["post_id"])], promoted_min_score=0.0,
        )  # fmt: skip
        out = rec.recommend(user, k=10, now=newest["created_at"] + pd.Timedelta(hours=1))
        assert out.path == (PERSONALIZED if user == 2 else COLD_START)
        assert any(it["boosted"] for it in out.items) and any(it["promoted"] for it in out.items)
        for item in out.items:
            texts = rules(item)
            assert item["boosted"] == any(t.startswith("new post boost") for t in texts)
            assert item["promoted"] == ("promoted: moved to the front" in texts)
            cold = [t for t in texts if t.startswith("fallback")]
            assert cold == ([] if user == 2 else ["fallback: cold start for a new user"])
    # no ranker: the ranker reason is the sources' fusion score (the items' ranker_score)
    plain = _recommender(world, seen, tmp_path).recommend(2, k=5, now=NOW)
    for item in plain.items:
        ranker = [r for r in item["reasons"] if r["code"] == "ranker"]
        assert ranker == [
            {
                "code": "ranker",
                "text": f"source fusion score {item['ranker_score']:.2f} (no ranker)",
                "value": item["ranker_score"],
            }
        ]
    # nothing left to rank: the catalog's list found them, and the answer says why
    bare = _recommender(world, seen, tmp_path, RateRanker(), sources=[]).recommend(2, 5, now=NOW)
    assert bare.path == COLD_START
    for item in bare.items:
        assert item["ranker_score"] is None and in_order(item)
        assert codes(item)[0] == "source" and "ranker" not in codes(item)
        assert item["reasons"][0]["text"].startswith("found by the popular and fresh list (#")
        assert item["reasons"][-1] == {
            "code": "rule",
            "text": "fallback: cold start, nothing left to rank",
            "value": None,
        }
    assert bare.items[0]["reasons"][0]["text"] == "found by the popular and fresh list (#1)"
