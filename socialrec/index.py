"""The post index: post-tower embeddings plus filterable metadata in Milvus.

One collection per model version (``posts_<version>``) behind an alias
(``settings.collection_alias``): a new version is written and loaded while the old one
keeps serving, then the alias is swapped (no downtime); the previous collection is kept so a
rollback is one ``swap_alias`` back.

Embedded default, Milvus Lite (``uri`` is a local path such as ``.../milvus/posts.db``):

* Milvus Lite runs its gRPC server in a thread of the process that opens the path and holds a
  ``LOCK`` file in it. ONE PROCESS PER PATH: a second process cannot open the path while the
  first one holds it, even after ``MilvusClient.close()``.
* ``PostIndex.close()`` therefore also releases the Lite server for the path, after which
  another process can open it. Writers (the ``post_index`` asset) must close when done; the
  BentoML service is the one long-lived process holding the path (so it runs one worker).
* After a reopen, collections must be loaded before a search; ``search`` does that once per
  collection.

Production (``uri`` is ``http(s)://host:19530``, a Milvus server or cluster): none of the
above applies; any number of processes may read while a writer builds the next version.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

COLLECTION_PREFIX = "posts_"
INSERT_BATCH = 2000
KEEP_COLLECTIONS = 2  # the live one and the previous one (rollback)
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


def is_lite_uri(uri: str) -> bool:
    return not str(uri).startswith(("http://", "https://", "tcp://", "grpc://"))


def validated_ints(values: Sequence[object], what: str = "category_ids") -> list[int]:
    """The values as python ints; ValueError for anything that is not an integer.

    Filter expressions are built only from the output of this function, so no user input can
    reach Milvus' expression parser as text.
    """
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValueError(f"{what} must be integers, got {v!r}")
        out.append(int(v))
    return out


def category_filter(category_ids: Sequence[object] | None) -> str:
    """The Milvus filter expression for a category restriction ("" for none)."""
    if category_ids is None:
        return ""
    if isinstance(category_ids, str | bytes):
        raise ValueError(f"category_ids must be a list of integers, got {category_ids!r}")
    ids = sorted(set(validated_ints(list(category_ids))))
    return f"category_id in [{', '.join(str(i) for i in ids)}]"


class PostIndex:
    """The post collections of one Milvus deployment (Lite path or server uri)."""

    def __init__(self, uri: str, token: str | None = None):
        from pymilvus import MilvusClient

        self.uri = str(uri)
        self.is_lite = is_lite_uri(self.uri)
        if self.is_lite:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(uri=self.uri, token=token or "")
        self._loaded: set[str] = set()

    # --- writing --------------------------------------------------------------------------
    @staticmethod
    def collection_name(version: str | int) -> str:
        name = f"{COLLECTION_PREFIX}{version}"
        if not _NAME_RE.match(name):
            raise ValueError(f"invalid index version {version!r}")
        return name

    def _schema(self, dim: int):
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("post_id", DataType.INT64, is_primary=True)
        schema.add_field("category_id", DataType.INT64)
        schema.add_field("creator_id", DataType.INT64)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        return schema

    def _index_params(self):
        params = self.client.prepare_index_params()
        params.add_index(
            "embedding",
            index_type="HNSW",
            metric_type="IP",
            params={"M": 16, "efConstruction": 100},
        )
        params.add_index("category_id", index_type="INVERTED")
        return params

    @staticmethod
    def _rows(post_ids, category_ids, creator_ids, created_at, embeddings) -> list[dict]:
        emb = np.asarray(embeddings, dtype=np.float32)
        n = len(post_ids)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings must be [n={n}, d], got {emb.shape}")
        cols = [np.asarray(c, dtype=np.int64) for c in (category_ids, creator_ids, created_at)]
        if any(len(c) != n for c in cols):
            raise ValueError("post_ids, category_ids, creator_ids, created_at differ in length")
        pid = np.asarray(post_ids, dtype=np.int64)
        return [
            {
                "post_id": int(pid[i]),
                "category_id": int(cols[0][i]),
                "creator_id": int(cols[1][i]),
                "created_at": int(cols[2][i]),
                "embedding": emb[i].tolist(),
            }
            for i in range(n)
        ]

    def write_version(
        self,
        version: str | int,
        post_ids: Sequence[int],
        category_ids: Sequence[int],
        creator_ids: Sequence[int],
        created_at: Sequence[int],
        embeddings: np.ndarray,
    ) -> str:
        """Write a new collection ``posts_<version>`` (replacing one of that name), load it.

        ``created_at`` is epoch seconds. Returns the collection name; the alias is not touched.
        """
        name = self.collection_name(version)
        rows = self._rows(post_ids, category_ids, creator_ids, created_at, embeddings)
        dim = int(np.asarray(embeddings).shape[1])
        if self.client.has_collection(name):
            if self._aliases_of(name):
                raise ValueError(f"collection {name} is live behind an alias; use a new version")
            self.client.drop_collection(name)
        self.client.create_collection(
            name, schema=self._schema(dim), index_params=self._index_params()
        )
        for start in range(0, len(rows), INSERT_BATCH):
            self.client.insert(name, rows[start : start + INSERT_BATCH])
        self.client.load_collection(name)
        self._loaded.add(name)
        log.info("wrote %d posts into %s", len(rows), name)
        return name

    def upsert(
        self, alias: str, post_ids, category_ids, creator_ids, created_at, embeddings
    ) -> int:
        """Insert or replace posts in the collection behind ``alias`` (the write path)."""
        rows = self._rows(post_ids, category_ids, creator_ids, created_at, embeddings)
        if rows:
            self.client.upsert(alias, rows)
        return len(rows)

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

        Collections ``posts_*`` other than the new and the previous target, and not behind any
        other alias, are dropped (at most KEEP_COLLECTIONS stay).
        """
        if not self.client.has_collection(collection):
            raise ValueError(f"no collection {collection}")
        previous = self.alias_target(alias)
        if previous is None:
            self.client.create_alias(collection, alias)
        elif previous != collection:
            self.client.alter_alias(collection, alias)
        keep = {collection, previous}
        for name in self.client.list_collections():
            if name.startswith(COLLECTION_PREFIX) and name not in keep:
                if not self._aliases_of(name):
                    self.client.drop_collection(name)
                    self._loaded.discard(name)
                    log.info("dropped old index collection %s", name)
        return previous

    def list_versions(self) -> list[str]:
        return sorted(n for n in self.client.list_collections() if n.startswith(COLLECTION_PREFIX))

    # --- reading --------------------------------------------------------------------------
    def _ensure_loaded(self, alias: str) -> None:
        target = self.alias_target(alias) or alias
        if target not in self._loaded:
            self.client.load_collection(target)
            self._loaded.add(target)

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
        self._ensure_loaded(alias)
        res = self.client.search(
            alias,
            data=queries.tolist(),
            limit=top_n,
            filter=expr,
            output_fields=["post_id"],
            search_params={"metric_type": "IP", "params": {"ef": max(64, top_n)}},
        )
        return [[(int(h["post_id"]), float(h["distance"])) for h in hits] for hits in res]

    def fetch(self, alias: str, post_ids: Sequence[int]) -> list[dict]:
        """The stored metadata (no vectors) of some posts."""
        ids = validated_ints(list(post_ids), "post_ids")
        if not ids:
            return []
        self._ensure_loaded(alias)
        return self.client.get(
            alias, ids=ids, output_fields=["post_id", "category_id", "creator_id", "created_at"]
        )

    # --- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the client; for Milvus Lite also release the path for other processes."""
        try:
            self.client.close()
        finally:
            if self.is_lite:
                from milvus_lite.server_manager import server_manager_instance

                server_manager_instance.release_server(self.uri)

    def __enter__(self) -> PostIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InMemoryIndex:
    """Exact inner-product search over an embedding matrix, with the same ``search`` contract as
    :class:`PostIndex` (category restriction from validated ints only). The offline evaluation
    uses it so that its figures measure the models, not the ANN approximation."""

    def __init__(self, post_ids, category_ids, embeddings: np.ndarray):
        self.post_ids = np.asarray(post_ids, dtype=np.int64)
        self.category_ids = np.asarray(category_ids, dtype=np.int64)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        if not (len(self.post_ids) == len(self.category_ids) == len(self.embeddings)):
            raise ValueError("post_ids, category_ids and embeddings differ in length")

    def search(
        self,
        alias: str,
        vectors: np.ndarray,
        top_n: int,
        category_ids: Sequence[int] | None = None,
    ) -> list[list[tuple[int, float]]]:
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        mask = np.ones(len(self.post_ids), dtype=bool)
        if category_ids is not None:
            if isinstance(category_ids, str | bytes):
                raise ValueError(f"category_ids must be a list of integers, got {category_ids!r}")
            mask = np.isin(self.category_ids, validated_ints(list(category_ids)))
        idx = np.flatnonzero(mask)
        top_n = min(int(top_n), len(idx))
        if top_n <= 0:
            return [[] for _ in range(len(queries))]
        scores = queries @ self.embeddings[idx].T
        out = []
        for row in scores:
            top = np.argpartition(-row, top_n - 1)[:top_n]
            top = top[np.lexsort((self.post_ids[idx[top]], -row[top]))]
            out.append([(int(self.post_ids[idx[i]]), float(row[i])) for i in top])
        return out
