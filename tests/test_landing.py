"""The landing bucket interface: a local directory and GCS (the real google-cloud-storage client
against gcp-storage-emulator on 127.0.0.1) behave the same."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from socialrec.data.landing import (
    GCSLandingBucket,
    LocalLandingBucket,
    dataset_prefix,
    encode_jsonl,
    event_partition,
    iter_lines,
    key_dataset,
    key_partition,
    landed_partitions,
    landing_key,
    list_datasets,
    partition_prefix,
)
from tests.conftest import emulator_client


@pytest.fixture
def gcs_bucket(gcs_emulator):
    return GCSLandingBucket("landing", client=emulator_client(gcs_emulator))


@pytest.fixture(params=["local", "gcs"])
def bucket(request, tmp_path):
    if request.param == "local":
        return LocalLandingBucket(tmp_path / "landing")
    return request.getfixturevalue("gcs_bucket")


def test_write_list_read_roundtrip(bucket):
    rows = [{"event_id": "a", "user_id": 1}, {"event_id": "b", "user_id": 2}]
    bucket.write_bytes("events/dt=2026-01-02/e-0000.jsonl.gz", encode_jsonl(rows))
    bucket.write_bytes("events/dt=2026-01-01/e-0000.jsonl", encode_jsonl(rows[:1], gzip_it=False))
    bucket.write_bytes("posts/dt=2026-01-01/p-0000.jsonl.gz", encode_jsonl([{"post_id": 1}]))

    listed = bucket.list("events/")
    assert [b.key for b in listed] == [
        "events/dt=2026-01-01/e-0000.jsonl",
        "events/dt=2026-01-02/e-0000.jsonl.gz",
    ]
    assert [b.partition for b in listed] == ["2026-01-01", "2026-01-02"]
    assert all(b.size > 0 and b.updated.tzinfo is not None for b in listed)
    lines = list(iter_lines(listed[1].key, bucket.read_bytes(listed[1].key)))
    assert [n for n, _ in lines] == [1, 2]
    assert '"event_id":"b"' in lines[1][1]


def test_gzip_bytes_are_deterministic():
    rows = [{"a": 1}]
    assert encode_jsonl(rows) == encode_jsonl(rows)


def test_local_updated_covers_files_moved_in_with_an_old_mtime(tmp_path):
    """`updated` of a local file is max(mtime, ctime): `mv` / `cp -p` of an old file is new."""
    bucket = LocalLandingBucket(tmp_path / "landing")
    bucket.write_bytes("posts/a.jsonl", b"{}\n")
    first = bucket.list("posts/")[0].updated
    old = tmp_path / "old.jsonl"
    old.write_bytes(b"{}\n")
    os.utime(old, (0, 0))  # an mtime of 1970, as `cp -p` or `rsync -a` would keep it
    os.replace(old, tmp_path / "landing" / "posts" / "b.jsonl")
    moved = {b.key: b.updated for b in bucket.list("posts/")}["posts/b.jsonl"]
    assert moved >= first


def test_key_builders_and_parsers_spell_one_layout():
    key = landing_key("events", "2026-01-02", "spool-a-0000000001.jsonl.gz")
    assert key == "events/dt=2026-01-02/spool-a-0000000001.jsonl.gz"
    assert (
        landing_key("posts", dt.date(2026, 1, 2), "p.jsonl.gz") == "posts/dt=2026-01-02/p.jsonl.gz"
    )
    assert dataset_prefix("users") == "users/"
    assert partition_prefix("events", "2026-01-02") == "events/dt=2026-01-02/"
    assert key.startswith(partition_prefix("events", "2026-01-02"))
    assert key_dataset(key) == "events"
    assert key_partition(key) == "2026-01-02"
    assert key_partition("posts/p.jsonl") is None
    assert event_partition(key) == "2026-01-02"
    assert event_partition("posts/dt=2026-01-02/p.jsonl.gz") is None  # not an event file
    assert event_partition("events/dt=2026-02-30/e.jsonl.gz") is None  # not a real date
    assert event_partition("events/e.jsonl.gz") is None  # no dt= folder
    with pytest.raises(ValueError, match="dataset"):
        dataset_prefix("likes")
    with pytest.raises(ValueError, match="file name"):
        landing_key("events", "2026-01-02", "a/b.jsonl")


def test_landed_partitions_and_list_datasets(tmp_path):
    bucket = LocalLandingBucket(tmp_path / "landing")
    for key in (
        landing_key("events", "2026-01-02", "e.jsonl"),
        landing_key("events", "2026-01-01", "e.jsonl"),
        landing_key("posts", "2026-01-03", "p.jsonl"),
        "other/x.jsonl",
    ):
        bucket.write_bytes(key, b"{}\n")
    assert landed_partitions(bucket) == ["2026-01-01", "2026-01-02"]
    assert landed_partitions(bucket, "posts") == ["2026-01-03"]
    assert [key_dataset(b.key) for b in list_datasets(bucket)] == ["events", "events", "posts"]
