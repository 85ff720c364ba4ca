"""Offline evaluation: ranking metrics, the exact index, the in-memory seen store, and the
whole evaluation (socialrec.evaluation.offline: tuned baselines and the replayed pipeline on
one protocol, the report) on a hand-made log. The protocol's pieces have their own tests
(tests/test_protocol.py, test_baselines.py, test_replay.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from socialrec.data.eventlog import SplitBounds
from socialrec.evaluation import run_offline_evaluation
from socialrec.models import metrics as m
from socialrec.models.neighbours import NeighbourParams
from socialrec.settings import Settings
from socialrec.stores.seen import InMemorySeenStore
from socialrec.stores.vector_search import InMemoryIndex
from tests.conftest import at
from tests.test_baselines import CREATED, END, ROWS, T, V
from tests.test_baselines import log as baselines_log  # noqa: F401 (a fixture)
from tests.test_replay import StandInTwoTower


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


# --- the whole offline evaluation on the hand-made log of tests/test_baselines.py ----------
POSTS = pd.DataFrame(
    {
        "post_id": [1, 2, 3, 4, 5],
        "category_id": [0, 1, 0, 1, 1],
        "creator_id": [7, 8, 9, 7, 8],
        "media_type": "text",
        "created_at": pd.to_datetime([*CREATED.values(), at(0)], unit="s", utc=True),
        "is_deleted": [False] * 4 + [True],  # post 5 was deleted: never shown nor counted
    }
)


def read_features(log):
    def read(entity, ids, as_of):
        past = log.before(as_of)
        ids = [int(i) for i in ids]
        if entity == "user":
            counts = pd.Series(past.user).value_counts()
            events = [counts.get(u, np.nan) for u in ids]
            cats = [None if np.isnan(e) else "0,1" for e in events]
            return pd.DataFrame({"user_id": ids, "n_events": events, "onboarding_categories": cats})
        meta = POSTS.set_index("post_id").reindex(ids)
        created = (meta["created_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        out = pd.DataFrame(
            {
                "post_id": ids,
                "category_id": meta["category_id"].to_numpy(dtype=float),
                "creator_id": meta["creator_id"].to_numpy(dtype=float),
                "media_type": meta["media_type"].to_numpy(),
                "created_at_ts": created.to_numpy(),
                "n_positives": past.counts(pd.Index(ids), past.positive),
            }
        )
        out.loc[(created > as_of).to_numpy(), out.columns[1:]] = None
        return out

    return read


@pytest.fixture(scope="module")
def report(baselines_log, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("evaluation")
    settings = Settings(
        data_dir=out,
        candidate_sources=["two_tower", "neighbours", "popular", "fresh"],
        source_top_n=10,
    )
    bounds = SplitBounds(V, T, int(min(r[3] for r in ROWS)), END - 1)
    logged = []
    rep = run_offline_evaluation(
        settings,
        baselines_log,
        POSTS,
        bounds,
        read_features(baselines_log),
        StandInTwoTower(),
        None,  # no ranker: the pipeline's lists are the merged order
        out,
        name="tiny",
        neighbour_params=NeighbourParams(signal="positive"),
        baselines=("popularity", "recent_popularity"),
        grids={
            "popularity": [{}],
            "recent_popularity": [{"window_days": 8}, {"window_days": 1}],
        },
        log_fn=logged.append,
    )
    return rep, out, logged


def test_baselines_are_tuned_on_validation_and_refitted_as_of_the_test_start(report):
    rep, _, _ = report
    # validation (fitted before V): the 1-day window sees post 2's recent likes, the 8-day
    # window post 1's old ones; the 1-day window wins
    assert rep.params["recent_popularity"] == {"window_days": 1}
    tried = {p["window_days"]: p["validation_ndcg@10"] for p in rep.validation["recent_popularity"]}
    assert tried[1] > tried[8]
    # test (refitted before T): the validation's burst on post 3 is known. User 1 (who saw
    # post 1) gets post 3 first; user 60 gets the new post 4 fourth, after 3, 1 and 2
    late = 1 / np.log2(5)
    for method in ("popularity", "recent_popularity"):
        assert rep.segments["warm"][method]["ndcg@10"] == pytest.approx(1.0), method
        assert rep.segments["cold"][method]["ndcg@10"] == pytest.approx(late), method
        assert rep.segments["all"][method]["ndcg@10"] == pytest.approx((1 + late) / 2), method
    assert rep.users == {"warm": 1, "cold": 1}
    assert rep.info["requests"] == {"validation": 33, "test": 2}
    assert rep.info["dropped"]["test"]["created_after_request"] == 0
    assert rep.info["posts"] == 4  # the deleted post is not in the catalog


def test_the_pipeline_is_replayed_as_of_the_test_start(report):
    rep, _, _ = report
    assert set(rep.segments["all"]) == {
        "popularity",
        "recent_popularity",
        "socialrec",
        "socialrec_plain",
        "retrieval",
    }
    for seg in ("all", "warm", "cold"):
        for method, metrics in rep.segments[seg].items():
            assert 0 <= metrics["ndcg@10"] <= 1 and 0 <= metrics["recall@100"] <= 1, method
    # the snapshot is as of T: post 4 (created during the test) is a candidate anyway, from
    # its creation on (the fresh source): user 60 finds it
    assert rep.segments["cold"]["retrieval"]["recall@100"] == 1.0
    assert rep.info["snapshot"]["new_posts"] == 1
    assert rep.info["snapshot"]["as_of"] == str(pd.Timestamp(T, unit="s", tz="UTC"))
    # each source alone and merged; the two-tower's recall is never above the merged one's
    assert set(rep.sources) == {"two_tower", "neighbours", "popular", "fresh", "merged"}
    merged = rep.sources["merged"]["recall@100"]
    assert merged == 1.0 and all(v["recall@100"] <= merged for v in rep.sources.values())
    assert rep.params["socialrec"]["sources"] == "two_tower+neighbours+popular+fresh"
    assert "positive" in rep.params["socialrec"]["neighbours"].split(",")  # the params given
    assert "socialrec vs popularity" in rep.comparisons


def test_the_report_is_written(report):
    rep, out, logged = report
    data = json.loads((out / "report.json").read_text())
    assert set(data) == {"tiny"}
    assert set(data["tiny"]) >= {"protocol", "users", "segments", "params", "sources"}
    md = (out / "report.md").read_text()
    assert md == rep.markdown() and "| popularity |" in md and "**warm users (1)**" in md
    for path in rep.plots.values():
        assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
    assert "Global temporal split" in rep.protocol
    assert any(line.startswith("requests: validation 33") for line in logged)
