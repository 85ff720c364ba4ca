"""The gcp profile of one test module on the session's stand-ins (``gcp_standins``): its own
BigQuery dataset and landing bucket, so that modules sharing the stand-ins do not meet."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from socialrec.data.landing import LandingBucket, LocalLandingBucket, open_bucket
from socialrec.settings import Settings


@contextmanager
def gcp_settings(
    env: dict, data_dir: Path, dataset: str, bucket: str, extra: dict | None = None
) -> Iterator[Settings]:
    """Settings of the gcp profile (``SOCIALREC_BIGQUERY_DATASET=dataset``, landing bucket
    ``gs://bucket``, created in the GCS stand-in), with the environment (and ``extra``
    variables) applied meanwhile."""
    from google.cloud import storage

    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**env, **(extra or {})}.items():
            mp.setenv(key, value)
        mp.setenv("SOCIALREC_BIGQUERY_DATASET", dataset)
        mp.setenv("SOCIALREC_LANDING_URI", f"gs://{bucket}")
        mp.setenv("SOCIALREC_DATA_DIR", str(data_dir))
        client = storage.Client()
        if client.lookup_bucket(bucket) is None:
            client.create_bucket(bucket)
        settings = Settings()
        settings.ensure_dirs()
        yield settings


def mirror(bucket: LandingBucket, root: Path) -> LocalLandingBucket:
    """A local copy of every file of ``bucket`` (the DuckDB side of a comparison)."""
    local = LocalLandingBucket(root)
    for blob in bucket.list():
        local.write_bytes(blob.key, bucket.read_bytes(blob.key))
    return local


def landing(settings: Settings) -> LandingBucket:
    return open_bucket(str(settings.landing_uri))
