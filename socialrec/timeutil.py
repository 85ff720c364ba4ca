"""Time, one way: every instant the core handles is UTC; a naive time is taken as UTC.

Epoch seconds for arithmetic (the event log, the catalog, the ranking features), aware
``datetime``/``Timestamp`` at the edges (the API, the spool, the feature tables) and one
ISO-8601 text form (``iso``) for everything written out.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pandas as pd

DAY_SECONDS = 86_400
_EPOCH = pd.Timestamp(0, tz="UTC")


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


def utc(ts: Any) -> dt.datetime:
    """An ISO-8601 string or a datetime as an aware UTC datetime; anything else is a
    ``ValueError`` naming the value."""
    if isinstance(ts, str):
        try:
            ts = dt.datetime.fromisoformat(ts.strip())
        except ValueError:
            raise ValueError(f"bad ts: {ts!r}") from None
    if not isinstance(ts, dt.datetime):
        raise ValueError(f"bad ts: {ts!r} (an ISO-8601 string or a datetime)")
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def iso(ts: Any) -> str:
    """The one text form of an instant: ISO-8601 UTC with a ``Z``, microseconds only when
    there are any (``2026-01-02T03:04:05Z``, ``2026-01-02T03:04:05.250000Z``)."""
    value = utc(ts.to_pydatetime() if isinstance(ts, pd.Timestamp) else ts)
    spec = "microseconds" if value.microsecond else "seconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def timestamp(ts: Any) -> pd.Timestamp:
    """A scalar time (datetime, string, Timestamp or epoch seconds) as a UTC ``Timestamp``
    at microsecond precision (the feature tables' unit)."""
    if isinstance(ts, int | float | np.number):
        return to_timestamp(ts)
    out = pd.Timestamp(ts)
    out = out.tz_localize("UTC") if out.tzinfo is None else out.tz_convert("UTC")
    return out.floor("us")


def timestamps(values: Any) -> pd.Series:
    """Times as a ``datetime64[us, UTC]`` series."""
    return pd.to_datetime(pd.Series(values), utc=True).dt.floor("us").astype("datetime64[us, UTC]")


def seconds(ts: Any = None) -> float:
    """One instant as epoch seconds: None (now), a number, a datetime/Timestamp or a string."""
    if ts is None:
        return time.time()
    if isinstance(ts, int | float | np.number):
        return float(ts)
    return timestamp(ts).timestamp()


def to_seconds(ts: Any) -> int:
    """One instant as whole epoch seconds."""
    if isinstance(ts, int | float | np.number):
        return int(ts)
    return int(seconds(ts))


def to_timestamp(secs: int | float) -> pd.Timestamp:
    return pd.Timestamp(int(secs), unit="s", tz="UTC")


def epoch_seconds(values: Any, fill: int | None = None, dtype=np.int64) -> np.ndarray:
    """Times (datetimes, strings, Timestamps or epoch seconds) as epoch seconds; missing
    times become ``fill`` (None: a missing time is an error for an integer ``dtype``)."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if pd.api.types.is_numeric_dtype(series):
        out = series
    else:
        out = (pd.to_datetime(series, utc=True) - _EPOCH).dt.total_seconds()
    if fill is not None:
        out = out.fillna(fill)
    return out.to_numpy(dtype=np.float64).astype(dtype)
