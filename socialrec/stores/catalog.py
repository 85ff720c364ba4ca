"""The post catalog: metadata of every post, and the cold-start lists.

Built from a ``dim_posts``-shaped frame (post_id, creator_id, category_id, created_at,
n_impressions, n_positives, n_negatives ...; a null creator_id, an unknown creator, becomes
``UNKNOWN_CREATOR_ID``). It serves:

* metadata lookups (category, creator, created_at) for filtering and re-ranking;
* cold start: popular posts (engagement, smoothed) interleaved with fresh posts (newest
  first), per category or overall, excluding what the user has already seen.

Saved as ``posts.parquet`` + ``meta.json`` in a directory (the BentoML model
``socialrec_catalog`` is such a directory).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from socialrec.data.eventlog import EventLog
from socialrec.settings import UNKNOWN_CREATOR_ID
from socialrec.stores.seen.base import PostSet, as_post_set, contains_many
from socialrec.timeutil import DAY_SECONDS, epoch_seconds, to_seconds

COLUMNS = [
    "post_id",
    "category_id",
    "creator_id",
    "created_at",
    "popularity",
    "n_positives",
    "trending",
    "dwell_ms",
]
# the ranked lists the candidate sources read (socialrec.recommender.sources.CatalogSource): list -> the
# column it is sorted by (descending; ties: lower post id)
LISTS = {"popular": "n_positives", "trending": "trending", "fresh": "created_at"}


def creator_id_array(values) -> np.ndarray:
    """Creator ids as int64, an unknown (null) creator as ``UNKNOWN_CREATOR_ID``."""
    ids = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return ids.astype("Int64").fillna(UNKNOWN_CREATOR_ID).to_numpy(dtype=np.int64)


def popularity_score(frame: pd.DataFrame) -> np.ndarray:
    """Engagement a post earned: positives minus negatives, shrunk towards zero for posts with
    few impressions (a post with 3 likes in 3 impressions should not beat 300 in 1,000)."""
    pos = frame.get("n_positives", pd.Series(0, index=frame.index)).fillna(0).to_numpy(float)
    neg = frame.get("n_negatives", pd.Series(0, index=frame.index)).fillna(0).to_numpy(float)
    imp = frame.get("n_impressions", pd.Series(0, index=frame.index)).fillna(0).to_numpy(float)
    rate = (pos - neg) / (imp + 20.0)  # smoothed net positive rate
    return rate * np.log1p(np.maximum(pos, 0))


def live_posts(dim_posts: pd.DataFrame) -> pd.DataFrame:
    """The posts that may be shown: ``dim_posts`` minus tombstoned (``is_deleted``) posts."""
    if "is_deleted" not in dim_posts.columns:
        return dim_posts
    return dim_posts[~dim_posts["is_deleted"].fillna(False).astype(bool)]


@dataclass
class Catalog:
    posts: pd.DataFrame  # COLUMNS (re-indexed by post_id on init)
    fresh_share: float = 0.3
    # posts tombstoned (``is_deleted``) when the catalog was built: never adopted again from an
    # index that was built before they were deleted (socialrec.serving.posts.LiveCatalog.adopt)
    deleted: frozenset[int] = field(default_factory=frozenset)

    # --- building ------------------------------------------------------------------------
    @classmethod
    def from_dim_posts(cls, dim_posts: pd.DataFrame, fresh_share: float = 0.3) -> Catalog:
        """The catalog of the live posts of ``dim_posts`` (deleted posts are left out, their ids
        kept in ``deleted``)."""
        live = live_posts(dim_posts)
        deleted = frozenset(
            int(p) for p in dim_posts["post_id"][~dim_posts.index.isin(live.index)].tolist()
        )
        dim_posts = live
        frame = pd.DataFrame(
            {
                "post_id": dim_posts["post_id"].astype("int64").to_numpy(),
                "category_id": dim_posts["category_id"].astype("int64").to_numpy(),
                "creator_id": creator_id_array(dim_posts["creator_id"]),
                "created_at": epoch_seconds(dim_posts["created_at"], fill=0),
                "popularity": popularity_score(dim_posts),
            }
        )
        frame["n_positives"] = (
            pd.to_numeric(dim_posts["n_positives"], errors="coerce").fillna(0).to_numpy(float)
            if "n_positives" in dim_posts.columns
            else 0.0
        )
        frame["trending"] = 0.0
        return cls(frame.drop_duplicates("post_id"), fresh_share, deleted - set(frame["post_id"]))

    @classmethod
    def from_log(
        cls,
        posts: pd.DataFrame,
        log: EventLog,
        as_of,
        trending_days: float = 2.0,
        fresh_share: float = 0.3,
    ) -> Catalog:
        """The catalog of the live posts of ``posts`` (dim_posts-shaped) with every count read
        from the events before ``as_of``: what was known at that instant (the service's catalog
        as of the data's end; an offline replay's as of its start). ``trending`` = positives in
        the ``trending_days`` before ``as_of``."""
        posts = live_posts(posts).drop_duplicates("post_id", keep="last")
        cutoff = to_seconds(as_of)
        past = log.before(cutoff)
        index = pd.Index(posts["post_id"].to_numpy(dtype=np.int64))
        counts = pd.DataFrame(
            {
                "n_positives": past.counts(index, past.positive),
                "n_negatives": past.counts(index, past.negative),
                "n_impressions": past.counts(index, past.is_type("IMPRESSION")),
            }
        )
        recent = past.between(cutoff - trending_days * DAY_SECONDS, cutoff)
        # the mean dwell time of the post's events that carry one (NaN: no dwell logged)
        has_dwell = np.isfinite(past.dwell_ms)
        rows = index.get_indexer(past.post[has_dwell])
        ok = rows >= 0
        dwell_sum = np.bincount(rows[ok], past.dwell_ms[has_dwell][ok], minlength=len(index))
        dwell_n = np.bincount(rows[ok], minlength=len(index))
        frame = pd.DataFrame(
            {
                "post_id": index.to_numpy(),
                "category_id": posts["category_id"].astype("int64").to_numpy(),
                "creator_id": creator_id_array(posts["creator_id"]),
                "created_at": epoch_seconds(posts["created_at"], fill=0),
                "popularity": popularity_score(counts),
                "n_positives": counts["n_positives"].to_numpy(),
                "trending": recent.counts(index, recent.positive),
                "dwell_ms": np.divide(
                    dwell_sum, dwell_n, out=np.full(len(index), np.nan), where=dwell_n > 0
                ),
            }
        )
        return cls(frame, fresh_share)

    def __post_init__(self) -> None:
        p = self.posts.copy()
        for col in ("n_positives", "trending"):
            if col not in p.columns:
                p[col] = 0.0
        if "dwell_ms" not in p.columns:
            p["dwell_ms"] = np.nan
        p = p[COLUMNS]
        p.index = pd.Index(p["post_id"].to_numpy(dtype="int64"))  # unnamed: no column clash
        self.posts = p
        self._popular = p.sort_values(["popularity", "post_id"], ascending=[False, True])
        self._fresh = p.sort_values(["created_at", "post_id"], ascending=[False, True])
        self._orders = {
            name: self._fresh
            if col == "created_at"
            else p.sort_values([col, "post_id"], ascending=[False, True])
            for name, col in LISTS.items()
        }

    def __len__(self) -> int:
        return len(self.posts)

    def with_post(
        self, post_id: int, category_id: int, creator_id: int, created_at: int
    ) -> Catalog:
        """A new catalog with one post added (or replaced: an edit keeps its popularity, a new
        post has 0); this one is left as it is, so a request in flight keeps a consistent view.
        The row is put at its place in both orders instead of re-sorting the catalog."""
        post_id = int(post_id)
        known = post_id in self.posts.index
        counts = {
            c: float(self.posts.at[post_id, c]) if known else 0.0
            for c in ("popularity", "n_positives", "trending")
        }
        counts["dwell_ms"] = float(self.posts.at[post_id, "dwell_ms"]) if known else np.nan
        row = pd.DataFrame(
            {
                "post_id": [post_id],
                "category_id": [int(category_id)],
                "creator_id": [int(creator_id)],
                "created_at": [int(created_at)],
                **{c: [v] for c, v in counts.items()},
            },
            index=pd.Index([post_id]),
        ).astype(self.posts.dtypes.to_dict())

        def insert(frame: pd.DataFrame, key: str) -> pd.DataFrame:
            # frame is sorted by (key descending, post_id ascending)
            frame = frame[frame.index != post_id]
            values, ids = frame[key].to_numpy(), frame.index.to_numpy()
            value = row[key].iloc[0]
            at = int(np.count_nonzero((values > value) | ((values == value) & (ids < post_id))))
            return pd.concat([frame.iloc[:at], row, frame.iloc[at:]])

        out = object.__new__(Catalog)
        out.fresh_share = self.fresh_share
        out.deleted = self.deleted - {post_id}  # a post published again is live
        out.posts = pd.concat([self.posts[self.posts.index != post_id], row])
        out._popular = insert(self._popular, "popularity")
        out._fresh = insert(self._fresh, "created_at")
        out._orders = {
            name: out._fresh if col == "created_at" else insert(self._orders[name], col)
            for name, col in LISTS.items()
        }
        return out

    def without_post(self, post_id: int) -> Catalog:
        """A new catalog without one post (deleted: kept in ``deleted``, so a view never adopts
        it again); this one is left as it is. The orders are filtered, not re-sorted."""
        post_id = int(post_id)
        out = object.__new__(Catalog)
        out.fresh_share = self.fresh_share
        out.deleted = self.deleted | {post_id}
        out.posts = self.posts[self.posts.index != post_id]
        out._popular = self._popular[self._popular.index != post_id]
        out._fresh = self._fresh[self._fresh.index != post_id]
        out._orders = {name: order[order.index != post_id] for name, order in self._orders.items()}
        out._orders["fresh"] = out._fresh
        return out

    # --- persistence -----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.posts[COLUMNS].reset_index(drop=True).to_parquet(d / "posts.parquet", index=False)
        (d / "meta.json").write_text(
            json.dumps({"n_posts": len(self.posts), "fresh_share": self.fresh_share})
        )
        pd.DataFrame({"post_id": sorted(self.deleted)}, dtype="int64").to_parquet(
            d / "deleted.parquet", index=False
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Catalog:
        d = Path(directory)
        meta = json.loads((d / "meta.json").read_text())
        frame = pd.read_parquet(d / "posts.parquet")
        deleted = (
            frozenset(pd.read_parquet(d / "deleted.parquet")["post_id"].tolist())
            if (d / "deleted.parquet").exists()  # catalogs saved before tombstones were kept
            else frozenset()
        )
        return cls(frame, meta.get("fresh_share", 0.3), deleted)

    # --- lookups ---------------------------------------------------------------------------
    def metadata(self, post_ids: Iterable[int]) -> pd.DataFrame:
        """category_id, creator_id, created_at of the known posts among ``post_ids``."""
        ids = np.fromiter((int(p) for p in post_ids), dtype=np.int64)
        at = self.posts.index.get_indexer(ids)
        return self.posts.iloc[np.unique(at[at >= 0])][COLUMNS]  # in the catalog's order

    def creators(self, post_ids: Iterable[int]) -> dict[int, int]:
        meta = self.metadata(post_ids)
        return dict(zip(meta["post_id"].tolist(), meta["creator_id"].tolist(), strict=True))

    def categories(self, post_ids: Iterable[int]) -> dict[int, int]:
        meta = self.metadata(post_ids)
        return dict(zip(meta["post_id"].tolist(), meta["category_id"].tolist(), strict=True))

    def top(
        self,
        name: str,
        n: int,
        categories: Iterable[int] | None = None,
        exclude: PostSet | Iterable[int] = (),
        created_by: int | None = None,
    ) -> list[tuple[int, float]]:
        """The first ``n`` (post_id, score) of a list (``LISTS``), in ``categories`` when given,
        minus ``exclude`` and minus posts created after ``created_by`` (epoch seconds: a replay
        of the past never sees a post before it existed). ``fresh`` scores are minus the age
        in hours at ``created_by`` (higher is newer)."""
        if n <= 0:
            return []
        cats = sorted({int(c) for c in categories}) if categories else []
        ids, values, created = self._list(name, tuple(cats))
        if name == "fresh":
            now = float(created_by) if created_by is not None else float(values.max(initial=0))
            values = -(now - values) / 3600.0
        excluded = as_post_set(exclude)  # tested, never listed: it may be a Bloom filter
        limit = np.inf if created_by is None else float(created_by)
        out: list[tuple[int, float]] = []
        # in chunks a little longer than what is still wanted: a vectorised test of the head of
        # the list, not of the whole catalog
        start = 0
        while len(out) < n and start < len(ids):
            part = slice(start, start + max(64, 2 * (n - len(out))))
            ok = created[part] <= limit
            if len(excluded):
                ok &= ~contains_many(excluded, ids[part])
            out.extend(zip(ids[part][ok].tolist(), values[part][ok].tolist(), strict=True))
            start = part.stop
        return out[:n]

    def _list(self, name: str, categories: tuple[int, ...]):
        """(ids, sort values, created_at) of a list, restricted to categories (cached)."""
        key = (name, categories)
        cache = self.__dict__.setdefault("_list_cache", {})
        hit = cache.get(key)
        if hit is not None:
            return hit
        order = self._orders[name]
        if categories:
            order = order[order["category_id"].isin(categories)]
        hit = (
            order["post_id"].to_numpy(),
            order[LISTS[name]].to_numpy(dtype=np.float64),
            order["created_at"].to_numpy(dtype=np.float64),
        )
        with self.__dict__.setdefault("_list_lock", threading.Lock()):
            cache[key] = hit
            while len(cache) > 4096:  # bounded: the category combinations of many users
                cache.pop(next(iter(cache)))
        return hit

    def cold_start(
        self,
        k: int,
        category_ids: Iterable[int] | None = None,
        exclude: PostSet | Iterable[int] = (),
        exclude_creator: int | None = None,
    ) -> list[tuple[int, float]]:
        """k (post_id, score) for a user without a usable signal; scores strictly decrease.

        Popular and fresh posts are interleaved (``fresh_share`` of the slots are fresh), from
        ``category_ids`` first and from all categories when those run out.
        """
        excluded = as_post_set(exclude)  # tested, never listed: it may be a Bloom filter
        picked: list[int] = []
        cats = [int(c) for c in category_ids] if category_ids else []
        pools = []
        if cats:
            pools.append(
                (
                    self._popular[self._popular["category_id"].isin(cats)],
                    self._fresh[self._fresh["category_id"].isin(cats)],
                )
            )
        pools.append((self._popular, self._fresh))
        for popular, fresh in pools:
            if exclude_creator is not None:
                popular = popular[popular["creator_id"] != exclude_creator]
                fresh = fresh[fresh["creator_id"] != exclude_creator]
            self._interleave(
                popular["post_id"].tolist(), fresh["post_id"].tolist(), k, excluded, picked
            )
            if len(picked) >= k:
                break
        return [(pid, 1.0 / (1.0 + rank)) for rank, pid in enumerate(picked[:k])]

    def _interleave(
        self, popular: list[int], fresh: list[int], k: int, excluded: PostSet, picked: list[int]
    ) -> None:
        taken = set(picked)
        pi = fi = 0
        n_fresh = 0
        while len(picked) < k and (pi < len(popular) or fi < len(fresh)):
            want_fresh = n_fresh < self.fresh_share * (len(picked) + 1)
            if (want_fresh and fi < len(fresh)) or pi >= len(popular):
                pid, fi, is_fresh = fresh[fi], fi + 1, True
            else:
                pid, pi, is_fresh = popular[pi], pi + 1, False
            if pid in taken or pid in excluded:
                continue
            taken.add(pid)
            picked.append(pid)
            n_fresh += is_fresh
