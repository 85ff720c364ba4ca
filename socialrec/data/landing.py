"""The landing bucket: one interface, two implementations (a local directory, GCS).

Keys look like ``events/dt=2026-01-01/events-0000.jsonl.gz`` in both. Nothing else in the
code base needs to know which implementation it talks to, nor how a key is spelled: the key
builders and parsers below (``landing_key``, ``dataset_prefix``, ``partition_prefix``,
``key_dataset``, ``key_partition``, ``event_partition``) own the layout.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DATASETS = ("events", "posts", "users", "categories")
_DT_RE = re.compile(r"/dt=(\d{4}-\d{2}-\d{2})/")


# --- the key layout: <dataset>/dt=<YYYY-MM-DD>/<file name> ----------------------------------


def dataset_prefix(dataset: str) -> str:
    """The prefix of every file of one dataset (``events/``)."""
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, not {dataset!r}")
    return f"{dataset}/"


def partition_prefix(dataset: str, day: str | dt.date) -> str:
    """The folder of one day of one dataset (``events/dt=2026-01-01/``)."""
    return f"{dataset_prefix(dataset)}dt={day}/"


def landing_key(dataset: str, day: str | dt.date, name: str) -> str:
    """The key of the file ``name`` in the ``dt=day`` folder of ``dataset``."""
    if not name or "/" in name:
        raise ValueError(f"not a file name: {name!r}")
    return partition_prefix(dataset, day) + name


def key_dataset(key: str) -> str:
    """The dataset a key belongs to: its first folder."""
    return key.split("/", 1)[0]


def key_partition(key: str) -> str | None:
    """The ``dt=YYYY-MM-DD`` folder of a key (any dataset, any depth), if it has one."""
    m = _DT_RE.search("/" + key)
    return m.group(1) if m else None


def event_partition(key: str) -> str | None:
    """The dt of ``events/dt=YYYY-MM-DD/...`` if it is a real date, else None (malformed)."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "events" or not parts[1].startswith("dt="):
        return None
    day = parts[1].removeprefix("dt=")
    try:
        if dt.date.fromisoformat(day).isoformat() != day:
            return None
    except ValueError:
        return None
    return day


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    # timezone-aware UTC; a new value means a new version of the file (the landing sensor's
    # cursor relies on it: GCS sets it when an upload finalises; see LocalLandingBucket.list)
    updated: dt.datetime

    @property
    def partition(self) -> str | None:
        """The ``dt=YYYY-MM-DD`` partition a key belongs to, if any."""
        return key_partition(self.key)


class LandingBucket(Protocol):
    uri: str

    def list(self, prefix: str = "") -> list[BlobInfo]: ...

    def read_bytes(self, key: str) -> bytes: ...

    def write_bytes(self, key: str, data: bytes) -> None: ...


class LocalLandingBucket:
    """A plain directory standing in for a bucket (embedded default)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.uri = str(self.root)

    def list(self, prefix: str = "") -> list[BlobInfo]:
        base = self.root
        # walk only the deepest folder the prefix names (not the whole bucket per prefix)
        folder = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        if not folder.exists():
            return []
        out = []
        for path in folder.rglob("*"):
            if not path.is_file() or path.name.startswith("."):
                continue
            key = path.relative_to(base).as_posix()
            if key.startswith(prefix):
                st = path.stat()
                out.append(BlobInfo(key, st.st_size, _local_updated(st)))
        return sorted(out, key=lambda b: b.key)

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a reader never sees half a file


def _local_updated(st: os.stat_result) -> dt.datetime:
    """When a local file got its current content or place: max(mtime, ctime), exact to the us.

    ctime covers files moved or copied in with their old mtime kept (``mv``, ``cp -p``,
    ``rsync -a``), which would otherwise look older than files already seen."""
    ns = max(st.st_mtime_ns, st.st_ctime_ns)
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ns // 1000)


class GCSLandingBucket:
    """A GCS bucket through google-cloud-storage (also works against the GCS emulator)."""

    def __init__(self, bucket: str, client=None):
        from google.cloud import storage

        self.client = client or storage.Client()
        self.bucket = self.client.bucket(bucket)
        self.uri = f"gs://{bucket}"

    def list(self, prefix: str = "") -> list[BlobInfo]:
        blobs = self.client.list_blobs(self.bucket, prefix=prefix or None)
        return sorted(
            (BlobInfo(b.name, b.size or 0, b.updated) for b in blobs if not b.name.endswith("/")),
            key=lambda b: b.key,
        )

    def read_bytes(self, key: str) -> bytes:
        return self.bucket.blob(key).download_as_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        self.bucket.blob(key).upload_from_string(data)


def open_bucket(landing_uri: str, client=None) -> LandingBucket:
    """The bucket of ``settings.landing_uri``: ``gs://bucket`` (through ``client``, a
    google.cloud.storage.Client; default: one from the environment) or a directory."""
    if landing_uri.startswith("gs://"):
        return GCSLandingBucket(landing_uri.removeprefix("gs://").strip("/"), client=client)
    return LocalLandingBucket(landing_uri)


def landed_partitions(bucket: LandingBucket, dataset: str = "events") -> list[str]:
    """The ``dt`` days that hold files of ``dataset``, sorted."""
    return sorted({b.partition for b in bucket.list(dataset_prefix(dataset)) if b.partition})


def list_datasets(bucket: LandingBucket, datasets: Iterable[str] = DATASETS) -> list[BlobInfo]:
    """The files of every dataset in ``datasets`` (one listing per dataset prefix)."""
    return [b for d in datasets for b in bucket.list(dataset_prefix(d))]


def encode_jsonl(rows: Iterable[dict], gzip_it: bool = True) -> bytes:
    buf = io.BytesIO()
    text = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n" for r in rows)
    if not gzip_it:
        return text.encode()
    # mtime=0: the same rows always give the same bytes (deterministic demo data)
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(text.encode())
    return buf.getvalue()


def iter_lines(key: str, data: bytes) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of a .jsonl or .jsonl.gz blob; blank lines skipped."""
    if key.endswith(".gz"):
        data = gzip.decompress(data)
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if line.strip():
            yield n, line
