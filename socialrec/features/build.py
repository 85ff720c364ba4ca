"""Building the feature tables from the warehouse (columns: :mod:`socialrec.features.tables`).

* ``user_features`` — onboarding categories and activity counts, a POINT-IN-TIME history: a row
  at the user's creation (zero counts) and one per day with events (cumulative counts up to the
  end of that day, valid from the next midnight; the dbt model ``user_daily_activity``);
* ``user_profile`` — the MiniLM profile embedding, one row valid from the user's creation;
* ``user_history`` — what the user engaged with, the same kind of daily history: positives
  and events per category, positives per creator, the mean embedding of the latest liked posts
  (:func:`build_user_history`);
* ``post_features`` — creator (``UNKNOWN_CREATOR_ID`` = -1 when unknown), category, media type,
  creation time and engagement counts, the same kind of history (``post_daily_activity``),
  with 1- and 7-day trailing windows;
* ``post_content`` — the MiniLM description embedding, valid from the post's creation.

A point-in-time join at time t therefore reads only events of days that ended before t:
training samples never see their own outcome or the future, and the online store
(materialized up to now) serves the latest row of the same definitions. Descriptive attributes
(categories, creator, texts) are the latest version of the entity.

Edits. Feast materializes a view by taking, per entity, the latest row whose timestamp lies in
the window ``[start, end]`` (incremental: from the previous run's end), and Feast's Redis store
(gcp profile) even drops a write whose timestamp is not newer than the stored one. A row
stamped only at ``created_at`` would never carry an edit online. So every entity edited after
its creation (``updated_at > created_at``; dbt's ``dim_posts`` / ``dim_users``: the latest
version's ``updated_at``, which ``POST /posts`` sets at write time; a landing line without one
counts as of its ``created_at``, so as no edit) gets one more row at ``updated_at``
(:func:`_edit_rows`): ``post_content`` / ``user_profile`` with the new embedding,
``post_features`` / ``user_features`` with the new attributes and the counts as of that instant.
The next incremental materialization (local SQLite and gcp Redis alike) picks it, the index
and the ranker read the same values. Rows are rewritten from the warehouse in full each time,
so this costs a row per edited entity and view (``post_features``: plus its window copies) and
no re-materialization of whole views. ``user_history`` is not re-stamped: a post's new
category shows in its users' ``category_counts`` from their next active day.

Point in time: the ``created_at`` row stays, so a training join before the edit still finds
the entity; it carries the latest content too (the warehouse keeps only the latest version's
attributes and text embedding, as before), while every count stays point in time (the edit row
holds the counts of the latest daily row at or before ``updated_at``). What a join may see
early is therefore what the author wrote, never an outcome: no label leaks through an edit.
An edit whose ``updated_at`` is already behind the last materialization (a backdated or late
line) reaches the online store with the next row of that entity, or with a full
materialization (``socialrec.features.store.materialize`` with ``start``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from socialrec.features.tables import (
    HISTORY_RECENT_LIKES,
    HISTORY_RECENT_POSTS,
    HISTORY_TOP_CREATORS,
    POST_SCHEMA,
    POST_WINDOWS_DAYS,
    TIMESTAMP,
    USER_HISTORY_SCHEMA,
    USER_SCHEMA,
    conform,
)
from socialrec.features.text import embedding_matrix
from socialrec.settings import TEXT_EMBEDDING_DIM, UNKNOWN_CREATOR_ID
from socialrec.stores.catalog import creator_id_array
from socialrec.timeutil import epoch_seconds, timestamps


def _categories_str(value) -> str:
    """Onboarding categories as the warehouse stores them: ``"3,7"`` (lists are joined)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    return ",".join(str(int(v)) for v in value)


def _attach_embeddings(ids: np.ndarray, emb: pd.DataFrame | None, id_col: str) -> list[np.ndarray]:
    """The embedding of every id (zero vector when it has none)."""
    matrix = np.zeros((len(ids), TEXT_EMBEDDING_DIM), dtype=np.float32)
    if emb is not None and len(emb):
        lookup = emb.drop_duplicates(id_col, keep="last").set_index(id_col)["embedding"]
        pos = lookup.index.get_indexer(ids)
        have = np.flatnonzero(pos >= 0)
        if len(have):
            matrix[have] = embedding_matrix(lookup.iloc[pos[have]].to_list())
    return list(matrix)


def _edit_rows(dim: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """``(id, event_timestamp = updated_at)`` of every entity edited after its creation
    (``updated_at > created_at``; none when ``dim`` has no ``updated_at``)."""
    if "updated_at" not in dim.columns:
        return pd.DataFrame({id_col: pd.Series(dtype=np.int64), TIMESTAMP: timestamps([])})
    created = timestamps(dim["created_at"])
    updated = timestamps(dim["updated_at"])
    edited = (updated > created).to_numpy()
    return pd.DataFrame(
        {
            id_col: dim[id_col].to_numpy(dtype=np.int64)[edited],
            TIMESTAMP: updated.to_numpy()[edited],
        }
    )


def _dimension_rows(dim: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """``(id, event_timestamp)``: a row at each entity's creation and one at its edit
    (:func:`_edit_rows`), by time then id."""
    created = pd.DataFrame(
        {
            id_col: dim[id_col].to_numpy(dtype=np.int64),
            TIMESTAMP: timestamps(dim["created_at"]).to_numpy(),
        }
    )
    edits = _edit_rows(dim, id_col)  # none (an empty frame) on a first run: concat warns on it
    out = pd.concat([created, edits], ignore_index=True) if len(edits) else created
    return out.sort_values([TIMESTAMP, id_col], kind="stable", ignore_index=True)


def _history(
    base: pd.DataFrame, activity: pd.DataFrame | None, id_col: str, counts: Sequence[str]
) -> pd.DataFrame:
    """Rows at each entity's creation (zero counts) plus its activity rows (``valid_from``,
    cumulative counts); the static columns of ``base`` are repeated on every row. An activity
    row at the very creation instant wins over the zero row."""
    static = base.drop(columns=[*counts, "positive_rate"], errors="ignore")
    zero = static.assign(**{c: 0 for c in counts}, positive_rate=0.0)
    zero[TIMESTAMP] = timestamps(base["created_at"]).to_numpy()
    rows = [zero]
    act = zero.iloc[:0][[id_col, TIMESTAMP, *counts, "positive_rate"]]
    if activity is not None and len(activity):
        act = activity[activity[id_col].isin(base[id_col])]
        act = act[[id_col, "valid_from", *counts, "positive_rate"]].rename(
            columns={"valid_from": TIMESTAMP}
        )
        act[TIMESTAMP] = timestamps(act[TIMESTAMP]).to_numpy()
        rows.append(act.merge(static.drop(columns=[TIMESTAMP], errors="ignore"), on=id_col))
    edits = _edit_rows(base, id_col)
    if len(edits):  # the counts as of the edit: the latest activity row at or before it
        at = pd.merge_asof(
            edits.sort_values(TIMESTAMP),
            act.sort_values(TIMESTAMP),
            on=TIMESTAMP,
            by=id_col,
            direction="backward",
        )
        at = at.fillna({c: 0 for c in [*counts, "positive_rate"]})
        rows.append(at.merge(static, on=id_col))
    out = pd.concat(rows, ignore_index=True)
    out = out.drop_duplicates([id_col, TIMESTAMP], keep="last")
    return out.sort_values([TIMESTAMP, id_col], kind="stable", ignore_index=True)


def build_user_features(
    dim_users: pd.DataFrame, user_daily_activity: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The ``user_features`` history (columns of ``USER_SCHEMA``)."""
    base = pd.DataFrame(
        {
            "user_id": dim_users["user_id"].to_numpy(dtype=np.int64),
            "created_at": dim_users["created_at"].to_numpy(),
            "onboarding_categories": [
                _categories_str(v) for v in dim_users["onboarding_categories"]
            ],
        }
    )
    if "updated_at" in dim_users.columns:  # an edited profile: one more row (_edit_rows)
        base["updated_at"] = dim_users["updated_at"].to_numpy()
    counts = ["n_events", "n_impressions", "n_positives"]
    out = _history(base, user_daily_activity, "user_id", counts)
    return conform(out, USER_SCHEMA)


def build_user_profile(dim_users: pd.DataFrame, user_emb: pd.DataFrame | None) -> pd.DataFrame:
    """The ``user_profile`` table: the profile embedding of each user, valid from its
    creation, and again from its edit (``updated_at``; module docstring)."""
    rows = _dimension_rows(dim_users, "user_id")
    ids = rows["user_id"].to_numpy()
    return rows.assign(profile_embedding=_attach_embeddings(ids, user_emb, "user_id"))


def build_post_features(
    dim_posts: pd.DataFrame, post_daily_activity: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The ``post_features`` history (columns of ``POST_SCHEMA``)."""
    created = timestamps(dim_posts["created_at"])
    base = pd.DataFrame(
        {
            "post_id": dim_posts["post_id"].to_numpy(dtype=np.int64),
            "created_at": created.to_numpy(),
            "creator_id": creator_id_array(dim_posts["creator_id"]),  # null -> -1
            "category_id": dim_posts["category_id"].to_numpy(dtype=np.int64),
            "media_type": dim_posts["media_type"].astype(str).to_numpy(),
            "created_at_ts": epoch_seconds(created),
        }
    )
    if "updated_at" in dim_posts.columns:  # an edited post: one more row (_edit_rows)
        base["updated_at"] = dim_posts["updated_at"].to_numpy()
    counts = ["n_events", "n_impressions", "n_positives"]
    if post_daily_activity is not None and "n_events" not in post_daily_activity.columns:
        post_daily_activity = post_daily_activity.assign(n_events=0)
    out = _history(base, post_daily_activity, "post_id", counts)
    out = _windows(out, "post_id", POST_WINDOWS_DAYS)
    return conform(out, POST_SCHEMA)


def _windows(history: pd.DataFrame, id_col: str, windows_days: Sequence[int]) -> pd.DataFrame:
    """Add trailing-window counts to a cumulative history: ``n_events_Nd`` / ``n_positives_Nd``
    = the cumulative count at the row's time minus the count N days earlier, and
    ``positive_rate_Nd`` = positives / events of the window (0 without events).

    A row's window must also EMPTY when nothing happens: for every row, a copy is added N days
    later (same cumulative counts, so the window counts fall to what happened since), unless
    the entity already has a row at that instant (rows without any events yet are not
    copied). Point-in-time: every value is computed from
    rows at or before its own timestamp."""
    static = [c for c in history.columns if c not in (id_col, TIMESTAMP, "n_events", "n_positives")]
    base = history.sort_values([id_col, TIMESTAMP], kind="stable")
    later = [base]
    active = base[base["n_events"] > 0]  # rows that put events in a window
    for n in windows_days:
        later.append(active.assign(**{TIMESTAMP: active[TIMESTAMP] + pd.Timedelta(days=n)}))
    rows = pd.concat(later, ignore_index=True)
    # a shifted copy carries the counts of its origin; the original rows win on ties
    rows = rows.drop_duplicates([id_col, TIMESTAMP], keep="first")
    rows = rows.sort_values([TIMESTAMP, id_col], kind="stable", ignore_index=True)
    # cumulative counts at each instant: the latest original row at or before it
    cum = base[[id_col, TIMESTAMP, "n_events", "n_positives", *static]].sort_values(TIMESTAMP)
    at = pd.merge_asof(
        rows[[id_col, TIMESTAMP]], cum, on=TIMESTAMP, by=id_col, direction="backward"
    )
    for n in windows_days:
        before = pd.merge_asof(
            rows[[id_col, TIMESTAMP]]
            .assign(_t=rows[TIMESTAMP] - pd.Timedelta(days=n), _k=np.arange(len(rows)))
            .sort_values("_t"),
            cum[[id_col, TIMESTAMP, "n_events", "n_positives"]].rename(columns={TIMESTAMP: "_t"}),
            on="_t",
            by=id_col,
            direction="backward",
        ).sort_values("_k")
        ev = at["n_events"].to_numpy() - before["n_events"].fillna(0).to_numpy()
        po = at["n_positives"].to_numpy() - before["n_positives"].fillna(0).to_numpy()
        at[f"n_events_{n}d"] = ev.astype(np.int64)
        at[f"n_positives_{n}d"] = po.astype(np.int64)
        at[f"positive_rate_{n}d"] = np.divide(
            po, ev, out=np.zeros(len(ev), dtype=np.float64), where=ev > 0
        )
    return at


def _count_string(counts: dict[int, list[int]], top: int | None = None) -> str:
    items = counts.items()
    if top is not None and len(counts) > top:
        items = sorted(items, key=lambda kv: (-kv[1][0], kv[0]))[:top]
    return ",".join(":".join(str(v) for v in (k, *vals)) for k, vals in sorted(items))


def build_user_history(
    interactions: pd.DataFrame,
    dim_posts: pd.DataFrame,
    post_emb: pd.DataFrame | None,
    recent_likes: int = HISTORY_RECENT_LIKES,
    top_creators: int = HISTORY_TOP_CREATORS,
    recent_posts: int = HISTORY_RECENT_POSTS,
) -> pd.DataFrame:
    """The ``user_history`` table (columns of ``USER_HISTORY_SCHEMA``): one row per (user, day
    with events), valid from the next midnight, summarising every event up to that day's end:

    * ``category_counts``: positives and events per category of the posts (the user's category
      affinity and positive rate per category);
    * ``creator_positives``: positives per creator (the ``top_creators`` most liked; posts of
      unknown creators left out);
    * ``history_embedding``: the mean description embedding of the ``recent_likes`` latest
      positively engaged posts (zeros before the first one);
    * ``recent_post_ids`` / ``recent_positive_ids``: the ``recent_posts`` latest distinct posts
      of any event / of the positive events, newest first ("id,id,...").

    ``interactions``: ``fct_interactions`` rows (user_id, post_id, ts, is_positive).
    Like the dbt daily histories, a point-in-time join at t sees only days that ended before t.
    """
    cols = [f.name for f in USER_HISTORY_SCHEMA]
    if interactions is None or interactions.empty:
        return pd.DataFrame(columns=cols)
    posts = dim_posts.drop_duplicates("post_id", keep="last").set_index("post_id")
    ev = interactions[["user_id", "post_id", "ts", "is_positive"]].copy()
    ev = ev[ev["post_id"].isin(posts.index)]
    ev["ts"] = timestamps(ev["ts"]).to_numpy()
    ev["day"] = ev["ts"].dt.floor("D")
    ev["category_id"] = posts["category_id"].reindex(ev["post_id"]).to_numpy(dtype=np.int64)
    ev["creator_id"] = creator_id_array(posts["creator_id"].reindex(ev["post_id"]))
    ev["is_positive"] = ev["is_positive"].fillna(0).astype(np.int64)
    ev = ev.sort_values(["user_id", "ts", "post_id"], kind="stable", ignore_index=True)

    # the liked posts' embeddings in (user, ts) order, and their running sums
    liked = ev[ev["is_positive"] == 1]
    emb = np.asarray(
        _attach_embeddings(liked["post_id"].to_numpy(dtype=np.int64), post_emb, "post_id"),
        dtype=np.float32,
    ).reshape(len(liked), TEXT_EMBEDDING_DIM)
    csum = np.vstack([np.zeros((1, TEXT_EMBEDDING_DIM)), np.cumsum(emb, axis=0, dtype=np.float64)])
    liked_users = liked["user_id"].to_numpy()
    liked_days = liked["day"].to_numpy()
    all_users, all_days = ev["user_id"].to_numpy(), ev["day"].to_numpy()
    all_posts, all_pos = ev["post_id"].to_numpy(dtype=np.int64), ev["is_positive"].to_numpy()

    out_rows: list[tuple] = []
    out_emb: list[np.ndarray] = []
    zero = np.zeros(TEXT_EMBEDDING_DIM, dtype=np.float32)
    daily = ev.groupby(["user_id", "day", "category_id", "creator_id"], sort=True).agg(
        n=("post_id", "size"), pos=("is_positive", "sum")
    )
    # the (user, day) groups of the sorted daily rows, walked in arrays (a pandas groupby per
    # user and per day cost ~8 s of a demo's 14 s): rows [start, end) of each group
    keys = daily.index
    user_code, day_code = keys.codes[0], keys.codes[1]
    starts = np.flatnonzero(
        np.r_[True, (user_code[1:] != user_code[:-1]) | (day_code[1:] != day_code[:-1])]
    )
    ends = np.r_[starts[1:], len(daily)].tolist()
    d_users = keys.get_level_values("user_id")
    d_days = keys.get_level_values("day")
    d_cats = keys.get_level_values("category_id").tolist()
    d_creators = keys.get_level_values("creator_id").tolist()
    d_n, d_pos = daily["n"].tolist(), daily["pos"].tolist()
    current = None
    for start_row, end_row in zip(starts.tolist(), ends, strict=True):
        user_id, day = d_users[start_row], d_days[start_row]
        if user_id != current:  # a new user: its counts start again
            current = user_id
            cats: dict[int, list[int]] = {}
            creators: dict[int, list[int]] = {}
            # this user's liked posts: positions [lo, hi) of the running sums
            lo = np.searchsorted(liked_users, user_id, side="left")
            hi_user = np.searchsorted(liked_users, user_id, side="right")
            a = np.searchsorted(all_users, user_id, side="left")
            b = np.searchsorted(all_users, user_id, side="right")
            user_posts, user_pos = all_posts[a:b], all_pos[a:b].astype(bool)
        for i in range(start_row, end_row):
            cat, creator, n, pos = d_cats[i], d_creators[i], d_n[i], d_pos[i]
            c = cats.setdefault(int(cat), [0, 0])
            c[0] += int(pos)
            c[1] += int(n)
            if pos and creator != UNKNOWN_CREATOR_ID:  # no affinity to "unknown"
                creators.setdefault(int(creator), [0])[0] += int(pos)
        # liked posts up to this day's end
        end = lo + int(np.searchsorted(liked_days[lo:hi_user], day, side="right"))
        start = max(lo, end - recent_likes)
        vec = (
            ((csum[end] - csum[start]) / (end - start)).astype(np.float32) if end > start else zero
        )
        upto = int(np.searchsorted(all_days[a:b], day, side="right"))
        out_rows.append(
            (
                int(user_id),
                day + pd.Timedelta(days=1),
                _count_string(cats),
                _count_string(creators, top_creators),
                _latest_distinct(user_posts[:upto], recent_posts),
                _latest_distinct(user_posts[:upto][user_pos[:upto]], recent_posts),
            )
        )
        out_emb.append(vec)
    out = pd.DataFrame(out_rows, columns=[*cols[:4], *cols[5:]])
    out["history_embedding"] = out_emb
    out = out[cols]
    return out.sort_values([TIMESTAMP, "user_id"], kind="stable", ignore_index=True)


def _latest_distinct(posts: np.ndarray, n: int) -> str:
    """The ``n`` latest distinct ids of a time-ordered array, newest first, as "id,id,..."."""
    out: list[int] = []
    seen: set[int] = set()
    for p in posts[::-1].tolist():
        if p not in seen:
            seen.add(p)
            out.append(p)
            if len(out) == n:
                break
    return ",".join(map(str, out))


def build_post_content(dim_posts: pd.DataFrame, post_emb: pd.DataFrame | None) -> pd.DataFrame:
    """The ``post_content`` table: the description embedding of each post, valid from its
    creation, and again from its edit (``updated_at``; module docstring)."""
    rows = _dimension_rows(dim_posts, "post_id")
    ids = rows["post_id"].to_numpy()
    return rows.assign(description_embedding=_attach_embeddings(ids, post_emb, "post_id"))
