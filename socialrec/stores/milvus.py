"""Milvus building blocks of the post index (``socialrec.stores.index``): the collection
schema, its index parameters, the rows of a write, and the Milvus Lite servers of this process.

Embedded default, Milvus Lite (``uri`` is a local path such as ``.../milvus/posts.db``):

* Milvus Lite serves the path from threads of the process that opens it and holds a ``LOCK``
  file in it. ONE PROCESS PER PATH: a second process cannot open the path while the first one
  holds it. Clients of the same process share one server (and see each other's writes and
  alias swaps at once).
* ``PostIndex.close()`` releases the Lite server for the path when the last ``PostIndex`` of
  the process on that path closes, after which another process can open it. Writers (the
  ``post_index`` asset) must close when done; the BentoML service is the one long-lived process
  holding the path (so it runs one worker).
* After a reopen, collections must be loaded before a search; the alias check does that.

``lite_acquire``/``lite_release`` keep the count of open ``PostIndex`` per path.
"""

from __future__ import annotations

import os
import re
import threading
import time

import numpy as np

# Milvus Lite servers of this process: path -> number of open PostIndex on it
_LITE_USERS: dict[str, int] = {}
_LITE_LOCK = threading.Lock()


def is_lite_uri(uri: str) -> bool:
    return not str(uri).startswith(("http://", "https://", "tcp://", "grpc://"))


def _lite_key(uri: str) -> str:
    return os.path.abspath(uri)  # the key milvus_lite's server manager uses


def lite_acquire(uri: str) -> None:
    """One more open ``PostIndex`` on the Lite path ``uri``."""
    with _LITE_LOCK:
        key = _lite_key(uri)
        _LITE_USERS[key] = _LITE_USERS.get(key, 0) + 1


def lite_release(uri: str) -> None:
    """One ``PostIndex`` on ``uri`` closed; the last one releases the Lite server."""
    with _LITE_LOCK:
        key = _lite_key(uri)
        left = _LITE_USERS.get(key, 1) - 1
        if left > 0:
            _LITE_USERS[key] = left
        else:
            _LITE_USERS.pop(key, None)
    if left <= 0:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)


def collection_schema(dim: int):
    """``post_id`` pk, ``category_id``, ``creator_id``, ``created_at`` and ``embedding``."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("post_id", DataType.INT64, is_primary=True)
    schema.add_field("category_id", DataType.INT64)
    schema.add_field("creator_id", DataType.INT64)
    schema.add_field("created_at", DataType.INT64)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def server_version(version: str) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` of a Milvus server version (``v2.3.5-lite``, ``2.4.13``,
    ``v2.5.0-beta``); None for Milvus Lite (``milvus_lite-3.2.2``) or an unknown string."""
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", str(version).strip())
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def scalar_index_type(version: str) -> str:
    """The index on ``category_id`` a deployment of that version accepts: INVERTED (Milvus
    Lite, Milvus >= 2.4), STL_SORT (Milvus 2.3, e.g. the local standalone server of the
    ``milvus`` wheel, which rejects INVERTED)."""
    parsed = server_version(version)
    return "STL_SORT" if parsed is not None and parsed < (2, 4, 0) else "INVERTED"


def index_params(client, version: str | None = None):
    """HNSW on the embedding (inner product), a scalar index on the category (inverted where
    the deployment supports it, see ``scalar_index_type``; ``version`` defaults to the
    client's ``get_server_version()``)."""
    if version is None:
        version = client.get_server_version()
    params = client.prepare_index_params()
    params.add_index(
        "embedding",
        index_type="HNSW",
        metric_type="IP",
        params={"M": 16, "efConstruction": 100},
    )
    params.add_index("category_id", index_type=scalar_index_type(version))
    return params


def wait_indexed(client, collection: str, timeout: float = 600.0, field: str = "embedding"):
    """Wait until the server has built the index of ``field`` over every flushed row (a
    server builds indexes asynchronously after a flush; loading before that would serve the
    unindexed segments by brute force). TimeoutError after ``timeout`` seconds."""
    names = client.list_indexes(collection, field_name=field) or [field]
    deadline = time.monotonic() + timeout
    while True:
        info = client.describe_index(collection, names[0])
        pending = int(info.get("pending_index_rows", 0) or 0)
        total = int(info.get("total_rows", 0) or 0)
        indexed = int(info.get("indexed_rows", 0) or 0)
        if pending == 0 and indexed >= total:
            return info
        if time.monotonic() > deadline:
            raise TimeoutError(f"index of {collection}.{field}: {indexed}/{total} rows built")
        time.sleep(0.2)


def collection_rows(post_ids, category_ids, creator_ids, created_at, embeddings) -> list[dict]:
    """The rows of a write (python ints and float lists); ValueError on mismatched lengths."""
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


INSERT_BATCH = 2000  # rows per insert call of a new collection version


def insert_rows(client, name: str, columns: list, batch: int = INSERT_BATCH) -> None:
    """Insert the rows of ``columns`` (post_ids, category_ids, creator_ids, created_at,
    embeddings) batch by batch: a row is a dict of Python numbers, built per batch, so a
    write of 1M posts never holds them all as Python objects."""
    for start in range(0, len(columns[0]), batch):
        client.insert(name, collection_rows(*(c[start : start + batch] for c in columns)))
