"""The interaction log in memory (socialrec.data.eventlog): time order, cuts, signals, matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.data.eventlog import EventLog
from socialrec.timeutil import epoch_seconds, to_seconds, to_timestamp
from tests.conftest import DAY0, at, event_log

ROWS = [
    # user, post, event, ts (deliberately out of time order)
    (1, 10, "LIKE", at(0, 3)),
    (1, 11, "IMPRESSION", at(0, 1)),
    (2, 10, "IMPRESSION", at(0, 2)),
    (2, 12, "DISLIKE", at(1, 0)),
    (1, 12, "VIEW_FULL", at(1, 5)),
    (2, 11, "SHARE", at(2, 0)),
    (1, 10, "IMPRESSION", at(2, 1)),
]


@pytest.fixture
def log() -> EventLog:
    return event_log(ROWS)


def test_from_frame_sorts_by_time_and_derives_the_flags(log):
    assert len(log) == 7
    assert np.all(np.diff(log.ts) >= 0)
    assert log.ts.tolist() == sorted(r[3] for r in ROWS)
    assert log.post.tolist() == [11, 10, 10, 12, 12, 11, 10]
    assert log.user.tolist() == [1, 2, 1, 2, 1, 2, 1]
    # LIKE, VIEW_FULL, SHARE are positive; DISLIKE negative; impressions neither
    assert log.positive.tolist() == [False, False, True, False, True, True, False]
    assert log.negative.tolist() == [False, False, False, True, False, False, False]
    assert np.isnan(log.dwell_ms).all()
    assert (log.start, log.end) == (at(0, 1), at(2, 1))


def test_from_frame_reads_explicit_flags_dwell_and_datetimes():
    frame = pd.DataFrame(
        {
            "user_id": [1, 2],
            "post_id": [5, 6],
            "event_type": ["VIEW", "LIKE"],
            "ts": ["2026-01-01T00:00:10", "2026-01-01T00:00:05"],  # naive is UTC
            "is_positive": [1, None],  # the warehouse's flags win over the event type
            "is_negative": [0, 1],
            "dwell_ms": ["1500", None],
        }
    )
    log = EventLog.from_frame(frame)
    assert log.ts.tolist() == [DAY0 + 5, DAY0 + 10]
    assert log.positive.tolist() == [False, True] and log.negative.tolist() == [True, False]
    assert np.isnan(log.dwell_ms[0]) and log.dwell_ms[1] == 1500.0
    with pytest.raises(ValueError, match="TELEPORT"):
        EventLog.from_frame(frame.assign(event_type=["VIEW", "TELEPORT"]))
    empty = EventLog.from_frame(frame.iloc[:0])
    assert len(empty) == 0 and empty.start is None and len(empty.before(DAY0)) == 0


def test_before_is_strict_and_between_is_half_open(log):
    assert len(log.before(at(0, 3))) == 2  # the LIKE at exactly 03:00 is not known yet
    assert len(log.before(at(0, 3) + 1)) == 3
    assert log.before(at(0)).ts.size == 0
    part = log.between(at(0, 2), at(1, 5))
    assert part.ts.tolist() == [at(0, 2), at(0, 3), at(1, 0)]  # [start, end)
    # every instant form is the same cut
    for t in (at(1, 0), pd.Timestamp(at(1, 0), unit="s", tz="UTC"), "2026-01-02T00:00:00"):
        assert len(log.before(t)) == 3
    assert to_seconds(to_timestamp(at(1, 5))) == at(1, 5)
    assert epoch_seconds(pd.Series(["2026-01-01T00:00:01Z"])).tolist() == [DAY0 + 1]


def test_signals_matrix_counts_and_recent_posts(log):
    assert log.mask("positive").sum() == 3 and log.mask("exposure").all()
    with pytest.raises(ValueError, match="signal"):
        log.mask("clicks")
    users, posts = pd.Index([1, 2]), pd.Index([10, 11, 12])
    binary = log.matrix("exposure", users, posts).toarray()
    assert binary.tolist() == [[1, 1, 1], [1, 1, 1]]
    counts = log.matrix("exposure", users, posts, binary=False).toarray()
    assert counts.tolist() == [[2, 1, 1], [1, 1, 1]]  # user 1 had two events with post 10
    pos = log.matrix("positive", users, pd.Index([10, 12])).toarray()  # post 11 left out
    assert pos.tolist() == [[1, 1], [0, 0]]
    assert log.counts(posts).tolist() == [3, 2, 2]
    assert log.counts(posts, log.positive).tolist() == [1, 1, 1]
    assert log.counts(pd.Index([99])).tolist() == [0]
    assert log.users_with("positive").tolist() == [1, 2]
    # newest first, distinct, at most n
    assert log.recent_posts("exposure", 2) == {1: [10, 12], 2: [11, 12]}
    assert log.recent_posts("positive", 5) == {1: [12, 10], 2: [11]}
    assert log.of_users([2]).user.tolist() == [2, 2, 2]
    assert log.is_type("IMPRESSION").sum() == 3
