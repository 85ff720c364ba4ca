"""The post index: post-tower embeddings and MiniLM description embeddings in Milvus.

Two kinds of collections, with the same fields (``post_id`` pk, ``category_id``,
``creator_id``, ``created_at``, ``embedding``; HNSW, inner product):

* ``posts_<version>`` behind ``settings.collection_alias``: post-tower vectors of the two-tower
  model (L2-normalised, so the inner product is the cosine). Retrieval and ``/similar``.
* ``post_texts_<version>`` behind ``settings.text_collection_alias``: MiniLM description
  vectors (384-d, L2-normalised: inner product == cosine). ``/search``.

One collection per model/data version behind an alias: a new version is written and loaded
while the old one keeps serving, then the alias is swapped (no downtime); the previous
collection of the same kind is kept, so a rollback is one ``swap_alias`` back.

Following the alias (a long-running reader such as the service): reads (``search``,
``similar``, ``fetch``, ``vectors``) name the ALIAS, which Milvus resolves at query time, so a
swap made by any client is seen by the very next query (measured with Milvus Lite 3.2 in
``tests/test_index.py``: no reload, no restart). Every reader also re-reads the alias target
at most every ``alias_check_seconds`` (and at once after a failed read), loading a new target
if needed. Writes (``upsert``; deletes: ``socialrec.stores.deletion``) resolve the
collections afresh, so pymilvus' per-name schema cache never applies an old version's schema.

Embedded default, Milvus Lite (``uri`` is a local path such as ``.../milvus/posts.db``): one
process per path, see ``socialrec.stores.milvus``; writers (the ``post_index`` asset) must
``close()`` when done, the BentoML service is the one long-lived process holding the path.

A server (``uri`` is ``http(s)://host:port``: a Milvus cluster in production, or the local
standalone server of ``socialrec.stores.milvus_server``): any number of processes may read
while a writer builds the next version; the alias swap of the writer is seen by every reader
at query time. A version is written rows first, then flushed, indexed once over the sealed
segments and loaded; the scalar index on ``category_id`` is INVERTED where the server
supports it (>= 2.4, and Lite) and STL_SORT on a 2.3 server (the local one rejects INVERTED).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from socialrec.stores.milvus import (
    collection_rows,
    collection_schema,
    index_params,
    insert_rows,
    is_lite_uri,
    lite_acquire,
    lite_release,
    wait_indexed,
)
from socialrec.stores.vector_search import category_filter, normalized, validated_ints

log = logging.getLogger(__name__)

COLLECTION_PREFIX = "posts_"  # post-tower vectors (settings.collection_alias)
TEXT_COLLECTION_PREFIX = "post_texts_"  # MiniLM description vectors (text_collection_alias)
PREFIXES = (COLLECTION_PREFIX, TEXT_COLLECTION_PREFIX)
KEEP_COLLECTIONS = 2  # per kind: the live one and the previous one (rollback)
ALIAS_CHECK_SECONDS = 5.0  # how stale a reader's view of an alias target may be
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_META_FIELDS = ["post_id", "category_id", "creator_id", "created_at"]


def _kind(name: str) -> str | None:
    """The collection prefix (kind) of a collection name, None for a foreign collection."""
    return next((p for p in PREFIXES if name.startswith(p)), None)


class PostIndex:
    """The post collections of one Milvus deployment (Lite path or server uri)."""

    def __init__(
        self,
        uri: str,
        token: str | None = None,
        alias_check_seconds: float = ALIAS_CHECK_SECONDS,
    ):
        from pymilvus import MilvusClient

        self.uri = str(uri)
        self.is_lite = is_lite_uri(self.uri)
        self.alias_check_seconds = float(alias_check_seconds)
        if self.is_lite:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(uri=self.uri, token=token or "")
        if self.is_lite:
            lite_acquire(self.uri)
        self._closed = False
        # "milvus_lite-3.2.2", "v2.3.5-lite" (the local server), "v2.4.13": picks the scalar
        # index (socialrec.stores.milvus.scalar_index_type)
        self.server_version = str(self.client.get_server_version())
        self._loaded: set[str] = set()
        # alias -> (target collection, monotonic time of the check)
        self._targets: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    # --- writing --------------------------------------------------------------------------
    @staticmethod
    def collection_name(version: str | int, prefix: str = COLLECTION_PREFIX) -> str:
        if prefix not in PREFIXES:
            raise ValueError(f"unknown collection kind {prefix!r}")
        name = f"{prefix}{version}"
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid index version {version!r}")
        return name

    def write_version(
        self,
        version: str | int,
        post_ids: Sequence[int],
        category_ids: Sequence[int],
        creator_ids: Sequence[int],
        created_at: Sequence[int],
        embeddings: np.ndarray,
        prefix: str = COLLECTION_PREFIX,
    ) -> str:
        """Write a new collection ``<prefix><version>`` (replacing one of that name), load it.

        ``prefix``: COLLECTION_PREFIX (post-tower vectors) or TEXT_COLLECTION_PREFIX (MiniLM
        vectors). ``created_at`` is epoch seconds. Returns the collection name; the alias is
        not touched.
        """
        name = self.collection_name(version, prefix)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        columns = [np.asarray(c, dtype=np.int64) for c in (post_ids, category_ids, creator_ids)]
        columns += [np.asarray(created_at, dtype=np.int64), embeddings]
        collection_rows(*(c[:0] for c in columns))  # shapes and lengths checked before any write
        if any(len(c) != len(embeddings) for c in columns):
            raise ValueError("post_ids, category_ids, creator_ids, created_at differ in length")
        dim = int(embeddings.shape[1])
        if self.client.has_collection(name):
            if self._aliases_of(name):
                raise ValueError(f"collection {name} is live behind an alias; use a new version")
            self.client.drop_collection(name)
        params = index_params(self.client, self.server_version)
        if self.is_lite:
            # Lite: indexed and loaded at creation, rows searchable as they arrive
            self.client.create_collection(name, schema=collection_schema(dim), index_params=params)
            insert_rows(self.client, name, columns)
        else:
            # a server: bulk path, rows first, then one index build over the sealed segments,
            # then load (the collection is served from indexed segments from the start)
            self.client.create_collection(name, schema=collection_schema(dim))
            insert_rows(self.client, name, columns)
            self.client.flush(name)
            self.client.create_index(name, params)
            wait_indexed(self.client, name)
        self.client.load_collection(name)
        self._loaded.add(name)
        log.info("wrote %d posts into %s", len(embeddings), name)
        return name

    def write_text_version(
        self,
        version: str | int,
        post_ids: Sequence[int],
        category_ids: Sequence[int],
        creator_ids: Sequence[int],
        created_at: Sequence[int],
        text_embeddings: np.ndarray,
    ) -> str:
        """``write_version`` of a ``post_texts_<version>`` collection (MiniLM description
        vectors, re-normalised so that the inner product is the cosine)."""
        return self.write_version(
            version,
            post_ids,
            category_ids,
            creator_ids,
            created_at,
            normalized(text_embeddings),
            prefix=TEXT_COLLECTION_PREFIX,
        )

    def upsert(
        self, alias: str, post_ids, category_ids, creator_ids, created_at, embeddings
    ) -> int:
        """Insert or replace posts in the collection behind ``alias`` (the write path).

        The alias is resolved afresh and the rows go to that concrete collection; visible to
        every reader of the alias at once (Milvus Lite), or within the collection's
        consistency bound (server)."""
        rows = collection_rows(post_ids, category_ids, creator_ids, created_at, embeddings)
        if rows:
            target = self.follow(alias, force=True)
            self.client.upsert(target, rows)
        return len(rows)

    def upsert_post(
        self,
        post_id: int,
        category_id: int,
        creator_id: int,
        created_at: int,
        post_vector: np.ndarray,
        text_vector: np.ndarray,
        alias: str = "posts",
        text_alias: str = "post_texts",
    ) -> dict[str, str]:
        """One new (or edited) post into both kinds of collection: its post-tower vector
        behind ``alias`` and its MiniLM vector behind ``text_alias``. Returns
        ``{alias: collection written}``."""
        meta = ([int(post_id)], [int(category_id)], [int(creator_id)], [int(created_at)])
        self.upsert(alias, *meta, np.atleast_2d(np.asarray(post_vector, np.float32)))
        self.upsert(text_alias, *meta, normalized(text_vector))
        return {alias: self.follow(alias), text_alias: self.follow(text_alias)}

    # --- aliases --------------------------------------------------------------------------
    def _aliases_of(self, collection: str) -> list[str]:
        return list(self.client.list_aliases(collection_name=collection).get("aliases", []))

    def alias_target(self, alias: str) -> str | None:
        """The collection an alias points to (None if the alias does not exist)."""
        if alias not in self.client.list_aliases().get("aliases", []):
            return None
        return self.client.describe_alias(alias).get("collection_name")

    def swap_alias(self, alias: str, collection: str) -> str | None:
        """Point ``alias`` at ``collection``; returns the previous target (kept for rollback).

        Collections of the same kind (``posts_*`` or ``post_texts_*``) other than the new and
        the previous target, and not behind any other alias, are dropped (at most
        KEEP_COLLECTIONS of a kind stay). A rollback is ``swap_alias(alias, previous)``.
        """
        if not self.client.has_collection(collection):
            raise ValueError(f"no collection {collection}")
        previous = self.alias_target(alias)
        if previous is None:
            self.client.create_alias(collection, alias)
        elif previous != collection:
            self.client.alter_alias(collection, alias)
        with self._lock:
            self._targets[alias] = (collection, time.monotonic())
        kind = _kind(collection)
        keep = {collection, previous}
        for name in self.client.list_collections():
            if kind and name.startswith(kind) and name not in keep:
                if not self._aliases_of(name):
                    self.client.drop_collection(name)
                    self._loaded.discard(name)
                    log.info("dropped old index collection %s", name)
        return previous

    def list_versions(self, prefix: str = COLLECTION_PREFIX) -> list[str]:
        """The collections of one kind (``posts_*`` by default)."""
        return sorted(n for n in self.client.list_collections() if n.startswith(prefix))

    def follow(self, alias: str, force: bool = False) -> str:
        """The collection ``alias`` points to, as this reader knows it.

        Re-read from Milvus when the last check is older than ``alias_check_seconds`` (or
        ``force``); a new target is loaded if needed and logged. A name that is no alias is
        taken as a collection name."""
        now = time.monotonic()
        with self._lock:
            known = self._targets.get(alias)
        if known and not force and now - known[1] < self.alias_check_seconds:
            return known[0]
        target = self.alias_target(alias) or alias
        if target not in self._loaded:
            self.client.load_collection(target)
            self._loaded.add(target)
        with self._lock:
            if known and known[0] != target:
                log.info("alias %s now points to %s (was %s)", alias, target, known[0])
            self._targets[alias] = (target, now)
        return target

    def ping(self, alias: str) -> str:
        """A cheap query through ``alias`` (readiness): its current target; raises when the
        alias or its collection does not answer."""
        target = self.follow(alias, force=True)
        self.client.query(alias, filter="post_id >= 0", limit=1, output_fields=["post_id"])
        return target

    # --- reading --------------------------------------------------------------------------
    def _read(self, alias: str, call):
        """``call()`` after the alias check; once more after a fresh check if it fails (e.g.
        the target changed to a collection this reader has not loaded)."""
        self.follow(alias)
        try:
            return call()
        except Exception:
            self.follow(alias, force=True)
            return call()

    def _search(self, alias, queries, top_n, expr, output_fields):
        return self._read(
            alias,
            lambda: self.client.search(
                alias,
                data=queries.tolist(),
                limit=top_n,
                filter=expr,
                output_fields=output_fields,
                search_params={"metric_type": "IP", "params": {"ef": max(64, top_n)}},
            ),
        )

    def search(
        self,
        alias: str,
        vectors: np.ndarray,
        top_n: int,
        category_ids: Sequence[int] | None = None,
    ) -> list[list[tuple[int, float]]]:
        """Top-``top_n`` (post_id, inner product) per query vector, best first.

        ``category_ids`` restricts the hits to those categories (validated ints only, else
        ValueError); an empty list yields no hits; None means no restriction.
        """
        expr = category_filter(category_ids)
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        top_n = int(top_n)
        if top_n <= 0 or len(queries) == 0 or (category_ids is not None and expr.endswith("[]")):
            return [[] for _ in range(len(queries))]
        res = self._search(alias, queries, top_n, expr, ["post_id"])
        return [[(int(h["post_id"]), float(h["distance"])) for h in hits] for hits in res]

    def search_hits(
        self,
        alias: str,
        vector: np.ndarray,
        top_n: int,
        exclude_post_id: int | None = None,
    ) -> list[dict]:
        """Top-``top_n`` hits of one query vector with their metadata, best first: dicts
        ``post_id, score, category_id, creator_id, created_at``; ``exclude_post_id`` is left
        out (by a filter, so ``top_n`` hits still come back when they exist)."""
        top_n = int(top_n)
        if top_n <= 0:
            return []
        expr = ""
        if exclude_post_id is not None:
            expr = f"post_id != {validated_ints([exclude_post_id], 'post_id')[0]}"
        queries = np.atleast_2d(np.asarray(vector, dtype=np.float32))[:1]
        res = self._search(alias, queries, top_n, expr, _META_FIELDS)
        out = []
        for h in res[0]:
            entity = h.get("entity") or h
            out.append(
                {
                    "post_id": int(entity["post_id"]),
                    "score": float(h["distance"]),
                    **{f: int(entity[f]) for f in _META_FIELDS[1:]},
                }
            )
        return out

    def vectors(self, alias: str, post_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of the posts among ``post_ids`` that are in the collection."""
        ids = validated_ints(list(post_ids), "post_ids")
        if not ids:
            return {}
        rows = self._read(
            alias, lambda: self.client.get(alias, ids=ids, output_fields=["post_id", "embedding"])
        )
        return {int(r["post_id"]): np.asarray(r["embedding"], dtype=np.float32) for r in rows}

    def similar(self, alias: str, post_id: int, k: int) -> list[dict] | None:
        """The ``k`` nearest posts of ``post_id`` in the collection behind ``alias`` (its own
        stored vector as the query, itself excluded), best first, as :meth:`search_hits`
        dicts; None if the post is not in the collection."""
        pid = validated_ints([post_id], "post_id")[0]
        vec = self.vectors(alias, [pid]).get(pid)
        if vec is None:
            return None
        return self.search_hits(alias, vec, k, exclude_post_id=pid)

    def fetch(self, alias: str, post_ids: Sequence[int]) -> list[dict]:
        """The stored metadata (no vectors) of some posts."""
        ids = validated_ints(list(post_ids), "post_ids")
        if not ids:
            return []
        return self._read(
            alias, lambda: self.client.get(alias, ids=ids, output_fields=_META_FIELDS)
        )

    # --- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the client; for Milvus Lite also release the path for other processes once
        the last PostIndex of this process on it is closed."""
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        finally:
            if self.is_lite:
                lite_release(self.uri)

    def __enter__(self) -> PostIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
