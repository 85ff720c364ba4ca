"""``POST /posts``: publishing (or editing) a post while the service runs.

The description is embedded with MiniLM, the post with the post tower (a new id is embedded
from its content: category, media type, creator, text). In this order: the post lands in the
landing bucket as a posts upsert file (``posts/dt=<today>/api-...jsonl.gz``, docs/contracts.md;
the source of truth for the next index build); its online features are written to Feast
(``post_features`` with zero engagement counts — an edit keeps the counts the store already
has — and ``post_content``, through ``FeatureStore.write_to_online_store``,
:func:`socialrec.features.store.write_online_post`), so the ranking stage of ``/recommend``
knows it; it is upserted into both Milvus collections (found by ``/similar``, ``/search`` and
retrieval at once); it is added to the service's catalog view (:class:`LiveCatalog`: filtering
knows its creator, cold start its freshness). ``POST /posts/delete`` undoes that
(:meth:`PostPublisher.delete`).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import numpy as np

from socialrec import timeutil
from socialrec.data.landing import landing_key
from socialrec.serving.errors import ApiError, Guarded
from socialrec.serving.metrics import ServiceMetrics, Stages
from socialrec.serving.schemas import PostResponse

FUTURE_SLACK = dt.timedelta(minutes=5)  # clock skew tolerated on a post's created_at


class LiveCatalog:
    """The service's catalog view: the loaded ``Catalog`` plus the posts published since.

    Shared by the recommender and the endpoints; :meth:`add` swaps in a new view
    (``Catalog.with_post``: no re-sort), everything else reads the current one.

    Several workers (or replicas) each hold their own view, and ``POST /posts`` reaches one of
    them. :meth:`adopt` (called by the recommender with its merged candidates, given ``index``)
    closes the gap: candidates the view does not know and that are not tombstoned are looked up
    in the index (one batched ``PostIndex.fetch``; the index has every published post at once)
    and added, so a post published through another worker is filtered and ranked like any
    other. Ids the index does not have either are remembered (up to ``MISSING_CAP``) and not
    asked for again. An index outage adopts nothing (the unknown candidates are then dropped
    as unknown, the feed fails open)."""

    MISSING_CAP = 100_000

    def __init__(
        self,
        catalog: Any,
        index: Any = None,
        alias: str | None = None,
        outage: tuple[type[BaseException], ...] = (),
    ):
        self.current = catalog
        self.index, self.alias, self.outage = index, alias, outage
        self._lock = threading.Lock()
        self._missing: set[int] = set()

    def add(self, post_id: int, category_id: int, creator_id: int, created: int) -> None:
        with self._lock:
            self.current = self.current.with_post(post_id, category_id, creator_id, created)
            self._missing.discard(int(post_id))

    def remove(self, post_id: int) -> None:
        """Take a deleted post out of this view (``Catalog.without_post``): no candidate
        source of this worker returns it (filtering drops what the catalog lacks) and
        :meth:`adopt` never brings it back (its id is in ``deleted``)."""
        with self._lock:
            self.current = self.current.without_post(post_id)

    def adopt(self, post_ids) -> int:
        """Add the posts among ``post_ids`` that this view does not know but the index has;
        returns how many were added."""
        if self.index is None or self.alias is None:
            return 0
        ids = np.asarray(post_ids, dtype=np.int64)
        current = self.current
        unknown = ids[current.posts.index.get_indexer(ids) < 0]
        unknown = [
            p for p in unknown.tolist() if p not in current.deleted and p not in self._missing
        ]
        if not unknown:
            return 0
        try:
            rows = self.index.fetch(self.alias, unknown)
        except self.outage:
            return 0
        found = {int(r["post_id"]) for r in rows}
        with self._lock:
            if len(self._missing) < self.MISSING_CAP:
                self._missing.update(p for p in unknown if p not in found)
            view = self.current
            for r in rows:
                view = view.with_post(
                    r["post_id"], r["category_id"], r["creator_id"], r["created_at"]
                )
            self.current = view
        return len(rows)

    def __getattr__(self, name: str):
        return getattr(self.current, name)

    def __len__(self) -> int:
        return len(self.current)


class OnlinePostWriter:
    """Writes a post's online features into a Feast store
    (:func:`socialrec.features.store.write_online_post`); one write at a time (the SQLite online
    store shares one connection between threads)."""

    def __init__(self, store: Any):
        self.store = store
        self._lock = threading.Lock()

    def write(self, post: dict, counts: dict | None = None, at: dt.datetime | None = None):
        from socialrec.features.online import write_online_post

        with self._lock:
            return write_online_post(self.store, post, counts=counts, at=at)


class PostPublisher:
    """What ``POST /posts`` does (module docstring), over guarded parts: ``bucket`` (the
    landing bucket), ``features`` (online features: an edit keeps the post's counts),
    ``post_writer`` (anything with ``write(post, counts=None, at=None)``; None: no online
    features written), ``post_cache`` (a ``CachedPostFeatures`` to invalidate, or None),
    ``index`` (a ``PostIndex``) and ``catalog`` (a :class:`LiveCatalog`)."""

    def __init__(
        self,
        *,
        settings,
        text_encoder,
        two_tower,
        bucket,
        features,
        index,
        catalog: LiveCatalog | None,
        metrics: ServiceMetrics,
        post_writer=None,
        post_cache=None,
    ):
        self.settings = settings
        self.text_encoder = text_encoder
        self.two_tower = two_tower
        self.bucket = bucket
        self.features = features
        self.index = index
        self.catalog = catalog
        self.metrics = metrics
        self.post_writer = post_writer
        self.post_cache = post_cache

    def publish(
        self,
        post_id: int,
        creator_id: int,
        category_id: int,
        media_type: str,
        description: str,
        created_at: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> PostResponse:
        import pandas as pd

        from socialrec.data.landing import encode_jsonl

        s = self.settings
        now = now or timeutil.utc_now()
        created = timeutil.utc(created_at) if created_at is not None else now
        if created > now + FUTURE_SLACK:
            raise ApiError(
                422, "invalid_post", f"created_at {created.isoformat()} is in the future"
            )
        stages = Stages()
        text_vector = self.text_encoder.encode([description])[0]
        frame = pd.DataFrame(
            {
                "post_id": [post_id],
                "category_id": [category_id],
                "media_type": [media_type],
                "creator_id": [creator_id],
                "description_embedding": [text_vector],
                "age_hours": [0.0],  # a new post: the youngest age bucket
            }
        )
        post_vector = self.two_tower.post_embeddings(frame)[0]
        # every read before the first write: a failure from here on is a write that failed
        counts = self._known_counts(post_id)
        stages.done("embed")

        # the landing file first: it is what the next index build (and the warehouse) reads.
        # If a later write fails (503), the post is still published by the next build, and a
        # retry of the same request writes the same version again (an upsert): nothing is lost
        # and nothing is doubled.
        name = f"api-{now:%Y%m%dT%H%M%S%f}-{post_id}-{uuid.uuid4().hex[:8]}.jsonl.gz"
        key = landing_key("posts", now.date(), name)
        row = {
            "post_id": post_id,
            "creator_id": creator_id,
            "category_id": category_id,
            "media_type": media_type,
            "description": description,
            "created_at": timeutil.iso(created),
            "updated_at": timeutil.iso(now),
        }
        self.bucket.write_bytes(key, encode_jsonl([row]))
        stages.done("landing")

        # its online features before the index: once retrieval can return it, ranking knows it
        online = self._write_online_features(
            post_id, creator_id, category_id, media_type, created, text_vector, now, counts
        )
        stages.done("features")
        if self.post_cache is not None:
            self.post_cache.invalidate([post_id])  # the next ranking reads the new row

        collections = self.index.upsert_post(
            post_id,
            category_id,
            creator_id,
            int(created.timestamp()),
            post_vector,
            text_vector,
            alias=s.collection_alias,
            text_alias=s.text_collection_alias,
        )
        stages.done("index")
        self.catalog.add(post_id, category_id, creator_id, int(created.timestamp()))
        self.metrics.observe_stages("/posts", stages.seconds)
        return PostResponse(
            post_id=post_id, collections=collections, landing_key=key, online_features=online
        )

    def delete(self, post_id: int) -> tuple[str, list[str]]:
        """``POST /posts/delete``: the tombstone lands first (durable: the ``deletion_job``
        applies it to the warehouse, features and online store), then the post leaves every
        version of both Milvus collections (retrieval, ``/similar``, ``/search``; no rollback
        brings it back) and this worker's catalog view (:meth:`LiveCatalog.remove`). Another
        worker's view drops it at its next catalog (the index no longer has it to adopt).
        Returns (landing key, collections)."""
        from socialrec.data.deletion import write_tombstones
        from socialrec.stores import deletion

        key = write_tombstones(self.bucket, "post", [post_id])
        # the index is a Guarded proxy; delete_posts reaches its client: guard the call too
        collections = Guarded(deletion, "milvus").delete_posts(self.index, [post_id])
        if self.catalog is not None:
            self.catalog.remove(post_id)
        return key, sorted(collections)

    def _write_online_features(
        self,
        post_id: int,
        creator_id: int,
        category_id: int,
        media_type: str,
        created: dt.datetime,
        text_vector: np.ndarray,
        now: dt.datetime,
        counts: dict | None,
    ) -> bool:
        """``post_features`` (``counts``: zero engagement counts for a new post, None; an edit
        keeps the counts the online store has) and ``post_content`` of the post; False without
        a writer."""
        if self.post_writer is None:
            return False
        post = {
            "post_id": post_id,
            "creator_id": creator_id,
            "category_id": category_id,
            "media_type": media_type,
            "created_at": created,
            "description_embedding": text_vector,
        }
        self.post_writer.write(post, counts=counts, at=now)
        return True

    def _known_counts(self, post_id: int) -> dict | None:
        """The engagement counts the online store has for ``post_id`` (an edit keeps them);
        None for a new post or without a writer."""
        if self.post_writer is None:
            return None
        from socialrec.features.online import POST_COUNT_COLUMNS

        known = self.features.posts([post_id])
        if not len(known) or not bool(known["found"].iloc[0]):
            return None
        current = known.iloc[0]
        return {c: current[c] for c in POST_COUNT_COLUMNS if c in known.columns}
