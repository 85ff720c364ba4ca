"""Quiet consoles: the one place that silences what the project cannot fix at its cause.

:func:`quiet` runs first in every process that runs the graph or serves the models: it is
called by ``orchestration/__init__.py`` (``make materialize``, the runs and code server of
``make demo``'s Dagster) and by ``bentos/service.py`` (the bento's server and workers). It sets
environment defaults (inherited by the processes those start: dbt, the code server) and drops
a short list of known warnings and log records, each matched by its message and by the module
(or file) it comes from, each from a library whose code we cannot change at the locked
versions. Anything else still reaches the console.

Fixed at the cause instead, not here: DuckDB connections closed after use (nothing for
nanobind to report at exit), Dagster's ``context.run.run_id`` instead of the deprecated
``context.run_id``, no ``pd.concat`` of an empty frame, ``implicit``'s ALS fitted under
``threadpoolctl``'s one-thread BLAS limit, the two-tower's Keras ``get_config``, MLflow model
signatures declared without the integer-column hint (socialrec.models.signature), an
empty ``dagster.yaml`` with telemetry off (``make install``), TensorFlow's C++ start-up lines
kept off the terminal while it is imported (:func:`native_stderr_silenced`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator

ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ log: errors only
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a tqdm bar per model logged or loaded
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Detected uv project", "Creating initial tables", ...
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar (the MiniLM)
}

# (category, message, file): a warning dropped when all three match (regexes: message from its
# start, file anywhere in the path). Feast sets ``simplefilter("once", DeprecationWarning)``
# when imported, in front of any filter set before it: hence a showwarning hook, not filters.
WARNINGS: list[tuple[type[Warning], str, str]] = [
    # ibis 12 (Feast's DuckDB offline store) calls DuckDB 2's deprecated fetch_arrow_table()
    (DeprecationWarning, r"fetch_arrow_table\(\) is deprecated", r"/ibis/backends/duckdb/"),
    # Dagster's own code and its integrations on deprecated context properties
    (
        DeprecationWarning,
        r"InitResourceContext\.(dagster_run|run_id) is deprecated",
        r"/dagster/_core/execution/context/init\.py|/dagster_mlflow/resources\.py",
    ),
    (DeprecationWarning, r"AssetExecutionContext\.op is deprecated", r"/dagster_dbt/"),
    (
        DeprecationWarning,
        r"Property `ScheduleDefinition\.environment_vars` is deprecated",
        r"/dagster/_core/remote_representation/",
    ),
    # dagster-dbt[rs] pins sqlglot's Rust tokenizer, which sqlglot 29 no longer uses (both
    # sqlglot and sqlglotrs say so when imported)
    (UserWarning, r"sqlglot\[rs\] is deprecated", r"/sqlglot/tokens\.py"),
    (DeprecationWarning, r"sqlglotrs is deprecated", r"/sqlglotrs/"),
    # BentoML 1.4 reads model_fields on the request's model instance, on every request
    (
        DeprecationWarning,
        r"Accessing the 'model_fields' attribute on the instance is deprecated",
        r"/_bentoml_impl/",
    ),
    # BentoML's request model of POST /posts: its field media_type (the API's) shadows one of
    # BentoML's IODescriptor; harmless, and the field name is part of the API
    (UserWarning, r'Field name "media_type" in "Input" shadows', r"/pydantic/"),
    # the two-tower pyfunc is logged with a declared signature (socialrec.models.signature);
    # an input example would make MLflow load TensorFlow and run the towers at log time
    (UserWarning, r"(\x1b\[[0-9;]*m)?An input example was not provided", r"/mlflow/"),
    # status notes of Dagster APIs we use deliberately (beta: the MLflow resource and hook,
    # backfill_policy; superseded: the freshness checks, until we move to FreshnessPolicy)
    (Warning, r"Function `_create_mlflow_run_hook` is currently in beta", r"/dagster_mlflow/"),
    (
        Warning,
        r"Parameter `backfill_policy` of function `asset` is currently in beta",
        r"/dagster/",
    ),
    (Warning, r"Class `MlFlow` is currently in beta", r"/assets/resources\.py"),
    (Warning, r"Function `build_time_partition_freshness_checks` is superseded", r"/assets/"),
    (Warning, r"Function `build_sensor_for_freshness_checks` is superseded", r"/assets/"),
    # `dagster dev` (make demo, make dagster-ui) says `dg dev` supersedes it; `dg` is another
    # package (dagster-dg-cli) and `dagster dev` stays supported
    (Warning, r"Function `dev_command` is superseded", r"/click/"),
]

# (logger, message): a log record dropped when its logger and the start of its message match
LOG_RECORDS: list[tuple[str, str]] = [
    # uv's venvs have no pip; our pip requirements are explicit (socialrec.models.registry)
    ("mlflow.utils.environment", r"Failed to resolve installed pip version"),
    # the two-tower pyfunc wrapper is our class, pickled by MLflow and loaded by our code only
    ("mlflow.pyfunc", r"Passing a Python object as `python_model`"),
]

_WARNINGS = [(c, re.compile(m), re.compile(f)) for c, m, f in WARNINGS]


def known_noise(message: Warning | str, category: type[Warning], filename: str) -> bool:
    """Whether a warning is on the :data:`WARNINGS` list."""
    text = str(message)
    path = str(filename).replace(os.sep, "/")
    return any(
        issubclass(category, c) and m.match(text) and f.search(path) for c, m, f in _WARNINGS
    )


class _DropRecords(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


_installed: list[bool] = []


def quiet() -> None:
    """Set :data:`ENVIRONMENT` (where unset) and drop the :data:`WARNINGS` and
    :data:`LOG_RECORDS`; once per process."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if _installed:
        return
    _installed.append(True)
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not known_noise(message, category, filename):
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    for name, pattern in LOG_RECORDS:
        logging.getLogger(name).addFilter(_DropRecords(pattern))


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 on /dev/null for the block (Python's ``sys.stderr`` flushed first):
    for the C++ lines TensorFlow writes while it is imported (oneDNN is on, no CUDA driver;
    absl logs them before TF_CPP_MIN_LOG_LEVEL applies). An import error still raises."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
