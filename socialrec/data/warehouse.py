"""The DuckDB warehouse: raw tables loaded from the landing bucket, and a reader for any table.

The raw layer is the only place where landing JSON is parsed. Every line either becomes a typed
row of ``raw.<dataset>`` or a row of ``raw.quarantine`` with its file, line number and the reason
it was rejected: a malformed line never crashes a load and is never silently dropped.

Loads are idempotent: an event load replaces exactly the ``dt`` partitions it was given (their
rows and their quarantine rows) in one transaction; a dimension load replaces the whole table.
Rows are inserted in bulk from an Arrow table, one per landing file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from socialrec.data.landing import LandingBucket, dataset_prefix, iter_lines, partition_prefix
from socialrec.settings import EVENT_TYPES, MEDIA_TYPES, Settings

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

# Arrow schemas of the parsed rows (lineage columns are added at insert time).
_ARROW = {
    "events": pa.schema(
        [
            ("event_id", pa.string()),
            ("user_id", pa.int64()),
            ("post_id", pa.int64()),
            ("event_type", pa.string()),
            ("ts", pa.timestamp("us")),
            ("dwell_ms", pa.int64()),
            ("_line", pa.int64()),
        ]
    ),
    "posts": pa.schema(
        [
            ("post_id", pa.int64()),
            ("creator_id", pa.int64()),
            ("category_id", pa.int64()),
            ("media_type", pa.string()),
            ("description", pa.string()),
            ("created_at", pa.timestamp("us")),
            ("updated_at", pa.timestamp("us")),
            ("is_deleted", pa.bool_()),
            ("_line", pa.int64()),
        ]
    ),
    "users": pa.schema(
        [
            ("user_id", pa.int64()),
            ("created_at", pa.timestamp("us")),
            ("headline", pa.string()),
            ("about", pa.string()),
            ("onboarding_categories", pa.string()),
            ("updated_at", pa.timestamp("us")),
            ("is_deleted", pa.bool_()),
            ("_line", pa.int64()),
        ]
    ),
    "categories": pa.schema([("category_id", pa.int64()), ("name", pa.string())]),
    "quarantine": pa.schema(
        [
            ("line", pa.int64()),
            ("reason", pa.string()),
            ("payload", pa.string()),
        ]
    ),
}

_TABLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_PARTITION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_PAYLOAD_CHARS = 10_000
# an event stamped later than this past its load time is quarantined (clock skew allowance)
FUTURE_TOLERANCE = dt.timedelta(hours=1)


class BadRecord(ValueError):
    """A landing line that cannot become a raw row; the message is the quarantine reason."""


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
    loaded_at = _now()
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
                rows, bad = _parse_file(bucket, blob.key, "events", _parse_event, loaded_at)
                _insert(con, "events", rows, blob.key, loaded_at, extra={"dt": p})
                _quarantine(con, "events", bad, blob.key, loaded_at)
                report.files += 1
                report.rows_loaded += rows.num_rows
                report.rows_quarantined += bad.num_rows
                report.reasons.update(_reason_kinds(bad))
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
    loaded_at = _now()
    con = connect(settings)
    try:
        ensure_raw_schema(con)
        con.execute("BEGIN TRANSACTION")
        con.execute(f"DELETE FROM raw.{dataset}")
        con.execute("DELETE FROM raw.quarantine WHERE dataset = ?", [dataset])
        for blob in bucket.list(dataset_prefix(dataset)):
            rows, bad = _parse_file(bucket, blob.key, dataset, _PARSERS[dataset], loaded_at)
            lineage = dataset != "categories"
            _insert(con, dataset, rows, blob.key if lineage else None, loaded_at)
            _quarantine(con, dataset, bad, blob.key, loaded_at)
            report.files += 1
            report.rows_loaded += rows.num_rows
            report.rows_quarantined += bad.num_rows
            report.reasons.update(_reason_kinds(bad))
        con.execute("COMMIT")
    except BaseException:
        _rollback(con)
        raise
    finally:
        con.close()
    return report


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


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


# --- parsing -------------------------------------------------------------------------------

Parser = Callable[[dict], dict]


def _parse_file(
    bucket: LandingBucket, key: str, dataset: str, parse: Parser, loaded_at: dt.datetime
) -> tuple[pa.Table, pa.Table]:
    """(good rows, quarantined rows) of one landing file; an unreadable file is one bad row.

    ``loaded_at`` (naive UTC) is the load's time: events stamped more than FUTURE_TOLERANCE
    after it are quarantined; a post/user version without ``updated_at`` nor ``created_at``
    (a bare tombstone) is stamped with it."""
    good: list[dict] = []
    bad: list[dict] = []
    try:
        lines = list(iter_lines(key, bucket.read_bytes(key)))
    except Exception as exc:  # noqa: BLE001 - a corrupt file is data, not a crash
        lines = []
        bad.append({"line": 0, "reason": f"unreadable file: {exc}", "payload": None})
    for n, text in lines:
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise BadRecord(f"not a JSON object: {type(record).__name__}")
            row = parse(record)
            if dataset == "events" and row["ts"] > loaded_at + FUTURE_TOLERANCE:
                raise BadRecord(f"future ts: {record.get('ts')!r} is after the load time")
        except json.JSONDecodeError as exc:
            bad.append({"line": n, "reason": f"bad json: {exc.msg}", "payload": text})
            continue
        except BadRecord as exc:
            bad.append({"line": n, "reason": str(exc), "payload": text})
            continue
        if dataset != "categories":
            row["_line"] = n
        if "updated_at" in row and row["updated_at"] is None:
            row["updated_at"] = loaded_at
        good.append(row)
    for b in bad:
        if b["payload"] is not None and len(b["payload"]) > _MAX_PAYLOAD_CHARS:
            b["payload"] = b["payload"][:_MAX_PAYLOAD_CHARS]
    return (
        pa.Table.from_pylist(good, schema=_ARROW[dataset]),
        pa.Table.from_pylist(bad, schema=_ARROW["quarantine"]),
    )


def _int(record: dict, name: str, required: bool = True) -> int | None:
    value = record.get(name)
    if value is None:
        if required:
            raise BadRecord(f"missing {name}")
        return None
    if isinstance(value, bool):
        raise BadRecord(f"bad {name}: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise BadRecord(f"bad {name}: {value!r}")


def _str(record: dict, name: str, required: bool = False) -> str | None:
    value = record.get(name)
    if value is None or (required and isinstance(value, str) and not value.strip()):
        if required:
            raise BadRecord(f"missing {name}")
        return None
    if isinstance(value, (dict, list)):
        raise BadRecord(f"bad {name}: not a string")
    return str(value)


def _ts(record: dict, name: str) -> dt.datetime:
    """An ISO-8601 timestamp as naive UTC (naive input is taken as UTC)."""
    value = record.get(name)
    if value is None:
        raise BadRecord(f"missing {name}")
    if not isinstance(value, str):
        raise BadRecord(f"bad {name}: {value!r}")
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRecord(f"bad {name}: {value!r}") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _parse_event(r: dict) -> dict:
    event_type = _str(r, "event_type", required=True)
    if event_type not in EVENT_TYPES:
        raise BadRecord(f"unknown event_type: {event_type!r}")
    dwell = _int(r, "dwell_ms", required=False)
    if dwell is not None and dwell < 0:
        raise BadRecord(f"bad dwell_ms: {dwell!r}")
    return {
        "event_id": _str(r, "event_id", required=True),
        "user_id": _int(r, "user_id"),
        "post_id": _int(r, "post_id"),
        "event_type": event_type,
        "ts": _ts(r, "ts"),
        "dwell_ms": dwell,
    }


def _bool(record: dict, name: str) -> bool:
    value = record.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRecord(f"bad {name}: {value!r} (true or false)")
    return value


def _versioning(r: dict, created_at: dt.datetime | None) -> dict:
    """``updated_at`` (default: created_at, else the load time) and ``is_deleted``."""
    updated = _ts(r, "updated_at") if r.get("updated_at") is not None else created_at
    return {"updated_at": updated, "is_deleted": _bool(r, "deleted")}


def _parse_post(r: dict) -> dict:
    post_id = _int(r, "post_id")
    if _bool(r, "deleted"):  # a tombstone: only the id is required
        created = _ts(r, "created_at") if r.get("created_at") is not None else None
        return {"post_id": post_id, "created_at": created, **_versioning(r, created)}
    media_type = _str(r, "media_type", required=True)
    if media_type not in MEDIA_TYPES:
        raise BadRecord(f"unknown media_type: {media_type!r}")
    created = _ts(r, "created_at")
    return {
        "post_id": post_id,
        "creator_id": _int(r, "creator_id", required=False),  # null: an unknown creator
        "category_id": _int(r, "category_id"),
        "media_type": media_type,
        "description": _str(r, "description"),
        "created_at": created,
        **_versioning(r, created),
    }


def _parse_user(r: dict) -> dict:
    if _bool(r, "deleted"):  # a tombstone: only the id is required
        created = _ts(r, "created_at") if r.get("created_at") is not None else None
        return {"user_id": _int(r, "user_id"), "created_at": created, **_versioning(r, created)}
    cats = r.get("onboarding_categories")
    if cats is None:
        cats = []
    if isinstance(cats, str):  # already "3,7"
        cats = [c for c in cats.split(",") if c.strip()]
    if not isinstance(cats, list):
        raise BadRecord(f"bad onboarding_categories: {cats!r}")
    ids = [_int({"onboarding_categories": c}, "onboarding_categories") for c in cats]
    created = _ts(r, "created_at")
    return {
        "user_id": _int(r, "user_id"),
        "created_at": created,
        "headline": _str(r, "headline"),
        "about": _str(r, "about"),
        "onboarding_categories": ",".join(str(i) for i in ids),
        **_versioning(r, created),
    }


def _parse_category(r: dict) -> dict:
    return {"category_id": _int(r, "category_id"), "name": _str(r, "name", required=True)}


_PARSERS: dict[str, Parser] = {
    "events": _parse_event,
    "posts": _parse_post,
    "users": _parse_user,
    "categories": _parse_category,
}


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
