"""The DuckDB warehouse: raw tables loaded from the landing bucket, and a reader for any table.

The raw layer (its parsing in ``socialrec.data.raw_records``) is the only place where landing
JSON is parsed. Every line either becomes a typed row of ``raw.<dataset>`` or a row of
``raw.quarantine`` with its file, line number and the reason it was rejected: a malformed line
never crashes a load and is never silently dropped.

Loads are idempotent: an event load replaces exactly the ``dt`` partitions it was given (their
rows and their quarantine rows) in one transaction; a dimension load replaces the whole table.
Rows are inserted in bulk from an Arrow table, one per landing file.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from socialrec.data.landing import LandingBucket, dataset_prefix, partition_prefix
from socialrec.data.raw_records import PARSERS, parse_file
from socialrec.settings import Settings
from socialrec.timeutil import utc_now

__all__ = [
    "DIMENSIONS",
    "LoadReport",
    "connect",
    "ensure_raw_schema",
    "load_dimension",
    "load_event_partitions",
    "quarantine_rate",
    "read_log",
    "read_split",
    "read_table",
]

DIMENSIONS = ("posts", "users", "categories")

_RAW_DDL = {
    "events": """
        event_id VARCHAR, user_id BIGINT, post_id BIGINT, event_type VARCHAR, ts TIMESTAMP,
        dwell_ms BIGINT, dt DATE, _source_file VARCHAR, _line BIGINT, _loaded_at TIMESTAMP""",
    "posts": """
        post_id BIGINT, creator_id BIGINT, category_id BIGINT, media_type VARCHAR,
        description VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP, is_deleted BOOLEAN,
        _source_file VARCHAR, _line BIGINT, _loaded_at TIMESTAMP""",
    "users": """
        user_id BIGINT, created_at TIMESTAMP, headline VARCHAR, about VARCHAR,
        onboarding_categories VARCHAR, updated_at TIMESTAMP, is_deleted BOOLEAN,
        _source_file VARCHAR, _line BIGINT, _loaded_at TIMESTAMP""",
    "categories": "category_id BIGINT, name VARCHAR",
    "quarantine": """
        dataset VARCHAR, source_file VARCHAR, line BIGINT, reason VARCHAR, payload VARCHAR,
        _loaded_at TIMESTAMP""",
}

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


# --- connections ---------------------------------------------------------------------------


def connect(settings: Settings, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection to the warehouse file of the local profile."""
    if settings.warehouse_path is None:
        raise NotImplementedError(
            f"profile {settings.profile!r} has no DuckDB warehouse (BigQuery is loaded elsewhere)"
        )
    path = Path(settings.warehouse_path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)


def _ddl_columns(columns: str) -> list[str]:
    return [c.split()[0] for c in " ".join(columns.split()).split(", ")]


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
        wanted = _ddl_columns(columns)
        if existing and existing != wanted and name in DIMENSIONS:
            con.execute(f"DROP TABLE raw.{name}")
            existing = []
        if not existing:
            con.execute(f"CREATE TABLE raw.{name} ({columns})")
            continue
        for col in " ".join(columns.split()).split(", "):
            if col.split()[0] not in existing:
                con.execute(f"ALTER TABLE raw.{name} ADD COLUMN {col}")


def read_table(settings: Settings, name: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a whole table (``dim_posts``, ``raw.events``, ...) through a read-only connection."""
    if not _TABLE_NAME_RE.match(name):
        raise ValueError(f"not a table name: {name!r}")
    cols = "*" if columns is None else ", ".join(_quote(c) for c in columns)
    table = ".".join(_quote(part) for part in name.split("."))
    con = connect(settings, read_only=True)
    try:
        return con.execute(f"SELECT {cols} FROM {table}").df()
    finally:
        con.close()


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def quarantine_rate(settings: Settings, dataset: str = "events") -> dict[str, float]:
    """Loaded rows, quarantined lines and their share for one raw dataset (all partitions)."""
    if dataset not in _RAW_DDL or dataset == "quarantine":
        raise ValueError(f"not a raw dataset: {dataset!r}")
    con = connect(settings, read_only=True)
    try:
        tables = {
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'"
            ).fetchall()
        }
        if not {dataset, "quarantine"} <= tables:
            return {"rows": 0, "quarantined": 0, "rate": 0.0}
        rows = con.execute(f"SELECT count(*) FROM raw.{dataset}").fetchone()[0]
        bad = con.execute(
            "SELECT count(*) FROM raw.quarantine WHERE dataset = ?", [dataset]
        ).fetchone()[0]
    finally:
        con.close()
    total = rows + bad
    return {"rows": rows, "quarantined": bad, "rate": bad / total if total else 0.0}


# --- loads ---------------------------------------------------------------------------------


def load_event_partitions(
    settings: Settings, bucket: LandingBucket, partitions: list[str]
) -> LoadReport:
    """Replace the ``dt`` partitions of ``raw.events`` with what ``events/dt=<p>/`` holds now."""
    partitions = sorted(set(partitions))
    for p in partitions:
        if not _PARTITION_RE.match(p):
            raise ValueError(f"not a dt partition (YYYY-MM-DD): {p!r}")
    report = LoadReport("events", partitions=partitions)
    loaded_at = utc_now().replace(tzinfo=None)  # naive UTC, as raw.* stores it
    con = connect(settings)
    try:
        ensure_raw_schema(con)
        con.execute("BEGIN TRANSACTION")
        for p in partitions:
            prefix = partition_prefix("events", p)
            con.execute("DELETE FROM raw.events WHERE dt = CAST(? AS DATE)", [p])
            con.execute(
                "DELETE FROM raw.quarantine WHERE dataset = 'events' AND starts_with(source_file, ?)",
                [prefix],
            )
            for blob in bucket.list(prefix):
                _load_file(con, bucket, blob.key, "events", loaded_at, report, extra={"dt": p})
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    finally:
        con.close()
    return report


def load_dimension(settings: Settings, bucket: LandingBucket, dataset: str) -> LoadReport:
    """Full reload of ``raw.<dataset>`` (posts, users or categories) from all its files."""
    if dataset not in DIMENSIONS:
        raise ValueError(f"dataset must be one of {DIMENSIONS}, not {dataset!r}")
    report = LoadReport(dataset)
    loaded_at = utc_now().replace(tzinfo=None)  # naive UTC, as raw.* stores it
    con = connect(settings)
    try:
        ensure_raw_schema(con)
        con.execute("BEGIN TRANSACTION")
        con.execute(f"DELETE FROM raw.{dataset}")
        con.execute("DELETE FROM raw.quarantine WHERE dataset = ?", [dataset])
        for blob in bucket.list(dataset_prefix(dataset)):
            _load_file(con, bucket, blob.key, dataset, loaded_at, report)
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    finally:
        con.close()
    return report


def _load_file(con, bucket, key: str, dataset: str, loaded_at, report: LoadReport, extra=None):
    """One landing file into ``raw.<dataset>``, its bad lines into ``raw.quarantine``."""
    rows, bad = parse_file(bucket, key, dataset, PARSERS[dataset], loaded_at)
    lineage = dataset != "categories"  # categories carry no source file column
    _insert(con, dataset, rows, key if lineage else None, loaded_at, extra=extra)
    _quarantine(con, dataset, bad, key, loaded_at)
    report.files += 1
    report.rows_loaded += rows.num_rows
    report.rows_quarantined += bad.num_rows
    report.reasons.update(_reason_kinds(bad))


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


def _reason_kinds(bad: pa.Table) -> Counter:
    """Quarantine reasons without their details (``bad field 'ts'``), for a compact summary."""
    return Counter(r.split(":", 1)[0] for r in bad.column("reason").to_pylist())


# --- the inputs of the offline learners (socialrec.data.eventlog, socialrec.evaluation) ----------
LOG_COLUMNS = ["user_id", "post_id", "event_type", "ts", "dwell_ms", "is_positive", "is_negative"]


def read_log(settings: Settings):
    """``fct_interactions`` as a time-sorted :class:`socialrec.data.eventlog.EventLog`."""
    from socialrec.data.eventlog import EventLog

    return EventLog.from_frame(read_table(settings, "fct_interactions", LOG_COLUMNS))


def read_split(settings: Settings):
    """The global temporal split (``ml_split_bounds``) as a ``SplitBounds``."""
    from socialrec.data.eventlog import SplitBounds

    return SplitBounds.from_frame(read_table(settings, "ml_split_bounds"))
