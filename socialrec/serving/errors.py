"""Errors and answers: :class:`ApiError` (a 4xx with a reason), :class:`DependencyError` (a
dependency that is unreachable or timed out, raised through :class:`Guarded`, which can also
open a store on first use and reopen it after an outage),
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
import threading
import time
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


RETRY_SECONDS = 5.0  # after an outage, a reopening Guarded waits this long before reopening
RETIRED_GRACE_SECONDS = 60.0  # a replaced client is closed this long after it was replaced


class Guarded:
    """A proxy whose method calls raise :class:`DependencyError` (tagged with the dependency)
    when the store is unreachable or timed out (:func:`is_outage`); any other exception
    passes through unchanged (a bug is not an outage).

    Reopening (:meth:`reopening`: built from an ``opener`` instead of an open client): the
    client is opened on the first call, not at start, so a store that is down when the
    service starts is an outage of each call (the recommender's sources fail open) instead of
    a failed start. After an outage (while opening or during a call) the client is replaced:
    for ``retry_seconds`` every call fails at once with that outage (a dead store is not
    hammered, a request does not wait for its timeout again), then the next call opens a new
    client, so a store that came back is used again without a restart. A replaced client is
    closed ``RETIRED_GRACE_SECONDS`` later (calls still running on it finish first)."""

    def __init__(
        self,
        target: Any = None,
        dependency: str = "",
        *,
        opener: Callable[[], Any] | None = None,
        retry_seconds: float = RETRY_SECONDS,
    ):
        self._target = target
        self._dependency = dependency
        self._opener = opener
        self._retry_seconds = float(retry_seconds)
        self._retry_at = 0.0
        self._outage: BaseException | None = None  # the last outage's cause, while it lasts
        self._retired: list[tuple[float, Any]] = []
        self._lock = threading.Lock()

    @classmethod
    def reopening(
        cls, opener: Callable[[], Any], dependency: str, retry_seconds: float = RETRY_SECONDS
    ) -> Guarded:
        return cls(dependency=dependency, opener=opener, retry_seconds=retry_seconds)

    def _client(self) -> Any:
        target = self._target
        if target is not None or self._opener is None:
            return target
        with self._lock:
            if self._target is not None or self._opener is None:
                return self._target
            if time.monotonic() < self._retry_at and self._outage is not None:
                raise DependencyError(self._dependency, self._outage)
            try:
                self._target = self._opener()
            except Exception as exc:
                if not is_outage(self._dependency, exc):
                    raise
                self._outage, self._retry_at = exc, time.monotonic() + self._retry_seconds
                log.warning(
                    "%s: cannot open (retry in %.0fs): %s",
                    self._dependency,
                    self._retry_seconds,
                    exc,
                )
                raise DependencyError(self._dependency, exc) from exc
            self._close_retired(time.monotonic() - RETIRED_GRACE_SECONDS)
            return self._target

    def _failed(self, target: Any, exc: BaseException) -> None:
        """An outage of a call on ``target``: a reopening proxy replaces that client."""
        if self._opener is None:
            return
        with self._lock:
            if self._target is target:
                self._target = None
                self._retired.append((time.monotonic(), target))
                self._outage, self._retry_at = exc, time.monotonic() + self._retry_seconds
                log.warning(
                    "%s: outage, reopening in %.0fs: %s", self._dependency, self._retry_seconds, exc
                )

    def _close_retired(self, before: float) -> None:
        keep = []
        for at, client in self._retired:
            if at > before:
                keep.append((at, client))
            else:
                self._close_client(client)
        self._retired = keep

    def _close_client(self, client: Any) -> None:
        try:
            getattr(client, "close", lambda: None)()
        except Exception as exc:  # noqa: BLE001 - a client of a dead store may fail to close
            if not is_outage(self._dependency, exc):
                raise
            log.info("%s: closing a client of a store that is down: %r", self._dependency, exc)

    def close(self) -> None:
        """Close the client (and the replaced ones); a reopening proxy opens no new one."""
        with self._lock:
            target = self._target
            if self._opener is not None:
                self._target, self._opener = None, None
            self._close_retired(float("inf"))
        if target is not None:
            self._close_client(target)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        target = self._client()
        attr = getattr(target, name)
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
                    self._failed(target, exc)
                    raise DependencyError(self._dependency, exc) from exc
                raise

        return call


def guarded(target: Any, dependency: str) -> Any:
    """``target`` as a :class:`Guarded` of ``dependency`` (itself when it is one already);
    None stays None."""
    if target is None or isinstance(target, Guarded):
        return target
    return Guarded(target, dependency)


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
