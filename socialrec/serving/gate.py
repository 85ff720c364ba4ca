"""The door of the JSON endpoints, a pure-ASGI middleware (:class:`RequestGate`): a request is
read and validated completely before the service (and so any store) sees it.

* a body that is not ``application/json`` (e.g. ``multipart/form-data`` without a boundary,
  a form, text) -> 415 ``unsupported_media_type``;
* a body over ``max_bytes`` (by ``Content-Length``, or counted while it streams in) -> 413
  ``body_too_large``;
* a body that fails the endpoint's input model (the pydantic model BentoML validates it with,
  every bound of ``socialrec.serving.schemas``) -> 422 ``invalid_request`` with the pydantic
  errors (which field and why; the input itself is never echoed), and no traceback logged.

A body that passes is handed on unchanged (replayed from the buffer).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from socialrec.serving.asgi import _route, _send_json
from socialrec.serving.schemas import API_ROUTES, MAX_BODY_BYTES

JSON_TYPES = ("application/json",)


class BodyTooLarge(Exception):
    pass


def media_type(headers) -> str:
    """The request's media type without parameters, lower case ('' when it has none)."""
    value = next((v for k, v in headers if k == b"content-type"), b"")
    return value.decode("latin-1").split(";")[0].strip().lower()


def validation_errors(exc: ValidationError) -> list[dict]:
    """The JSON-safe part of pydantic's errors: where, what kind, why."""
    return [
        {"loc": list(e["loc"]), "type": e["type"], "msg": e["msg"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


class RequestGate:
    """ASGI middleware: 415 for a non-JSON body, 413 for a body over ``max_bytes``, 422
    ``invalid_request`` for one its route's model rejects (``models``: route -> pydantic model,
    validated as BentoML does: ``model_validate_json(body or b"{}")``)."""

    def __init__(
        self,
        app,
        models: Mapping[str, type] | None = None,
        routes: tuple[str, ...] = API_ROUTES,
        max_bytes: int = MAX_BODY_BYTES,
    ):
        self.app = app
        self.models = dict(models or {})
        self.routes = routes
        self.max_bytes = max_bytes

    async def _body(self, scope, receive) -> bytes:
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_bytes):
            raise BodyTooLarge
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def __call__(self, scope, receive, send):
        route = _route(scope) if scope["type"] == "http" else ""
        if route not in self.routes or scope.get("method", "POST") != "POST":
            return await self.app(scope, receive, send)
        kind = media_type(scope.get("headers", []))
        if kind and kind not in JSON_TYPES:
            detail = f"{route} takes application/json, not {kind[:100]!r}"
            return await _send_json(
                send, 415, {"error": "unsupported_media_type", "detail": detail}
            )
        try:
            body = await self._body(scope, receive)
        except BodyTooLarge:
            detail = f"the body is over {self.max_bytes} bytes"
            return await _send_json(send, 413, {"error": "body_too_large", "detail": detail})
        model = self.models.get(route)
        if model is not None:
            try:
                model.model_validate_json(body or b"{}")
            except ValidationError as exc:
                errors = {"error": "invalid_request", "detail": validation_errors(exc)}
                return await _send_json(send, 422, errors)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)
