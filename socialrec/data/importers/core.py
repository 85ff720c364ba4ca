"""``import_interactions``: an interaction log (+ items, users) into the landing layout."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec.data.importers.options import CREATOR_ID_BASE, ImportOptions, _event_types
from socialrec.data.importers.reading import (
    _canon,
    _first_value,
    _id_map,
    _keys,
    _require,
    _text,
    _times,
    _truthy,
    hash_id,
    read_interactions,
    read_table,
)
from socialrec.data.importers.writing import _write
from socialrec.data.landing import LandingBucket, open_bucket
from socialrec.settings import EVENT_TYPES, NEGATIVE_EVENTS

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
    now_ts = pd.Timestamp(now or dt.datetime.now(dt.UTC))
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
    info, n_catalog = _item_info(df, items, opts, set(item_first.index))
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
    posts["creator_id"], profiles, creator_map = _creators(posts, opts, user_ids, names)
    clash = (set(profiles) | set((creator_map or {}).values())) & set(user_ids.values())
    if clash:
        raise ValueError(
            f"user ids {sorted(clash)[:5]} collide with creator ids that are not user ids "
            f"(synthetic: >= {CREATOR_ID_BASE} or hashed); renumber the users"
        )

    # 4. users --------------------------------------------------------------------------------
    users_df = _users(pairs, posts, opts, users, user_ids, profiles, category_id)

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


def _item_info(
    df: pd.DataFrame,
    items: str | Path | pd.DataFrame | None,
    opts: ImportOptions,
    used: set[str],
) -> tuple[pd.DataFrame, int]:
    """item_key -> category, description[, creator_key][, created] of the used items; and how
    many catalog items had no event (not written: their first interaction is unknown)."""
    item_col = opts.items_item_col or opts.item_col
    wanted = [*opts.text_cols, opts.category_col, opts.creator_col, opts.created_col]
    cols = ["item_key", "category", "description"]
    cols += ["creator_key"] if opts.creator_col else []
    cols += ["created"] if opts.created_col else []
    if items is not None:  # only the mapped columns are read
        table = read_table(items, opts.csv_sep, (item_col,), [item_col, *wanted], "items")
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
    if opts.created_col is not None:
        out["created"] = _times(table[opts.created_col], opts.created_unit).array
    return out[cols], n_catalog


def _creators(
    posts: pd.DataFrame, opts: ImportOptions, user_ids: dict[str, int], names: list[str]
) -> tuple[pd.Series, dict[int, tuple[str, str, list[int]]], dict[str, int] | None]:
    """Each post's creator_id (nullable Int64: null = unknown), the synthetic creators'
    profiles (user_id -> headline, about, onboarding categories) and, for creator_ids
    "separate", the creator_col value -> creator_id map.

    A creator_col value is a user id (creator_ids "users") or ``hash_id("creator", value)``
    ("separate": never the id of a user of the log); a post without one gets the creator of
    ``opts.creator``: one synthetic creator per category (``CREATOR_ID_BASE + category_id``),
    one for the source (``CREATOR_ID_BASE``), one per item (``hash_id("item-creator", item)``)
    or none."""
    src = opts.source
    keys = posts["creator_key"] if "creator_key" in posts else [None] * len(posts)
    separate = None
    if opts.creator_ids == "separate":
        separate = {k: hash_id("creator", k) for k in sorted({k for k in keys if k})}
    ids: list[int | None] = []
    profiles: dict[int, tuple[str, str, list[int]]] = {}
    for key, item, cat in zip(keys, posts["item_key"], posts["category_id"], strict=True):
        cat = int(cat)
        if isinstance(key, str):  # python ints: no float round trip for large ids
            ids.append(separate[key] if separate is not None else user_ids[key])
            continue
        if opts.creator == "none":
            ids.append(None)
            continue
        if opts.creator == "category":
            uid, name = CREATOR_ID_BASE + cat, names[cat - 1]
            about = f"Synthetic creator of the imported {src} items in {name}."
            profile = (f"{src}: {name}", about, [cat])
        elif opts.creator == "source":
            uid = CREATOR_ID_BASE
            profile = (src, f"Synthetic creator of every imported {src} item.", [])
        else:  # "item"
            uid = hash_id("item-creator", item)
            about = f"Synthetic creator of the imported {src} item {item}."
            profile = (f"{src}: item {item}", about, [cat])
        ids.append(uid)
        profiles[uid] = profile
    return pd.Series(pd.array(ids, dtype="Int64"), index=posts.index), profiles, separate


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
    profiles: dict[int, tuple[str, str, list[int]]],
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

    # creators: created at their first post (an interacting creator: the earlier of both);
    # posts of unknown creators (null) have no creator user
    first_post = posts.groupby("creator_id", dropna=True)["created_at"].min()
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
        headline, about, cats = profiles.get(uid, ("", "", []))
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
        wanted = [col, opts.headline_col, opts.about_col]
        table = read_table(users, opts.csv_sep, (col,), wanted, "users")
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
