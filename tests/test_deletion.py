"""Forgetting a user and deleting a post: the landing tombstones, every seen store backend's
``forget_user`` (SQLite, in memory, ScyllaDB through the fake session), the online store's
deletes through Feast's own key encoding, and the Endpoints' ``forget``."""

from __future__ import annotations

import datetime as dt
import gzip
import json

import pandas as pd
import pytest

from socialrec.data.deletion import deleted_ids, live, tombstone_rows, write_tombstones
from socialrec.data.landing import LocalLandingBucket
from socialrec.data.raw_records import PARSERS
from socialrec.stores.seen import InMemorySeenStore, SQLiteSeenStore
from tests.scylla_fake import KS, make_store

NOW = dt.datetime(2026, 1, 6, 12, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "memory", "scylla"])
def seen(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteSeenStore(tmp_path / "seen.sqlite")
    elif request.param == "memory":
        s = InMemorySeenStore()
    else:
        s, _ = make_store()
    yield s
    s.close()


def test_forget_user_drops_seen_rows_and_blocks_of_that_user_only(seen):
    seen.mark(7, [1, 2], "VIEW", ts=NOW)
    seen.mark(7, [3], "DISLIKE", ts=NOW)
    seen.mark(8, [1], "LIKE", ts=NOW)
    seen.block(7, [50])
    seen.block(8, [51])
    seen.forget_user(7)
    state = seen.state(7)
    assert 1 not in state.excluded and 3 not in state.excluded
    assert not state.negatives and not state.blocked
    assert seen.seen(7) == set() and seen.blocked_creators(7) == set()
    assert seen.seen(8) == {1} and seen.blocked_creators(8) == {51}
    seen.forget_user(7)  # idempotent
    with pytest.raises(ValueError):
        seen.forget_user("7")


def test_scylla_forget_is_two_partition_deletes_that_shadow_older_replays():
    store, session = make_store()
    store.mark(7, [1], "VIEW", ts=NOW - dt.timedelta(hours=1))
    assert store.forget_user(7) == 0
    deletes = [b.prepared_statement.query_string for b in session.bound("DELETE")]
    assert deletes == [
        f"DELETE FROM {KS}.seen WHERE user_id = ?",
        f"DELETE FROM {KS}.blocked_creators WHERE user_id = ?",
    ]
    store.mark(7, [1], "VIEW", ts=NOW - dt.timedelta(hours=1))  # a replayed old event
    assert store.seen(7) == set()
    store.close()


def test_tombstones_land_and_parse_as_deletions(tmp_path):
    bucket = LocalLandingBucket(tmp_path)
    key = write_tombstones(bucket, "user", [7], now=NOW)
    assert key.startswith("users/dt=2026-01-06/forget-")
    (row,) = [json.loads(line) for line in gzip.decompress(bucket.read_bytes(key)).splitlines()]
    parsed = PARSERS["users"](row)
    assert parsed["user_id"] == 7 and parsed["is_deleted"] is True
    post = PARSERS["posts"](tombstone_rows("post", [9], NOW)[0])
    assert post["post_id"] == 9 and post["is_deleted"] is True
    with pytest.raises(ValueError):
        tombstone_rows("comment", [1], NOW)


def test_live_and_deleted_ids():
    frame = pd.DataFrame({"user_id": [1, 2, 3], "is_deleted": [False, True, None]})
    assert live(frame)["user_id"].tolist() == [1, 3]
    assert deleted_ids(frame, "user_id") == [2]
