"""Deletion layer: what a tombstone removes outside the warehouse (socialrec.data.deletion).

``forgotten_entities`` runs after the feature tables and the online store are rebuilt from the
warehouse (where the tombstones already exclude forgotten users' events): it deletes the
forgotten users' and deleted posts' rows from the online store, the users' seen rows and
blocks from the seen store, and the posts from every version of both Milvus collections.
Idempotent: every run deletes every tombstoned id again (a no-op for those already gone).
"""

import dagster as dg

from assets.common import DERIVED_FRESHNESS, EAGER
from assets.resources import MilvusResource, SettingsResource
from socialrec.data import warehouse
from socialrec.data.deletion import deleted_ids
from socialrec.features.deletion import forget_online
from socialrec.stores.deletion import delete_posts, forget_users
from socialrec.stores.seen import open_seen_store


@dg.asset(
    deps=[dg.AssetKey("dim_users"), dg.AssetKey("dim_posts"), dg.AssetKey("feast_online_store")],
    group_name="deletion",
    freshness_policy=DERIVED_FRESHNESS,
    # after every rebuild of the online store: a tombstone that landed since is applied then
    automation_condition=EAGER,
    kinds={"feast", "milvus"},
    description="Forgotten users and deleted posts removed from the online feature store, the "
    "seen store and both Milvus collections (every version).",
)
def forgotten_entities(
    context: dg.AssetExecutionContext, settings: SettingsResource, milvus: MilvusResource
) -> dg.MaterializeResult:
    s = settings.get()
    users = deleted_ids(warehouse.read_table(s, "dim_users", ["user_id", "is_deleted"]), "user_id")
    posts = deleted_ids(warehouse.read_table(s, "dim_posts", ["post_id", "is_deleted"]), "post_id")
    online = forget_online(s, "user", users) + forget_online(s, "post", posts)
    with open_seen_store(s) as seen:
        seen_rows = forget_users(seen, users)
    with milvus.open_index() as index:
        collections = delete_posts(index, posts)
    context.log.info(
        f"forgot {len(users)} users ({seen_rows} seen rows), deleted {len(posts)} posts from "
        f"{sorted(collections)}; {online} online rows deleted"
    )
    return dg.MaterializeResult(
        metadata={
            "users_forgotten": len(users),
            "posts_deleted": len(posts),
            "online_rows_deleted": online,
            "seen_rows_deleted": seen_rows,
            "collections": sorted(collections),
        }
    )
