"""Reading the source tables: ids, times, categories and text as canonical values."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from socialrec.data.importers.options import HASH_ID_BITS

_UINT_RE = re.compile(r"^\d{1,19}$")
_SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
# epoch values outside 1900..2200 are unit mistakes, not times
_MIN_EPOCH_S, _MAX_EPOCH_S = -2_208_988_800, 7_258_118_400


def read_table(
    source: str | Path | pd.DataFrame,
    sep: str = ",",
    str_cols: tuple[str, ...] = (),
    columns: list[str | None] | None = None,
    table: str = "the",
) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a parquet file (.parquet/.pq) or a CSV (.csv[.gz], ...).

    ``str_cols`` of a CSV are read as strings (ids keep leading zeros). ``columns``: read only
    these (None entries ignored); a missing one is a ValueError naming the ``table``. Columns
    an import does not map are never read (e.g. statistics that would leak)."""
    wanted = None if columns is None else list(dict.fromkeys(c for c in columns if c))
    if isinstance(source, pd.DataFrame):
        if wanted is not None:
            _require(source, wanted, table)
            source = source[wanted]
        return source.reset_index(drop=True)
    path = Path(source)
    parquet = path.suffix.lower() in (".parquet", ".pq")
    if wanted is not None:
        header = pq.read_schema(path).names if parquet else _csv_header(path, sep)
        _require(pd.DataFrame(columns=header), wanted, table)
    if parquet:
        return pd.read_parquet(path, columns=wanted).reset_index(drop=True)
    header = _csv_header(path, sep)
    dtype = {c: str for c in str_cols if c in header}
    return pd.read_csv(path, sep=sep, dtype=dtype, keep_default_na=True, usecols=wanted)


def _csv_header(path: Path, sep: str) -> list[str]:
    return list(pd.read_csv(path, sep=sep, nrows=0).columns)


Table = str | Path | pd.DataFrame


def read_interactions(
    sources: Table | list[Table] | tuple[Table, ...],
    sep: str,
    str_cols: tuple[str, ...],
    required: list[str | None],
) -> tuple[pd.DataFrame, int]:
    """One table (and how many were read) from one source or a list of them, concatenated in
    order: row numbers continue across files. Each must have the ``required`` columns."""
    many = isinstance(sources, list | tuple)
    parts = list(sources) if many else [sources]
    if not parts:
        raise ValueError("interactions: the list of files is empty")
    frames = []
    for i, part in enumerate(parts):
        frame = read_table(part, sep, str_cols)
        name = "interactions" if not many else f"interactions[{i}] ({_name(part)})"
        _require(frame, required, name)
        frames.append(frame)
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return df, len(frames)


def _name(source: Table) -> str:
    return "a DataFrame" if isinstance(source, pd.DataFrame) else str(source)


def _require(df: pd.DataFrame, cols: list[str | None], table: str) -> None:
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise ValueError(
            f"{table} table lacks column(s) {missing}; it has {list(map(str, df.columns))}"
        )


def _canon(value: Any) -> str | None:
    """The canonical string of an id / category / event value (None when missing)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    return text or None


def _keys(series: pd.Series) -> np.ndarray:
    """Canonical strings (object array, None = missing), computed once per distinct value."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    table = np.array([_canon(v) for v in uniques] + [None], dtype=object)
    return table[codes]  # code -1 picks the trailing None


def _times(series: pd.Series, unit: str) -> pd.Series:
    """UTC timestamps (NaT = missing or unparseable)."""
    if unit == "iso":
        return pd.to_datetime(series, utc=True, errors="coerce", format="ISO8601")
    num = pd.to_numeric(series, errors="coerce")
    seconds = num * _SECONDS_PER_UNIT[unit]
    num = num.where((seconds >= _MIN_EPOCH_S) & (seconds <= _MAX_EPOCH_S))
    return pd.to_datetime(num, unit=unit, utc=True)


def hash_id(namespace: str, key: str) -> int:
    """A stable positive id (< 2**53) for a non-integer source id."""
    digest = hashlib.blake2b(f"{namespace}:{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & ((1 << HASH_ID_BITS) - 1)) or 1


def _id_map(keys: set[str], namespace: str) -> tuple[dict[str, int], str]:
    """Source id -> landing id: the integers themselves if every key is one, else hashes."""
    if all(_UINT_RE.match(k) for k in keys):
        ids = {k: int(k) for k in keys}
        if len(set(ids.values())) == len(ids) and all(v < 2**63 for v in ids.values()):
            return ids, "kept"
    ids = {k: hash_id(namespace, k) for k in keys}
    if len(set(ids.values())) != len(ids):  # astronomically rare; fail loudly
        raise ValueError(f"hash collision among {namespace} ids; rename the colliding ids")
    return ids, "hashed"


def _first_value(value: str | None, sep: str | None) -> str | None:
    if value is None or not sep:
        return value
    return next((v.strip() for v in value.split(sep) if v.strip()), None)


def _text(df: pd.DataFrame, cols: list[str]) -> list[str]:
    parts = []
    for c in cols:
        col = df[c]
        parts.append(["" if pd.isna(v) else str(v).strip() for v in col.tolist()])
    return [". ".join(p for p in row if p) for row in zip(*parts, strict=True)] if parts else []


_TRUE = frozenset({"true", "t", "yes", "y"})
_FALSE = frozenset({"false", "f", "no", "n", ""})


def _truthy(series: pd.Series, col: str) -> np.ndarray:
    """A flag column as booleans: true = a non-zero number, True, or "true"/"yes" (any case);
    false = missing, 0, False, "" or "false"/"no". Any other value is an error (ValueError)."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return (pd.to_numeric(series).astype("float64").fillna(0.0) != 0).to_numpy(dtype=bool)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    table = np.array([_flag(v, col) for v in uniques] + [False], dtype=bool)
    return table[codes]


def _flag(value: Any, col: str) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.number):
        return bool(value == value and value != 0)  # NaN: missing
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    try:
        number = float(text)
    except ValueError:
        raise ValueError(
            f"event_flags column {col!r}: {value!r} is not a flag (0/1, true/false, yes/no)"
        ) from None
    return number == number and number != 0
