"""The warehouse: raw tables loaded from the landing bucket, and a reader for any table.

One interface (:class:`~socialrec.data.warehouse.base.Warehouse`), two backends that register
themselves when imported: ``duckdb`` (:mod:`.duckdb_backend`, the local profile's file) and
``bigquery`` (:mod:`.bigquery_backend`, the gcp profile). :func:`open_warehouse` chooses by the
profile; the functions below open the settings' warehouse for one call each, so callers need
not know which one they talk to.

The raw layer (its parsing in ``socialrec.data.raw_records``) is the only place where landing
JSON is parsed. Every line either becomes a typed row of ``raw.<dataset>`` or a row of
``raw.quarantine`` with its file, line number and the reason it was rejected. Loads are
idempotent: an event load replaces exactly the ``dt`` partitions it was given (their rows and
their quarantine rows) in one transaction; a dimension load replaces the whole table.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from socialrec.data.landing import LandingBucket
from socialrec.data.warehouse import bigquery_backend, duckdb_backend  # noqa: F401 (register)
from socialrec.data.warehouse.base import (
    DIMENSIONS,
    LOG_COLUMNS,
    RAW_COLUMNS,
    LoadReport,
    Warehouse,
    backend_of,
    backends,
    open_warehouse,
    register,
)
from socialrec.data.warehouse.duckdb_backend import connect, ensure_raw_schema
from socialrec.settings import Settings

__all__ = [
    "DIMENSIONS",
    "LOG_COLUMNS",
    "RAW_COLUMNS",
    "LoadReport",
    "Warehouse",
    "backend_of",
    "backends",
    "connect",
    "ensure_raw_schema",
    "load_dimension",
    "load_event_partitions",
    "open_warehouse",
    "quarantine_rate",
    "read_log",
    "read_split",
    "read_table",
    "register",
]


def load_event_partitions(
    settings: Settings, bucket: LandingBucket, partitions: list[str]
) -> LoadReport:
    """Replace the ``dt`` partitions of ``raw.events`` with what ``events/dt=<p>/`` holds now."""
    with open_warehouse(settings) as wh:
        return wh.load_event_partitions(bucket, partitions)


def load_dimension(settings: Settings, bucket: LandingBucket, dataset: str) -> LoadReport:
    """Full reload of ``raw.<dataset>`` (posts, users or categories) from all its files."""
    with open_warehouse(settings) as wh:
        return wh.load_dimension(bucket, dataset)


def read_table(settings: Settings, name: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a whole table (``dim_posts``, ``raw.events``, ...), or some of its columns."""
    with open_warehouse(settings) as wh:
        return wh.read_table(name, columns)


def quarantine_rate(settings: Settings, dataset: str = "events") -> dict[str, float]:
    """Loaded rows, quarantined lines and their share for one raw dataset (all partitions)."""
    with open_warehouse(settings) as wh:
        return wh.quarantine_rate(dataset)


def read_log(settings: Settings):
    """``fct_interactions`` as a time-sorted :class:`socialrec.data.eventlog.EventLog`."""
    with open_warehouse(settings) as wh:
        return wh.read_log()


def read_split(settings: Settings):
    """The global temporal split (``ml_split_bounds``) as a ``SplitBounds``."""
    with open_warehouse(settings) as wh:
        return wh.read_split()
