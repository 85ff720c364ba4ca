"""The Dagster side's deployment files: the code location's Dockerfile (checked statically: no
Docker here) and the values for the official Dagster Helm chart.

The chart itself is not in the repository. ``test_the_chart_renders`` renders it with
helm-python-sdk when a copy of the chart is given (``SOCIALREC_DAGSTER_CHART``: the directory
of ``helm pull dagster/dagster --version 1.13.27 --untar``) and skips otherwise."""

from __future__ import annotations

import ast
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, by_kind, validate_all

DOCKERFILE = DEPLOY / "docker" / "dagster.Dockerfile"
VALUES = DEPLOY / "helm" / "dagster-values.yaml"


def _locked() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"]}


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _values() -> dict:
    return yaml.safe_load(VALUES.read_text())


def _deployment() -> dict:
    (deployment,) = _values()["dagster-user-deployments"]["deployments"]
    return deployment


# --- the Dockerfile ----------------------------------------------------------------------------


def test_base_images_are_pinned():
    froms = [args for word, args in _instructions() if word == "FROM"]
    assert froms == ["python:3.11.14-slim-bookworm"]  # Python 3.11, as pyproject.toml requires
    uv_image = next(a for w, a in _instructions() if w == "COPY" and "--from=" in a)
    assert f"uv:{_locked()['uv']} " in uv_image  # the uv of uv.lock


def test_every_copy_source_exists_and_is_not_ignored():
    ignored = (DEPLOY / "docker" / "dagster.Dockerfile.dockerignore").read_text().split()
    sources = []
    for word, args in _instructions():
        if word == "COPY" and "--from=" not in args:
            sources += args.split()[:-1]
    assert {"socialrec", "assets", "orchestration", "feature_repo", "dbt_project"} <= set(sources)
    assert "uv.lock" in sources and "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert source not in ignored


def test_locked_install_and_torch_cpu():
    runs = [args for word, args in _instructions() if word == "RUN"]
    # the lock only, with the k8s extra (dagster-k8s, dagster-postgres: what the chart's run
    # launcher and instance storage load); nothing installed beside the lock
    assert "uv sync --frozen --no-dev --extra k8s --no-install-project" in runs
    assert "uv sync --frozen --no-dev --extra k8s" in runs
    assert not [r for r in runs if "pip install" in r]
    # the torch wheel uv.lock names, from the PyTorch CPU index, where the lock expects it
    torch = next(r for r in runs if "torch==" in r)
    assert f'"torch=={_locked()["torch"]}"' in torch and "--dest /opt/wheels" in torch
    assert "https://download.pytorch.org/whl/cpu" in torch
    # dagster-k8s / dagster-postgres are locked at the release of the locked dagster
    library = _locked()["dagster-gcp"]
    assert _locked()["dagster-k8s"] == library and _locked()["dagster-postgres"] == library


def test_entry_point_is_the_code_server_of_the_definitions():
    (cmd,) = [args for word, args in _instructions() if word == "CMD"]
    argv = yaml.safe_load(cmd)
    assert argv[:3] == ["dagster", "code-server", "start"]
    assert argv[argv.index("--port") + 1] == "3030"
    module = argv[argv.index("--module-name") + 1]
    attribute = argv[argv.index("--attribute") + 1]
    # the module is in the image and defines the attribute (read, not imported: importing
    # builds every definition)
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    tree = ast.parse(path.read_text())
    assigned = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}
    assert attribute in assigned
    # the chart starts the same code server
    assert _deployment()["codeServerArgs"] == argv[argv.index("--module-name") :]
    assert ("EXPOSE", "3030") in _instructions()


# --- the values for the official chart ---------------------------------------------------------


def test_values_match_the_locked_dagster():
    values = _values()
    dagster = _locked()["dagster"]
    assert values["dagsterWebserver"]["image"]["tag"] == dagster
    assert values["dagsterDaemon"]["image"]["tag"] == dagster
    assert f"--version {dagster}" in VALUES.read_text()  # the chart version to install


def test_values_run_launcher_postgres_and_daemon():
    values = _values()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["runLauncher"]["config"]["k8sRunLauncher"]["loadInclusterConfig"] is True
    postgres = values["postgresql"]
    assert postgres["enabled"] is False and postgres["postgresqlHost"]
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]
    daemon = values["dagsterDaemon"]
    assert daemon["enabled"] is True
    # one run at a time: post_index is the single writer of the Milvus collections
    assert daemon["runCoordinator"]["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] == 1
    assert not any(values[k]["enabled"] for k in ("rabbitmq", "redis", "flower"))


def test_values_code_location():
    deployment = _deployment()
    assert deployment["port"] == 3030
    assert deployment["image"]["repository"].endswith("/socialrec-dagster")
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["SOCIALREC_PROFILE"] == "gcp"
    assert env["SOCIALREC_FEAST_REGISTRY"].startswith(f"gs://{env['SOCIALREC_GCS_BUCKET']}/")
    assert deployment["envSecrets"] == [{"name": "socialrec-dagster"}]
    assert not any("TOKEN" in k or "PASSWORD" in k for k in env)  # secrets stay in Secrets


CHART = os.environ.get("SOCIALREC_DAGSTER_CHART")


@pytest.mark.skipif(
    not CHART,
    reason="the official Dagster chart is not in the repository; set SOCIALREC_DAGSTER_CHART "
    "to the directory of `helm pull dagster/dagster --version 1.13.27 --untar`",
)
def test_the_chart_renders():
    from helm_python import Chart

    chart = Chart.load(Path(CHART))
    assert chart.version == _locked()["dagster"]
    values = _values()
    chart.validate_schema(values)
    rendered = chart.render(values, name="dagster", namespace="socialrec")
    docs = [
        d
        for path, text in rendered.items()
        if path.endswith(".yaml")
        for d in yaml.safe_load_all(text)
        if d
    ]
    validate_all(docs)
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    (user,) = [d for n, d in deployments.items() if n.endswith("socialrec")]
    (container,) = user["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith("/socialrec-dagster:VERSION")
    assert any(n.endswith("daemon") for n in deployments)
    instance = next(d for d in by_kind(docs, "ConfigMap") if "dagster.yaml" in d.get("data", {}))[
        "data"
    ]["dagster.yaml"]
    assert "K8sRunLauncher" in instance and "POSTGRES_HOST" in instance
    assert not [d for d in by_kind(docs, "StatefulSet") if "postgresql" in d["metadata"]["name"]]
