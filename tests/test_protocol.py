"""The offline protocol (socialrec.evaluation.protocol) on a hand-made log: the split rule (the
same as dbt's ml_split_bounds), the replayed requests (seen, relevant, outcomes, dropped,
segments: no leakage, new posts are candidates) and the per-user metrics."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from socialrec.data.eventlog import SplitBounds
from socialrec.evaluation.protocol import (
    Requests,
    build_requests,
    paired_difference,
    request_metrics,
    score_lists,
    top_k_from_scores,
)
from socialrec.timeutil import DAY_SECONDS
from tests.conftest import at, event_log

START, END = at(3), at(5)
# post -> creation time; post 20 is published during the window, post 99 is not a post
CREATED = {10: at(0), 11: at(0), 12: at(0), 13: at(0), 14: at(0), 20: at(3, 10), 30: at(0)}
ROWS = [
    # user 1: a positive before the window (warm)
    (1, 10, "LIKE", at(1, 10)),
    (1, 11, "IMPRESSION", at(2, 9)),
    (1, 12, "IMPRESSION", at(3, 8)),  # first event of day 3: the request
    (1, 12, "LIKE", at(3, 9)),  # relevant: shown at the request instant, not before
    (1, 11, "LIKE", at(3, 10)),  # seen before the request: dropped
    (1, 20, "SHARE", at(3, 11)),  # created after the request (03:10 > 03:08): dropped
    (1, 13, "DISLIKE", at(3, 12)),
    (1, 99, "LIKE", at(3, 13)),  # not a post
    (1, 14, "VIEW_FULL", at(4, 7)),  # day 4's request
    (1, 30, "COMMENT", at(4, 8)),
    # user 2: only an impression before the window (cold); likes the new post after it exists
    (2, 10, "IMPRESSION", at(2, 5)),
    (2, 20, "LIKE", at(3, 12)),
    (2, 20, "BOOKMARK", at(3, 13)),
    # user 3: the only positive of the day is on a post created after the day's request
    (3, 11, "IMPRESSION", at(3, 9)),
    (3, 20, "LIKE", at(3, 14)),
    # user 4: after the window; user 5: no positive in it
    (4, 10, "LIKE", at(5, 1)),
    (5, 10, "IMPRESSION", at(3, 3)),
]


@pytest.fixture(scope="module")
def log():
    return event_log(ROWS)


@pytest.fixture(scope="module")
def requests(log) -> Requests:
    return build_requests(log, CREATED, START, END)


def _sets(arrays) -> list[set[int]]:
    return [{int(p) for p in a} for a in arrays]


def test_one_request_per_user_day_with_a_positive_at_the_first_event(requests):
    f = requests.frame
    assert f["request"].tolist() == [0, 1, 2]
    assert list(zip(f["user_id"], f["day"], f["ts"], strict=True)) == [
        (1, at(3) // DAY_SECONDS, at(3, 8)),
        (1, at(4) // DAY_SECONDS, at(4, 7)),
        (2, at(3) // DAY_SECONDS, at(3, 12)),
    ]
    assert _sets(requests.relevant) == [{12}, {14, 30}, {20}]
    assert requests.dropped == {
        "positives": 8,
        "seen_before": 1,  # user 1's like of post 11
        "created_after_request": 2,  # post 20 for user 1 and for user 3
        "not_a_post": 1,
        "requests_without_reachable_positive": 1,  # user 3
    }


def test_seen_is_exactly_the_posts_with_events_strictly_before_the_request(requests):
    for i, (user, ts) in enumerate(requests.frame[["user_id", "ts"]].itertuples(index=False)):
        expected = {p for u, p, _, t in ROWS if u == user and t < ts}
        assert set(requests.seen[i].tolist()) == expected
        assert not set(requests.relevant[i].tolist()) & expected  # never relevant
    assert _sets(requests.seen) == [{10, 11}, {10, 11, 12, 13, 20, 99}, {10}]


def test_the_outcomes_are_the_days_events_unfiltered(requests):
    o = {name: _sets(v) for name, v in requests.outcomes.items()}
    assert o["positive"] == [{11, 12, 20, 99}, {14, 30}, {20}]
    assert o["like"] == [{11, 12, 99}, set(), {20}]  # LIKE and BOOKMARK
    assert o["share_comment"] == [{20}, {30}, set()]
    assert o["full_view"] == [set(), {14}, set()]
    assert o["negative"] == [{13}, set(), set()]


def test_a_new_post_is_a_candidate_from_its_creation_on(log, requests):
    # post 20 appears at 03:10 on day 3: relevant for user 2 (request at 03:12) ...
    assert 20 in requests.relevant[2]
    # ... but not for user 1 (request at 03:08) nor user 3 (03:09): dropped and counted
    assert 20 not in requests.relevant[0] and 3 not in set(requests.users)
    # masked from ranked lists before its creation, allowed after
    posts = pd.Index(sorted(CREATED))
    created = np.array([CREATED[p] for p in posts], dtype=np.float64)
    scores = np.tile(np.arange(len(posts), 0, -1, dtype=float), (3, 1))  # lower id is better
    lists = top_k_from_scores(scores, posts, requests, [0, 1, 2], created, 10)
    assert lists[0] == [12, 13, 14, 30]  # seen 10, 11 and the future post 20 are masked
    assert lists[2] == [11, 12, 13, 14, 20, 30]
    assert lists[1] == [14, 30]


def test_warm_and_cold_segments(requests):
    assert requests.frame["warm"].tolist() == [True, True, False]
    assert requests.segment("warm").tolist() == [0, 1]
    assert requests.segment("cold").tolist() == [2]
    assert requests.user_counts() == {"warm": 1, "cold": 1}
    sub = requests.subset([2])
    assert sub.frame["request"].tolist() == [0] and sub.users.tolist() == [2]
    assert _sets(sub.relevant) == [{20}] and _sets(sub.outcomes["like"]) == [{20}]


def test_max_users_keeps_every_request_of_a_sample_of_users(log):
    full = build_requests(log, CREATED, START, END)
    kept = set()
    for seed in range(30):
        # the sample is drawn among the users with a positive that day (user 3 included: its
        # request is then dropped), so fewer than max_users may be left
        one = build_requests(log, CREATED, START, END, max_users=1, seed=seed)
        assert one.frame["user_id"].nunique() <= 1
        for user in set(one.users.tolist()):
            kept.add(user)
            assert len(one) == int((full.users == user).sum())  # every request of the user
            assert one.frame["ts"].tolist() == full.frame.loc[full.users == user, "ts"].tolist()
    assert kept == {1, 2}  # the seed decides which


def test_request_metrics_by_hand():
    m = request_metrics([5, 12, 7], [12, 7])
    ideal = 1 + 1 / np.log2(3)
    assert m["ndcg@10"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(4)) / ideal)
    assert m["recall@10"] == 1.0 and m["recall@100"] == 1.0 and m["mrr@10"] == 0.5
    assert request_metrics([], [1]) == {
        "ndcg@10": 0.0,
        "recall@10": 0.0,
        "recall@100": 0.0,
        "mrr@10": 0.0,
    }
    late = request_metrics([*range(100, 110), 1], [1])  # relevant at rank 11
    assert late["recall@10"] == 0.0 and late["recall@100"] == 1.0 and late["ndcg@10"] == 0.0


def test_score_lists_averages_per_user_then_over_users(requests):
    lists = [[12, 99], [], [20]]  # user 1: NDCG 1 then 0; user 2: 1
    out = score_lists(lists, requests, n_posts=10)
    assert out["ndcg@10"] == pytest.approx(0.75)  # (0.5 + 1) / 2, not 2 / 3 per request
    assert out["recall@10"] == pytest.approx(0.75) and out["mrr@10"] == pytest.approx(0.75)
    assert out["coverage@10"] == pytest.approx(3 / 10)
    assert (out["users"], out["requests"]) == (2, 3)
    assert score_lists(lists, requests, 10, "warm")["ndcg@10"] == pytest.approx(0.5)
    assert score_lists(lists, requests, 10, "cold")["ndcg@10"] == pytest.approx(1.0)
    empty = score_lists([], requests.subset([]), 10)
    assert np.isnan(empty["ndcg@10"]) and empty["users"] == 0


def test_paired_difference_is_per_user(requests):
    perfect = [[12], [14, 30], [20]]
    weak = [[], [], [20]]
    diff, se = paired_difference(perfect, weak, requests)
    # per request 1, 1, 0; per user 1 (user 1) and 0 (user 2)
    assert diff == pytest.approx(0.5) and se == pytest.approx(0.5)
    assert paired_difference(weak, weak, requests) == (0.0, 0.0)


# --- the split --------------------------------------------------------------------------------
def _dbt_rule(ts: list[int]) -> tuple[int, int]:
    """ml_split_bounds' SQL on DuckDB (quantile_disc, day floors kept when the splits stay
    apart), over the same timestamps."""
    con = duckdb.connect()
    con.execute("set timezone = 'UTC'")  # the warehouse's days are UTC days
    con.execute("create table e as select to_timestamp(x) as ts from unnest(?) t(x)", [ts])
    row = con.execute(
        """
        with q as (
            select min(ts) as data_start,
                   quantile_disc(ts, 1 - 0.1 - 0.1) as q_v, quantile_disc(ts, 1 - 0.1) as q_t
            from e
        ), f as (
            select *, date_trunc('day', q_v) as v_day, date_trunc('day', q_t) as t_day from q
        )
        select
            epoch(case when v_day > data_start and v_day < t_day then v_day else q_v end),
            epoch(case when v_day > data_start and v_day < t_day then t_day else q_t end)
        from f
        """
    ).fetchone()
    con.close()
    return int(row[0]), int(row[1])


@pytest.mark.parametrize(
    "ts",
    [
        # ten days, one event an hour on the first days, busier at the end: floored to midnight
        sorted([at(d, h) for d in range(10) for h in range(0, 24, 6)] + [at(9, 20)] * 7),
        # one day: the floors would not separate the splits, the exact quantiles are kept
        [at(2, h / 2) for h in range(37)],
        # a few events over two days (13: the quantile index rounds up)
        sorted([at(0, h) for h in range(7)] + [at(1, h) for h in range(6)]),
    ],
)
def test_split_bounds_from_log_follow_the_dbt_rule(ts):
    log = event_log([(1, 1, "VIEW", t) for t in ts])
    bounds = SplitBounds.from_log(log)
    assert (bounds.validation_start, bounds.test_start) == _dbt_rule(ts)
    assert (bounds.data_start, bounds.data_end) == (min(ts), max(ts))
    assert bounds.data_start <= bounds.validation_start <= bounds.test_start <= bounds.data_end
    frame = pd.DataFrame(
        {
            c: [pd.Timestamp(v, unit="s", tz="UTC")]
            for c, v in zip(
                ("validation_start", "test_start", "data_start", "data_end"),
                (bounds.validation_start, bounds.test_start, bounds.data_start, bounds.data_end),
                strict=True,
            )
        }
    )
    assert SplitBounds.from_frame(frame) == bounds
    assert "train before" in bounds.describe()


def test_split_bounds_on_ten_days_land_on_midnight():
    ts = [at(d, h) for d in range(10) for h in range(24)]
    bounds = SplitBounds.from_log(event_log([(1, 1, "VIEW", t) for t in ts]))
    assert (bounds.validation_start, bounds.test_start) == (at(7), at(8))  # 80% / 90% quantiles
    with pytest.raises(ValueError):
        SplitBounds.from_log(event_log([]))
    with pytest.raises(ValueError):
        SplitBounds.from_frame(pd.DataFrame({"validation_start": []}))
