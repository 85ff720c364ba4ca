# socialrec: `make demo` and `make test` do all set-up on a fresh machine (Python 3.11 only).
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export SOCIALREC_DATA_DIR ?= $(CURDIR)/.socialrec
export DAGSTER_HOME ?= $(SOCIALREC_DATA_DIR)/dagster
export BENTOML_HOME ?= $(SOCIALREC_DATA_DIR)/bentoml
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 3
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := true
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_ENABLE_TELEMETRY := false
RUN := $(UV) run --frozen
# pytest-xdist workers of `make test` (tests/conftest.py groups the tests that share a deployment)
TEST_WORKERS ?= 2
# data, materialize and demo run on the `make install` environment: `uv run` syncs the default
# groups (dev included: pytest, ruff, locust, ...) unless told not to
RUN_APP := env PYTHONDONTWRITEBYTECODE= $(UV) run --frozen --no-dev

.PHONY: help uv install install-dev browser data materialize demo test test-gcp lint format clean bench

help:
	@echo "make demo         install, generate demo data, materialize every asset, serve UI + bento"
	@echo "make materialize  the same without starting servers"
	@echo "make test         install with dev dependencies (and Chromium for the browser test), ruff, the whole test suite"
	@echo "make test-gcp     only the gcp profile's tests, against local stand-ins (make test runs them too)"
	@echo "make lint         ruff check + format check"
	@echo "make bench        every benchmark in benchmarks/ (make bench-<name> for one, e.g. bench-load)"
	@echo "make clean        remove the local state in $(SOCIALREC_DATA_DIR)"
	@echo "make mlflow-ui    MLflow's runs and registered models on http://127.0.0.1:$(MLFLOW_PORT)"
	@echo "make dagster-ui   the Dagster UI alone on http://127.0.0.1:$(DAGSTER_PORT) (make demo also serves it)"

$(UV):
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --user --quiet uv

uv: $(UV)

# an empty Dagster instance config with telemetry off: no "no dagster.yaml found" warning and
# no telemetry notice on a first run
DAGSTER_YAML := $(DAGSTER_HOME)/dagster.yaml
# Bytecode: the app's processes (RUN_APP) keep what they compile, as Python does by default,
# also where PYTHONDONTWRITEBYTECODE is set (common in images): otherwise every process of the
# demo compiled Dagster, Feast, TensorFlow and torch again (the definitions' import 23 s instead
# of 9). `make install` does not byte-compile all of site-packages (uv sync --compile-bytecode:
# 40-55 s on 2 cores, two thirds of it for files the app never imports); the demo compiles
# the later steps' imports beside the definitions' (orchestration/warm.py). The tests' install
# compiles everything at install: their processes import far more of it.
install: uv
	$(UV) sync --frozen --no-dev
	@mkdir -p "$(DAGSTER_HOME)"
	@test -f "$(DAGSTER_YAML)" || printf 'telemetry:\n  enabled: false\n' > "$(DAGSTER_YAML)"

install-dev: uv
	$(UV) sync --frozen --all-extras --compile-bytecode
	$(UV) sync --frozen --project tools/bqemulator --quiet --compile-bytecode
	@mkdir -p "$(DAGSTER_HOME)"

# The browser test (tests/browser) drives Debian's headless Chromium with Playwright (from
# PyPI, in the dev group; never `playwright install`: no browser download). Installed here with
# apt-get when missing and root or passwordless sudo is available (quietly, once); otherwise
# the browser test skips and names the missing binary.
CHROMIUM := /usr/bin/chromium
APT_CHROMIUM := env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
browser:
	@if [ -x "$(CHROMIUM)" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "no $(CHROMIUM) and no apt-get: the browser test (tests/browser) will skip"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
		echo "no $(CHROMIUM) and no root or sudo to install it: the browser test will skip"; exit 0; fi; \
	echo "installing Debian's chromium for the browser test (apt-get)"; \
	$$SUDO $(APT_CHROMIUM) >/dev/null 2>&1 || { $$SUDO apt-get update -qq >/dev/null 2>&1 && \
		$$SUDO $(APT_CHROMIUM) >/dev/null 2>&1; } || \
		echo "apt-get could not install chromium: the browser test will skip"

data: install
	$(RUN_APP) python -m socialrec.data.generator

materialize: install
	$(RUN_APP) python -m orchestration.materialize --generate

demo: install
	$(RUN_APP) python -m orchestration.demo --materialize

test: install-dev browser
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports
	$(RUN) pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test-gcp: install-dev
	$(RUN) pytest -m gcp

BENCHMARKS := $(patsubst benchmarks/%.py,%,$(filter-out benchmarks/__init__.py,$(wildcard benchmarks/*.py)))

bench: $(addprefix bench-,$(BENCHMARKS))

bench-%: install-dev
	$(RUN) python -m benchmarks.$*

lint: install-dev
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports

format: install-dev
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

clean:
	@if [ -x .venv/bin/python ]; then .venv/bin/python -m socialrec.stores.milvus_server stop --data-dir "$(SOCIALREC_DATA_DIR)" || true; fi
	rm -rf "$(SOCIALREC_DATA_DIR)"

# The UIs over the local state (after `make materialize` or `make demo`), on 127.0.0.1 only,
# with what `make install` installs (never the dev packages). The MLflow store is the settings'
# (SOCIALREC_MLFLOW_TRACKING_URI, by default .socialrec/mlflow/mlflow.db); Dagster's is DAGSTER_HOME.
MLFLOW_PORT ?= 5000
DAGSTER_PORT ?= 3000
MLFLOW_URI_PY := from socialrec.settings import Settings; s = Settings(); s.ensure_dirs(); print(s.mlflow_tracking_uri)

.PHONY: mlflow-ui dagster-ui

mlflow-ui: uv
	@uri="$$($(RUN_APP) python -c '$(MLFLOW_URI_PY)')" || exit 1; \
	case "$$uri" in http*) echo "MLflow is a server here, with its own UI: $$uri"; exit 0;; esac; \
	echo "MLflow UI on http://127.0.0.1:$(MLFLOW_PORT) ($$uri); Ctrl-C stops it"; \
	exec $(RUN_APP) mlflow ui --backend-store-uri "$$uri" --host 127.0.0.1 --port $(MLFLOW_PORT)

dagster-ui: uv
	@mkdir -p "$(DAGSTER_HOME)"
	@echo "Dagster UI on http://127.0.0.1:$(DAGSTER_PORT) (DAGSTER_HOME=$(DAGSTER_HOME)); Ctrl-C stops it"
	@exec $(RUN_APP) python -m orchestration.dagster_cli dev -w workspace.yaml -h 127.0.0.1 -p $(DAGSTER_PORT)
