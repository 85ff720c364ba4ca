"""Feast: the feature tables (offline source), the registry and the SQLite online store.

Thin wrappers of ``socialrec.features.store``; the Feast objects come from ``feature_repo``.
"""

import datetime as dt

import dagster as dg

import feature_repo
from assets.common import DERIVED_FRESHNESS, EAGER
from assets.resources import SettingsResource
from socialrec.data import warehouse
from socialrec.data.deletion import live
from socialrec.features import store as features
from socialrec.features import text
from socialrec.features.build import (
    build_post_content,
    build_post_features,
    build_user_features,
    build_user_history,
    build_user_profile,
)
from socialrec.features.tables import (
    POST_CONTENT,
    POST_FEATURES,
    PROJECT,
    USER_FEATURES,
    USER_HISTORY,
    USER_PROFILE,
    feature_table_location,
    write_feature_tables,
)


@dg.asset(
    deps=[
        dg.AssetKey("dim_users"),
        dg.AssetKey("dim_posts"),
        dg.AssetKey("user_daily_activity"),
        dg.AssetKey("post_daily_activity"),
        dg.AssetKey("fct_interactions"),
        dg.AssetKey("post_text_embeddings"),
        dg.AssetKey("user_text_embeddings"),
    ],
    group_name="features",
    freshness_policy=DERIVED_FRESHNESS,
    automation_condition=EAGER,
    kinds={"parquet", "feast"},
    description="The Feast offline sources, rewritten from the warehouse: user_features and "
    "post_features (point-in-time histories: a row per day with activity, cumulative counts up "
    "to that day's end; posts with 1- and 7-day windows), user_history (per-category and "
    "per-creator engagement, liked-posts embedding; daily), user_profile and post_content (text "
    "embeddings from creation); an edited post or user gets one more row at its updated_at.",
)
def feature_tables(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    s = settings.get()
    # forgotten users and deleted posts have no features (socialrec.data.deletion)
    dim_users = live(warehouse.read_table(s, "dim_users"))
    dim_posts = live(warehouse.read_table(s, "dim_posts"))
    post_emb = text.read_embeddings(s.features_dir / text.POST_EMBEDDINGS_FILE)
    tables = {
        USER_FEATURES: build_user_features(
            dim_users, warehouse.read_table(s, "user_daily_activity")
        ),
        USER_PROFILE: build_user_profile(
            dim_users, text.read_embeddings(s.features_dir / text.USER_EMBEDDINGS_FILE)
        ),
        USER_HISTORY: build_user_history(
            warehouse.read_table(
                s, "fct_interactions", ["user_id", "post_id", "ts", "is_positive"]
            ),
            dim_posts,
            post_emb,
            recent_posts=s.history_recent_posts,
        ),
        POST_FEATURES: build_post_features(
            dim_posts, warehouse.read_table(s, "post_daily_activity")
        ),
        POST_CONTENT: build_post_content(dim_posts, post_emb),
    }
    written = write_feature_tables(s, tables)
    context.log.info(f"feature tables: {written}")
    metadata: dict = {"dagster/row_count": sum(written.values())}
    for name, rows in written.items():
        metadata[f"{name}_rows"] = rows
        metadata[f"{name}_path"] = dg.MetadataValue.path(feature_table_location(s, name))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="features",
    freshness_policy=DERIVED_FRESHNESS,
    automation_condition=EAGER,
    kinds={"feast"},
    description="The Feast registry: `feast apply` of every object in feature_repo/ "
    "(entities user and post, views user_features and post_features, services).",
)
def feast_registry(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    s = settings.get()
    objects = feature_repo.all_definitions(s)
    store = features.feature_store(s)
    names = features.apply_definitions(store, objects)
    context.log.info(f"applied {len(names)} Feast objects: {names}")
    return dg.MaterializeResult(
        metadata={
            "project": PROJECT,
            "objects": names,
            "feature_views": [v.name for v in store.list_feature_views()],
            "feature_services": [v.name for v in store.list_feature_services()],
            "entities": [e.name for e in store.list_entities()],
            "registry": dg.MetadataValue.path(store.config.registry.path),
        }
    )


@dg.asset(
    deps=[feast_registry, feature_tables],
    group_name="features",
    freshness_policy=DERIVED_FRESHNESS,
    automation_condition=EAGER,
    kinds={"feast", "sqlite"},
    description="The Feast online store (SQLite; Redis in gcp): incremental materialization "
    "of the feature tables up to now (edits arrive as rows stamped at their updated_at).",
)
def feast_online_store(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    s = settings.get()
    store = features.feature_store(s)
    end = dt.datetime.now(dt.UTC)
    written = features.materialize(store, end)
    online = features.online_row_counts(s)
    context.log.info(f"materialized to {end.isoformat()}: {written}; online entities {online}")
    return dg.MaterializeResult(
        metadata={
            "materialized_until": end.isoformat(),
            "feature_views": list(written),
            **{f"{name}_rows_written": n for name, n in written.items()},
            **{f"{name}_online_entities": n for name, n in online.items()},
            # the SQLite file (local) or the store's type (gcp: no connection string, it may
            # hold a password)
            "online_store": getattr(store.config.online_store, "path", None)
            or store.config.online_store.type,
        }
    )
