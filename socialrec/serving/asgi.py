"""The recommender service's pure-ASGI middlewares (no web framework: any ASGI server or
framework can mount them; ``bentos/service.py`` registers them on the BentoML service).

* :class:`RequestMetrics` — ``socialrec_requests_total{endpoint, outcome}`` for every API
  request, also those answered before the service runs (401, 422).
* :class:`BearerAuth` — the write endpoints (and the read ones when
  ``SOCIALREC_AUTH_READ_ENDPOINTS``) need ``Authorization: Bearer <SOCIALREC_API_TOKEN>``.
* :class:`UnprocessableBody` — a body that fails validation is a 422, not a 400.
* :class:`ReadinessReason` — ``/readyz`` answers JSON ``{"ready": ..., "reason": ...}`` (and
  ``"degraded": {dependency: why}``) as set by the readiness check (:func:`set_readiness`).
* :class:`MetricsRefresh` — brings the gauges up to date before ``/metrics`` answers.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading

from socialrec.serving.metrics import OUTCOME, service_metrics
from socialrec.serving.schemas import API_ROUTES, READ_ROUTES, WRITE_ROUTES

log = logging.getLogger("socialrec.service")


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


def _reason(body: bytes) -> str:
    """The ``error: detail`` of an error answer's body (its start), for the log line."""
    try:
        answer = json.loads(body)
        reason = f"{answer['error']}: {answer.get('detail', '')}"
    except (ValueError, TypeError, KeyError):
        reason = body.decode("utf-8", "replace")
    return reason[:300]


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
            elif 400 <= note.get("status", 0) < 500 and not note.get("logged"):
                note["logged"] = True  # a client's error: one line, never a traceback
                log.warning(
                    "%s %s %s %s",
                    scope.get("method"),
                    scope.get("path"),
                    note["status"],
                    _reason(message.get("body", b"")),
                )
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


WRITE, READ = "write", "read"  # the token scopes: write implies read
AUTH_STATE = "socialrec_token_scope"  # the request's scope, in the ASGI scope's "state"


def _secrets(*values) -> list[bytes]:
    return [v.get_secret_value().encode() for v in values if v and v.get_secret_value()]


class Tokens:
    """The bearer tokens of the settings by scope: ``api_token`` (write; also read) and
    ``read_token`` (read only), each with its ``*_previous`` during a rotation. Compared in
    constant time, every candidate (no early exit on the first match)."""

    def __init__(self, settings):
        self.write = _secrets(settings.api_token, settings.api_token_previous)
        self.read = _secrets(settings.read_token, settings.read_token_previous)

    def scope_of(self, header: bytes | None) -> tuple[str | None, str | None]:
        """(the header's scope, why it has none): scope ``write``, ``read`` or None."""
        if not header:
            return None, "missing 'Authorization: Bearer <token>' header"
        scheme, _, given = header.strip().partition(b" ")
        given = given.strip()
        if scheme.lower() != b"bearer" or not given:
            return None, "the Authorization header must be 'Bearer <token>'"
        is_write = any([hmac.compare_digest(given, t) for t in self.write])
        is_read = any([hmac.compare_digest(given, t) for t in self.read])
        if is_write:
            return WRITE, None
        if is_read:
            return READ, None
        return None, "invalid bearer token"


def token_scope(state) -> str | None:
    """The scope :class:`BearerAuth` found for a request (``request.state`` of the endpoint)."""
    return getattr(state, AUTH_STATE, None)


class BearerAuth:
    """ASGI middleware: the write endpoints need a write token (``settings.api_token``), the
    read endpoints a read or write token when ``settings.auth_read_endpoints``; otherwise 401
    with a JSON reason (a read token on a write endpoint: 403). Every request's scope is left in
    the ASGI scope's state (:func:`token_scope`) for what needs one inside an endpoint
    (``/recommend``'s debug answer)."""

    def __init__(self, app, settings=None):
        if settings is None:
            from socialrec.settings import Settings

            settings = Settings()
        self.app = app
        self.tokens = Tokens(settings)
        self.read_routes = READ_ROUTES if settings.auth_read_endpoints else ()

    def reason(self, header: bytes | None, needed: str = WRITE) -> str | None:
        """Why a request with this Authorization header is refused (None: it is not)."""
        return self._refusal(*self.tokens.scope_of(header), needed)

    def _refusal(self, scope: str | None, why: str | None, needed: str) -> str | None:
        if not self.tokens.write:
            return "no API token is configured (SOCIALREC_API_TOKEN)"
        if scope is None:
            return why
        if needed == WRITE and scope != WRITE:
            return "a read-only token cannot write"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = _route(scope)
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
        found, why = self.tokens.scope_of(header)
        scope.setdefault("state", {})[AUTH_STATE] = found
        needed = WRITE if route in WRITE_ROUTES else READ if route in self.read_routes else None
        if needed is None:
            return await self.app(scope, receive, send)
        reason = self._refusal(found, why, needed)
        if reason is None:
            return await self.app(scope, receive, send)
        status = 403 if found == READ else 401
        await _send_json(
            send,
            status,
            {"error": "forbidden" if status == 403 else "unauthorized", "detail": reason},
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


# the latest readiness check: why it failed (``reason``), what it noticed while ready
# (``note``, e.g. an event spool that cannot flush) and every degraded dependency with why
# (``degraded``); set by the service's readiness hook
_READINESS: dict = {"reason": "not checked yet", "note": None, "degraded": {}}
_READINESS_LOCK = threading.Lock()


def set_readiness(
    reason: str | None, note: str | None = None, degraded: dict[str, str] | None = None
) -> None:
    """Record the outcome of a readiness check: ``reason`` why it is not ready (None: ready),
    ``note`` something to report either way (None: nothing), ``degraded`` every dependency
    that failed its probe, with why (``{"milvus": ..., "feature_store": ...}``)."""
    with _READINESS_LOCK:
        _READINESS["reason"] = reason
        _READINESS["note"] = note
        _READINESS["degraded"] = dict(degraded or {})


def readiness_body(status: int) -> dict:
    """The JSON of a ``/readyz`` answer with this status: ``{"ready": bool, "reason": str |
    None}``, plus ``"degraded": {dependency: why}`` when a dependency failed its probe; not
    ready: why (plus the note); ready: the note (usually None)."""
    with _READINESS_LOCK:
        reason, note = _READINESS.get("reason"), _READINESS.get("note")
        degraded = dict(_READINESS.get("degraded") or {})
    if status == 200:
        body = {"ready": True, "reason": note}
    else:
        body = {"ready": False, "reason": "; ".join(r for r in (reason or "not ready", note) if r)}
    if degraded:
        body["degraded"] = degraded
    return body


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
