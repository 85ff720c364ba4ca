"""The online feature store: the service's reads and its one write.

Reads go through the entity's named Feast feature service (``ENTITY_SERVICES``: every feature of
the user's / the post's views). A batch is read the way ``FeatureStore.get_online_features``
reads it in its per-view path: one ``OnlineStore.online_read`` (Feast's online store
interface, here through the store's provider) per feature view of the service, for every id of
the batch at once; a value is present when the store has it (``FieldStatus.PRESENT``), else
missing (``NOT_FOUND``). What ``get_online_features`` adds on top of that read, resolving the
service's views from the registry and building its response protos, costs ~10 ms per call in
Python: the views are resolved once per :data:`VIEWS_REFRESH_SECONDS` per store instead
(:class:`OnlineReader`), and the values go straight into columns. ``tests/test_features.py``
checks the result against ``get_online_features``. :func:`write_online_post` writes one new
post with Feast's own write path.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureService, FeatureStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from socialrec.features.tables import (
    EMBEDDING_COLUMNS,
    ENTITY_IDS,
    ENTITY_SERVICES,
    ENTITY_VIEWS,
    FEATURE_NAMES,
    POST_CONTENT,
    POST_FEATURES,
    POST_SCHEMA,
    SCHEMAS,
    TIMESTAMP,
    conform,
)
from socialrec.settings import TEXT_EMBEDDING_DIM
from socialrec.stores.catalog import creator_id_array
from socialrec.timeutil import timestamp, to_seconds, utc_now


def feature_service(store: FeatureStore, name: str) -> FeatureService:
    """The named feature service of the registry (Feast's registry cache: no registry read
    per request)."""
    return store.get_feature_service(name, allow_cache=True)


VIEWS_REFRESH_SECONDS = 60.0  # a feature service re-applied while serving is seen within this


class OnlineReader:
    """The online read of one entity's feature service (``ENTITY_SERVICES[entity]``) from a
    Feast store: the service's feature views resolved from the registry once per
    ``VIEWS_REFRESH_SECONDS``, then one ``online_read`` of the provider per view."""

    def __init__(self, store: FeatureStore, entity: str):
        self.store, self.entity = store, entity
        self._views: list[tuple[object, list[str]]] = []
        self._resolved_at = -float("inf")
        self._lock = threading.Lock()

    def views(self) -> list[tuple[object, list[str]]]:
        """(FeatureView, the service's feature names of it) for every view of the service."""
        now = time.monotonic()
        with self._lock:
            if now - self._resolved_at > VIEWS_REFRESH_SECONDS:
                service = feature_service(self.store, ENTITY_SERVICES[self.entity])
                self._views = [
                    (
                        self.store.get_feature_view(p.name, allow_registry_cache=True),
                        [f.name for f in p.features],
                    )
                    for p in service.feature_view_projections
                ]
                self._resolved_at = now
            return self._views

    def read(self, ids: list[int]) -> dict[str, list]:
        """Feature name -> one value per id (a ValueProto, None when the store has none:
        :func:`_stored`)."""
        id_col = ENTITY_IDS[self.entity]
        keys = [
            EntityKeyProto(join_keys=[id_col], entity_values=[ValueProto(int64_val=i)]) for i in ids
        ]
        provider = self.store._get_provider()  # the store's own provider (its online store)
        out: dict[str, list] = {}
        for view, names in self.views():
            rows = provider.online_read(
                config=self.store.config, table=view, entity_keys=keys, requested_features=names
            )
            for name in names:
                out[name] = [_stored(values, name) for _, values in rows]
        return out


def _stored(values: dict | None, name: str) -> ValueProto | None:
    """The stored value of a feature, None when the store has none: no row (SQLite) or an
    empty value (Redis answers an unknown entity key with empty values)."""
    v = None if values is None else values.get(name)
    return v if v is not None and v.WhichOneof("val") is not None else None


_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_READERS_LOCK = threading.Lock()


def online_reader(store: FeatureStore, entity: str) -> OnlineReader:
    """The reader of ``entity`` for ``store`` (one per store and entity, kept while the store
    lives)."""
    with _READERS_LOCK:
        readers = _READERS.setdefault(store, {})
        if entity not in readers:
            readers[entity] = OnlineReader(store, entity)
        return readers[entity]


def _value(v: ValueProto | None):
    kind = None if v is None else v.WhichOneof("val")
    return None if kind is None else getattr(v, kind)


def _online(store: FeatureStore, entity: str, ids: Sequence[int]) -> pd.DataFrame:
    id_col = ENTITY_IDS[entity]
    ids = list(dict.fromkeys(int(i) for i in ids))  # unique, in request order
    names = [n for view in ENTITY_VIEWS[entity] for n in FEATURE_NAMES[view]]
    emb_cols = EMBEDDING_COLUMNS[entity]
    if not ids:
        empty = pd.DataFrame(columns=[*names, "found"], index=pd.Index([], name=id_col))
        return empty.astype({"found": bool})
    values = online_reader(store, entity).read(ids)
    data: dict[str, object] = {}
    present = np.zeros(len(ids), dtype=bool)
    zero = np.zeros(TEXT_EMBEDDING_DIM, dtype=np.float32)
    for name in names:
        column = values[name]
        if name in emb_cols:
            data[name] = [
                zero.copy() if v is None or v.WhichOneof("val") is None
                else np.asarray(v.float_list_val.val, dtype=np.float32)
                for v in column
            ]  # fmt: skip
        else:
            # an entity is known when its (non-embedding) features are stored (PRESENT)
            present |= np.fromiter((v is not None for v in column), dtype=bool, count=len(ids))
            data[name] = [_value(v) for v in column]
    out = pd.DataFrame(data, index=pd.Index(np.asarray(ids, dtype=np.int64), name=id_col))
    out["found"] = present
    return _typed(out, entity)


def _typed(df: pd.DataFrame, entity: str) -> pd.DataFrame:
    for view in ENTITY_VIEWS[entity]:
        for field in SCHEMAS[view]:
            if field.name not in df.columns or field.name == ENTITY_IDS[entity]:
                continue
            if pa.types.is_integer(field.type):
                df[field.name] = pd.array(df[field.name], dtype="Int64")
            elif pa.types.is_floating(field.type):
                df[field.name] = pd.to_numeric(df[field.name]).astype(np.float32)
    return df


def online_user_features(store: FeatureStore, user_ids: Sequence[int]) -> pd.DataFrame:
    """Every user view (``USER_SERVICE``) of each (unique) id, indexed by ``user_id``; ONE
    Feast call. Unknown ids get ``found == False``, missing values and zero embeddings."""
    return _online(store, "user", user_ids)


def online_post_features(store: FeatureStore, post_ids: Sequence[int]) -> pd.DataFrame:
    """``post_features`` + ``post_content`` (``POST_SERVICE``) of each (unique) id, indexed by
    ``post_id``; ONE Feast call. Unknown ids get ``found == False``, missing values and a zero
    ``description_embedding``."""
    return _online(store, "post", post_ids)


# --------------------------------------------------------------------------------------------
# writing one post online (the service's POST /posts)
# --------------------------------------------------------------------------------------------
POST_ATTRIBUTE_COLUMNS = ("creator_id", "category_id", "media_type", "created_at_ts")
# the engagement counts of post_features (zero for a new post)
POST_COUNT_COLUMNS = tuple(
    c for c in FEATURE_NAMES[POST_FEATURES] if c not in POST_ATTRIBUTE_COLUMNS
)


def write_online_post(
    store: FeatureStore, post: dict, counts: dict | None = None, at=None
) -> dict[str, int]:
    """Write one post's online features with Feast's own write path,
    ``FeatureStore.write_to_online_store``: ``post_features`` (the attributes, ``created_at_ts``
    = epoch seconds of ``post["created_at"]``, engagement counts from ``counts`` — zero when
    missing, i.e. a new post) and ``post_content`` (``post["description_embedding"]``), columns
    as ``POST_SCHEMA`` / ``POST_CONTENT_SCHEMA``, ``event_timestamp`` = ``at`` (default now: the
    newest value of the post). Visible to the very next online read; the next materialization
    of the offline tables overwrites it. Returns the rows written per view."""
    ts = timestamp(at if at is not None else utc_now())
    counts = counts or {}
    row = {
        "post_id": int(post["post_id"]),
        TIMESTAMP: ts,
        "creator_id": creator_id_array([post.get("creator_id")])[0],
        "category_id": int(post["category_id"]),
        "media_type": str(post["media_type"]),
        "created_at_ts": to_seconds(post["created_at"]),
        **{c: 0 if pd.isna(counts.get(c)) else counts[c] for c in POST_COUNT_COLUMNS},
    }
    frames = {
        POST_FEATURES: conform(pd.DataFrame([row]), POST_SCHEMA),
        POST_CONTENT: pd.DataFrame(
            {
                "post_id": [row["post_id"]],
                TIMESTAMP: [ts],
                "description_embedding": [
                    np.asarray(post["description_embedding"], dtype=np.float32).reshape(-1)
                ],
            }
        ),
    }
    for name, frame in frames.items():
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
        store.write_to_online_store(feature_view_name=name, df=frame)
    return {name: len(frame) for name, frame in frames.items()}
