"""Freshness policies and automation conditions shared by the asset modules.

Cadences: raw data lands continuously (the demo loads once, production every few minutes
via the sensor), the warehouse and features follow it eagerly, models retrain daily.
"""

from datetime import timedelta

import dagster as dg

# raw landing tables: new events are expected at least every few hours
RAW_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=26), warn_window=timedelta(hours=6)
)
# warehouse models, embeddings, features, index: follow their upstreams within the day
DERIVED_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=26), warn_window=timedelta(hours=12)
)
# models and the bento: retrained nightly
TRAINING_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=48), warn_window=timedelta(hours=26)
)

EAGER = dg.AutomationCondition.eager()
NIGHTLY = dg.AutomationCondition.on_cron("0 3 * * *")
