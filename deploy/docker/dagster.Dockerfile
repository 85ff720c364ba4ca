# The Dagster code location of socialrec (assets, dbt project, Feast definitions, the bento
# packaging): the image of the official Dagster chart's user deployment and of every run pod
# the K8sRunLauncher starts (deploy/helm/dagster-values.yaml). Not built in this repository's
# tests (they check it statically: tests/deploy/test_dockerfile.py). From the repository root:
#
#   docker build -f deploy/docker/dagster.Dockerfile -t socialrec-dagster:VERSION .
#
# The recommender's image is the bento's: `bentoml containerize` (bentos/bentofile.yaml).
FROM python:3.11.14-slim-bookworm

# uv, the version in uv.lock
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=3 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DO_NOT_TRACK=true \
    BENTOML_DO_NOT_TRACK=true \
    MLFLOW_ENABLE_TELEMETRY=false

# torch==2.13.0, the CPU build: uv.lock takes the wheel from /opt/wheels (pyproject.toml,
# [tool.uv] find-links); here that exact wheel comes from the PyTorch CPU index, so that
# `uv sync --frozen` installs what the lock says and nothing from PyPI's CUDA build
RUN python -m pip download --no-deps --only-binary=:all: --dest /opt/wheels \
        --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"

WORKDIR /opt/socialrec

# the locked dependencies first (a layer that changes only with uv.lock)
COPY pyproject.toml uv.lock README.md ./
# the `k8s` extra: the chart's run launcher and instance storage load dagster-k8s and
# dagster-postgres in this image (K8sRunLauncher, Postgres storage)
RUN uv sync --frozen --no-dev --extra k8s --no-install-project

# the project: the core, the assets and their definitions, the bento packaging (the
# recommender_bento asset runs `python -m bentos.package`), the dbt project, Feast's repo
COPY socialrec ./socialrec
COPY assets ./assets
COPY orchestration ./orchestration
COPY bentos ./bentos
COPY feature_repo ./feature_repo
COPY dbt_project ./dbt_project
COPY workspace.yaml ./
RUN uv sync --frozen --no-dev --extra k8s

# a non-root user; the dbt target directory (the manifest is parsed at the first load) and
# the data directory are its own
RUN useradd --create-home --uid 1000 socialrec \
    && mkdir -p /var/lib/socialrec dbt_project/target \
    && chown -R socialrec /var/lib/socialrec dbt_project
USER socialrec
ENV SOCIALREC_DATA_DIR=/var/lib/socialrec

# the chart starts the code server itself (codeServerArgs); this is the same command, for a
# plain `docker run`: a gRPC code server on the port the chart's user deployments expect
EXPOSE 3030
CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "3030", \
     "--module-name", "orchestration.definitions", "--attribute", "defs"]
