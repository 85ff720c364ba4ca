"""The landing bucket interface: a local directory and GCS (the real google-cloud-storage client
against gcp-storage-emulator on 127.0.0.1) behave the same."""

from __future__ import annotations

import pytest
from gcp_storage_emulator.server import create_server
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from socialrec.landing import GCSLandingBucket, LocalLandingBucket, encode_jsonl, iter_lines


@pytest.fixture
def gcs_bucket(port):
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="landing")
    server.start()
    try:
        client = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=f"http://127.0.0.1:{port}"),
        )
        yield GCSLandingBucket("landing", client=client)
    finally:
        server.stop()


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
