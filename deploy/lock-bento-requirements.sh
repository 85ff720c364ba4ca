#!/usr/bin/env bash
# Print the recommender bento's locked Python packages (bentos/requirements.txt), exported
# from the project's uv.lock: the project's runtime dependencies minus what only the Dagster
# side uses (pruned with what only they need). Offline: reads uv.lock, resolves nothing.
#
#   deploy/lock-bento-requirements.sh > bentos/requirements.txt
#
# tests/deploy/test_bento.py fails when the file and uv.lock disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "# The recommender bento's Python packages, locked from uv.lock (bentos/bentofile.yaml)."
echo "# Generated; do not edit: deploy/lock-bento-requirements.sh > bentos/requirements.txt"
"${UV:-uv}" export --frozen --no-dev --no-hashes --no-emit-project --no-header --no-annotate \
    --prune dagster --prune dagster-webserver --prune dagster-gcp --prune dagster-mlflow \
    --prune dagster-dbt --prune dbt-core --prune dbt-duckdb --prune dbt-bigquery \
    --prune mlflow --prune gcp-storage-emulator --prune milvus --prune implicit \
    --prune matplotlib
