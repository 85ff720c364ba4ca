"""The recommender service's pure-ASGI middlewares (no web framework: any ASGI server or
framework can mount them; ``bentos/service.py`` registers them on the BentoML service).

* :class:`RequestMetrics` — ``socialrec_requests_total{endpoint, outcome}`` for every API
  request, also those answered before the service runs (401, 422).
* :class:`BearerAuth` — the write endpoints (and the read ones when
  ``SOCIALREC_AUTH_READ_ENDPOINTS``) need ``Authorization: Bearer <SOCIALREC_API_TOKEN>``.
* :class:`UnprocessableBody` — a body that fails validation is a 422, not a 400.
* :class:`ReadinessReason` — ``/readyz`` answers JSON ``{"ready": ..., "reason": ...}`` with the
  reason set by the readiness check (:func:`set_readiness`).
* :class:`MetricsRefresh` — brings the gauges up to date before ``/metrics`` answers.
"""

from __future__ import annotations

import hmac
import json
import threading

from socialrec.serving.metrics import OUTCOME, service_metrics
from socialrec.serving.schemas import API_ROUTES, READ_ROUTES, WRITE_ROUTES


def _route(scope) -> str:
    return scope.get("path", "").rstrip("/") or "/"


async def _send_json(send, status: int, body: dict, headers: tuple = ()) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return {401: "unauthorized", 404: "not_found", 400: "invalid", 422: "invalid"}.get(
        status, "error" if status >= 500 else "rejected"
    )


class RequestMetrics:
    """ASGI middleware: ``socialrec_requests_total{endpoint, outcome}`` for every API request,
    also those answered before the service runs (401, 422). The outcome is the one the
    endpoint noted (``socialrec.serving.metrics.note_outcome``: fallback, cold_start, ...) or follows
    from the status."""

    def __init__(self, app, routes: tuple[str, ...] = API_ROUTES):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) not in self.routes:
            return await self.app(scope, receive, send)
        note: dict = {}
        token = OUTCOME.set(note)

        async def send_status(message):
            if message["type"] == "http.response.start":
                note.setdefault("status", message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            note["outcome"] = "error"
            raise
        finally:
            OUTCOME.reset(token)
            outcome = note.get("outcome") or _outcome_of(note.get("status", 500))
            service_metrics().requests.labels(_route(scope), outcome).inc()


class BearerAuth:
    """ASGI middleware: the write endpoints (and the read endpoints when
    ``settings.auth_read_endpoints``) need ``Authorization: Bearer <settings.api_token>``;
    otherwise 401 with a JSON reason. The token is compared in constant time."""

    def __init__(self, app, settings=None):
        if settings is None:
            from socialrec.settings import Settings

            settings = Settings()
        self.app = app
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        self.token = token.encode()
        self.routes = WRITE_ROUTES + (READ_ROUTES if settings.auth_read_endpoints else ())

    def reason(self, header: bytes | None) -> str | None:
        """Why a request with this Authorization header is refused (None: it is not)."""
        if not self.token:
            return "no API token is configured (SOCIALREC_API_TOKEN)"
        if not header:
            return "missing 'Authorization: Bearer <token>' header"
        scheme, _, given = header.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return "the Authorization header must be 'Bearer <token>'"
        if not hmac.compare_digest(given.strip(), self.token):
            return "invalid bearer token"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) not in self.routes:
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
        reason = self.reason(header)
        if reason is None:
            return await self.app(scope, receive, send)
        await _send_json(
            send,
            401,
            {"error": "unauthorized", "detail": reason},
            ((b"www-authenticate", b'Bearer realm="socialrec"'),),
        )


class UnprocessableBody:
    """ASGI middleware: a body that fails validation is answered 422 (Unprocessable Entity,
    as FastAPI does) ``{"error": "invalid_request", "detail": ...}``, not BentoML's generic
    400 (its ``detail``, or its ``error`` sentence, is kept as the detail). BentoML answers 400
    only for bad input, so every 400 of an API route is such a body. (``RequestGate`` answers
    most of them before BentoML sees them; this covers whatever it lets through.)"""

    def __init__(self, app, routes: tuple[str, ...] = API_ROUTES):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) not in self.routes:
            return await self.app(scope, receive, send)
        state: dict = {"chunks": []}

        async def send_422(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if message["status"] != 400:
                    await send(message)
                return
            if state.get("status") != 400:
                return await send(message)
            state["chunks"].append(message.get("body", b""))
            if not message.get("more_body", False):
                raw = b"".join(state["chunks"])
                try:
                    original = json.loads(raw)
                except ValueError:
                    original = raw.decode("utf-8", "replace")
                if isinstance(original, list) and len(original) == 1:
                    original = original[0]  # BentoML wraps some answers in a 1-tuple
                detail = original
                if isinstance(original, dict):
                    detail = original.get("detail") or original.get("error") or original
                body = {"error": "invalid_request", "detail": detail}
                await _send_json(send, 422, body)

        return await self.app(scope, receive, send_422)


# the latest readiness check: why it failed (``reason``) and what it noticed while ready
# (``note``, e.g. an event spool that cannot flush); set by the service's readiness hook
_READINESS: dict[str, str | None] = {"reason": "not checked yet", "note": None}
_READINESS_LOCK = threading.Lock()


def set_readiness(reason: str | None, note: str | None = None) -> None:
    """Record the outcome of a readiness check: ``reason`` why it is not ready (None: ready),
    ``note`` something to report either way (None: nothing)."""
    with _READINESS_LOCK:
        _READINESS["reason"] = reason
        _READINESS["note"] = note


def readiness_body(status: int) -> dict:
    """The JSON of a ``/readyz`` answer with this status: ``{"ready": bool, "reason": str |
    None}``; not ready: why (plus the note); ready: the note (usually None)."""
    with _READINESS_LOCK:
        reason, note = _READINESS.get("reason"), _READINESS.get("note")
    if status == 200:
        return {"ready": True, "reason": note}
    text = "; ".join(r for r in (reason or "not ready", note) if r)
    return {"ready": False, "reason": text}


class ReadinessReason:
    """ASGI middleware: BentoML's ``/readyz`` answers 503 with a fixed text when
    ``__is_ready__`` returns False, and 200 with an empty line when it returns True; this
    replaces both bodies with JSON ``{"ready": ..., "reason": ...}`` (:func:`readiness_body`:
    the reason of the check that just ran). Other statuses pass through unchanged."""

    def __init__(self, app, path: str = "/readyz"):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) != self.path:
            return await self.app(scope, receive, send)
        state: dict = {}

        async def send_json(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if message["status"] not in (200, 503):
                    await send(message)
                return
            if state.get("status") not in (200, 503):
                await send(message)
                return
            if not message.get("more_body", False):
                status = state["status"]
                await _send_json(send, status, readiness_body(status))

        return await self.app(scope, receive, send_json)


class MetricsRefresh:
    """ASGI middleware: before ``/metrics`` answers, the service's gauges are brought up to date
    (``ServiceMetrics.refresh``: e.g. the event spool's pending events and failures)."""

    def __init__(self, app, path: str = "/metrics"):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and _route(scope) == self.path:
            service_metrics().refresh()
        return await self.app(scope, receive, send)
