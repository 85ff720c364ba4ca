"""Removing forgotten users and deleted posts from the online feature store.

Feast has no per-entity delete (its online stores only upsert rows, and ``materialize`` only
writes the rows the offline tables still have, so a forgotten user's last row would be served
forever). This deletes the rows in Feast's own layout, with Feast's own key encoding
(``serialize_entity_key`` at the repo's ``entity_key_serialization_version``):

* local (SQLite): ``DELETE`` of the entity key from each of the entity's view tables
  (``<project>_<view>``, as ``online_row_counts`` reads them);
* gcp (Redis): ``DEL`` of the entity's hash (``_redis_key``: the serialized key + the project;
  every view of the entity is a field of it), through Feast's own Redis client.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from socialrec.features.store import repo_config
from socialrec.features.tables import ENTITY_IDS, ENTITY_VIEWS, PROJECT
from socialrec.settings import Settings


def _entity_keys(entity: str, ids: Iterable[int]) -> list:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    join_key = ENTITY_IDS[entity]
    return [EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=int(i))]) for i in ids]


def forget_online(settings: Settings, entity: str, ids: Iterable[int]) -> int:
    """Delete the online rows of ``ids`` (``entity``: "user" or "post") from every view of the
    entity; returns the (entity, view) rows deleted (Redis: the hashes deleted)."""
    keys = _entity_keys(entity, ids)
    if not keys:
        return 0
    config = repo_config(settings)
    version = config.entity_key_serialization_version
    if settings.profile == "gcp":
        from feast.infra.online_stores.helpers import _redis_key
        from feast.infra.online_stores.redis import RedisOnlineStore

        client = RedisOnlineStore()._get_client(config.online_store)  # Feast's own client
        return int(client.delete(*(_redis_key(PROJECT, k, version) for k in keys)))
    from feast.infra.key_encoding_utils import serialize_entity_key

    path = Path(settings.feast_dir) / "online.db"
    if not path.exists():
        return 0
    blobs = [(serialize_entity_key(k, version),) for k in keys]
    deleted = 0
    with sqlite3.connect(path) as conn:
        for view in ENTITY_VIEWS[entity]:
            try:
                before = conn.total_changes
                conn.executemany(f"DELETE FROM {PROJECT}_{view} WHERE entity_key = ?", blobs)
            except sqlite3.OperationalError:  # the view's table is not created yet
                continue
            deleted += conn.total_changes - before
    conn.close()
    return deleted
