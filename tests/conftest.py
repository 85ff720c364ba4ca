"""Shared test set-up: offline, quiet, loopback only; every test's state in a tmp directory."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def gcs_emulator(port):
    """gcp-storage-emulator on 127.0.0.1 (in memory, bucket ``landing``): its endpoint URL.

    Stopped after the test. Clients: ``emulator_client(endpoint)``, or any
    google.cloud.storage.Client while ``STORAGE_EMULATOR_HOST`` is the endpoint."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="landing")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def emulator_client(endpoint: str):
    """A google-cloud-storage client of the emulator at ``endpoint`` (anonymous)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )
