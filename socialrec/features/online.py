"""The online feature store: the service's reads and its one write.

Reads go through the entity's named Feast feature service (``ENTITY_SERVICES``: every feature of
the user's / the post's views), looked up in the registry with Feast's registry cache
(:func:`feature_service`). Each online reader makes exactly ONE ``get_online_features`` call
for its batch (every view of the entity in that call). :func:`write_online_post` writes one new
post with Feast's own write path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureService, FeatureStore
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

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


def _online(store: FeatureStore, entity: str, ids: Sequence[int]) -> pd.DataFrame:
    id_col = ENTITY_IDS[entity]
    ids = list(dict.fromkeys(int(i) for i in ids))  # unique, in request order
    names = [n for view in ENTITY_VIEWS[entity] for n in FEATURE_NAMES[view]]
    emb_cols = EMBEDDING_COLUMNS[entity]
    if not ids:
        empty = pd.DataFrame(columns=[*names, "found"], index=pd.Index([], name=id_col))
        return empty.astype({"found": bool})
    response = store.get_online_features(
        features=feature_service(store, ENTITY_SERVICES[entity]), entity_rows={id_col: ids}
    )
    proto = response.proto
    by_name = dict(zip(proto.metadata.feature_names.val, proto.results, strict=True))
    data: dict[str, object] = {}
    present = np.zeros(len(ids), dtype=bool)
    for name in names:
        vector = by_name[name]
        statuses = np.fromiter(vector.statuses, dtype=np.int64, count=len(ids))
        ok = statuses == FieldStatus.PRESENT
        if name in emb_cols:
            zero = np.zeros(TEXT_EMBEDDING_DIM, dtype=np.float32)
            data[name] = [
                np.asarray(v.float_list_val.val, dtype=np.float32) if good else zero.copy()
                for v, good in zip(vector.values, ok, strict=True)
            ]
        else:
            present |= ok  # an entity is known when its (non-embedding) features are
            kind = [v.WhichOneof("val") for v in vector.values]
            data[name] = [
                getattr(v, k) if good and k else None
                for v, k, good in zip(vector.values, kind, ok, strict=True)
            ]
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
