"""The jobs and the schedule: the whole graph once, and the nightly retrain."""

import dagster as dg

materialize_all = dg.define_asset_job(
    "materialize_all",
    selection=dg.AssetSelection.all(),
    description="The whole asset graph, raw data to the built bento (what `make demo` runs).",
)
nightly_retrain = dg.define_asset_job(
    "nightly_retrain",
    selection=dg.AssetSelection.groups("models", "index", "serving", "evaluation"),
    description="Retrain the models, rebuild the post index and the bento, evaluate offline.",
)
deletion_job = dg.define_asset_job(
    "deletion_job",
    selection=dg.AssetSelection.assets("raw_users", "raw_posts")
    | dg.AssetSelection.groups("warehouse", "deletion")
    | dg.AssetSelection.assets(
        "user_text_embeddings", "post_text_embeddings", "feature_tables", "feast_online_store"
    ),
    description="Apply the landed tombstones (POST /forget, POST /posts/delete): reload users "
    "and posts, rebuild the warehouse (forgotten users' events left out, ML sets included), the "
    "text embeddings, feature tables and online store, then delete the forgotten users and "
    "posts from the online store, the seen store and both Milvus collections.",
)
nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_schedule",
    job=nightly_retrain,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
)

JOBS = [materialize_all, nightly_retrain, deletion_job]
SCHEDULES = [nightly_retrain_schedule]
