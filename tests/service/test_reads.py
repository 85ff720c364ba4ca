"""The read endpoints' logic over fakes: ``/recommend`` (the fallback when Milvus or the seen
store raises, a source skipped while the others answer, categories, the item flags), the error
answers of ``/similar`` and the personalized ``/search`` blend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from socialrec.serving.endpoints import SEARCH_USER_WEIGHT, Endpoints, personalize
from socialrec.serving.errors import ErrorAnswer, respond
from socialrec.serving.schemas import RecommendResponse, SearchHit
from tests.service.conftest import (
    TWO_TOWER_ONLY,
    AnsweringIndex,
    FakeFeatures,
    RaisingIndex,
    RaisingSeenStore,
    ScoringRanker,
    fallbacks,
    known_posts,
    make_endpoints,
    make_settings,
    metric_value,
)


# --- /recommend: the fallback ----------------------------------------------------------------
def test_milvus_down_skips_the_two_tower_source_and_the_others_answer(metrics, seen_store):
    index = RaisingIndex()
    features = FakeFeatures({2}, posts=known_posts())
    endpoints = make_endpoints(
        metrics, seen_store, index, features=features, ranker=ScoringRanker()
    )
    seen_store.mark(2, [1, 3, 4], "VIEW")
    assert fallbacks(metrics, "milvus") == 0
    out = endpoints.recommend(2, 5)
    # user 2 is known: the two-tower source was tried, both its searches issued together
    assert index.calls == 2
    # the trending, popular and fresh sources answered, through the ranker: not a fallback
    assert out.source == "personalized"
    assert "two_tower source skipped" in out.reason
    assert "milvus unavailable" in out.reason and "Fail connecting" in out.reason
    ids = [it.post_id for it in out.items]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert not {1, 3, 4} & set(ids)  # seen posts stay out
    assert all(it.creator_id != 2 for it in out.items)  # nor the user's own posts
    assert all(it.ranker_score is not None for it in out.items)
    scores = [it.score for it in out.items]
    assert scores == sorted(scores, reverse=True)
    # each item says why: found by the sources that answered (not the skipped two-tower: no
    # similarity), its ranker score
    for it in out.items:
        codes = [r.code for r in it.reasons]
        assert codes[0] == "source" and "similarity" not in codes
        assert not any("two_tower" in r.text for r in it.reasons)
        assert [r.value for r in it.reasons if r.code == "ranker"] == [it.ranker_score]
    # still counted as a fallback of the dependency (the answer is degraded)
    assert fallbacks(metrics, "milvus") == 1
    assert (
        metric_value(metrics, "socialrec_errors_total", endpoint="/recommend", kind="milvus") == 1
    )
    # Milvus answering: nothing skipped, no reason, no fallback counted
    healthy = make_endpoints(
        metrics, seen_store, AnsweringIndex(), features=features, ranker=ScoringRanker()
    )
    out = healthy.recommend(2, 5)
    assert out.source == "personalized" and out.reason is None and len(out.items) == 5
    assert fallbacks(metrics, "milvus") == 1


def test_recommend_falls_back_to_the_cold_start_list_when_the_only_source_is_down(
    metrics, seen_store
):
    index = RaisingIndex()
    endpoints = make_endpoints(metrics, seen_store, index, settings=make_settings(**TWO_TOWER_ONLY))
    seen_store.mark(2, [1, 3, 4], "VIEW")
    assert fallbacks(metrics, "milvus") == 0
    out = endpoints.recommend(2, 5)
    # user 2 is known: the personalized path was tried first (both searches, issued together)
    assert index.calls == 2
    assert out.source == "fallback"
    assert "milvus unavailable" in out.reason and "Fail connecting" in out.reason
    ids = [it.post_id for it in out.items]
    assert len(ids) == 5 and len(set(ids)) == 5
    assert not {1, 3, 4} & set(ids)  # the seen store still answers: seen posts stay out
    assert all(it.creator_id != 2 for it in out.items)  # nor the user's own posts
    assert all(it.ranker_score is None for it in out.items)
    scores = [it.score for it in out.items]
    assert scores == sorted(scores, reverse=True)
    # each item says why: the catalog's list found it, the fallback and its reason
    for it in out.items:
        assert [r.model_dump() for r in it.reasons] == [
            {"code": "source", "text": "found by the popular and fresh list", "value": it.score},
            {"code": "rule", "text": "fallback: milvus unavailable", "value": None},
        ]
    assert fallbacks(metrics, "milvus") == 1
    assert (
        metric_value(metrics, "socialrec_errors_total", endpoint="/recommend", kind="milvus") == 1
    )


def test_recommend_falls_back_when_the_seen_store_raises(metrics):
    endpoints = make_endpoints(metrics, RaisingSeenStore())
    out = endpoints.recommend(7, 4)
    assert out.source == "fallback" and len(out.items) == 4
    assert "seen_store unavailable" in out.reason and "locked" in out.reason
    assert all(it.reasons[-1].text == "fallback: seen_store unavailable" for it in out.items)
    # the user's own posts (creator 2 for user 2) are never in the answer
    assert all(it.creator_id != 2 for it in endpoints.recommend(2, 10).items)
    assert fallbacks(metrics, "seen_store") == 2


def test_a_fallback_answer_is_200_through_respond_and_a_bug_is_not_a_fallback(metrics, seen_store):
    only = make_settings(**TWO_TOWER_ONLY)
    endpoints = make_endpoints(metrics, seen_store, settings=only)
    out = respond("/recommend", metrics, endpoints.recommend, 2, 3)
    assert isinstance(out, RecommendResponse) and out.source == "fallback"

    class BuggyIndex:
        def search(self, *args, **kwargs):
            raise ValueError("a bug, not an outage")

    # a bug in a source is not skipped like an outage, alone or among other sources
    for settings in (only, make_settings()):
        buggy = make_endpoints(metrics, seen_store, index=BuggyIndex(), settings=settings)
        out = respond("/recommend", metrics, buggy.recommend, 2, 3)
        assert isinstance(out, ErrorAnswer) and out.status_code == 500
        assert out.content["error"] == "internal_error" and out.content["error_id"]
    assert (
        metric_value(metrics, "socialrec_errors_total", endpoint="/recommend", kind="internal") == 2
    )
    assert fallbacks(metrics, "milvus") == 1


# --- /recommend: categories and the item flags ----------------------------------------------
def test_recommend_passes_categories_and_returns_the_item_flags(metrics):
    from socialrec.recommender import Recommendation

    class RecordingRecommender:
        calls: list = []

        def recommend(self, user_id, k, debug=False, categories=None):
            self.calls.append((user_id, k, categories))
            item = {
                "post_id": 5,
                "score": 0.9,
                "ranker_score": 0.8,
                "category_id": 3,
                "creator_id": 4,
                "boosted": True,
                "promoted": False,
                "cap_relaxed": True,
            }
            return Recommendation(user_id, [item], "personalized", {"stages": {}})

    rec = RecordingRecommender()
    endpoints = Endpoints(settings=None, recommender=rec, metrics=metrics)
    out = endpoints.recommend(99, 2, categories=[3, 7])
    assert rec.calls == [(99, 2, [3, 7])]
    assert out.source == "personalized"
    item = out.model_dump()["items"][0]
    assert item["boosted"] is True and item["promoted"] is False
    assert "cap_relaxed" not in item  # not part of the API
    endpoints.recommend(99, 2, categories=[])
    assert rec.calls[-1] == (99, 2, None)  # no categories: the stored onboarding ones


def test_the_items_reasons_reach_the_answer(metrics):
    from socialrec.recommender import Recommendation

    reasons = [
        {"code": "source", "text": "found by trending posts (#2)", "value": 9.0},
        {"code": "ranker", "text": "ranker score 0.80", "value": 0.8},
        {"code": "rule", "text": "promoted: moved to the front", "value": None},
    ]

    class Recommender:
        def recommend(self, user_id, k, debug=False, categories=None):
            item = {"post_id": 5, "score": 0.9, "ranker_score": 0.8, "category_id": 3,
                    "creator_id": 4, "promoted": True, "reasons": reasons}  # fmt: skip
            return Recommendation(user_id, [item], "personalized", {"stages": {}})

    out = Endpoints(settings=None, recommender=Recommender(), metrics=metrics).recommend(9, 1)
    answer = json.loads(out.model_dump_json())
    assert answer["items"][0]["reasons"] == reasons  # value null when there is none
    assert answer["debug"] is None


def test_a_new_users_categories_reach_the_recommender_and_its_fallback(metrics, seen_store):
    index = RaisingIndex()
    endpoints = make_endpoints(metrics, seen_store, index, settings=make_settings(**TWO_TOWER_ONLY))
    out = endpoints.recommend(50, 5, categories=[1])
    # user 50 is unknown but named categories: embedded and retrieved (Milvus is down: both
    # searches of the two-tower source, issued together) ...
    assert index.calls == 2
    # ... so the fallback answers, from those categories first
    assert out.source == "fallback" and len(out.items) == 5
    assert {it.category_id for it in out.items} == {1}
    assert not any(it.boosted or it.promoted for it in out.items)
    # with the other sources: the fresh source reads the categories too, the ranker orders
    index = RaisingIndex()
    fresh_only = make_settings(candidate_sources=["two_tower", "fresh"])
    endpoints = make_endpoints(
        metrics, seen_store, index, settings=fresh_only,
        features=FakeFeatures({2}, posts=known_posts()), ranker=ScoringRanker(),
    )  # fmt: skip
    out = endpoints.recommend(50, 5, categories=[1])
    assert index.calls == 2 and out.source == "personalized"
    assert "two_tower source skipped" in out.reason
    assert len(out.items) == 5 and {it.category_id for it in out.items} == {1}
    assert all(it.ranker_score is not None for it in out.items)


# --- /similar and /search -------------------------------------------------------------------
def test_errors_are_json_answers_with_a_reason(metrics, seen_store):
    endpoints = make_endpoints(metrics, seen_store)
    # Milvus down: /similar is a 503 naming the dependency (no fallback for it)
    r = respond("/similar", endpoints.metrics, endpoints.similar, 1, 5)
    assert r.status_code == 503
    assert json.loads(r.body)["error"] == "milvus_unavailable"

    class NoSuchPost:
        def similar(self, alias, post_id, k):
            return None

    r = respond(
        "/similar", metrics, make_endpoints(metrics, seen_store, NoSuchPost()).similar, 5, 3
    )
    assert r.status_code == 404
    assert json.loads(r.body) == {"error": "unknown_post", "detail": "post 5 is not in the index"}


def test_personalized_search_blends_text_and_user_scores():
    hit = SearchHit
    items = [
        hit(post_id=1, score=0.9, text_score=0.9, category_id=0, creator_id=0),
        hit(post_id=2, score=0.8, text_score=0.8, category_id=0, creator_id=0),
        hit(post_id=3, score=0.7, text_score=0.7, category_id=0, creator_id=0),
    ]
    user = np.asarray([1, 0], np.float32)
    vectors = {1: np.asarray([-1, 0], np.float32), 2: np.asarray([1, 0], np.float32)}
    personalize(items, user, vectors)
    w = SEARCH_USER_WEIGHT
    by_id = {it.post_id: it for it in items}
    assert by_id[2].score == pytest.approx((1 - w) * 0.8 + w * 1.0)
    assert by_id[1].score == pytest.approx((1 - w) * 0.9 - w)
    assert by_id[3].score == 0.7 and by_id[3].user_score is None  # no post vector: text only
    assert [it.post_id for it in items] == [2, 3, 1]
