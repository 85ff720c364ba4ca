"""The warehouse interface: raw loads from the landing bucket and table reads, two backends.

A backend registers itself under a name (:func:`register`); :func:`open_warehouse` is the one
place that chooses (:func:`backend_of`: ``bigquery`` in the ``gcp`` profile, else ``duckdb``).
Both backends share what is decided here: the raw tables' columns (:data:`RAW_COLUMNS`), what
a load reports (:class:`LoadReport`), the checks of partition and table names, and the two
readers built on ``read_table`` (:meth:`Warehouse.read_log`, :meth:`Warehouse.read_split`).
Landing JSON is parsed in one place, ``socialrec.data.raw_records``, for both.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

from socialrec.data.landing import LandingBucket
from socialrec.settings import Settings

DIMENSIONS = ("posts", "users", "categories")

# The raw tables (docs/contracts.md): columns and their logical types. DuckDB spells them
# VARCHAR / BIGINT / TIMESTAMP (naive UTC) / DATE / BOOLEAN, BigQuery STRING / INT64 /
# TIMESTAMP / DATE / BOOL.
_LINEAGE = [("_source_file", "string"), ("_line", "int64"), ("_loaded_at", "timestamp")]
RAW_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "events": [
        ("event_id", "string"),
        ("user_id", "int64"),
        ("post_id", "int64"),
        ("event_type", "string"),
        ("ts", "timestamp"),
        ("dwell_ms", "int64"),
        ("dt", "date"),
        *_LINEAGE,
        # last: a table made before it gets it appended, so old and new tables agree
        ("variant", "string"),  # the experiment arm the app sent back (null: none)
    ],
    "posts": [
        ("post_id", "int64"),
        ("creator_id", "int64"),
        ("category_id", "int64"),
        ("media_type", "string"),
        ("description", "string"),
        ("created_at", "timestamp"),
        ("updated_at", "timestamp"),
        ("is_deleted", "bool"),
        *_LINEAGE,
    ],
    "users": [
        ("user_id", "int64"),
        ("created_at", "timestamp"),
        ("headline", "string"),
        ("about", "string"),
        ("onboarding_categories", "string"),
        ("updated_at", "timestamp"),
        ("is_deleted", "bool"),
        *_LINEAGE,
    ],
    "categories": [("category_id", "int64"), ("name", "string")],
    "quarantine": [
        ("dataset", "string"),
        ("source_file", "string"),
        ("line", "int64"),
        ("reason", "string"),
        ("payload", "string"),
        ("_loaded_at", "timestamp"),
    ],
}
# the columns of ``fct_interactions`` the offline learners read (socialrec.data.eventlog)
LOG_COLUMNS = ["user_id", "post_id", "event_type", "ts", "dwell_ms", "is_positive", "is_negative"]

_TABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_PARTITION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class LoadReport:
    """What one load did: counts for asset metadata and logs."""

    dataset: str
    partitions: list[str] = field(default_factory=list)
    files: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)

    def metadata(self) -> dict[str, Any]:
        """Flat, JSON-friendly metadata (the raw assets attach it to their materializations)."""
        meta: dict[str, Any] = {
            "rows": self.rows_loaded,
            "quarantined": self.rows_quarantined,
            "files": self.files,
        }
        if self.partitions:
            meta["partitions"] = ", ".join(self.partitions)
        if self.reasons:
            meta["quarantine_reasons"] = dict(self.reasons.most_common(10))
        return meta

    def add_file(self, rows: pa.Table, bad: pa.Table) -> None:
        """Count one parsed landing file (its good rows and its quarantined lines)."""
        self.files += 1
        self.rows_loaded += rows.num_rows
        self.rows_quarantined += bad.num_rows
        self.reasons.update(reason_kinds(bad))


def reason_kinds(bad: pa.Table) -> Counter:
    """Quarantine reasons without their details (``bad field 'ts'``), for a compact summary."""
    return Counter(r.split(":", 1)[0] for r in bad.column("reason").to_pylist())


def check_partitions(partitions: Iterable[str]) -> list[str]:
    """The distinct ``dt`` partitions, sorted, each checked to be ``YYYY-MM-DD``."""
    out = sorted(set(partitions))
    for p in out:
        if not _PARTITION_RE.match(p):
            raise ValueError(f"not a dt partition (YYYY-MM-DD): {p!r}")
    return out


def check_dimension(dataset: str) -> str:
    if dataset not in DIMENSIONS:
        raise ValueError(f"dataset must be one of {DIMENSIONS}, not {dataset!r}")
    return dataset


def check_raw_dataset(dataset: str) -> str:
    """A raw dataset whose quarantine share can be asked (not ``quarantine`` itself)."""
    if dataset not in RAW_COLUMNS or dataset == "quarantine":
        raise ValueError(f"not a raw dataset: {dataset!r}")
    return dataset


def check_table_name(name: str) -> str:
    """``table`` or ``schema.table`` of plain identifiers (they are spliced into SQL)."""
    if not _TABLE_NAME_RE.match(name):
        raise ValueError(f"not a table name: {name!r}")
    return name


class Warehouse(ABC):
    """One warehouse: loads raw tables from the landing bucket, reads any table as pandas.

    Frames look alike on every backend: timestamps naive UTC, dates ``datetime64``."""

    kind: str  # the Dagster asset kind of its tables ("duckdb", "bigquery")

    def __init__(self, settings: Settings):
        self.settings = settings

    def close(self) -> None:
        """Release the clients this object made (not those it was handed)."""
        return None

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def load_event_partitions(self, bucket: LandingBucket, partitions: list[str]) -> LoadReport:
        """Replace the ``dt`` partitions of ``raw.events`` (and their quarantine rows) with
        what ``events/dt=<p>/`` holds now, in one transaction."""

    @abstractmethod
    def load_dimension(self, bucket: LandingBucket, dataset: str) -> LoadReport:
        """Full reload of ``raw.<dataset>`` (posts, users or categories) from all its files."""

    @abstractmethod
    def read_table(self, name: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
        """A whole table (``dim_posts``, ``raw.events``, ...), or some of its columns."""

    @abstractmethod
    def quarantine_rate(self, dataset: str = "events") -> dict[str, float]:
        """Loaded rows, quarantined lines and their share for one raw dataset."""

    def read_log(self):
        """``fct_interactions`` as a time-sorted :class:`socialrec.data.eventlog.EventLog`."""
        from socialrec.data.eventlog import EventLog

        return EventLog.from_frame(self.read_table("fct_interactions", LOG_COLUMNS))

    def read_split(self):
        """The global temporal split (``ml_split_bounds``) as a ``SplitBounds``."""
        from socialrec.data.eventlog import SplitBounds

        return SplitBounds.from_frame(self.read_table("ml_split_bounds"))


def rate(rows: int, bad: int) -> dict[str, float]:
    total = rows + bad
    return {"rows": rows, "quarantined": bad, "rate": bad / total if total else 0.0}


# --- the registry -------------------------------------------------------------------------------
Opener = Callable[..., Warehouse]
_OPENERS: dict[str, Opener] = {}


def register(name: str) -> Callable[[Opener], Opener]:
    """A decorator: ``opener(settings, **clients) -> Warehouse`` becomes the backend ``name``."""

    def add(opener: Opener) -> Opener:
        _OPENERS[name] = opener
        return opener

    return add


def backends() -> list[str]:
    """The registered backends' names."""
    return sorted(_OPENERS)


def backend_of(settings: Settings) -> str:
    """The backend of these settings: ``bigquery`` in the ``gcp`` profile, else ``duckdb``."""
    return "bigquery" if settings.profile == "gcp" else "duckdb"


def open_warehouse(settings: Settings, backend: str | None = None, **clients) -> Warehouse:
    """The warehouse of these settings (``backend``: a registered name, default
    :func:`backend_of`); ``clients`` go to the backend (BigQuery: ``client``, a
    ``google.cloud.bigquery.Client``, e.g. dagster-gcp's; ``read_client``)."""
    name = backend or backend_of(settings)
    opener = _OPENERS.get(name)
    if opener is None:
        raise ValueError(f"unknown warehouse backend {name!r}; one of {backends()}")
    return opener(settings, **clients)
