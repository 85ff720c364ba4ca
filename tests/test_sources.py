"""Candidate sources (socialrec.recommender.sources) one by one, the catalog lists they read, ``merge``
(reciprocal rank fusion) and ``gather`` (fail open on outages only)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from socialrec.models.neighbours import NeighbourParams, NeighbourTable
from socialrec.recommender.sources import (
    RRF_K,
    CatalogSource,
    NeighbourSource,
    SourceRequest,
    TwoTowerSource,
    gather,
    merge,
    recent_posts,
    retrieve_two_tower,
)
from socialrec.settings import UNKNOWN_CREATOR_ID
from socialrec.stores.catalog import Catalog, popularity_score
from socialrec.stores.vector_search import InMemoryIndex
from tests.conftest import at, event_log

IDS = list(range(1, 13))
N_POSITIVES = {1: 5, 2: 9, 3: 1, 4: 9, 5: 0, 6: 3, 7: 7, 8: 2, 9: 8, 10: 4, 11: 6, 12: 10}
TRENDING = {1: 0, 2: 1, 3: 4, 4: 0, 5: 2, 6: 0, 7: 0, 8: 3, 9: 0, 10: 0, 11: 0, 12: 0}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    """Posts 1..12: category id % 3, post p created at hour p of day 0."""
    return Catalog(
        pd.DataFrame(
            {
                "post_id": IDS,
                "category_id": [p % 3 for p in IDS],
                "creator_id": [100 + p % 4 for p in IDS],
                "created_at": [at(0, p) for p in IDS],
                "popularity": [float(N_POSITIVES[p]) for p in IDS],
                "n_positives": [float(N_POSITIVES[p]) for p in IDS],
                "trending": [float(TRENDING[p]) for p in IDS],
            }
        )
    )


def _request(categories=(), exclude=(), now=None, user=None, vector=None) -> SourceRequest:
    return SourceRequest(
        user_id=7,
        user=user,
        categories=list(categories),
        now=at(1) if now is None else now,
        exclude=set(exclude),
        vector=vector,
    )


def _ids(hits) -> list[int]:
    return [p for p, _ in hits]


# --- the catalog lists ------------------------------------------------------------------------
def test_trending_and_popular_lists_ignore_the_categories(catalog):
    trending = CatalogSource(catalog, "trending")
    got = trending.candidates(_request(categories=[0], exclude={8}), 3)
    assert got == [(3, 4.0), (5, 2.0), (2, 1.0)]  # most trending first, 8 excluded
    # ties (no trending positive) in post id order
    assert _ids(trending.candidates(_request(), 7)) == [3, 8, 5, 2, 1, 4, 6]
    popular = CatalogSource(catalog, "popular")
    assert _ids(popular.candidates(_request(categories=[1]), 5)) == [12, 2, 4, 9, 7]


def test_posts_created_after_the_request_are_left_out(catalog):
    early = at(0, 4.5)  # posts 1..4 exist
    assert _ids(CatalogSource(catalog, "popular").candidates(_request(now=early), 10)) == [
        2,
        4,
        1,
        3,
    ]
    assert catalog.top("popular", 3, created_by=None) == [(12, 10.0), (2, 9.0), (4, 9.0)]


def test_fresh_is_the_newest_posts_of_the_users_categories(catalog):
    fresh = CatalogSource(catalog, "fresh")
    got = fresh.candidates(_request(categories=[0], now=at(1)), 3)
    assert _ids(got) == [12, 9, 6]  # category 0, newest first
    assert [s for _, s in got] == pytest.approx([-12.0, -15.0, -18.0])  # minus age in hours
    # no categories: every category
    assert _ids(fresh.candidates(_request(now=at(1)), 3)) == [12, 11, 10]
    assert _ids(fresh.candidates(_request(categories=[0, 2], exclude={12}), 2)) == [11, 9]
    assert fresh.candidates(_request(), 0) == []


def test_catalog_from_log_counts_only_what_was_known_at_as_of():
    posts = pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4],
            "category_id": [0, 1, 1, 2],
            "creator_id": pd.array([10, None, 12, 13], dtype="Int64"),
            "created_at": pd.to_datetime([at(0), at(0), at(0), at(7)], unit="s", utc=True),
            "is_deleted": [False, False, True, False],
        }
    )
    log = event_log(
        [
            (1, 1, "LIKE", at(1)),
            (2, 1, "LIKE", at(4)),  # in the 2-day trending window [day 3, day 5)
            (3, 1, "IMPRESSION", at(4)),
            (4, 1, "DISLIKE", at(4.5)),
            (1, 2, "LIKE", at(5)),  # at as_of: not known yet
            (2, 2, "SHARE", at(6)),
            (1, 3, "LIKE", at(1)),  # a deleted post
        ]
    )
    cat = Catalog.from_log(posts, log, at(5), trending_days=2)
    assert sorted(cat.posts.index) == [1, 2, 4]  # the deleted post is left out
    row = cat.posts.loc[1]
    assert (row["n_positives"], row["trending"]) == (2.0, 1.0)
    counts = pd.DataFrame({"n_positives": [2.0], "n_negatives": [1.0], "n_impressions": [1.0]})
    assert row["popularity"] == pytest.approx(popularity_score(counts)[0])
    assert cat.posts.loc[2, ["n_positives", "trending", "popularity"]].tolist() == [0, 0, 0]
    assert cat.posts.loc[2, "creator_id"] == UNKNOWN_CREATOR_ID
    assert _ids(cat.top("popular", 5)) == [1, 2, 4]
    assert _ids(cat.top("popular", 5, created_by=at(5))) == [1, 2]  # post 4 is not out yet
    assert _ids(cat.top("trending", 1)) == [1]


def test_with_post_keeps_the_lists_in_order(catalog):
    added = catalog.with_post(50, category_id=0, creator_id=9, created_at=at(0, 13))
    assert _ids(added.top("fresh", 2)) == [50, 12]
    assert _ids(added.top("popular", 13))[-1] == 50  # no positives yet: last, not missing
    assert 50 not in catalog.posts.index
    # an edit keeps its counts
    edited = catalog.with_post(3, category_id=2, creator_id=9, created_at=at(0, 3))
    assert edited.top("trending", 1) == [(3, 4.0)]
    assert edited.categories([3]) == {3: 2}
    rebuilt = Catalog(added.posts.reset_index(drop=True), catalog.fresh_share)
    for name in ("popular", "trending", "fresh"):
        assert added.top(name, 13) == rebuilt.top(name, 13), name


# --- two-tower --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def index() -> InMemoryIndex:
    """Post p scores p / 12 against the query (1, 0): higher ids are closer."""
    emb = np.array([[p / 12.0, 0.0] for p in IDS], dtype=np.float32)
    return InMemoryIndex(IDS, [p % 3 for p in IDS], emb)


QUERY = np.array([1.0, 0.0], dtype=np.float32)


def test_two_tower_filters_to_the_categories_plus_an_exploration_slice(index):
    got = retrieve_two_tower(index, "posts", QUERY, 5, [1], explore=0.4)
    # 3 from category 1 (10, 7, 4), 2 explored from the unfiltered top (12, 11; 10 is known)
    assert _ids(got) == [12, 11, 10, 7, 4]
    assert [s for _, s in got] == pytest.approx([12 / 12, 11 / 12, 10 / 12, 7 / 12, 4 / 12])
    assert _ids(retrieve_two_tower(index, "posts", QUERY, 3, [1], explore=0.0)) == [10, 7, 4]
    assert _ids(retrieve_two_tower(index, "posts", QUERY, 3, [], explore=0.4)) == [12, 11, 10]
    assert retrieve_two_tower(index, "posts", QUERY, 0, [1], explore=0.4) == []


def test_two_tower_source_over_fetches_for_what_filtering_drops(index):
    source = TwoTowerSource(index, "posts", exploration_share=0.4)
    assert source.candidates(_request(categories=[1]), 5) == []  # unknown user: no vector
    plain = source.candidates(_request(categories=[1], vector=QUERY), 5)
    assert _ids(plain) == [12, 11, 10, 7, 4]
    # one excluded post: one more fetched (6: 4 filtered, 2 explored)
    more = source.candidates(_request(categories=[1], exclude={10}, vector=QUERY), 5)
    assert _ids(more) == [12, 11, 10, 7, 4, 1]


# --- neighbours -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def table() -> NeighbourTable:
    posts = pd.Index([1, 2, 3, 4, 5, 6, 7])
    sim = sp.lil_matrix((7, 7), dtype=np.float32)
    sim[0, 1], sim[0, 4] = 0.9, 0.1  # 1 -> 2, 5
    sim[2, 5] = 0.5  # 3 -> 6
    sim[3, 6] = 0.4  # 4 -> 7
    return NeighbourTable(posts, sim.tocsr(), NeighbourParams(signal="positive"))


USER = pd.Series({"recent_post_ids": "3,4", "recent_positive_ids": "1"})


def test_neighbours_start_from_the_history_of_the_tables_signal(table):
    positive = NeighbourSource(table)
    assert _ids(positive.candidates(_request(user=USER), 10)) == [2, 5]
    exposure = NeighbourTable(table.posts, table.sim, NeighbourParams(signal="exposure"))
    got = NeighbourSource(exposure).candidates(_request(user=USER), 10)
    assert got == [(6, pytest.approx(0.5)), (7, pytest.approx(0.4))]
    assert recent_posts(USER, "exposure") == [3, 4] and recent_posts(USER, "positive") == [1]
    assert recent_posts(None) == []


def test_neighbours_leave_out_the_history_and_the_excluded_posts(table):
    source = NeighbourSource(table)
    assert _ids(source.candidates(_request(user=USER, exclude={2}), 10)) == [5]
    # a history post that is also a neighbour of another history post never comes back
    both = pd.Series({"recent_positive_ids": "1,2"})
    assert _ids(source.candidates(_request(user=both), 10)) == [5]
    assert source.candidates(_request(user=None), 10) == []
    assert source.candidates(_request(user=pd.Series({"recent_positive_ids": ""})), 10) == []
    assert source.candidates(_request(user=USER), 1) == [(2, pytest.approx(0.9))]


# --- merge ------------------------------------------------------------------------------------
def test_merge_keeps_every_sources_rank_and_fuses_by_reciprocal_rank():
    merged = merge(
        {
            "a": [(1, 0.9), (2, 0.8)],
            "b": [(2, 5.0), (3, 4.0), (2, 1.0)],  # a repeated post keeps its best rank
        }
    )
    assert list(merged.columns) == [
        "post_id",
        "merged_score",
        "n_sources",
        "a_score",
        "a_rank",
        "b_score",
        "b_rank",
    ]
    assert merged["post_id"].tolist() == [2, 1, 3]
    by_id = merged.set_index("post_id")
    assert by_id.loc[2, "merged_score"] == pytest.approx(1 / (RRF_K + 1) + 1 / RRF_K)
    assert by_id.loc[1, "merged_score"] == pytest.approx(1 / RRF_K)
    assert by_id.loc[3, "merged_score"] == pytest.approx(1 / (RRF_K + 1))
    assert by_id["n_sources"].to_dict() == {2: 2, 1: 1, 3: 1}
    assert by_id.loc[2, ["a_score", "a_rank", "b_score", "b_rank"]].tolist() == [0.8, 1, 5.0, 0]
    assert np.isnan(by_id.loc[1, "b_rank"]) and np.isnan(by_id.loc[3, "a_score"])
    # equal fused scores: lower post id first
    tie = merge({"a": [(9, 1.0)], "b": [(4, 1.0)]})
    assert tie["post_id"].tolist() == [4, 9]


def test_merge_of_nothing_has_the_columns():
    assert merge({}).empty and list(merge({}).columns) == ["post_id", "merged_score", "n_sources"]
    empty = merge({"a": []})
    assert empty.empty and {"a_score", "a_rank"} <= set(empty.columns)


# --- gather -----------------------------------------------------------------------------------
class Outage(Exception):
    pass


class Fixed:
    def __init__(self, name, hits=None, error=None):
        self.name, self.hits, self.error, self.asked = name, hits or [], error, []

    def candidates(self, request, n):
        self.asked.append(n)
        if self.error is not None:
            raise self.error
        return self.hits[:n]


def test_gather_skips_a_source_whose_dependency_is_down():
    up = Fixed("popular", [(1, 1.0), (2, 0.5)])
    down = Fixed("two_tower", error=Outage("milvus unavailable"))
    results, errors = gather([down, up], _request(), 5, outage=(Outage,))
    assert results == {"popular": [(1, 1.0), (2, 0.5)]}
    assert list(errors) == ["two_tower"] and isinstance(errors["two_tower"], Outage)
    # how many per source: a number or a function of the source's name
    results, _ = gather([up, Fixed("fresh")], _request(), lambda name: len(name), outage=())
    assert up.asked[-1] == len("popular")


def test_gather_fails_open_only_for_outages():
    # a bug is not an outage: it propagates
    buggy = Fixed("two_tower", error=ValueError("a bug"))
    with pytest.raises(ValueError):
        gather([buggy, Fixed("popular")], _request(), 5, outage=(Outage,))
    # no outage types named: nothing is skipped
    with pytest.raises(Outage):
        gather([Fixed("two_tower", error=Outage()), Fixed("popular")], _request(), 5)
    # the only source: its outage propagates (the caller's own fallback answers)
    with pytest.raises(Outage):
        gather([Fixed("two_tower", error=Outage())], _request(), 5, outage=(Outage,))
