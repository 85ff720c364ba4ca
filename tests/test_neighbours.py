"""Co-engagement neighbours (socialrec.models.neighbours): the asymmetric cosine by hand, EASE's
weights, the signal and per-user cap, recommending from a history, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.models.neighbours import NeighbourParams, NeighbourTable
from tests.conftest import at, event_log

A, B, C, D = 100, 200, 300, 400

# u1 likes A then B, u2 likes A, B, C (in that order), u3 likes B and was only shown C
THREE_USERS = [
    (1, A, "LIKE", at(0, 1)),
    (1, B, "LIKE", at(0, 2)),
    (2, A, "LIKE", at(0, 3)),
    (2, B, "LIKE", at(0, 4)),
    (2, C, "LIKE", at(0, 5)),
    (3, B, "LIKE", at(0, 6)),
    (3, C, "IMPRESSION", at(0, 7)),
]


def _dense(table: NeighbourTable, order=(A, B, C)) -> np.ndarray:
    idx = table.posts.get_indexer(list(order))
    return table.sim.toarray()[np.ix_(idx, idx)]


def _cos(overlap: float, n_i: float, n_j: float, alpha: float, shrink: float) -> float:
    return overlap / (n_i**alpha * n_j ** (1 - alpha) + shrink)


def test_asymmetric_cosine_by_hand():
    alpha, shrink = 0.8, 1.0
    params = NeighbourParams(k=10, alpha=alpha, shrink=shrink, signal="positive")
    table = NeighbourTable.fit(event_log(THREE_USERS), params)
    # positives: |U(A)| = 2, |U(B)| = 3, |U(C)| = 1; overlaps A&B = 2, A&C = 1, B&C = 1
    expected = np.array(
        [
            [0.0, _cos(2, 2, 3, alpha, shrink), _cos(1, 2, 1, alpha, shrink)],
            [_cos(2, 3, 2, alpha, shrink), 0.0, _cos(1, 3, 1, alpha, shrink)],
            [_cos(1, 1, 2, alpha, shrink), _cos(1, 1, 3, alpha, shrink), 0.0],
        ]
    )
    np.testing.assert_allclose(_dense(table), expected, rtol=1e-6)
    assert expected[0, 1] != pytest.approx(expected[1, 0])  # asymmetric for alpha != 0.5
    assert [p for p, _ in table.neighbours(A)] == [B, C]  # most similar first
    assert table.neighbours(999) == []
    assert len(table) == 6  # no post is its own neighbour
    # alpha 0.5 and no shrink: the plain cosine, symmetric
    plain = NeighbourTable.fit(
        event_log(THREE_USERS), NeighbourParams(alpha=0.5, shrink=0.0, signal="positive")
    )
    np.testing.assert_allclose(_dense(plain)[0, 1], 2 / np.sqrt(2 * 3), rtol=1e-6)
    np.testing.assert_allclose(_dense(plain), _dense(plain).T, rtol=1e-6)


def test_the_signal_decides_which_events_count():
    alpha, shrink = 0.8, 1.0
    exposure = NeighbourTable.fit(
        event_log(THREE_USERS), NeighbourParams(alpha=alpha, shrink=shrink, signal="exposure")
    )
    # u3's impression of C counts as an interaction: |U(C)| = 2 and B&C = 2
    np.testing.assert_allclose(_dense(exposure)[1, 2], _cos(2, 3, 2, alpha, shrink), rtol=1e-6)
    np.testing.assert_allclose(_dense(exposure)[0, 2], _cos(1, 2, 2, alpha, shrink), rtol=1e-6)


def test_k_keeps_each_posts_best_neighbours():
    table = NeighbourTable.fit(
        event_log(THREE_USERS), NeighbourParams(k=1, alpha=0.8, shrink=1.0, signal="positive")
    )
    assert np.diff(table.sim.indptr).tolist() == [1, 1, 1]
    assert [p for p, _ in table.neighbours(A)] == [B]
    assert [p for p, _ in table.neighbours(C)] == [A]  # 1 / (2**0.2 + 1) beats 1 / (3**0.2 + 1)


def test_max_user_posts_keeps_each_users_latest_posts():
    params = NeighbourParams(alpha=0.8, shrink=1.0, signal="positive", max_user_posts=2)
    table = NeighbourTable.fit(event_log(THREE_USERS), params)
    # u2 keeps B and C (their latest two): A and C never co-occur; A&B only through u1
    assert [p for p, _ in table.neighbours(A)] == [B]
    assert table.neighbours(A)[0][1] == pytest.approx(_cos(1, 1, 3, 0.8, 1.0), rel=1e-6)
    assert [p for p, _ in table.neighbours(C)] == [B]
    # 0: no cap
    uncapped = NeighbourTable.fit(event_log(THREE_USERS), NeighbourParams(max_user_posts=0))
    assert {p for p, _ in uncapped.neighbours(A)} == {B, C}


def _ease_reference(x: np.ndarray, l2: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def test_ease_weights_are_non_negative_with_a_zero_diagonal():
    rng = np.random.default_rng(0)
    posts = [10, 20, 30, 40, 50, 60]
    x = (rng.random((40, len(posts))) < 0.4).astype(float)
    x[:, 1] = x[:, 0]  # 10 and 20 always together
    rows = [
        (u, posts[j], "LIKE", at(0, 0.01 * (u * len(posts) + j)))
        for u in range(len(x))
        for j in range(len(posts))
        if x[u, j]
    ]
    l2 = 5.0
    table = NeighbourTable.fit(
        event_log(rows), NeighbourParams(k=10, method="ease", l2=l2, signal="positive")
    )
    dense = _dense(table, posts)
    assert (dense >= 0).all() and (np.diag(dense) == 0).all()
    reference = _ease_reference(x, l2)
    assert (reference < 0).any()  # the clipping is exercised
    np.testing.assert_allclose(dense, np.maximum(reference, 0), rtol=1e-4, atol=1e-6)
    assert table.neighbours(10)[0][0] == 20  # the always-together pair
    top2 = NeighbourTable.fit(
        event_log(rows), NeighbourParams(k=2, method="ease", l2=l2, signal="positive")
    )
    assert np.diff(top2.sim.indptr).max() <= 2
    with pytest.raises(ValueError, match="method"):
        NeighbourTable.fit(event_log(rows), NeighbourParams(method="svd"))


@pytest.fixture
def table() -> NeighbourTable:
    # A's neighbours B (0.5) and C (0.2); B's neighbours C (0.3) and D (0.3)
    posts = pd.Index([A, B, C, D])
    import scipy.sparse as sp

    sim = sp.csr_matrix(
        np.array(
            [
                [0.0, 0.5, 0.2, 0.0],
                [0.0, 0.0, 0.3, 0.3],
                [0.0, 0.0, 0.0, 0.0],
                [0.1, 0.0, 0.0, 0.0],
            ],
            dtype=np.float32,
        )
    )
    return NeighbourTable(posts, sim, NeighbourParams(signal="positive"))


def test_recommend_sums_similarities_and_leaves_out_history_and_exclude(table):
    ids, scores = table.scores([A, B])
    assert dict(zip(ids.tolist(), np.round(scores, 6).tolist(), strict=True)) == {
        B: 0.5,
        C: 0.5,  # 0.2 from A + 0.3 from B
        D: 0.3,
    }
    # history posts never come back; ties by lower post id
    assert [p for p, _ in table.recommend([A, B], 10)] == [C, D]
    assert table.recommend([A, B], 1) == [(C, pytest.approx(0.5))]
    assert [p for p, _ in table.recommend([A], 10)] == [B, C]
    assert [p for p, _ in table.recommend([A], 10, exclude={B})] == [C]
    assert table.recommend([D], 5) == [(A, pytest.approx(0.1))]
    assert table.recommend([999], 5) == [] and table.recommend([], 5) == []


def test_score_matrix_matches_scores_per_history(table):
    posts = pd.Index([D, C, B, A, 12345])  # any order, an unknown post
    histories = [[A], [A, B], [], [999, D]]
    matrix = table.score_matrix(histories, posts)
    assert matrix.shape == (4, 5)
    for row, history in zip(matrix, histories, strict=True):
        ids, scores = table.scores(history)
        expected = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        assert row.tolist() == pytest.approx([expected.get(p, 0.0) for p in posts])


def test_save_and_load_round_trip(tmp_path):
    params = NeighbourParams(k=5, alpha=0.7, shrink=2.0, signal="exposure", max_user_posts=3)
    table = NeighbourTable.fit(event_log(THREE_USERS), params)
    loaded = NeighbourTable.load(table.save(tmp_path / "nb"))
    assert loaded.params == params and len(loaded) == len(table)
    for post in (A, B, C):
        got, want = loaded.neighbours(post), table.neighbours(post)
        assert [p for p, _ in got] == [p for p, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])
    ids, scores = loaded.scores([A, C])
    ref_ids, ref_scores = table.scores([A, C])
    assert dict(zip(ids.tolist(), scores.tolist(), strict=True)) == pytest.approx(
        dict(zip(ref_ids.tolist(), ref_scores.tolist(), strict=True))
    )


def test_the_cholesky_inverse_is_the_inverse_and_falls_back_when_not_positive_definite():
    from socialrec.models.neighbours import _spd_inverse

    rng = np.random.default_rng(1)
    x = rng.random((30, 8))
    gram = x.T @ x + 0.5 * np.eye(8)
    np.testing.assert_allclose(_spd_inverse(gram), np.linalg.inv(gram), rtol=1e-10)
    np.testing.assert_allclose(_spd_inverse(gram) @ gram, np.eye(8), atol=1e-10)
    indefinite = np.array([[0.0, 1.0], [1.0, 0.0]])  # no Cholesky factor: numpy's LU inverse
    np.testing.assert_array_equal(_spd_inverse(indefinite), np.linalg.inv(indefinite))
