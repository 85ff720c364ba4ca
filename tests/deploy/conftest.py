"""Deployment files checked offline: Kubernetes schemas of the version we target, no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes_validate.utils import validate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# the Kubernetes version the manifests are validated against (a schema kubernetes-validate
# ships; GKE's regular channel at the time of writing)
K8S_VERSION = "1.33.0"


def validate_all(documents: list[dict]) -> None:
    """Every document against its Kubernetes schema, strict: an unknown field fails too."""
    assert documents, "nothing to validate"
    for doc in documents:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            validate(doc, K8S_VERSION, strict=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the document's name
            pytest.fail(f"{where}: {e}")


def by_kind(documents: list[dict], kind: str) -> list[dict]:
    return [d for d in documents if d["kind"] == kind]
