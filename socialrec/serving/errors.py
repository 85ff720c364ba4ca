"""Errors and answers: :class:`ApiError` (a 4xx with a reason), :class:`DependencyError` (a
dependency that failed, raised through :class:`Guarded`), :class:`ErrorAnswer` (the JSON error
answer) and :func:`respond`, which turns an endpoint's outcome into one of them."""

from __future__ import annotations

import functools
import json
import logging
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
    spool failed."""

    def __init__(self, dependency: str, cause: BaseException):
        super().__init__(f"{dependency} unavailable: {type(cause).__name__}: {cause}"[:300])
        self.dependency = dependency
        self.cause = cause


class Guarded:
    """A proxy whose method calls raise :class:`DependencyError` (tagged with the dependency)
    instead of the driver's own exception, so a failure can be told from a bug."""

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
            except (DependencyError, ValueError, TypeError):
                raise  # bad input (e.g. non-int filter values) is not an outage
            except Exception as exc:
                raise DependencyError(self._dependency, exc) from exc

        return call


@dataclass(frozen=True)
class ErrorAnswer:
    """A JSON error answer, ``{"error": ..., "detail": ...}`` with an HTTP status; the web
    layer turns it into its own response type (``bentos/service.py``: a starlette
    JSONResponse)."""

    status_code: int
    error: str
    detail: str

    @property
    def content(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}

    @property
    def body(self) -> bytes:
        return json.dumps(self.content).encode()


def respond(endpoint: str, metrics: ServiceMetrics, fn: Callable, *args, **kwargs):
    """``fn(...)``'s result, or an :class:`ErrorAnswer`: ApiError -> its status, a dependency
    outage -> 503; the outcome is noted for the request metrics. Anything else propagates
    (the web layer answers 500) after counting it."""
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
    except Exception:
        metrics.errors.labels(endpoint, "internal").inc()
        note_outcome("error")
        raise
