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
nightly_retrain_schedule = dg.ScheduleDefinition(
    name="nightly_retrain_schedule",
    job=nightly_retrain,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
)

JOBS = [materialize_all, nightly_retrain]
SCHEDULES = [nightly_retrain_schedule]
