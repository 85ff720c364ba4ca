"""Errors and answers: :class:`ApiError` (a 4xx with a reason), :class:`DependencyError` (a
dependency that is unreachable or timed out, raised through :class:`Guarded`),
:class:`ErrorAnswer` (the JSON error answer) and :func:`respond`, which turns an endpoint's
outcome into one of them.

Outage or bug: only the store clients' own connection and timeout errors (:func:`is_outage`,
per dependency) become a :class:`DependencyError` (a fallback or a 503, and the outage
metrics); anything else a store raises (``KeyError``, ``OverflowError``, ``AttributeError``,
a driver's "bad request" error, ...) passes through as a bug: a 500 with an error id that is
also in the logged traceback, counted by ``socialrec_internal_errors_total``."""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from socialrec.serving.metrics import ServiceMetrics, note_outcome

log = logging.getLogger("socialrec.service")


class ApiError(Exception):
    """An answer other than 200 with a reason: ``{"error": code, "detail": reason}``."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class DependencyError(Exception):
    """A call into Milvus, the seen store, the feature store, the landing bucket or the event
    spool failed because the store is unreachable or timed out (:func:`is_outage`)."""

    def __init__(self, dependency: str, cause: BaseException):
        super().__init__(f"{dependency} unavailable: {type(cause).__name__}: {cause}"[:300])
        self.dependency = dependency
        self.cause = cause


# --- what counts as an outage, per dependency ----------------------------------------------
def _classes(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """The named exception classes of a driver, or none when the driver is not installed."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return ()
    return tuple(getattr(mod, n) for n in names)


@functools.cache
def outage_classes(dependency: str) -> tuple[type[BaseException], ...]:
    """The exception classes that mean ``dependency`` is unreachable or timed out: the OS's
    (``OSError``: ``ConnectionError``, ``TimeoutError``, a socket's or a local disk's error;
    requests' ``ConnectionError`` is one), SQLite's ``OperationalError`` (locked, unable to
    open, disk I/O) for the SQLite stores, and each driver's own:

    * ``milvus``: pymilvus' ``ConnectError``/``MilvusUnavailableException`` (and, by code,
      :func:`_milvus_outage`);
    * ``seen_store``: the Cassandra driver's (ScyllaDB) ``NoHostAvailable``,
      ``OperationTimedOut``, ``Unavailable``, ``ReadTimeout``, ``WriteTimeout``;
    * ``feature_store``: redis' ``ConnectionError``/``TimeoutError`` (Feast on Redis) and the
      Google API errors of a registry read from GCS;
    * ``landing``: google-api-core's ``ServiceUnavailable``, ``GatewayTimeout`` (with
      ``DeadlineExceeded``), ``RetryError`` and google-auth's ``TransportError`` (GCS);
    * ``spool``: a closed spool (``SpoolClosed``: the service is shutting down).
    """
    base: tuple[type[BaseException], ...] = (OSError, sqlite3.OperationalError)
    google = _classes(
        "google.api_core.exceptions", "ServiceUnavailable", "GatewayTimeout", "RetryError"
    ) + _classes("google.auth.exceptions", "TransportError")
    extra: dict[str, tuple[type[BaseException], ...]] = {
        "milvus": _classes("pymilvus.exceptions", "ConnectError", "MilvusUnavailableException"),
        "seen_store": _classes(
            "cassandra", "OperationTimedOut", "Unavailable", "ReadTimeout", "WriteTimeout"
        )
        + _classes("cassandra.cluster", "NoHostAvailable"),
        "feature_store": _classes("redis.exceptions", "ConnectionError", "TimeoutError") + google,
        "landing": google,
        "spool": _classes("socialrec.serving.spool", "SpoolClosed"),  # shutting down
    }
    return base + extra.get(dependency, ())


def _grpc_outage(code: Any) -> bool:
    """A gRPC status code of an unreachable or slow server (UNAVAILABLE, DEADLINE_EXCEEDED)."""
    try:
        import grpc
    except ImportError:  # pragma: no cover - pymilvus depends on grpc
        return False
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _milvus_outage(exc: BaseException) -> bool:
    """What pymilvus raises when its server is gone: measured with pymilvus 3.0.2 against a
    local Milvus stopped under an open client (``tests/service/test_outages.py``), every call
    raises ``MilvusException(code=Status.CONNECT_FAILED)`` ("Fail connecting to server ...")
    after the connection manager's reconnect fails; a retry loop that runs out raises one
    with the gRPC code (UNAVAILABLE), and DEADLINE_EXCEEDED comes as the ``grpc.RpcError``
    itself. Any other ``MilvusException`` (a bad parameter, a missing collection, an
    "Unexpected error" wrapping a Python exception) is not an outage."""
    import grpc
    from pymilvus.client.types import Status
    from pymilvus.exceptions import MilvusException

    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return _grpc_outage(exc.code())
    if isinstance(exc, MilvusException):
        return exc.code == Status.CONNECT_FAILED or _grpc_outage(exc.code)
    return False


def is_outage(dependency: str, exc: BaseException) -> bool:
    """Whether ``exc``, raised by a call into ``dependency``, means the store is unreachable
    or timed out (an outage) rather than a bug."""
    if isinstance(exc, outage_classes(dependency)):
        return True
    if dependency == "milvus":
        try:
            return _milvus_outage(exc)
        except ImportError:  # pragma: no cover - pymilvus is a dependency of the service
            return False
    return False


class Guarded:
    """A proxy whose method calls raise :class:`DependencyError` (tagged with the dependency)
    when the store is unreachable or timed out (:func:`is_outage`); any other exception
    passes through unchanged (a bug is not an outage)."""

    def __init__(self, target: Any, dependency: str):
        self._target = target
        self._dependency = dependency

    def __getattr__(self, name: str):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except DependencyError:
                raise
            except Exception as exc:
                if is_outage(self._dependency, exc):
                    raise DependencyError(self._dependency, exc) from exc
                raise

        return call


@dataclass(frozen=True)
class ErrorAnswer:
    """A JSON error answer, ``{"error": ..., "detail": ...}`` (a 500 also has its
    ``error_id``) with an HTTP status; the web layer turns it into its own response type
    (``bentos/service.py``: a starlette JSONResponse)."""

    status_code: int
    error: str
    detail: str
    error_id: str | None = None

    @property
    def content(self) -> dict[str, str]:
        out = {"error": self.error, "detail": self.detail}
        if self.error_id is not None:
            out["error_id"] = self.error_id
        return out

    @property
    def body(self) -> bytes:
        return json.dumps(self.content).encode()


def internal_error(endpoint: str, metrics: ServiceMetrics, exc: BaseException) -> ErrorAnswer:
    """The 500 of a bug: a new error id, logged with the traceback of ``exc``, counted by
    ``socialrec_internal_errors_total{endpoint}`` (and ``socialrec_errors_total{kind=
    "internal"}``); the answer names the id, never the exception."""
    error_id = str(uuid.uuid4())
    log.error("%s: internal error %s: %s", endpoint, error_id, type(exc).__name__, exc_info=exc)
    metrics.internal_errors.labels(endpoint).inc()
    metrics.errors.labels(endpoint, "internal").inc()
    note_outcome("error")
    return ErrorAnswer(500, "internal_error", f"internal error {error_id}", error_id)


def respond(endpoint: str, metrics: ServiceMetrics, fn: Callable, *args, **kwargs):
    """``fn(...)``'s result, or an :class:`ErrorAnswer`: ApiError -> its status, a dependency
    outage -> 503, anything else (a bug) -> 500 with an error id (:func:`internal_error`);
    the outcome is noted for the request metrics."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        note_outcome("not_found" if exc.status == 404 else "invalid")
        return ErrorAnswer(exc.status, exc.error, exc.detail)
    except DependencyError as exc:
        log.warning("%s: %s", endpoint, exc)
        metrics.errors.labels(endpoint, exc.dependency).inc()
        note_outcome("unavailable")
        return ErrorAnswer(503, f"{exc.dependency}_unavailable", str(exc))
    except Exception as exc:
        return internal_error(endpoint, metrics, exc)
