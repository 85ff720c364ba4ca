"""The parts the recommender composes, as it sees them (protocols), and the online feature
readers: :class:`FeastFeatures` (one Feast call per batch) and :class:`CachedPostFeatures` (a
bounded, time-limited cache of the post rows in front of another reader)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd


class OnlineFeatures(Protocol):
    def users(self, user_ids: Sequence[int]) -> pd.DataFrame: ...

    def posts(self, post_ids: Sequence[int]) -> pd.DataFrame: ...


class FeastFeatures:
    """Online features from a Feast store (``socialrec.features.store``), one call per batch."""

    def __init__(self, store: Any):
        self.store = store

    def users(self, user_ids: Sequence[int]) -> pd.DataFrame:
        from socialrec.features.online import online_user_features

        return online_user_features(self.store, user_ids)

    def posts(self, post_ids: Sequence[int]) -> pd.DataFrame:
        from socialrec.features.online import online_post_features

        return online_post_features(self.store, post_ids)


class CachedPostFeatures:
    """Online features with a bounded, time-limited cache of the POST rows in front.

    Post features change when the feature store is materialized (daily histories) or a post is
    published (``invalidate``), not per request; the Feast SQLite online store reads ~0.13 ms
    per post, so the ranking stage's one batched fetch grows with K. Cached rows are served
    for ``ttl_seconds``; the misses of a request are still fetched in ONE batched call. At most
    ``max_posts`` rows are kept (least recently used dropped). Users are never cached (their
    rows change with every event).
    """

    def __init__(
        self,
        inner: OnlineFeatures,
        max_posts: int = 50_000,
        ttl_seconds: float = 60,
        observer: Callable[[int, int], Any] | None = None,
    ):
        self.inner = inner
        self.observer = observer  # observer(hits, misses) after each lookup (e.g. metrics)
        self.max_posts = max_posts
        self.ttl_seconds = ttl_seconds
        self._rows: OrderedDict[int, tuple[float, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self._dtypes: dict = {}
        self.hits = self.misses = 0

    def users(self, user_ids: Sequence[int]) -> pd.DataFrame:
        return self.inner.users(user_ids)

    def invalidate(self, post_ids: Iterable[int] | None = None) -> None:
        with self._lock:
            if post_ids is None:
                self._rows.clear()
            for p in post_ids or ():
                self._rows.pop(int(p), None)

    def posts(self, post_ids: Sequence[int]) -> pd.DataFrame:
        ids = list(dict.fromkeys(int(p) for p in post_ids))
        now = time.monotonic()
        rows: dict[int, dict] = {}
        with self._lock:
            for p in ids:
                hit = self._rows.get(p)
                if hit is not None and now - hit[0] < self.ttl_seconds:
                    rows[p] = hit[1]
                    self._rows.move_to_end(p)
        missing = [p for p in ids if p not in rows]
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        if self.observer is not None:
            self.observer(len(ids) - len(missing), len(missing))
        fetched = None
        if missing:
            fetched = self.inner.posts(missing)
            new = {
                int(p): row
                for p, row in zip(fetched.index, fetched.to_dict("records"), strict=True)
            }
            rows.update(new)
            with self._lock:
                for p, row in new.items():
                    self._rows[p] = (now, row)
                    self._rows.move_to_end(p)
                while len(self._rows) > self.max_posts:
                    self._rows.popitem(last=False)
        if fetched is not None and len(missing) == len(ids):
            return fetched.loc[ids]
        if fetched is not None:
            self._dtypes = fetched.dtypes.to_dict()
        out = pd.DataFrame.from_records([rows[p] for p in ids], index=pd.Index(ids, name="post_id"))
        # the online reader's dtypes (nullable ints, ...), also when every row was a hit
        return out.astype(self._dtypes, errors="ignore") if self._dtypes else out


class UserEncoder(Protocol):
    def user_embeddings(self, users_df: pd.DataFrame) -> np.ndarray: ...


class Searcher(Protocol):
    def search(
        self, alias: str, vectors: np.ndarray, top_n: int, category_ids: Sequence[int] | None
    ) -> list[list[tuple[int, float]]]: ...


class Scorer(Protocol):
    def predict(self, features_df: pd.DataFrame) -> np.ndarray: ...


FeatureBuilder = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, Any], pd.DataFrame]
