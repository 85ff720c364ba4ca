"""Index layer: the post collections in Milvus, each behind an alias.

Each materialization writes two NEW collections of version ``<model version>_<time>`` from the
same live posts, loads them, then swaps their aliases:

* ``posts_<version>``: post-tower embeddings of the champion two-tower model, behind
  ``settings.collection_alias`` (retrieval, ``/similar``);
* ``post_texts_<version>``: the MiniLM description embeddings (384-d, L2-normalised: cosine),
  behind ``settings.text_collection_alias`` (``/search``).

The service never sees a half-built index, and the previous collection of each kind stays for
a rollback (``PostIndex.swap_alias(alias, previous)``).
"""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import numpy as np
import pandas as pd

from assets.common import DERIVED_FRESHNESS, EAGER
from assets.resources import MilvusResource, SettingsResource
from socialrec.data import warehouse
from socialrec.features import store as features
from socialrec.features.text import embedding_matrix
from socialrec.models import registry
from socialrec.stores.catalog import live_posts
from socialrec.training import retrieval as training


@dg.asset(
    deps=[
        dg.AssetKey("two_tower_champion"),
        dg.AssetKey("feature_tables"),
        dg.AssetKey("dim_posts"),
    ],
    group_name="index",
    freshness_policy=DERIVED_FRESHNESS,
    automation_condition=EAGER,
    kinds={"milvus"},
    description="Post-tower embeddings (champion two-tower) and MiniLM description embeddings "
    "of all live (not deleted) posts, with category_id, creator_id and created_at as scalar "
    "fields, in two new Milvus collections per model version; each alias is swapped when its "
    "collection is loaded.",
)
def post_index(
    context: dg.AssetExecutionContext, settings: SettingsResource, milvus: MilvusResource
) -> dg.MaterializeResult:
    from socialrec.models.two_tower import TwoTowerModel

    s = settings.get()
    champion = registry.champion_version(s, registry.TWO_TOWER)
    model = TwoTowerModel.load(registry.champion_dir(s, registry.TWO_TOWER))
    store = features.feature_store(s)
    post_ids = live_posts(warehouse.read_table(s, "dim_posts"))["post_id"]
    posts = training.latest_features(store, "post", post_ids)
    posts = posts.dropna(subset=["category_id"]).reset_index(drop=True)
    # the post tower's age bucket at the data's clock (the newest post), as when it trained
    clock = pd.Timestamp(int(posts["created_at_ts"].max()), unit="s", tz="UTC")
    vectors = model.post_embeddings(posts, now=clock)
    texts = embedding_matrix(posts["description_embedding"])
    context.log.info(f"post tower: {len(posts)} vectors; writing the Milvus collections")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    version = f"v{champion.version}_{stamp}"
    meta = [
        posts[c].to_numpy(np.int64)
        for c in ("post_id", "category_id", "creator_id", "created_at_ts")
    ]
    with milvus.open_index() as index, ThreadPoolExecutor(1) as beside:
        # side by side: each write is mostly waiting for the server (flush, index build, load)
        writing_texts = beside.submit(index.write_text_version, version, *meta, texts)
        collection = index.write_version(version, *meta, vectors)
        context.log.info(f"{collection}: {len(posts)} post vectors written and indexed")
        text_collection = writing_texts.result()
        previous = index.swap_alias(s.collection_alias, collection)
        previous_text = index.swap_alias(s.text_collection_alias, text_collection)
        versions = index.list_versions()
    context.log.info(
        f"{len(posts)} posts in {collection} and {text_collection}; aliases "
        f"{s.collection_alias!r} and {s.text_collection_alias!r} swapped"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(posts),
            "collection": collection,
            "alias": s.collection_alias,
            "previous_collection": previous or "",
            "text_collection": text_collection,
            "text_alias": s.text_collection_alias,
            "previous_text_collection": previous_text or "",
            "collections": versions,
            "two_tower_version": int(champion.version),
            "embedding_dim": int(vectors.shape[1]),
            "text_embedding_dim": int(texts.shape[1]),
            "posts_without_text": int((np.linalg.norm(texts, axis=1) == 0).sum()),
            "milvus_uri": milvus.uri,
        }
    )
