"""Index layer: post-tower embeddings of every post into Milvus, behind an alias.

Each materialization writes a NEW collection ``posts_<model version>_<time>`` with the
champion two-tower model, loads it, then swaps the alias (``settings.collection_alias``) to it:
the service never sees a half-built index, and the previous collection stays for a rollback.
"""

import datetime as dt

import dagster as dg
import numpy as np

from assets.common import DERIVED_FRESHNESS, EAGER
from orchestration.resources import SettingsResource
from socialrec import features, registry, training, warehouse
from socialrec.catalog import live_posts
from socialrec.index import PostIndex


@dg.asset(
    deps=[dg.AssetKey("two_tower_model"), dg.AssetKey("feature_tables"), dg.AssetKey("dim_posts")],
    group_name="index",
    freshness_policy=DERIVED_FRESHNESS,
    automation_condition=EAGER,
    kinds={"milvus"},
    description="Post-tower embeddings (champion two-tower) of all live (not deleted) posts "
    "with category_id, "
    "creator_id and created_at as scalar fields, in a new Milvus collection per model "
    "version; the alias is swapped when it is loaded.",
)
def post_index(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    from socialrec.two_tower import TwoTowerModel

    s = settings.get()
    champion = registry.champion_version(s, registry.TWO_TOWER)
    model = TwoTowerModel.load(registry.champion_dir(s, registry.TWO_TOWER))
    store = features.feature_store(s)
    post_ids = live_posts(warehouse.read_table(s, "dim_posts"))["post_id"]
    posts = training.latest_features(store, "post", post_ids)
    posts = posts.dropna(subset=["category_id"]).reset_index(drop=True)
    vectors = model.post_embeddings(posts)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    version = f"v{champion.version}_{stamp}"
    with PostIndex(str(s.milvus_uri), s.milvus_token) as index:
        collection = index.write_version(
            version,
            posts["post_id"].to_numpy(np.int64),
            posts["category_id"].to_numpy(np.int64),
            posts["creator_id"].to_numpy(np.int64),
            posts["created_at_ts"].to_numpy(np.int64),
            vectors,
        )
        previous = index.alias_target(s.collection_alias)
        index.swap_alias(s.collection_alias, collection)
        versions = index.list_versions()
    context.log.info(f"{len(posts)} posts in {collection}; alias {s.collection_alias!r} swapped")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(posts),
            "collection": collection,
            "alias": s.collection_alias,
            "previous_collection": previous or "",
            "collections": versions,
            "two_tower_version": int(champion.version),
            "embedding_dim": int(vectors.shape[1]),
            "milvus_uri": str(s.milvus_uri),
        }
    )
