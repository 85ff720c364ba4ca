"""Bring your own interaction log: write it into the landing layout (docs/importing.md).

``import_interactions`` takes a table of interactions (user, item, time, and either an event
type or a rating; CSV, parquet or a DataFrame), optionally an items table (text columns, a
category column, maybe multi-valued) and a users table (headline, about), and writes the four
landing datasets of docs/contracts.md into a ``LandingBucket``: every line it writes passes the
raw loader's parsers (socialrec/warehouse.py), so the whole asset graph runs on the log.

All the mapping is DATA (``ImportOptions``, loadable from JSON): a new log of the same shape
needs options, not code. ``import_movielens`` is one such preset plus the MovieLens-specific
reading (tags.csv aggregated into the descriptions).

Decisions (also documented in docs/importing.md):

* Events: one event per (source row, event type); ``event_id = f"{source}-{row}-{type}"``
  (``row`` = 0-based position in the interactions table), so a re-import writes the same ids.
  All the events of a row share its timestamp.
* Ids: a user or item id column whose values are all non-negative integers keeps them;
  otherwise every id of that column is mapped to ``hash_id(namespace, value)``, a stable
  53-bit integer (blake2b), the same in every import and every batch (report: the mapping).
* Posts: one per item with at least one event; ``created_at`` = its first interaction;
  ``category_id`` from the vocabulary (1..n over the sorted category names; the first value of
  a multi-valued category; ``unknown`` when the item has none); ``media_type`` a fixed option;
  ``description`` = the text columns joined with ". ".
* Creators: the log has none, so each post gets a synthetic creator user: one per category
  (``creator="category"``, ``user_id = CREATOR_ID_BASE + category_id``) or one for the whole
  source (``creator="source"``, ``CREATOR_ID_BASE``); or the creator column of the items table
  (``creator_col``, ids in the user id space). Creators are written as users too (created at
  their first post), so every ``creator_id`` is an existing ``user_id``.
* Users: every user with an event; ``created_at`` = the first interaction; headline / about
  empty unless a users table gives them; ``onboarding_categories`` = the ``onboarding_top_k``
  most frequent categories among the user's first ``onboarding_first_n`` interactions (rows
  with a DISLIKE/REPORT left out; ties: the earlier first occurrence), a proxy for what the
  user would have picked at sign-up.
* Times are written as ISO-8601 UTC; ``shift_to`` moves the whole log by whole days so that it
  starts on a given date (the Dagster event partitions start at SOCIALREC_DEMO_START_DATE).
  Events in the future (after the shift) are dropped, since the loader would quarantine them.
* Files: ``events/dt=<day>/<source>-events-NNNN.jsonl.gz`` per UTC day of the events; posts,
  users and categories in ``<dataset>/dt=<last day>/<source>-<dataset>-NNNN.jsonl.gz``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec.landing import LandingBucket, encode_jsonl, open_bucket
from socialrec.settings import EVENT_TYPES, MEDIA_TYPES, NEGATIVE_EVENTS

TIME_UNITS = ("s", "ms", "us", "ns", "iso")
CREATOR_MODES = ("category", "source")
# synthetic creators get user ids from here up (real integer user ids must stay below it)
CREATOR_ID_BASE = 1_000_000_000_000
HASH_ID_BITS = 53  # hashed ids stay exact in JSON readers that use doubles
FIVE_STAR_RULES: tuple[dict, ...] = (
    {"min": None, "max": None, "event": "VIEW"},
    {"min": 4, "event": "LIKE"},
    {"max": 2, "event": "DISLIKE"},
)
RATING_PRESETS: dict[str, tuple[dict, ...]] = {"five_star": FIVE_STAR_RULES}

_SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_UINT_RE = re.compile(r"^\d{1,19}$")
_SECONDS_PER_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
# epoch values outside 1900..2200 are unit mistakes, not times
_MIN_EPOCH_S, _MAX_EPOCH_S = -2_208_988_800, 7_258_118_400
_MISSING = object()


@dataclass
class ImportOptions:
    """How a log maps onto the landing layout. Every field is plain data (JSON-able)."""

    source: str = "import"  # names event ids, files and synthetic creators
    # --- interactions table ---
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    time_unit: str = "s"  # s | ms | us | ns (epoch) | iso (ISO-8601 strings or datetimes)
    event_col: str | None = None  # either an event column (+ event_map) ...
    # source value -> an EVENT_TYPE, a list of them, or null (ignored); None = values are
    # already EVENT_TYPES (case-insensitive)
    event_map: dict[str, str | list[str] | None] | None = None
    rating_col: str | None = None  # ... or a rating column (+ rating_rules)
    # [{"min": x or null, "max": y or null, "event": TYPE}, ...] (bounds inclusive) or the
    # name of a preset ("five_star": every rating VIEW, >= 4 LIKE, <= 2 DISLIKE)
    rating_rules: list[dict] | str | None = None
    dwell_col: str | None = None  # milliseconds, optional
    # --- items table (default: the item columns of the interactions table, if any) ---
    items_item_col: str | None = None  # default: item_col
    text_cols: list[str] = field(default_factory=list)  # joined with ". " into the description
    category_col: str | None = None
    category_sep: str | None = None  # multi-valued categories: the first value is used
    creator_col: str | None = None  # the creator's id, in the user id space
    media_type: str = "text"  # one of MEDIA_TYPES, for every post
    unknown_category: str = "unknown"  # the category of items without one
    # --- users table (optional) ---
    users_user_col: str | None = None  # default: user_col
    headline_col: str | None = None
    about_col: str | None = None
    # --- derived fields ---
    creator: str = "category"  # synthetic creators: one per "category" or one per "source"
    onboarding_first_n: int = 10
    onboarding_top_k: int = 3
    shift_to: str | None = None  # YYYY-MM-DD: the log is moved to start on this day
    # --- reading and writing ---
    csv_sep: str = ","
    rows_per_file: int = 50_000

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImportOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown import option(s): {', '.join(unknown)}")
        opts = cls(**dict(data))
        opts.validate()
        return opts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Check the options (raises ValueError) and normalise a few of them in place."""
        if not _SOURCE_RE.match(self.source or ""):
            raise ValueError(f"source must match {_SOURCE_RE.pattern}: {self.source!r}")
        if isinstance(self.text_cols, str):
            self.text_cols = [c.strip() for c in self.text_cols.split(",") if c.strip()]
        if (self.event_col is None) == (self.rating_col is None):
            raise ValueError("give exactly one of event_col (+ event_map) or rating_col")
        if self.rating_col is not None:
            if self.rating_rules is None:
                raise ValueError(
                    f"rating_col needs rating_rules (a list or one of {sorted(RATING_PRESETS)})"
                )
            self.rating_rules = _rules(self.rating_rules)
        elif self.rating_rules is not None:
            raise ValueError("rating_rules need rating_col")
        if self.event_map is not None:
            if self.event_col is None:
                raise ValueError("event_map needs event_col")
            for key, value in self.event_map.items():
                _event_types(value, f"event_map[{key!r}]")
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"time_unit must be one of {TIME_UNITS}: {self.time_unit!r}")
        if self.media_type not in MEDIA_TYPES:
            raise ValueError(f"media_type must be one of {MEDIA_TYPES}: {self.media_type!r}")
        if self.creator not in CREATOR_MODES:
            raise ValueError(f"creator must be one of {CREATOR_MODES}: {self.creator!r}")
        if self.onboarding_first_n < 0 or self.onboarding_top_k < 0:
            raise ValueError("onboarding_first_n and onboarding_top_k must be >= 0")
        if self.rows_per_file < 1:
            raise ValueError("rows_per_file must be >= 1")
        if self.shift_to is not None:
            dt.date.fromisoformat(self.shift_to)
        if not self.unknown_category.strip():
            raise ValueError("unknown_category must not be empty")


def _event_types(value: Any, what: str) -> tuple[str, ...]:
    """An event_map value as a tuple of EVENT_TYPES (null or [] = no event)."""
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else list(value)
    bad = [v for v in values if v not in EVENT_TYPES]
    if bad:
        raise ValueError(f"{what}: not in EVENT_TYPES {EVENT_TYPES}: {bad}")
    return tuple(dict.fromkeys(values))


def _rules(rules: list[dict] | tuple[dict, ...] | str) -> list[dict]:
    if isinstance(rules, str):
        if rules not in RATING_PRESETS:
            raise ValueError(f"unknown rating_rules preset {rules!r} ({sorted(RATING_PRESETS)})")
        rules = RATING_PRESETS[rules]
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or set(rule) - {"min", "max", "event"}:
            raise ValueError(f"rating_rules[{i}]: keys are min, max, event: {rule!r}")
        if rule.get("event") not in EVENT_TYPES:
            raise ValueError(f"rating_rules[{i}]: event not in EVENT_TYPES: {rule.get('event')!r}")
        for bound in ("min", "max"):
            value = rule.get(bound)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"rating_rules[{i}]: {bound} must be a number or null")
        out.append({"min": rule.get("min"), "max": rule.get("max"), "event": rule["event"]})
    if not out:
        raise ValueError("rating_rules is empty")
    return out


# --- reading -------------------------------------------------------------------------------


def read_table(
    source: str | Path | pd.DataFrame, sep: str = ",", str_cols: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a parquet file (.parquet/.pq) or a CSV (.csv[.gz], ...).

    ``str_cols`` of a CSV are read as strings (ids keep leading zeros)."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    path = Path(source)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path).reset_index(drop=True)
    header = pd.read_csv(path, sep=sep, nrows=0).columns
    dtype = {c: str for c in str_cols if c in header}
    return pd.read_csv(path, sep=sep, dtype=dtype, keep_default_na=True)


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


# --- the import ----------------------------------------------------------------------------


def import_interactions(
    interactions: str | Path | pd.DataFrame,
    bucket: LandingBucket | str,
    *,
    items: str | Path | pd.DataFrame | None = None,
    users: str | Path | pd.DataFrame | None = None,
    options: ImportOptions | Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Write an interaction log into the landing layout of ``bucket``; returns a report.

    ``options`` (an ImportOptions or a dict of its fields) and keyword ``overrides`` of single
    fields say how the columns map (see ImportOptions and the module docstring). ``now``
    (default: the current time) is the limit past which events are dropped as future.
    Raises ValueError on bad options, missing columns, or when nothing is left to import."""
    t0 = time.perf_counter()
    if isinstance(options, ImportOptions):
        opts = ImportOptions.from_dict({**options.to_dict(), **overrides})
    else:
        opts = ImportOptions.from_dict({**dict(options or {}), **overrides})
    if isinstance(bucket, str):
        bucket = open_bucket(bucket)
    now_ts = pd.Timestamp(now or dt.datetime.now(dt.UTC))
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")

    df = read_table(interactions, opts.csv_sep, (opts.user_col, opts.item_col))
    _require(
        df,
        [opts.user_col, opts.item_col, opts.time_col, opts.event_col, opts.rating_col]
        + [opts.dwell_col],
        "interactions",
    )
    n_read = len(df)
    dropped: dict[str, int] = {}

    # 1. rows -> (row, event_type) pairs ------------------------------------------------------
    user_key = _keys(df[opts.user_col])
    item_key = _keys(df[opts.item_col])
    ts = _times(df[opts.time_col], opts.time_unit)
    valid = np.ones(n_read, dtype=bool)
    for reason, bad in (
        ("missing_user", pd.isna(user_key)),
        ("missing_item", pd.isna(item_key)),
        ("bad_time", ts.isna().to_numpy()),
    ):
        bad = bad & valid
        if bad.any():
            dropped[reason] = int(bad.sum())
        valid &= ~bad
    pairs = _event_pairs(df, opts, valid, dropped)
    if opts.shift_to is not None and len(pairs):
        first_day = ts.iloc[pairs["row"].to_numpy()].min().normalize()
        ts = ts + (pd.Timestamp(opts.shift_to, tz="UTC") - first_day)
    pairs["ts"] = ts.iloc[pairs["row"].to_numpy()].reset_index(drop=True)
    future = (pairs["ts"] > now_ts).to_numpy()
    if future.any():
        dropped["future_ts"] = int(pairs.loc[future, "row"].nunique())
        pairs = pairs[~future]
    if pairs.empty:
        raise ValueError(f"nothing to import from {n_read} rows (dropped: {dropped})")
    pairs["user_key"] = user_key[pairs["row"].to_numpy()]
    pairs["item_key"] = item_key[pairs["row"].to_numpy()]
    if opts.dwell_col is not None:
        dwell = pd.to_numeric(df[opts.dwell_col], errors="coerce").to_numpy(dtype=float)
        pairs["dwell_ms"] = dwell[pairs["row"].to_numpy()]
    else:
        pairs["dwell_ms"] = np.nan
    pairs = pairs.sort_values(["ts", "row", "rule"], kind="stable", ignore_index=True)

    # 2. items -> posts, categories -----------------------------------------------------------
    item_first = pairs.groupby("item_key", sort=True)["ts"].min()
    info, n_catalog = _item_info(df, items, opts, set(item_first.index))
    posts = pd.DataFrame({"item_key": item_first.index, "created_at": item_first.array})
    posts = posts.merge(info, on="item_key", how="left")
    posts["category"] = posts["category"].fillna(opts.unknown_category)
    posts["description"] = posts["description"].fillna("")
    names = sorted(set(posts["category"]))
    category_id = {name: i for i, name in enumerate(names, start=1)}
    posts["category_id"] = posts["category"].map(category_id).astype("int64")

    # 3. ids ----------------------------------------------------------------------------------
    creator_keys = set(posts["creator_key"].dropna()) if "creator_key" in posts else set()
    user_ids, user_mode = _id_map(set(pairs["user_key"]) | creator_keys, "user")
    post_ids, post_mode = _id_map(set(posts["item_key"]), "post")
    pairs["user_id"] = pairs["user_key"].map(user_ids).astype("int64")
    pairs["post_id"] = pairs["item_key"].map(post_ids).astype("int64")
    posts["post_id"] = posts["item_key"].map(post_ids).astype("int64")
    synthetic = (
        CREATOR_ID_BASE + posts["category_id"]
        if opts.creator == "category"
        else pd.Series(CREATOR_ID_BASE, index=posts.index)
    )
    if "creator_key" in posts:  # python ints: no float round trip for large ids
        real = [user_ids[k] if isinstance(k, str) else None for k in posts["creator_key"]]
        posts["creator_id"] = np.array(
            [r if r is not None else int(s) for r, s in zip(real, synthetic, strict=True)],
            dtype=np.int64,
        )
        posts["synthetic_creator"] = [r is None for r in real]
    else:
        posts["creator_id"] = synthetic.astype("int64")
        posts["synthetic_creator"] = True
    synth_ids = set(posts.loc[posts["synthetic_creator"], "creator_id"])
    clash = synth_ids & set(user_ids.values())
    if clash:
        raise ValueError(
            f"user ids {sorted(clash)[:5]} collide with the synthetic creator ids "
            f"(>= {CREATOR_ID_BASE}); give creator_col or renumber the users"
        )

    # 4. users --------------------------------------------------------------------------------
    users_df = _users(pairs, posts, opts, users, user_ids, names, category_id)

    # 5. write --------------------------------------------------------------------------------
    subsecond = bool(
        (pairs["ts"].dt.microsecond != 0).any() or (pairs["ts"].dt.nanosecond != 0).any()
    )
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if subsecond else "%Y-%m-%dT%H:%M:%SZ"
    keys = _write(bucket, opts, pairs, posts, users_df, names, fmt)

    # 6. report -------------------------------------------------------------------------------
    days = pairs["ts"].dt.strftime("%Y-%m-%d")
    report: dict[str, Any] = {
        "source": opts.source,
        "landing": bucket.uri,
        "rows_read": n_read,
        "rows_imported": int(pairs["row"].nunique()),
        "rows_dropped": dropped,
        "events": len(pairs),
        "events_by_type": {k: int(v) for k, v in pairs["event_type"].value_counts().items()},
        "posts": len(posts),
        "catalog_items_without_events": n_catalog,
        "users": int(len(users_df)),
        "interacting_users": len(set(pairs["user_id"])),
        "synthetic_creators": len(synth_ids),
        "categories": len(names),
        "first_ts": pairs["ts"].min().strftime(fmt),
        "last_ts": pairs["ts"].max().strftime(fmt),
        "first_day": days.min(),
        "last_day": days.max(),
        "event_days": int(days.nunique()),
        "files": len(keys),
        "user_ids": user_mode,
        "post_ids": post_mode,
        # source id -> landing id, only when the ids were hashed
        "user_id_map": user_ids if user_mode == "hashed" else None,
        "post_id_map": post_ids if post_mode == "hashed" else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return report


def _event_pairs(
    df: pd.DataFrame, opts: ImportOptions, valid: np.ndarray, dropped: dict[str, int]
) -> pd.DataFrame:
    """(row, rule, event_type) for every event the valid rows generate."""
    rows, rules, types = [], [], []
    if opts.event_col is not None:
        values = _keys(df[opts.event_col])
        if opts.event_map is None:
            mapping = {t: (t,) for t in EVENT_TYPES}
            values = np.array([v.upper() if v else v for v in values], dtype=object)
        else:
            mapping = {
                _canon(k): _event_types(v, f"event_map[{k!r}]") for k, v in opts.event_map.items()
            }
        mapped = np.array([mapping.get(v, _MISSING) for v in values], dtype=object)
        unmapped = valid & np.array([m is _MISSING for m in mapped])
        if unmapped.any():
            dropped["unmapped_event"] = int(unmapped.sum())
        ignored = valid & np.array([m is not _MISSING and not m for m in mapped])
        if ignored.any():
            dropped["ignored_event"] = int(ignored.sum())
        for r in np.flatnonzero(valid & ~unmapped & ~ignored):
            for k, t in enumerate(mapped[r]):
                rows.append(r)
                rules.append(k)
                types.append(t)
    else:
        rating = pd.to_numeric(df[opts.rating_col], errors="coerce").to_numpy(dtype=float)
        missing = valid & np.isnan(rating)
        if missing.any():
            dropped["missing_rating"] = int(missing.sum())
        ok = valid & ~missing
        hit = np.zeros(len(df), dtype=bool)
        for k, rule in enumerate(opts.rating_rules):
            mask = ok.copy()
            if rule["min"] is not None:
                mask &= rating >= rule["min"]
            if rule["max"] is not None:
                mask &= rating <= rule["max"]
            idx = np.flatnonzero(mask)
            rows.append(idx)
            rules.append(np.full(len(idx), k))
            types.append(np.full(len(idx), rule["event"], dtype=object))
            hit |= mask
        no_rule = ok & ~hit
        if no_rule.any():
            dropped["no_rule"] = int(no_rule.sum())
        rows, rules, types = (np.concatenate(x) for x in (rows, rules, types))
    pairs = pd.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64),
            "rule": np.asarray(rules, dtype=np.int64),
            "event_type": np.asarray(types, dtype=object),
        }
    )
    # two rules giving the same type to one row are one event
    return pairs.drop_duplicates(["row", "event_type"], ignore_index=True)


def _item_info(
    df: pd.DataFrame,
    items: str | Path | pd.DataFrame | None,
    opts: ImportOptions,
    used: set[str],
) -> tuple[pd.DataFrame, int]:
    """item_key -> category, description[, creator_key] of the used items; and how many
    catalog items had no event (not written: their creation time is unknown)."""
    item_col = opts.items_item_col or opts.item_col
    wanted = [*opts.text_cols, opts.category_col, opts.creator_col]
    cols = ["item_key", "category", "description"] + (["creator_key"] if opts.creator_col else [])
    if items is not None:
        table = read_table(items, opts.csv_sep, (item_col,))
        _require(table, [item_col, *wanted], "items")
    elif any(c is not None for c in wanted):
        item_col = opts.item_col
        table = df  # the item columns live in the interactions table (first row per item)
        _require(table, wanted, "interactions")
    else:
        return pd.DataFrame(columns=cols), 0
    keys = _keys(table[item_col])
    table = table.assign(item_key=keys)
    table = table[pd.notna(keys)].drop_duplicates("item_key", keep="first")
    n_catalog = int((~table["item_key"].isin(used)).sum()) if items is not None else 0
    table = table[table["item_key"].isin(used)].reset_index(drop=True)
    out = pd.DataFrame({"item_key": table["item_key"].to_numpy()})
    if opts.category_col is not None:
        out["category"] = [
            _first_value(v, opts.category_sep) for v in _keys(table[opts.category_col])
        ]
    else:
        out["category"] = None
    out["description"] = _text(table, opts.text_cols) if opts.text_cols else ""
    if opts.creator_col is not None:
        out["creator_key"] = _keys(table[opts.creator_col])
    return out[cols], n_catalog


def _onboarding(
    pairs: pd.DataFrame, item_category: pd.Series, first_n: int, top_k: int, unknown: int | None
) -> dict[int, list[int]]:
    """user_id -> the top_k categories of their first first_n non-negative interactions."""
    if first_n == 0 or top_k == 0:
        return {}
    negative = set(pairs.loc[pairs["event_type"].isin(NEGATIVE_EVENTS), "row"])
    rows = pairs.drop_duplicates("row")[["row", "user_id", "post_id", "ts"]]
    rows = rows[~rows["row"].isin(negative)].sort_values(["user_id", "ts", "row"])
    first = rows.groupby("user_id", sort=False).head(first_n).copy()
    first["category_id"] = first["post_id"].map(item_category)
    if unknown is not None:
        first = first[first["category_id"] != unknown]
    first["pos"] = np.arange(len(first))
    counts = first.groupby(["user_id", "category_id"]).agg(n=("pos", "size"), pos=("pos", "min"))
    counts = counts.reset_index().sort_values(
        ["user_id", "n", "pos"], ascending=[True, False, True]
    )
    top = counts.groupby("user_id", sort=False).head(top_k)
    return {
        int(u): sorted(int(c) for c in g["category_id"])
        for u, g in top.groupby("user_id", sort=False)
    }


def _users(
    pairs: pd.DataFrame,
    posts: pd.DataFrame,
    opts: ImportOptions,
    users: str | Path | pd.DataFrame | None,
    user_ids: dict[str, int],
    names: list[str],
    category_id: dict[str, int],
) -> pd.DataFrame:
    """One row per user: every interacting user, every creator (real or synthetic)."""
    item_category = posts.set_index("post_id")["category_id"]
    onboarding = _onboarding(
        pairs,
        item_category,
        opts.onboarding_first_n,
        opts.onboarding_top_k,
        category_id.get(opts.unknown_category),
    )
    first = pairs.groupby("user_id")["ts"].min()
    out = pd.DataFrame({"user_id": first.index.astype("int64"), "created_at": first.array})
    out["onboarding_categories"] = [onboarding.get(int(u), []) for u in out["user_id"]]
    out["headline"] = ""
    out["about"] = ""

    # creators: created at their first post (an interacting creator: the earlier of both)
    first_post = posts.groupby("creator_id")["created_at"].min()
    synthetic = set(posts.loc[posts["synthetic_creator"], "creator_id"].astype(int))
    interacting = out["user_id"].isin(first_post.index)
    if interacting.any():
        post_first = out.loc[interacting, "user_id"].map(first_post)
        current = out.loc[interacting, "created_at"]
        out.loc[interacting, "created_at"] = current.where(current <= post_first, post_first)
    existing = set(out["user_id"].tolist())
    new = []
    for uid, created in first_post.items():
        uid = int(uid)
        if uid in existing:
            continue
        headline, about, cats = "", "", []
        if uid in synthetic and opts.creator == "category":
            k = uid - CREATOR_ID_BASE
            headline = f"{opts.source}: {names[k - 1]}"
            about = f"Synthetic creator of the imported {opts.source} items in {names[k - 1]}."
            cats = [k]
        elif uid in synthetic:
            headline = opts.source
            about = f"Synthetic creator of every imported {opts.source} item."
        new.append(
            {
                "user_id": uid,
                "created_at": created,
                "onboarding_categories": cats,
                "headline": headline,
                "about": about,
            }
        )
    if new:
        out = pd.concat([out, pd.DataFrame(new)], ignore_index=True)

    if users is not None:  # headline / about from the users table
        col = opts.users_user_col or opts.user_col
        table = read_table(users, opts.csv_sep, (col,))
        _require(table, [col, opts.headline_col, opts.about_col], "users")
        keys = _keys(table[col])
        table = table.assign(user_id=[user_ids.get(k) if k else None for k in keys])
        table = table[table["user_id"].notna()].drop_duplicates("user_id", keep="last")
        by_id = table.set_index(table["user_id"].astype("int64"))
        for name, source_col in (("headline", opts.headline_col), ("about", opts.about_col)):
            if source_col is None:
                continue
            text = by_id[source_col].map(lambda v: "" if pd.isna(v) else str(v).strip())
            mapped = out["user_id"].map(text)
            out[name] = mapped.where(mapped.notna(), out[name])
    return out.sort_values("user_id", ignore_index=True)


def _chunks(df: pd.DataFrame, n: int) -> Iterator[tuple[int, pd.DataFrame]]:
    for i in range(0, len(df), n):
        yield i // n, df.iloc[i : i + n]


def _write(
    bucket: LandingBucket,
    opts: ImportOptions,
    pairs: pd.DataFrame,
    posts: pd.DataFrame,
    users: pd.DataFrame,
    names: list[str],
    fmt: str,
) -> list[str]:
    keys: list[str] = []
    src = opts.source

    def put(key: str, records: Iterator[dict]) -> None:
        bucket.write_bytes(key, encode_jsonl(records))
        keys.append(key)

    ev = pd.DataFrame(
        {
            "event_id": [
                f"{src}-{r}-{t}" for r, t in zip(pairs["row"], pairs["event_type"], strict=True)
            ],
            "user_id": pairs["user_id"].to_numpy(),
            "post_id": pairs["post_id"].to_numpy(),
            "event_type": pairs["event_type"].to_numpy(),
            "ts": pairs["ts"].dt.strftime(fmt).to_numpy(),
            "dwell_ms": pairs["dwell_ms"].to_numpy(),
            "day": pairs["ts"].dt.strftime("%Y-%m-%d").to_numpy(),
        }
    )
    for day, part in ev.groupby("day", sort=True):
        for i, chunk in _chunks(part, opts.rows_per_file):
            put(f"events/dt={day}/{src}-events-{i:04d}.jsonl.gz", _event_records(chunk))

    snapshot = ev["day"].max()  # the dimensions are a snapshot as of the log's last day
    post_rows = posts.sort_values("post_id")
    for i, chunk in _chunks(post_rows, opts.rows_per_file):
        put(
            f"posts/dt={snapshot}/{src}-posts-{i:04d}.jsonl.gz",
            (
                {
                    "post_id": int(p.post_id),
                    "creator_id": int(p.creator_id),
                    "category_id": int(p.category_id),
                    "media_type": opts.media_type,
                    "description": p.description,
                    "created_at": p.created_at.strftime(fmt),
                }
                for p in chunk.itertuples(index=False)
            ),
        )
    for i, chunk in _chunks(users, opts.rows_per_file):
        put(
            f"users/dt={snapshot}/{src}-users-{i:04d}.jsonl.gz",
            (
                {
                    "user_id": int(u.user_id),
                    "created_at": u.created_at.strftime(fmt),
                    "headline": u.headline,
                    "about": u.about,
                    "onboarding_categories": [int(c) for c in u.onboarding_categories],
                }
                for u in chunk.itertuples(index=False)
            ),
        )
    put(
        f"categories/dt={snapshot}/{src}-categories-0000.jsonl.gz",
        ({"category_id": i, "name": name} for i, name in enumerate(names, start=1)),
    )
    return keys


def _event_records(chunk: pd.DataFrame) -> Iterator[dict]:
    for e in chunk.itertuples(index=False):
        dwell = None if np.isnan(e.dwell_ms) or e.dwell_ms < 0 else int(round(e.dwell_ms))
        yield {
            "event_id": e.event_id,
            "user_id": int(e.user_id),
            "post_id": int(e.post_id),
            "event_type": e.event_type,
            "ts": e.ts,
            "dwell_ms": dwell,
        }


# --- MovieLens -----------------------------------------------------------------------------

MOVIELENS_OPTIONS: dict[str, Any] = {
    "source": "movielens",
    "user_col": "userId",
    "item_col": "movieId",
    "time_col": "timestamp",
    "time_unit": "s",
    "rating_col": "rating",
    "rating_rules": "five_star",  # every rating VIEW, >= 4 LIKE, <= 2 DISLIKE
    "text_cols": ["title", "genres_text", "tags_text"],
    "category_col": "genres",
    "category_sep": "|",  # the first genre is the category
    "media_type": "video",
    "creator": "category",  # one synthetic creator per (first) genre
}


def movielens_items(dataset_dir: str | Path, max_tags: int = 20) -> pd.DataFrame:
    """movies.csv + tags.csv -> movieId, title, genres, genres_text, tags_text.

    Tags are aggregated per movie: distinct case-insensitively, most frequent first (ties: the
    first seen), at most ``max_tags``; tags.csv is optional."""
    d = Path(dataset_dir)
    movies = pd.read_csv(d / "movies.csv", dtype={"movieId": str, "title": str, "genres": str})
    genres = movies["genres"].fillna("")
    movies["genres_text"] = [
        "" if g in ("", "(no genres listed)") else "Genres: " + ", ".join(g.split("|"))
        for g in genres
    ]
    tags_text: dict[str, str] = {}
    if (d / "tags.csv").exists():
        tags = pd.read_csv(d / "tags.csv", dtype={"movieId": str, "tag": str})
        tags["tag"] = tags["tag"].fillna("").str.strip()
        tags = tags[tags["tag"] != ""].reset_index(drop=True)
        tags["norm"] = tags["tag"].str.lower()
        tags["order"] = np.arange(len(tags))
        agg = (
            tags.groupby(["movieId", "norm"], sort=False)
            .agg(tag=("tag", "first"), n=("tag", "size"), order=("order", "min"))
            .reset_index()
            .sort_values(["movieId", "n", "order"], ascending=[True, False, True])
        )
        for movie, g in agg.groupby("movieId", sort=False):
            tags_text[movie] = "Tags: " + ", ".join(g["tag"].head(max_tags))
    movies["tags_text"] = movies["movieId"].map(tags_text).fillna("")
    return movies[["movieId", "title", "genres", "genres_text", "tags_text"]]


def import_movielens(
    dataset_dir: str | Path,
    bucket: LandingBucket | str,
    *,
    max_tags: int = 20,
    now: dt.datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """MovieLens (ml-latest-small layout: ratings.csv, movies.csv, tags.csv) into the landing
    layout with MOVIELENS_OPTIONS (``overrides``: any other option, e.g. ``shift_to``)."""
    d = Path(dataset_dir)
    return import_interactions(
        d / "ratings.csv",
        bucket,
        items=movielens_items(d, max_tags),
        options={**MOVIELENS_OPTIONS, **overrides},
        now=now,
    )


# --- CLI -----------------------------------------------------------------------------------


def _parse_event_map(text: str) -> dict[str, Any]:
    """JSON (``{"click": "VIEW", "like": ["VIEW", "LIKE"]}``) or ``click=VIEW,like=VIEW+LIKE``."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        value = value.strip()
        out[key.strip()] = value.split("+") if value else None
    return out


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if not k.endswith("_id_map")}


def _finish(report: dict[str, Any], report_path: str | None) -> None:
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(_summary(report), indent=2, default=str))
    try:
        from socialrec.settings import Settings

        start = Settings().demo_start_date
    except Exception:  # noqa: BLE001 - a hint only
        return
    if report["first_day"] < start:
        span = dt.date.fromisoformat(report["last_day"]) - dt.date.fromisoformat(
            report["first_day"]
        )
        fits = dt.date.fromisoformat(start) + span < dt.datetime.now(dt.UTC).date()
        print(
            f"note: the event partitions start at SOCIALREC_DEMO_START_DATE={start} but the "
            f"log starts on {report['first_day']}: export SOCIALREC_DEMO_START_DATE="
            f"{report['first_day']}" + (f" (or re-import with --shift-to {start})" if fits else ""),
            file=sys.stderr,
        )


def _default_landing() -> str:
    from socialrec.settings import Settings

    return str(Settings().landing_uri)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["movielens"]:
        p = argparse.ArgumentParser(
            prog="python -m socialrec.importers movielens",
            description="Import MovieLens (ml-latest-small layout) into the landing bucket",
        )
        p.add_argument("--dataset-dir", required=True, help="holds ratings/movies/tags.csv")
        p.add_argument("--landing", help="directory or gs://bucket (default: settings)")
        p.add_argument("--shift-to", help="YYYY-MM-DD: move the log to start on this day")
        p.add_argument("--max-tags", type=int, default=20)
        p.add_argument("--report", help="write the full JSON report here")
        args = p.parse_args(argv[1:])
        overrides = {"shift_to": args.shift_to} if args.shift_to else {}
        report = import_movielens(
            args.dataset_dir,
            args.landing or _default_landing(),
            max_tags=args.max_tags,
            **overrides,
        )
        _finish(report, args.report)
        return

    p = argparse.ArgumentParser(
        prog="python -m socialrec.importers",
        description="Import an interaction log (CSV/parquet) into the landing bucket. "
        "Subcommand `movielens --dataset-dir DIR` imports MovieLens. See docs/importing.md.",
    )
    p.add_argument("--interactions", required=True, help="CSV or parquet of interactions")
    p.add_argument("--items", help="CSV or parquet of items (text, category)")
    p.add_argument("--users", help="CSV or parquet of users (headline, about)")
    p.add_argument("--landing", help="directory or gs://bucket (default: settings)")
    p.add_argument("--options", help="JSON file of ImportOptions; the flags below override it")
    p.add_argument("--report", help="write the full JSON report (with id maps) here")
    flags = {
        "--source": "source",
        "--user-col": "user_col",
        "--item-col": "item_col",
        "--time-col": "time_col",
        "--time-unit": "time_unit",
        "--event-col": "event_col",
        "--event-map": "event_map",
        "--rating-col": "rating_col",
        "--rating-rules": "rating_rules",
        "--dwell-col": "dwell_col",
        "--items-item-col": "items_item_col",
        "--text-cols": "text_cols",
        "--category-col": "category_col",
        "--category-sep": "category_sep",
        "--creator-col": "creator_col",
        "--media-type": "media_type",
        "--unknown-category": "unknown_category",
        "--users-user-col": "users_user_col",
        "--headline-col": "headline_col",
        "--about-col": "about_col",
        "--creator": "creator",
        "--onboarding-first-n": "onboarding_first_n",
        "--onboarding-top-k": "onboarding_top_k",
        "--shift-to": "shift_to",
        "--csv-sep": "csv_sep",
    }
    helps = {
        "event_map": 'JSON or click=VIEW,like=VIEW+LIKE (a value "" = ignored)',
        "rating_rules": 'JSON list of {"min","max","event"} or a preset: five_star',
        "text_cols": "comma separated",
        "time_unit": "/".join(TIME_UNITS),
        "creator": "/".join(CREATOR_MODES),
    }
    for flag, name in flags.items():
        kind = int if name.startswith("onboarding_") else str
        p.add_argument(flag, dest=name, type=kind, help=helps.get(name))
    args = vars(p.parse_args(argv))
    options: dict[str, Any] = {}
    if args["options"]:
        options = json.loads(Path(args["options"]).read_text())
    for name in flags.values():
        value = args[name]
        if value is None:
            continue
        if name == "event_map":
            value = _parse_event_map(value)
        elif name == "rating_rules" and value.strip().startswith("["):
            value = json.loads(value)
        options[name] = value
    report = import_interactions(
        args["interactions"],
        args["landing"] or _default_landing(),
        items=args["items"],
        users=args["users"],
        options=options,
    )
    _finish(report, args["report"])


if __name__ == "__main__":
    main()
