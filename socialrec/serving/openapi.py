"""The OpenAPI document says what the service answers: :func:`documented` completes the one
BentoML builds (which lists 200/400/404/500 for every API and knows nothing of the
middlewares) and :class:`OpenApiDocument` serves it at ``/docs.json``.

Every API operation gets the answers of ``socialrec.serving.gate`` (413, 415, 422), of
``BearerAuth`` (401, 403 for a read token on a write), of an outage (503) and of a bug (500), each with the ``Error`` body;
404 stays on ``/similar`` only; BentoML's 400 goes (a bad body is a 422). The ``bearer``
security scheme is required by the write endpoints and optional on the read ones
(``SOCIALREC_AUTH_READ_ENDPOINTS``). ``/readyz`` answers ``Readiness`` with 200 or 503.
"""

from __future__ import annotations

import copy
import json

from socialrec.serving.asgi import _route, _send_json
from socialrec.serving.schemas import API_ROUTES, READ_ROUTES, WRITE_ROUTES

ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "a code, e.g. invalid_request"},
        "detail": {
            "description": "why: a sentence, or (422) the list of validation errors",
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object"}},
            ],
        },
        "error_id": {
            "type": "string",
            "description": "(500 only) the id of the logged traceback, for the operators",
        },
    },
}
READINESS_SCHEMA = {
    "type": "object",
    "title": "Readiness",
    "required": ["ready", "reason"],
    "properties": {
        "ready": {"type": "boolean"},
        "reason": {"type": "string", "nullable": True},
    },
}
ANSWERS = {
    "401": "a missing or wrong bearer token (WWW-Authenticate: Bearer)",
    "413": "the body is over the size limit (body_too_large)",
    "415": "the body is not application/json (unsupported_media_type)",
    "422": "the body fails validation (invalid_request; invalid_post)",
    "500": "a bug",
    "503": "a dependency is unavailable (<dependency>_unavailable)",
}
NOT_FOUND = "the post is not in the index (unknown_post)"
FORBIDDEN = "a read-only token on a write endpoint (forbidden)"


def _answer(description: str, schema: str = "Error") -> dict:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _nullable(node):
    """OpenAPI 3.0 has no ``null`` type: ``anyOf: [X, {"type": "null"}]`` becomes X with
    ``nullable: true`` (everywhere in the document)."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        node.pop("anyOf")
        node["nullable"] = True
        if len(rest) == 1:
            node.update({k: v for k, v in rest[0].items() if k not in node})
        else:
            node["anyOf"] = rest
    return node


def documented(spec: dict) -> dict:
    """A copy of BentoML's OpenAPI document (as a dict) with the service's real answers, the
    error and readiness bodies and the bearer scheme."""
    spec = _nullable(copy.deepcopy(spec))
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas["Readiness"] = READINESS_SCHEMA
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "SOCIALREC_API_TOKEN (write and read) or SOCIALREC_READ_TOKEN (read: "
        "the read endpoints when guarded, /recommend's debug answer)",
    }
    for path, item in spec.get("paths", {}).items():
        if path in API_ROUTES and "post" in item:
            op = item["post"]
            responses = {str(k): v for k, v in op.get("responses", {}).items() if str(k) == "200"}
            responses.update({code: _answer(text) for code, text in ANSWERS.items()})
            if path == "/similar":
                responses["404"] = _answer(NOT_FOUND)
            op["responses"] = responses
            if "requestBody" in op:  # every API needs its body: an empty one is a 422
                op["requestBody"]["required"] = True
            if path in WRITE_ROUTES:
                op["security"] = [{"bearer": []}]
                responses["403"] = _answer(FORBIDDEN)
            elif path in READ_ROUTES:
                op["security"] = [{}, {"bearer": []}]
        elif path == "/readyz" and "get" in item:
            item["get"]["responses"] = {
                "200": _answer("ready", "Readiness"),
                "503": _answer("not ready, and why", "Readiness"),
            }
    return spec


class OpenApiDocument:
    """ASGI middleware: ``/docs.json`` answers :func:`documented` of the document the app
    below produces (any other answer, e.g. an error, passes through unchanged)."""

    def __init__(self, app, path: str = "/docs.json"):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) != self.path:
            return await self.app(scope, receive, send)
        state: dict = {"chunks": []}

        async def capture(message):
            if message["type"] == "http.response.start":
                state["start"] = message
                return
            if state["start"]["status"] != 200:
                if not state.get("started"):
                    state["started"] = True
                    await send(state["start"])
                await send(message)
                return
            state["chunks"].append(message.get("body", b""))
            if not message.get("more_body", False):
                spec = json.loads(b"".join(state["chunks"]))
                await _send_json(send, 200, documented(spec))

        return await self.app(scope, receive, capture)
