"""``import_interactions``: an interaction log (+ items, users) into the landing layout."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec.data.importers.entities import creators, item_info, users_table
from socialrec.data.importers.options import CREATOR_ID_BASE, ImportOptions, _event_types
from socialrec.data.importers.reading import (
    _canon,
    _id_map,
    _keys,
    _times,
    _truthy,
    read_interactions,
)
from socialrec.data.importers.writing import _write
from socialrec.data.landing import LandingBucket, open_bucket
from socialrec.settings import EVENT_TYPES
from socialrec.timeutil import utc_now

_MISSING = object()


def import_interactions(
    interactions: str | Path | pd.DataFrame | list[str | Path | pd.DataFrame],
    bucket: LandingBucket | str,
    *,
    items: str | Path | pd.DataFrame | None = None,
    users: str | Path | pd.DataFrame | None = None,
    options: ImportOptions | Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Write an interaction log into the landing layout of ``bucket``; returns a report.

    ``interactions``: one table or a list of them (concatenated in order; the row numbers of
    the event ids continue across them, so ids stay unique and stable).

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
    now_ts = pd.Timestamp(now or utc_now())
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")

    df, n_files = read_interactions(
        interactions,
        opts.csv_sep,
        (opts.user_col, opts.item_col),
        [opts.user_col, opts.item_col, opts.time_col, opts.event_col, opts.rating_col]
        + [opts.dwell_col, *(opts.event_flags or {})],
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
    shift = pd.Timedelta(0)  # moves every time of the log (events and creation times)
    if opts.shift_to is not None and len(pairs):
        first_day = ts.iloc[pairs["row"].to_numpy()].min().normalize()
        shift = pd.Timestamp(opts.shift_to, tz="UTC") - first_day
        ts = ts + shift
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
    info, n_catalog = item_info(df, items, opts, set(item_first.index))
    posts = pd.DataFrame({"item_key": item_first.index, "created_at": item_first.array})
    posts = posts.merge(info, on="item_key", how="left")
    created_fallback = None
    if opts.created_col is not None:  # the given creation time, unless missing or too late
        created = pd.to_datetime(posts["created"], utc=True) + shift
        missing = created.isna()
        late = ~missing & (created > posts["created_at"])
        posts["created_at"] = created.where(~(missing | late), posts["created_at"])
        created_fallback = {"missing": int(missing.sum()), "after_first_event": int(late.sum())}
    posts["category"] = posts["category"].fillna(opts.unknown_category)
    posts["description"] = posts["description"].fillna("")
    names = sorted(set(posts["category"]))
    category_id = {name: i for i, name in enumerate(names, start=1)}
    posts["category_id"] = posts["category"].map(category_id).astype("int64")

    # 3. ids ----------------------------------------------------------------------------------
    creator_keys = set(posts["creator_key"].dropna()) if "creator_key" in posts else set()
    as_users = creator_keys if opts.creator_ids == "users" else set()
    user_ids, user_mode = _id_map(set(pairs["user_key"]) | as_users, "user")
    post_ids, post_mode = _id_map(set(posts["item_key"]), "post")
    pairs["user_id"] = pairs["user_key"].map(user_ids).astype("int64")
    pairs["post_id"] = pairs["item_key"].map(post_ids).astype("int64")
    posts["post_id"] = posts["item_key"].map(post_ids).astype("int64")
    posts["creator_id"], profiles, creator_map = creators(posts, opts, user_ids, names)
    clash = (set(profiles) | set((creator_map or {}).values())) & set(user_ids.values())
    if clash:
        raise ValueError(
            f"user ids {sorted(clash)[:5]} collide with creator ids that are not user ids "
            f"(synthetic: >= {CREATOR_ID_BASE} or hashed); renumber the users"
        )

    # 4. users --------------------------------------------------------------------------------
    users_df = users_table(pairs, posts, opts, users, user_ids, profiles, category_id)

    # 5. write --------------------------------------------------------------------------------
    subsecond = any(
        bool(((t.dt.microsecond != 0) | (t.dt.nanosecond != 0)).any())
        for t in (pairs["ts"], posts["created_at"])
    )
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if subsecond else "%Y-%m-%dT%H:%M:%SZ"
    keys = _write(bucket, opts, pairs, posts, users_df, names, fmt)

    # 6. report -------------------------------------------------------------------------------
    days = pairs["ts"].dt.strftime("%Y-%m-%d")
    report: dict[str, Any] = {
        "source": opts.source,
        "landing": bucket.uri,
        "interaction_files": n_files,
        "rows_read": n_read,
        "rows_imported": int(pairs["row"].nunique()),
        "rows_dropped": dropped,
        "events": len(pairs),
        "events_by_type": {k: int(v) for k, v in pairs["event_type"].value_counts().items()},
        "posts": len(posts),
        "catalog_items_without_events": n_catalog,
        # posts whose created_col value was missing or after their first event: created at
        # their first event instead (None without created_col)
        "created_at_fallback": created_fallback,
        "users": int(len(users_df)),
        "interacting_users": len(set(pairs["user_id"])),
        "creators": int(posts["creator_id"].nunique()),  # null (unknown) not counted
        "synthetic_creators": len(profiles),
        "posts_without_creator": int(posts["creator_id"].isna().sum()),
        "creator_ids": opts.creator_ids,
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
        "creator_id_map": creator_map,  # creator_ids "separate" only
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return report


def _event_pairs(
    df: pd.DataFrame, opts: ImportOptions, valid: np.ndarray, dropped: dict[str, int]
) -> pd.DataFrame:
    """(row, rule, event_type) for every event the valid rows generate; ``rule`` orders the
    events of a row (event_map list order, rating rule order, or row_event then the flags)."""
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
    elif opts.rating_col is None:  # a wide log: the row's event, then its flags in order
        wide = [(None, opts.row_event)] if opts.row_event is not None else []
        wide += [(col, t) for col, col_types in (opts.event_flags or {}).items() for t in col_types]
        hit = np.zeros(len(df), dtype=bool)
        flags = {col: _truthy(df[col], col) for col in opts.event_flags or {}}
        for k, (col, event_type) in enumerate(wide):
            mask = valid if col is None else valid & flags[col]
            idx = np.flatnonzero(mask)
            rows.append(idx)
            rules.append(np.full(len(idx), k))
            types.append(np.full(len(idx), event_type, dtype=object))
            hit |= mask
        no_flag = valid & ~hit
        if no_flag.any():
            dropped["no_flag"] = int(no_flag.sum())
        rows, rules, types = (np.concatenate(x) for x in (rows, rules, types))
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
