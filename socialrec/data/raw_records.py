"""Landing lines -> typed raw rows: the one place where landing JSON is parsed.

Every line of a landing file either becomes a row of the dataset's Arrow schema or a
quarantine row with its line number and the reason it was rejected (``BadRecord``'s message);
``socialrec.data.warehouse`` inserts both. Times come out as naive UTC (DuckDB ``TIMESTAMP``;
the BigQuery backend stores them as UTC ``TIMESTAMP``).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from socialrec.data.landing import LandingBucket, iter_lines
from socialrec.settings import EVENT_TYPES, MEDIA_TYPES, VARIANT_NAME_PATTERN, Settings
from socialrec.timeutil import utc

# Arrow schemas of the parsed rows (lineage columns are added at insert time).
ARROW_SCHEMAS = {
    "events": pa.schema(
        [
            ("event_id", pa.string()),
            ("user_id", pa.int64()),
            ("post_id", pa.int64()),
            ("event_type", pa.string()),
            ("ts", pa.timestamp("us")),
            ("dwell_ms", pa.int64()),
            ("variant", pa.string()),  # the experiment arm the app sent back (null: none)
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

_MAX_PAYLOAD_CHARS = 10_000
_MAX_SHOWN_CHARS = 80  # of a bad value in a quarantine reason
# the default of settings.event_max_future_hours (dbt's future_tolerance_hours is the same)
FUTURE_TOLERANCE = dt.timedelta(hours=1)
# What the warehouse holds: BIGINT/INT64 integers, and times every reader can hold (pandas'
# datetime64[ns] spans 1677-09-21..2262-04-11; rounded inward to whole years). A value outside
# is a quarantine row, never a load failure.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TS_MIN, TS_MAX = dt.datetime(1678, 1, 1), dt.datetime(2262, 1, 1)


class BadRecord(ValueError):
    """A landing line that cannot become a raw row; the message is the quarantine reason."""


Parser = Callable[[dict], dict]


@dataclass(frozen=True)
class EventWindow:
    """The event times a load accepts, around its time ``loaded_at`` (naive UTC):
    ``max_future``, the clock skew allowed past it; ``retention``, how far back before it (None:
    back to TS_MIN; an imported log may be years old). Events outside are quarantined."""

    max_future: dt.timedelta = FUTURE_TOLERANCE
    retention: dt.timedelta | None = None

    @classmethod
    def of(cls, settings: Settings) -> EventWindow:
        days = settings.event_retention_days
        return cls(
            max_future=dt.timedelta(hours=settings.event_max_future_hours),
            retention=dt.timedelta(days=days) if days else None,
        )

    def reason(self, ts: dt.datetime, loaded_at: dt.datetime, shown: object) -> str | None:
        """Why ``ts`` is outside the window (None: inside)."""
        if ts > loaded_at + self.max_future:
            return f"future ts: {shown!r} is after the load time"
        if self.retention is not None and ts < loaded_at - self.retention:
            return f"ts past retention: {shown!r} is older than {self.retention.days} days"
        return _out_of_range("ts", ts, shown)


def parse_file(
    bucket: LandingBucket,
    key: str,
    dataset: str,
    parse: Parser,
    loaded_at: dt.datetime,
    window: EventWindow | None = None,
) -> tuple[pa.Table, pa.Table]:
    """(good rows, quarantined rows) of one landing file; an unreadable file is one bad row.

    ``loaded_at`` (naive UTC) is the load's time: events outside ``window`` around it (default:
    only those stamped more than FUTURE_TOLERANCE after it) are quarantined; a post/user
    version without ``updated_at`` nor ``created_at`` (a bare tombstone) is stamped with it.
    No line raises: whatever a line holds, it is a row or a quarantine row."""
    window = window or EventWindow()
    good: list[dict] = []
    texts: list[str] = []
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
            if dataset == "events":
                reason = window.reason(row["ts"], loaded_at, record.get("ts"))
                if reason:
                    raise BadRecord(reason)
        except json.JSONDecodeError as exc:
            bad.append({"line": n, "reason": f"bad json: {exc.msg}", "payload": text})
            continue
        except BadRecord as exc:
            bad.append({"line": n, "reason": str(exc), "payload": text})
            continue
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            # a value no check above foresaw (json nesting too deep, ...): still data
            reason = f"unloadable: {_show(exc)}"
            bad.append({"line": n, "reason": reason, "payload": text})
            continue
        if dataset != "categories":
            row["_line"] = n
        if "updated_at" in row and row["updated_at"] is None:
            row["updated_at"] = loaded_at
        good.append(row)
        texts.append(text)
    rows = _arrow(good, texts, ARROW_SCHEMAS[dataset], bad)
    for b in bad:
        if b["payload"] is not None and len(b["payload"]) > _MAX_PAYLOAD_CHARS:
            b["payload"] = b["payload"][:_MAX_PAYLOAD_CHARS]
    bad.sort(key=lambda b: b["line"])
    return rows, pa.Table.from_pylist(bad, schema=ARROW_SCHEMAS["quarantine"])


def _arrow(good: list[dict], texts: list[str], schema: pa.Schema, bad: list[dict]) -> pa.Table:
    """The rows as Arrow; if the batch does not convert, row by row, the failures to ``bad``
    (a safety net: the parsers already reject what Arrow cannot hold)."""
    try:
        return pa.Table.from_pylist(good, schema=schema)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        pass
    kept = []
    for row, text in zip(good, texts, strict=True):
        try:
            pa.Table.from_pylist([row], schema=schema)
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            reason = f"unloadable: {_show(exc)}"
            bad.append({"line": row.get("_line", 0), "reason": reason, "payload": text})
            continue
        kept.append(row)
    return pa.Table.from_pylist(kept, schema=schema)


def _show(value: object) -> str:
    """A value as a quarantine reason shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_CHARS else text[:_MAX_SHOWN_CHARS] + "..."


def _int(record: dict, name: str, required: bool = True) -> int | None:
    """An int64 (an int, an integral float or a decimal string)."""
    value = record.get(name)
    if value is None:
        if required:
            raise BadRecord(f"missing {name}")
        return None
    if isinstance(value, bool):
        raise BadRecord(f"bad {name}: {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value.strip()):
        value = int(value)  # at most 20 digits: int() never meets its digit limit
    if not isinstance(value, int):
        raise BadRecord(f"bad {name}: {_show(value)}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise BadRecord(f"{name} out of range: {_show(value)} (not an int64)")
    return value


def _str(record: dict, name: str, required: bool = False) -> str | None:
    value = record.get(name)
    if value is None or (required and isinstance(value, str) and not value.strip()):
        if required:
            raise BadRecord(f"missing {name}")
        return None
    if isinstance(value, (dict, list)):
        raise BadRecord(f"bad {name}: not a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRecord(f"bad {name}: {value!r} (not finite)")
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a "\ud800" escape): no warehouse string
        raise BadRecord(f"bad {name}: not valid UTF-8") from None
    return text


def _ts(record: dict, name: str, check_range: bool = True) -> dt.datetime:
    """An ISO-8601 timestamp as naive UTC (naive input is taken as UTC), within TS_MIN..TS_MAX
    (``check_range=False``: an event's ts, which its EventWindow checks, range included)."""
    value = record.get(name)
    if value is None:
        raise BadRecord(f"missing {name}")
    if not isinstance(value, str):
        raise BadRecord(f"bad {name}: {_show(value)}")
    try:
        ts = utc(value).replace(tzinfo=None)
    except (ValueError, OverflowError):  # OverflowError: year 1 with an offset east of UTC
        raise BadRecord(f"bad {name}: {_show(value)}") from None
    reason = _out_of_range(name, ts, value) if check_range else None
    if reason:
        raise BadRecord(reason)
    return ts


def _out_of_range(name: str, ts: dt.datetime, shown: object) -> str | None:
    if TS_MIN <= ts < TS_MAX:
        return None
    return f"{name} out of range: {_show(shown)} (not in {TS_MIN.year}..{TS_MAX.year})"


def _parse_event(r: dict) -> dict:
    event_type = _str(r, "event_type", required=True)
    if event_type not in EVENT_TYPES:
        raise BadRecord(f"unknown event_type: {event_type!r}")
    dwell = _int(r, "dwell_ms", required=False)
    if dwell is not None and dwell < 0:
        raise BadRecord(f"bad dwell_ms: {dwell!r}")
    variant = _str(r, "variant")  # absent in older files: null
    if variant is not None and not re.fullmatch(VARIANT_NAME_PATTERN, variant):
        raise BadRecord(f"bad variant: {_show(variant)}")
    return {
        "event_id": _str(r, "event_id", required=True),
        "user_id": _int(r, "user_id"),
        "post_id": _int(r, "post_id"),
        "event_type": event_type,
        "ts": _ts(r, "ts", check_range=False),
        "dwell_ms": dwell,
        "variant": variant,
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


PARSERS: dict[str, Parser] = {
    "events": _parse_event,
    "posts": _parse_post,
    "users": _parse_user,
    "categories": _parse_category,
}
