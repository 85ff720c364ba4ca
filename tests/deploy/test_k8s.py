"""The recommender's Kubernetes manifests (deploy/k8s): rendered by kustomize, every document
valid against the Kubernetes schema, and the parts the service depends on."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from socialrec.settings import Settings
from tests.deploy.conftest import DEPLOY, by_kind, validate_all

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: `kubectl kustomize` renders the manifests"
)
NAME = "socialrec-recommender"


def render(path) -> list[dict]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(DEPLOY / "k8s" / "base")


@pytest.fixture(scope="module")
def gcp() -> list[dict]:
    return render(DEPLOY / "k8s" / "overlays" / "gcp")


def _one(docs: list[dict], kind: str) -> dict:
    (doc,) = by_kind(docs, kind)
    return doc


def _container(docs: list[dict]) -> dict:
    (container,) = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_every_document_is_valid(base, gcp):
    validate_all(base)
    validate_all(gcp)
    assert sorted(d["kind"] for d in gcp) == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    assert not by_kind(gcp, "Secret"), "secrets are created out of band, never kept in git"
    assert {d["metadata"]["namespace"] for d in gcp} == {"socialrec"}


def test_probes_and_port(gcp):
    container = _container(gcp)
    assert container["ports"] == [{"name": "http", "containerPort": 3000}]  # BentoML's port
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    service = _one(gcp, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == _one(gcp, "Deployment")["spec"]["selector"]["matchLabels"]


def test_settings_from_the_configmap_and_secrets_from_the_secret(gcp):
    container = _container(gcp)
    configmap = _one(gcp, "ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    assert configmap["metadata"]["name"].startswith(f"{NAME}-")  # hashed: a change rolls out
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env["SOCIALREC_API_TOKEN"] == {"name": NAME, "key": "api-token"}
    assert env["SOCIALREC_READ_TOKEN"] == {"name": NAME, "key": "read-token"}
    for rotation in ("SOCIALREC_API_TOKEN_PREVIOUS", "SOCIALREC_READ_TOKEN_PREVIOUS"):
        assert env[rotation]["optional"] is True
    assert env["SOCIALREC_MILVUS_TOKEN"]["optional"] is True
    assert env["SOCIALREC_SCYLLA_PASSWORD"]["optional"] is True
    assert not set(env) & set(configmap["data"])
    # the ConfigMap plus the Secret are a valid gcp profile (socialrec.settings refuses less)
    data = configmap["data"]
    fields = {k.removeprefix("SOCIALREC_").lower(): v for k, v in data.items()}
    settings = Settings(
        **{k: v for k, v in fields.items() if k in Settings.model_fields},
        api_token="the Secret's api-token",
        read_token="the Secret's read-token",
    )
    assert settings.tls_termination == "ingress"
    assert settings.profile == "gcp" and settings.landing_uri.startswith("gs://")
    # settings being added in parallel (Feast on Redis, the registry in the bucket)
    assert data["SOCIALREC_REDIS_CONNECTION_STRING"] and data["SOCIALREC_FEAST_REGISTRY"]
    assert data["SOCIALREC_FEAST_REGISTRY"].startswith(f"gs://{data['SOCIALREC_GCS_BUCKET']}/")


def test_one_worker_per_core(gcp):
    container = _container(gcp)
    data = _one(gcp, "ConfigMap")["data"]
    workers = int(data["SOCIALREC_SERVICE_WORKERS"])
    assert data["SOCIALREC_SERVICE_THREADS"] == "1"
    resources = container["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == str(workers)
    assert resources["requests"]["memory"] == resources["limits"]["memory"]  # Guaranteed QoS


def test_the_spool_volume_and_the_shutdown_flush(gcp):
    pod = _one(gcp, "Deployment")["spec"]["template"]["spec"]
    data_dir = _one(gcp, "ConfigMap")["data"]["SOCIALREC_DATA_DIR"]
    (mount,) = _container(gcp)["volumeMounts"]
    assert mount["mountPath"] == data_dir  # the spool is data_dir/spool
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"] and "emptyDir" in volume
    # the preStop pause and the final flush fit in the grace period
    assert pod["terminationGracePeriodSeconds"] >= 30
    prestop = _container(gcp)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert prestop < pod["terminationGracePeriodSeconds"] / 2


def test_autoscaling_and_disruptions(gcp):
    deployment = _one(gcp, "Deployment")
    hpa = _one(gcp, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 80
    pdb = _one(gcp, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_workload_identity_and_image(gcp, base):
    account = _one(gcp, "ServiceAccount")
    pod = _one(gcp, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com"
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    image = _container(gcp)["image"]
    assert image.endswith("/socialrec_recommender:VERSION") and image != _container(base)["image"]


def test_dagster_run_pods_share_the_data_volume():
    """The claim of deploy/k8s/dagster is valid and is the one the chart values mount at the
    image's SOCIALREC_DATA_DIR."""
    docs = render(DEPLOY / "k8s" / "dagster")
    validate_all(docs)
    (claim,) = by_kind(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    values = yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    (volume,) = launcher["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    (mount,) = launcher["volumeMounts"]
    dockerfile = (DEPLOY / "docker" / "dagster.Dockerfile").read_text()
    assert mount["name"] == volume["name"]
    assert f"ENV SOCIALREC_DATA_DIR={mount['mountPath']}" in dockerfile
