"""The tuned baselines (socialrec.evaluation.baselines) on hand-made logs: what they count, no
leakage past the cutoff, the refit as of the test start, the protocol's masks and tuning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.evaluation import baselines as bl
from socialrec.evaluation.protocol import build_requests, score_lists
from socialrec.models.neighbours import NeighbourParams, NeighbourTable
from tests.conftest import at, event_log

V, T, END = at(7), at(8), at(9)  # validation [V, T), test [T, END)
POSTS = pd.Index([1, 2, 3, 4])
CREATED = {1: at(0), 2: at(0), 3: at(0), 4: at(8, 5)}  # post 4 is published during the test
ROWS = (
    # post 1: popular long ago; post 2: popular the day before the validation starts
    [(u, 1, "LIKE", at(0, 1)) for u in range(1, 11)]
    + [(u, 2, "LIKE", at(6, 1)) for u in range(20, 23)]
    # validation: three users like post 2; a burst on post 3 starts exactly at V
    + [(u, 2, "LIKE", at(7, 10)) for u in (50, 51, 52)]
    + [(u, 3, "LIKE", V + (u - 100) * 60) for u in range(100, 130)]
    # test: user 1 (who liked post 1) likes post 3, user 60 the new post 4 after it exists
    + [(1, 3, "LIKE", at(8, 2)), (60, 1, "IMPRESSION", at(8, 6)), (60, 4, "LIKE", at(8, 7))]
)


@pytest.fixture(scope="module")
def log():
    return event_log(ROWS)


def _top(baseline: bl.Baseline, user: int = 999) -> list[int]:
    scores = baseline.scores([user])[0]
    return [int(p) for p in baseline.posts[np.lexsort((np.arange(len(scores)), -scores))]]


def test_popularity_fitted_before_the_cutoff_never_sees_the_burst(log):
    fitted = bl.Popularity().fit(log.before(V), POSTS, V)
    assert fitted.scores([1, 999]).tolist() == [[10, 3, 0, 0]] * 2  # the same for everyone
    assert _top(fitted)[0] == 1
    # the same model on the whole log would rank the burst first: the cut is what prevents it
    assert _top(bl.Popularity().fit(log, POSTS, V))[0] == 3
    recent = bl.RecentPopularity(window_days=1).fit(log.before(V), POSTS, V)
    assert _top(recent)[:2] == [2, 1] and recent.scores([5])[0][2] == 0


def test_the_refit_as_of_the_test_start_knows_the_validation_period(log):
    for_validation = bl.Popularity().fit(log.before(V), POSTS, V)
    for_test = bl.Popularity().fit(log.before(T), POSTS, T)
    assert for_validation.scores([0])[0].tolist() == [10, 3, 0, 0]
    assert for_test.scores([0])[0].tolist() == [10, 6, 30, 0]
    assert _top(for_test)[0] == 3
    recent = bl.RecentPopularity(window_days=1).fit(log.before(T), POSTS, T)
    assert _top(recent)[:2] == [3, 2]


def test_recent_popularity_counts_the_window_and_breaks_ties_by_popularity(log):
    wide = bl.RecentPopularity(window_days=8).fit(log.before(V), POSTS, V)
    s = wide.scores([0])[0]
    assert s[0] == pytest.approx(10, abs=1e-5) and s[1] == pytest.approx(3, abs=1e-5)
    narrow = bl.RecentPopularity(window_days=0.5).fit(log.before(V), POSTS, V)
    # nothing in the last 12 hours: the tie-breaker (all-time positives) orders the posts
    assert narrow.scores([0])[0].max() < 1e-5 and _top(narrow)[:2] == [1, 2]


THREE_USERS = [
    (1, 1, "LIKE", at(0, 1)),
    (1, 2, "LIKE", at(0, 2)),
    (2, 1, "LIKE", at(0, 3)),
    (2, 2, "LIKE", at(0, 4)),
    (2, 3, "LIKE", at(0, 5)),
    (3, 2, "LIKE", at(0, 6)),
    (3, 4, "IMPRESSION", at(0, 7)),
]


def test_itemknn_scores_a_users_history_through_the_neighbours():
    log = event_log(THREE_USERS)
    knn = bl.ItemKNN(k=10, alpha=0.5, shrink=0.0, signal="positive").fit(log, POSTS, at(1))
    table = NeighbourTable.fit(
        log, NeighbourParams(k=10, alpha=0.5, shrink=0.0, signal="positive", max_user_posts=0)
    )
    histories = {1: [1, 2], 2: [1, 2, 3], 3: [2]}
    got = knn.scores([1, 2, 3, 999])
    for row, user in enumerate((1, 2, 3)):
        expected = table.score_matrix([histories[user]], POSTS)[0]
        assert got[row] == pytest.approx(expected, abs=1e-5)  # plus a tiny popularity tie-break
    assert got[3].tolist() == [2, 3, 1, 0]  # an unknown user: the positives per post
    exposure = bl.ItemKNN(k=10, alpha=0.5, shrink=0.0, signal="exposure").fit(log, POSTS, at(1))
    assert exposure.scores([3])[0][3] > 0 == got[2][3]  # the impression counts as a signal


def test_ease_scores_are_the_closed_form_weights():
    rng = np.random.default_rng(1)
    x = (rng.random((30, 4)) < 0.5).astype(float)
    rows = [
        (u, int(POSTS[j]), "LIKE", at(0, 0.01 * (4 * u + j)))
        for u in range(30)
        for j in range(4)
        if x[u, j]
    ]
    l2 = 3.0
    ease = bl.EASE(l2=l2, signal="positive").fit(event_log(rows), POSTS, at(1))
    p = np.linalg.inv(x.T @ x + l2 * np.eye(4))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    users = [u for u in range(30) if x[u].any()]
    got = ease.scores(users)
    np.testing.assert_allclose(got, x[users] @ b, atol=1e-4)
    assert ease.scores([10_000])[0].tolist() == x.sum(axis=0).tolist()  # unknown: popularity


def test_als_gives_known_users_their_own_scores(log):
    als = bl.ALS(factors=4, iterations=3, regularization=0.1, alpha=2.0, signal="positive")
    als.fit(log.before(T), POSTS, T)
    got = als.scores([1, 50, 999])
    assert got.shape == (3, 4) and np.isfinite(got).all()
    assert got[2].tolist() == [10, 6, 30, 0]  # unknown: popularity
    assert not np.allclose(got[0], got[2])


def test_recommend_applies_the_protocols_masks(log):
    test = build_requests(log, CREATED, T, END)
    assert test.users.tolist() == [1, 60] and [r.tolist() for r in test.relevant] == [[3], [4]]
    created = np.array([CREATED[p] for p in POSTS], dtype=np.float64)
    model = bl.Popularity().fit(log.before(T), POSTS, T)
    lists = bl.recommend(model, test, created, k=10)
    # user 1 saw post 1 before; post 4 does not exist yet at 02:00
    assert lists[0] == [3, 2]
    # user 60's request is at 06:00 (its impression of post 1, not seen before that instant):
    # post 4 exists since 05:00
    assert lists[1] == [3, 1, 2, 4]
    assert bl.recommend(model, test, created, k=1) == [[3], [3]]


def test_tune_keeps_the_best_grid_point_on_validation(log):
    valid = build_requests(log, CREATED, V, T)
    # users 50..52 like post 2 (the burst users have no earlier event: requests too)
    created = np.array([CREATED[p] for p in POSTS], dtype=np.float64)
    seen = []

    def objective(lists):
        sub = [lst for lst, u in zip(lists, valid.users, strict=True) if u in (50, 51, 52)]
        return float(np.mean([lst[0] == 2 for lst in sub]))

    best, value, results = bl.tune(
        "recent_popularity",
        [{"window_days": 8}, {"window_days": 1}, {"window_days": 4}],
        log.before(V),
        POSTS,
        V,
        valid,
        created,
        objective,
        on_result=lambda name, params, v: seen.append((name, params["window_days"], v)),
    )
    # the 8-day window reaches post 1's old likes; 1 and 4 days see only post 2's
    assert best == {"window_days": 1} and value == 1.0
    assert [v for _, v in results] == [0.0, 1.0, 1.0]
    assert seen == [("recent_popularity", 8, 0.0), ("recent_popularity", 1, 1.0),
                    ("recent_popularity", 4, 1.0)]  # fmt: skip
    ndcg = score_lists(bl.recommend(bl.Popularity().fit(log.before(V), POSTS, V), valid,
                                    created), valid, len(POSTS))["ndcg@10"]  # fmt: skip
    assert 0 <= ndcg <= 1


def test_default_grids_grow_with_the_log_and_drop_ease_for_big_catalogs():
    grids = bl.default_grids(span_days=10, n_posts=100)
    assert [g["window_days"] for g in grids["recent_popularity"]] == [1, 2, 4, 8]
    assert grids["popularity"] == [{}]
    assert set(grids) == {"popularity", "recent_popularity", "als", "itemknn", "ease"}
    for name in ("als", "itemknn", "ease"):
        assert {g["signal"] for g in grids[name]} == {"positive", "exposure"}
    assert "ease" not in bl.default_grids(10, bl.EASE_MAX_POSTS + 1)
    assert [g["window_days"] for g in bl.default_grids(0.3, 10)["recent_popularity"]] == [1]
    assert set(bl.BASELINES) == set(grids)
