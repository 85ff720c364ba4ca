"""The posts and users of an import: item info, creators (real or synthetic), onboarding
categories and the users table (the entity half of ``import_interactions``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from socialrec.data.importers.options import CREATOR_ID_BASE, ImportOptions
from socialrec.data.importers.reading import (
    _first_value,
    _keys,
    _require,
    _text,
    _times,
    hash_id,
    read_table,
)
from socialrec.settings import NEGATIVE_EVENTS


def item_info(
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


def creators(
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


def users_table(
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
