"""The DuckDB warehouse (the local profile): one file, ``settings.warehouse_path``.

Every landing line either becomes a typed row of ``raw.<dataset>`` or a row of
``raw.quarantine`` with its file, line number and the reason it was rejected: a malformed line
never crashes a load and is never silently dropped.

Loads are idempotent: an event load replaces exactly the ``dt`` partitions it was given (their
rows and their quarantine rows) in one transaction; a dimension load replaces the whole table.
Rows are inserted in bulk from an Arrow table, one per landing file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from socialrec.data.landing import LandingBucket, dataset_prefix, partition_prefix
from socialrec.data.raw_records import PARSERS, EventWindow, parse_file
from socialrec.data.warehouse.base import (
    DIMENSIONS,
    RAW_COLUMNS,
    LoadReport,
    Warehouse,
    check_dimension,
    check_partitions,
    check_raw_dataset,
    check_table_name,
    rate,
    register,
)
from socialrec.settings import Settings
from socialrec.timeutil import utc_now

_TYPES = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
    "bool": "BOOLEAN",
}
_RAW_DDL = {
    name: ", ".join(f"{col} {_TYPES[kind]}" for col, kind in cols)
    for name, cols in RAW_COLUMNS.items()
}


def connect(settings: Settings, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to the warehouse file of the local profile."""
    if settings.warehouse_path is None:
        raise NotImplementedError(
            f"profile {settings.profile!r} has no DuckDB warehouse (its warehouse is BigQuery)"
        )
    path = Path(settings.warehouse_path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)


def ensure_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create schema ``raw`` and its tables (docs/contracts.md) if they do not exist.

    A dimension table from an older layout is re-created (dimension loads are full reloads);
    other tables get the columns they lack added (nullable), never dropped.
    """
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    for name, columns in _RAW_DDL.items():
        existing = [
            r[0]
            for r in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'raw' AND table_name = ? ORDER BY ordinal_position",
                [name],
            ).fetchall()
        ]
        wanted = [col for col, _ in RAW_COLUMNS[name]]
        if existing and existing != wanted and name in DIMENSIONS:
            con.execute(f"DROP TABLE raw.{name}")
            existing = []
        if not existing:
            con.execute(f"CREATE TABLE raw.{name} ({columns})")
            continue
        for col, kind in RAW_COLUMNS[name]:
            if col not in existing:
                con.execute(f"ALTER TABLE raw.{name} ADD COLUMN {col} {_TYPES[kind]}")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@register("duckdb")
class DuckDBWarehouse(Warehouse):
    """The local profile's warehouse file; every call opens (and closes) its connection."""

    kind = "duckdb"

    def read_table(self, name: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
        """Read a whole table (``dim_posts``, ``raw.events``, ...) through a read-only
        connection."""
        check_table_name(name)
        cols = "*" if columns is None else ", ".join(_quote(c) for c in columns)
        table = ".".join(_quote(part) for part in name.split("."))
        con = connect(self.settings, read_only=True)
        try:
            return con.execute(f"SELECT {cols} FROM {table}").df()
        finally:
            con.close()

    def quarantine_rate(self, dataset: str = "events") -> dict[str, float]:
        """Loaded rows, quarantined lines and their share for one raw dataset (all
        partitions)."""
        check_raw_dataset(dataset)
        con = connect(self.settings, read_only=True)
        try:
            tables = {
                r[0]
                for r in con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'"
                ).fetchall()
            }
            if not {dataset, "quarantine"} <= tables:
                return rate(0, 0)
            rows = con.execute(f"SELECT count(*) FROM raw.{dataset}").fetchone()[0]
            bad = con.execute(
                "SELECT count(*) FROM raw.quarantine WHERE dataset = ?", [dataset]
            ).fetchone()[0]
        finally:
            con.close()
        return rate(rows, bad)

    @contextlib.contextmanager
    def _raw_transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the raw schema in place, inside one transaction: committed when
        the block ends, rolled back (nothing of a load left) when it raises; closed after."""
        con = connect(self.settings)
        try:
            ensure_raw_schema(con)
            con.execute("BEGIN TRANSACTION")
            yield con
            con.execute("COMMIT")
        except BaseException:
            _rollback(con)
            raise
        finally:
            con.close()

    def load_event_partitions(self, bucket: LandingBucket, partitions: list[str]) -> LoadReport:
        """Replace the ``dt`` partitions of ``raw.events`` with what ``events/dt=<p>/`` holds
        now."""
        partitions = check_partitions(partitions)
        report = LoadReport("events", partitions=partitions)
        loaded_at = utc_now().replace(tzinfo=None)  # naive UTC, as raw.* stores it
        window = EventWindow.of(self.settings)
        with self._raw_transaction() as con:
            for p in partitions:
                prefix = partition_prefix("events", p)
                con.execute("DELETE FROM raw.events WHERE dt = CAST(? AS DATE)", [p])
                con.execute(
                    "DELETE FROM raw.quarantine "
                    "WHERE dataset = 'events' AND starts_with(source_file, ?)",
                    [prefix],
                )
                for blob in bucket.list(prefix):
                    _load_file(
                        con, bucket, blob.key, "events", (loaded_at, window), report, {"dt": p}
                    )
        return report

    def load_dimension(self, bucket: LandingBucket, dataset: str) -> LoadReport:
        """Full reload of ``raw.<dataset>`` (posts, users or categories) from all its files."""
        check_dimension(dataset)
        report = LoadReport(dataset)
        loaded_at = utc_now().replace(tzinfo=None)  # naive UTC, as raw.* stores it
        with self._raw_transaction() as con:
            con.execute(f"DELETE FROM raw.{dataset}")
            con.execute("DELETE FROM raw.quarantine WHERE dataset = ?", [dataset])
            for blob in bucket.list(dataset_prefix(dataset)):
                _load_file(con, bucket, blob.key, dataset, (loaded_at, None), report)
        return report


def _load_file(con, bucket, key: str, dataset: str, when, report: LoadReport, extra=None):
    """One landing file into ``raw.<dataset>``, its bad lines into ``raw.quarantine``;
    ``when``: (the load time, the accepted event window)."""
    loaded_at, window = when
    rows, bad = parse_file(bucket, key, dataset, PARSERS[dataset], loaded_at, window)
    lineage = dataset != "categories"  # categories carry no source file column
    _insert(con, dataset, rows, key if lineage else None, loaded_at, extra=extra)
    _quarantine(con, dataset, bad, key, loaded_at)
    report.add_file(rows, bad)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _insert(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    rows: pa.Table,
    source_file: str | None,
    loaded_at: dt.datetime,
    extra: dict[str, str] | None = None,
) -> None:
    if rows.num_rows == 0:
        return
    con.register("_batch", rows)
    try:
        cols = [f"b.{name}" for name in rows.column_names]
        params: list[Any] = []
        for name, value in (extra or {}).items():
            cols.append(f"CAST(? AS DATE) AS {name}")
            params.append(value)
        if source_file is not None:
            cols += ["? AS _source_file", "? AS _loaded_at"]
            params += [source_file, loaded_at]
        con.execute(
            f"INSERT INTO raw.{dataset} BY NAME SELECT {', '.join(cols)} FROM _batch b", params
        )
    finally:
        con.unregister("_batch")


def _quarantine(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    bad: pa.Table,
    source_file: str,
    loaded_at: dt.datetime,
) -> None:
    if bad.num_rows == 0:
        return
    con.register("_bad", bad)
    try:
        con.execute(
            "INSERT INTO raw.quarantine BY NAME "
            "SELECT ? AS dataset, ? AS source_file, line, reason, payload, ? AS _loaded_at "
            "FROM _bad",
            [dataset, source_file, loaded_at],
        )
    finally:
        con.unregister("_bad")
