"""Replaying the past through the service's recommender (socialrec.recommender.replay): the snapshot of
what was known at an instant, each request asked with its own seen set, the plain policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.evaluation.protocol import build_requests
from socialrec.models.neighbours import NeighbourParams
from socialrec.recommender.replay import (
    PLAIN_POLICIES,
    CachedUserVectors,
    FrameFeatures,
    ReplaySeen,
    Snapshot,
    replay,
)
from socialrec.settings import Settings
from tests.conftest import at, event_log

AS_OF = at(3)
# posts 1..6 in category 0, 7..10 in category 1, all created on day 0; post 11 is published
# after AS_OF, post 12 is deleted
POSTS = pd.DataFrame(
    {
        "post_id": list(range(1, 13)),
        "category_id": [0] * 6 + [1] * 4 + [1, 0],
        "creator_id": [100 + p for p in range(1, 13)],
        "media_type": "video",
        "created_at": pd.to_datetime([at(0)] * 10 + [at(4), at(0)], unit="s", utc=True),
        "is_deleted": [False] * 11 + [True],
    }
)
ROWS = (
    # post p has 11 - p likes before AS_OF (popular order 1, 2, ..., 10), from users 1000+
    [(1000 + 10 * p + j, p, "LIKE", at(1, j)) for p in range(1, 11) for j in range(11 - p)]
    # posts 1 and 9 are co-liked before AS_OF; 2 and 10 only after it
    + [(900, 1, "LIKE", at(2, 1)), (900, 9, "LIKE", at(2, 2))]
    + [(901, 2, "LIKE", at(5, 1)), (901, 10, "LIKE", at(5, 2))]
    # user 1: day 3 (request at 01:00), day 4 (request at 01:00, posts 1 and 2 seen by then)
    + [(1, 1, "IMPRESSION", at(3, 1)), (1, 2, "LIKE", at(3, 2)), (1, 3, "LIKE", at(4, 1))]
)


@pytest.fixture(scope="module")
def log():
    return event_log(ROWS)


def reader(log, calls: list):
    """Feature rows as of an instant, like a Feast point-in-time read: null rows for the
    entities without features yet (posts created later, users without events)."""

    def read(entity, ids, as_of):
        calls.append((entity, list(ids), as_of))
        past = log.before(as_of)
        ids = [int(i) for i in ids]
        if entity == "user":
            counts = pd.Series(past.user).value_counts()
            events = [counts.get(u, np.nan) for u in ids]
            return pd.DataFrame(
                {
                    "user_id": ids,
                    "n_events": events,
                    "onboarding_categories": [None if np.isnan(e) else "0" for e in events],
                }
            )
        meta = POSTS.set_index("post_id").reindex(ids)
        created = (meta["created_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        exists = (created <= as_of).to_numpy()
        positives = past.counts(pd.Index(ids), past.positive)
        out = pd.DataFrame(
            {
                "post_id": ids,
                "category_id": meta["category_id"].to_numpy(dtype=float),
                "creator_id": meta["creator_id"].to_numpy(dtype=float),
                "media_type": meta["media_type"].to_numpy(),
                "created_at_ts": created.to_numpy(),
                "n_impressions": positives,
                "n_positives": positives,
                "positive_rate": np.where(positives > 0, 1.0, 0.0),
            }
        )
        out.loc[~exists, out.columns[1:]] = None
        return out

    return read


class StandInTwoTower:
    """User vector (1, 0); post p's vector (1 / p, 1): post 1 is the closest."""

    def __init__(self):
        self.user_calls = 0

    def user_embeddings(self, users_df):
        self.user_calls += 1
        return np.tile(np.array([1.0, 0.0], np.float32), (len(users_df), 1))

    def post_embeddings(self, posts_df, now=None):
        p = posts_df["post_id"].to_numpy(dtype=float)
        return np.stack([1.0 / p, np.ones_like(p)], axis=1).astype(np.float32)


def _settings(tmp_path, **kw) -> Settings:
    return Settings(data_dir=tmp_path, **{"candidate_sources": ["popular"], **kw})


def test_snapshot_reads_what_was_known_at_as_of(log, tmp_path):
    calls = []
    settings = _settings(tmp_path, candidate_sources=["two_tower", "neighbours", "popular"])
    two_tower = StandInTwoTower()
    snap = Snapshot.build(
        AS_OF, log, POSTS, reader(log, calls), settings, two_tower,
        NeighbourParams(signal="positive", shrink=0.0),
    )  # fmt: skip
    # features read as of the instant, for the users of the log before it and the live posts
    assert {(entity, as_of) for entity, _, as_of in calls} == {("user", AS_OF), ("post", AS_OF)}
    read_users = next(ids for entity, ids, _ in calls if entity == "user")
    assert set(read_users) == set(log.before(AS_OF).user.tolist())
    assert 901 not in read_users and 1 not in read_users  # their first events are later
    read_posts = next(ids for entity, ids, _ in calls if entity == "post")
    assert sorted(read_posts) == list(range(1, 12))  # the deleted post is not read
    # a post created after as_of: the zero counts POST /posts writes, found, retrievable
    new = snap.features.posts([11]).iloc[0]
    assert new["found"] and new["n_positives"] == 0 and new["n_impressions"] == 0
    assert new["created_at_ts"] == at(4) and new["category_id"] == 1
    assert snap.info["new_posts"] == 1 and snap.info["posts"] == 11
    assert snap.features.posts([1]).iloc[0]["n_positives"] == 11  # 10 likes + user 900's
    assert not snap.features.posts([12]).iloc[0]["found"]
    assert 11 in set(snap.index.post_ids.tolist())
    # the catalog's counts and the neighbours are fitted on the events before as_of only
    assert snap.catalog.posts.loc[2, "n_positives"] == 9  # user 901's later like is not counted
    assert snap.catalog.posts.loc[11, "n_positives"] == 0 and 12 not in snap.catalog.posts.index
    assert 9 in {p for p, _ in snap.neighbours.neighbours(1)}
    assert 10 not in {p for p, _ in snap.neighbours.neighbours(2)}
    # the user tower ran once for the users read, then answers from the cache
    assert two_tower.user_calls == 1
    only = Snapshot.build(AS_OF, log, POSTS, reader(log, calls := []), _settings(tmp_path),
                          users=[1, 1000])  # fmt: skip
    assert next(ids for e, ids, _ in calls if e == "user") == [1, 1000]
    assert only.neighbours is None and only.index is None  # neither asked for


@pytest.fixture
def requests(log):
    req = build_requests(log, POSTS.set_index("post_id")["created_at"].map(
        lambda t: int(t.timestamp())), AS_OF, at(5))  # fmt: skip
    assert req.users.tolist() == [1, 1]
    assert [set(s.tolist()) for s in req.seen] == [set(), {1, 2}]
    return req


def test_replay_asks_each_request_at_its_time_with_its_own_seen_set(requests):
    asked = []
    seen = ReplaySeen()

    class Recording:
        def recommend(self, user_id, k, now=None):
            from socialrec.recommender import Recommendation

            asked.append((user_id, k, now, set(seen.seen(user_id))))
            items = [{"post_id": p} for p in (7, 8)]
            return Recommendation(user_id, items, "personalized", None, [8, 7, 9], [8, 7])

    out = replay(Recording(), seen, requests, k=2)
    assert asked == [
        (1, 2, pd.Timestamp(at(3, 1), unit="s", tz="UTC"), set()),
        (1, 2, pd.Timestamp(at(4, 1), unit="s", tz="UTC"), {1, 2}),
    ]
    assert out.candidates == [[8, 7, 9]] * 2 and out.ranked == [[8, 7]] * 2
    assert out.final == [[7, 8]] * 2 and out.paths == ["personalized"] * 2


def test_replay_through_the_recommender_filters_each_requests_seen_posts(log, requests, tmp_path):
    snap = Snapshot.build(AS_OF, log, POSTS, reader(log, []), _settings(tmp_path))
    rec, seen = snap.recommender(None, _settings(tmp_path), **PLAIN_POLICIES)
    got = replay(rec, seen, requests, k=5)
    # the popular order; day 4's request no longer gets what the user saw on day 3
    assert got.final == [[1, 2, 3, 4, 5], [3, 4, 5, 6, 7]]
    assert got.candidates[0][:3] == [1, 2, 3] and got.paths == ["cold_start"] * 2


def test_plain_policies_turn_the_feed_policies_off(log, requests, tmp_path):
    settings = _settings(tmp_path, new_post_boost=3.0, promoted_post_ids=[9])
    snap = Snapshot.build(AS_OF, log, POSTS, reader(log, []), settings)
    plain, plain_seen = snap.recommender(None, settings, **PLAIN_POLICIES)
    for key, value in PLAIN_POLICIES.items():
        assert getattr(plain.settings, key) == value, key
    assert settings.max_per_category == 4  # the caller's settings are left as they were
    shipped, shipped_seen = snap.recommender(None, settings)
    first = requests.subset([0])
    policed = replay(shipped, shipped_seen, first, k=8)
    bare = replay(plain, plain_seen, first, k=8)
    # the ranked order is the same; only the shipped feed caps category 0 at 4 of the top 8
    assert policed.ranked == bare.ranked
    assert bare.final == [[1, 2, 3, 4, 5, 6, 7, 8]] == [bare.ranked[0][:8]]
    assert policed.final == [[1, 2, 3, 4, 7, 8, 9, 10]]


def test_frame_features_treat_rows_of_nulls_as_unknown_like_the_online_store():
    users = pd.DataFrame(
        {
            "user_id": [1, 2],
            "n_events": [3, None],
            "onboarding_categories": ["1", None],
            "profile_embedding": [np.ones(4), None],
        }
    )
    posts = pd.DataFrame({"post_id": [10, 10], "category_id": [1, 2]})
    features = FrameFeatures(users, posts)
    found = features.users([2, 1, 3])
    assert found.index.tolist() == [2, 1, 3]
    assert found["found"].tolist() == [False, True, False]
    assert features.posts([10]).iloc[0]["category_id"] == 2  # the last row of an id wins


def test_cached_user_vectors_compute_known_users_once():
    model = StandInTwoTower()
    users = pd.DataFrame({"user_id": [1, 2], "onboarding_categories": ["0", None]})
    cached = CachedUserVectors(model, users)
    assert model.user_calls == 1
    for user, cats in ((1, "0"), (2, None)):
        one = pd.DataFrame({"user_id": [user], "onboarding_categories": [cats]})
        np.testing.assert_array_equal(cached.user_embeddings(one), [[1.0, 0.0]])
    assert model.user_calls == 1
    # a request naming its own categories (or an unknown user) goes to the model
    cached.user_embeddings(pd.DataFrame({"user_id": [1], "onboarding_categories": ["1"]}))
    cached.user_embeddings(pd.DataFrame({"user_id": [9], "onboarding_categories": ["0"]}))
    assert model.user_calls == 3
    posts = pd.DataFrame({"post_id": [1, 2]})
    np.testing.assert_array_equal(cached.post_embeddings(posts), model.post_embeddings(posts))
