"""Raw loading into the DuckDB warehouse: idempotent partitions, quarantine, dimensions."""

import gzip
import json

import pytest

from socialrec.data import warehouse
from socialrec.data.landing import LocalLandingBucket, encode_jsonl
from socialrec.settings import Settings


def _event(i: int, **overrides) -> dict:
    row = {
        "event_id": f"e{i}",
        "user_id": 1 + i % 3,
        "post_id": 10 + i % 4,
        "event_type": "IMPRESSION" if i % 2 else "LIKE",
        "ts": f"2026-01-01T10:00:{i:02d}Z",
        "dwell_ms": None if i % 2 else 1500,
    }
    row.update(overrides)
    return row


BAD_LINES = [
    ("{not json", "bad json"),
    (json.dumps(_event(90, event_id=None)), "missing event_id"),
    (json.dumps(_event(91, user_id="abc")), "bad user_id"),
    (json.dumps(_event(92, event_type="TELEPORT")), "unknown event_type"),
    (json.dumps(_event(93, ts="yesterday")), "bad ts"),
    (json.dumps([1, 2, 3]), "not a JSON object"),
    (json.dumps(_event(94, post_id=None)), "missing post_id"),
    (json.dumps(_event(95, ts="2999-01-01T00:00:00Z")), "future ts"),
    (json.dumps(_event(96, dwell_ms=-5)), "bad dwell_ms"),
]


@pytest.fixture
def settings(tmp_path):
    s = Settings(data_dir=tmp_path)
    s.ensure_dirs()
    return s


@pytest.fixture
def bucket(settings):
    b = LocalLandingBucket(settings.landing_uri)
    # day 1: gzip file of good events, plus a plain file with malformed lines between good ones
    b.write_bytes("events/dt=2026-01-01/a.jsonl.gz", encode_jsonl(_event(i) for i in range(10)))
    lines = [json.dumps(_event(20))] + [text for text, _ in BAD_LINES] + [json.dumps(_event(21))]
    b.write_bytes("events/dt=2026-01-01/b.jsonl", ("\n".join(lines) + "\n").encode())
    # day 2: a client retry sends e0 again; the timestamp has an explicit offset
    day2 = [_event(0), _event(30, ts="2026-01-02T12:00:00+01:00")]
    b.write_bytes("events/dt=2026-01-02/a.jsonl.gz", encode_jsonl(day2))
    b.write_bytes("events/dt=2026-01-02/corrupt.jsonl.gz", b"\x1f\x8bnot really gzip")
    return b


def _count(settings, sql: str) -> int:
    con = warehouse.connect(settings, read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def test_load_counts_and_quarantine_reasons(settings, bucket):
    report = warehouse.load_event_partitions(settings, bucket, ["2026-01-01", "2026-01-02"])
    assert (report.files, report.rows_loaded) == (4, 14)
    assert report.rows_quarantined == len(BAD_LINES) + 1  # + the corrupt file
    assert report.metadata()["quarantined"] == report.rows_quarantined

    q = warehouse.read_table(settings, "raw.quarantine").sort_values(["source_file", "line"])
    bad_file = q[q.source_file == "events/dt=2026-01-01/b.jsonl"]
    # line numbers are 1-based positions in the file: good line 1, bad lines 2..7
    assert bad_file.line.tolist() == list(range(2, 2 + len(BAD_LINES)))
    for (_, expected), reason in zip(BAD_LINES, bad_file.reason, strict=True):
        assert reason.startswith(expected), (expected, reason)
    assert bad_file.payload.iloc[0] == "{not json"
    corrupt = q[q.source_file.str.endswith("corrupt.jsonl.gz")]
    assert corrupt.reason.str.startswith("unreadable file").all()

    events = warehouse.read_table(settings, "raw.events")
    assert set(events.columns) >= {"event_id", "ts", "dt", "_source_file", "_line", "_loaded_at"}
    e30 = events[events.event_id == "e30"].iloc[0]
    assert str(e30["ts"]) == "2026-01-02 11:00:00"  # converted to UTC
    assert str(e30["dt"].date()) == "2026-01-02"  # the landing partition
    assert events.loc[events.event_id == "e21", "_line"].item() == 2 + len(BAD_LINES)
    # the retry is kept in raw (dbt deduplicates), with lineage telling the copies apart
    assert sorted(events.loc[events.event_id == "e0", "dt"].astype(str)) == [
        "2026-01-01",
        "2026-01-02",
    ]


def test_reloading_partitions_is_idempotent(settings, bucket):
    parts = ["2026-01-01", "2026-01-02"]
    warehouse.load_event_partitions(settings, bucket, parts)
    first = (
        _count(settings, "SELECT count(*) FROM raw.events"),
        _count(settings, "SELECT count(*) FROM raw.quarantine"),
    )
    warehouse.load_event_partitions(settings, bucket, parts)
    warehouse.load_event_partitions(settings, bucket, ["2026-01-02"])
    again = (
        _count(settings, "SELECT count(*) FROM raw.events"),
        _count(settings, "SELECT count(*) FROM raw.quarantine"),
    )
    assert first == again == (14, len(BAD_LINES) + 1)

    # a changed partition replaces only itself
    bucket.write_bytes("events/dt=2026-01-02/a.jsonl.gz", encode_jsonl([_event(40)]))
    report = warehouse.load_event_partitions(settings, bucket, ["2026-01-02"])
    assert report.rows_loaded == 1
    assert _count(settings, "SELECT count(*) FROM raw.events WHERE dt = '2026-01-01'") == 12
    assert _count(settings, "SELECT count(*) FROM raw.events WHERE dt = '2026-01-02'") == 1


def test_empty_partition_clears_it_and_bad_partition_name_is_rejected(settings, bucket):
    warehouse.load_event_partitions(settings, bucket, ["2026-01-01"])
    report = warehouse.load_event_partitions(settings, bucket, ["2026-01-05"])
    assert (report.files, report.rows_loaded) == (0, 0)
    assert _count(settings, "SELECT count(*) FROM raw.events") == 12
    with pytest.raises(ValueError):
        warehouse.load_event_partitions(settings, bucket, ["2026-01-01'; DROP TABLE x; --"])


def test_dimensions_full_reload(settings, bucket):
    users = [
        {
            "user_id": 1,
            "created_at": "2025-12-01T00:00:00Z",
            "headline": "h",
            "about": "a",
            "onboarding_categories": [3, 7],
        },
        {
            "user_id": 2,
            "created_at": "2025-12-02T00:00:00Z",
            "headline": None,
            "about": "b",
            "onboarding_categories": [],
        },
        {"user_id": 3, "created_at": "2025-12-02T00:00:00Z", "onboarding_categories": ["x"]},
    ]
    bucket.write_bytes("users/dt=2025-12-01/u.jsonl.gz", encode_jsonl(users))
    posts = [
        {
            "post_id": 10,
            "creator_id": 1,
            "category_id": 3,
            "media_type": "video",
            "description": "d",
            "created_at": "2025-12-03T00:00:00Z",
        },
        {
            "post_id": 11,
            "creator_id": 1,
            "category_id": 3,
            "media_type": "hologram",
            "description": "d",
            "created_at": "2025-12-03T00:00:00Z",
        },
    ]
    bucket.write_bytes("posts/dt=2025-12-03/p.jsonl", encode_jsonl(posts, gzip_it=False))
    cats = [{"category_id": 3, "name": "cooking"}, {"category_id": 7, "name": "music"}]
    bucket.write_bytes("categories/c.jsonl.gz", encode_jsonl(cats))

    for _ in range(2):  # twice: a full reload, not an append
        u = warehouse.load_dimension(settings, bucket, "users")
        p = warehouse.load_dimension(settings, bucket, "posts")
        c = warehouse.load_dimension(settings, bucket, "categories")
    assert (u.rows_loaded, u.rows_quarantined) == (2, 1)
    assert (p.rows_loaded, p.rows_quarantined) == (1, 1)
    assert (c.rows_loaded, c.rows_quarantined) == (2, 0)

    got = warehouse.read_table(settings, "raw.users", ["user_id", "onboarding_categories"])
    assert dict(zip(got.user_id, got.onboarding_categories, strict=True)) == {1: "3,7", 2: ""}
    assert _count(settings, "SELECT count(*) FROM raw.quarantine WHERE dataset = 'posts'") == 1
    assert _count(settings, "SELECT count(*) FROM raw.quarantine") == 2
    assert list(warehouse.read_table(settings, "raw.categories").columns) == [
        "category_id",
        "name",
    ]
    with pytest.raises(ValueError):
        warehouse.load_dimension(settings, bucket, "events")


def test_read_table_rejects_injection_and_uses_a_read_only_connection(settings, bucket):
    warehouse.load_event_partitions(settings, bucket, ["2026-01-01"])
    with pytest.raises(ValueError):
        warehouse.read_table(settings, "raw.events; DROP TABLE raw.events")
    df = warehouse.read_table(settings, "raw.events", columns=["event_id", "ts"])
    assert list(df.columns) == ["event_id", "ts"] and len(df) == 12
    # the reader closed its connection: a writer can open the file again right away
    con = warehouse.connect(settings)
    con.close()


def test_gzip_line_numbers_match_the_decompressed_file(settings, bucket):
    warehouse.load_event_partitions(settings, bucket, ["2026-01-01"])
    raw = gzip.decompress(bucket.read_bytes("events/dt=2026-01-01/a.jsonl.gz")).decode()
    events = warehouse.read_table(settings, "raw.events")
    a = events[events._source_file == "events/dt=2026-01-01/a.jsonl.gz"]
    for line, event_id in zip(a._line, a.event_id, strict=True):
        assert json.loads(raw.splitlines()[line - 1])["event_id"] == event_id


def test_posts_and_users_are_versions_with_tombstones(settings):
    bucket = LocalLandingBucket(settings.landing_uri)
    post = {
        "post_id": 7,
        "creator_id": 1,
        "category_id": 3,
        "media_type": "text",
        "description": "first",
        "created_at": "2026-01-01T00:00:00Z",
    }
    bucket.write_bytes("posts/dt=2026-01-01/a.jsonl", encode_jsonl([post], gzip_it=False))
    edits = [
        {**post, "category_id": 4, "updated_at": "2026-01-02T00:00:00Z"},
        {"post_id": 7, "deleted": True, "updated_at": "2026-01-03T00:00:00Z"},
        {"post_id": 8, "deleted": True},  # a bare tombstone: stamped with the load time
        {"post_id": 9, "deleted": "yes"},
        {**post, "post_id": 10, "updated_at": "not a time"},
    ]
    bucket.write_bytes("posts/dt=2026-01-03/b.jsonl", encode_jsonl(edits, gzip_it=False))
    report = warehouse.load_dimension(settings, bucket, "posts")
    assert (report.rows_loaded, report.rows_quarantined) == (4, 2)
    assert set(report.reasons) == {"bad deleted", "bad updated_at"}

    posts = warehouse.read_table(settings, "raw.posts").sort_values(["post_id", "updated_at"])
    v = posts[posts.post_id == 7]
    assert v.category_id.tolist()[:2] == [3, 4]
    assert v.is_deleted.tolist() == [False, False, True]
    assert str(v.updated_at.iloc[0]) == "2026-01-01 00:00:00"  # defaults to created_at
    assert v._line.tolist() == [1, 1, 2]
    bare = posts[posts.post_id == 8].iloc[0]
    assert bare.is_deleted and bare.updated_at == bare._loaded_at
    assert posts.loc[posts.post_id == 8, "media_type"].isna().all()


def test_an_old_raw_dimension_table_is_recreated_with_the_new_columns(settings):
    con = warehouse.connect(settings)
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.users (user_id BIGINT, created_at TIMESTAMP)")
    con.execute("CREATE TABLE raw.events (event_id VARCHAR)")
    con.close()
    bucket = LocalLandingBucket(settings.landing_uri)
    user = {"user_id": 1, "created_at": "2026-01-01T00:00:00Z", "onboarding_categories": [2]}
    bucket.write_bytes("users/a.jsonl", encode_jsonl([user], gzip_it=False))
    assert warehouse.load_dimension(settings, bucket, "users").rows_loaded == 1
    users = warehouse.read_table(settings, "raw.users")
    assert {"updated_at", "is_deleted", "_line"} <= set(users.columns)
    events = warehouse.read_table(settings, "raw.events")
    assert {"event_id", "ts", "dt", "_line"} <= set(events.columns)  # columns added, kept rows
