"""The OpenAPI document says what the service answers: :func:`documented` completes the one
BentoML builds (which lists 200/400/404/500 for every API and knows nothing of the
middlewares) and :class:`OpenApiDocument` serves it at ``/docs.json`` (and sends ``/docs`` to
the Swagger UI, which BentoML serves at ``/``).

Every API operation gets the answers of ``socialrec.serving.gate`` (413, 415, 422), of
``BearerAuth`` (401, 403 for a read token on a write), of an outage (503) and of a bug (500), each with the ``Error`` body;
404 stays on ``/similar`` only; BentoML's 400 goes (a bad body is a 422). The ``bearer``
security scheme is required by the write endpoints and optional on the read ones
(``SOCIALREC_AUTH_READ_ENDPOINTS``), so Swagger's **Authorize** button takes the token.
``/readyz`` answers ``Readiness`` with 200 or 503. The document is OpenAPI 3.0, where a schema
has one ``example`` (pydantic writes JSON Schema's ``examples`` list, which Swagger UI 3.0
ignores: it would fill ``0`` in every example body): the first of them becomes the ``example``.
BentoML's own error schemas that no operation refers to any more go.
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
# BentoML's schemas of its 400/404/500 and of its task APIs (this service has none)
BENTOML_ERRORS = ("InvalidArgument", "NotFound", "InternalServerError", "TaskStatusResponse")
NOT_FOUND = "the post is not in the index (unknown_post)"
FORBIDDEN = "a read-only token on a write endpoint (forbidden)"


def _answer(description: str, schema: str = "Error") -> dict:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _example(node):
    """JSON Schema's ``examples: [x, ...]`` becomes OpenAPI 3.0's ``example: x`` (in every
    schema of the document; an ``example`` already there stays)."""
    if isinstance(node, list):
        return [_example(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _example(v) for k, v in node.items()}
    examples = node.get("examples")
    if isinstance(examples, list):  # a schema's (a media type's ``examples`` is a map)
        node.pop("examples")
        if examples:
            node.setdefault("example", examples[0])
    return node


def _unreferenced_dropped(spec: dict, names: tuple[str, ...]) -> None:
    """Drop the component schemas in ``names`` that nothing in the document refers to."""
    text = json.dumps(spec)
    schemas = spec.get("components", {}).get("schemas", {})
    for name in names:
        if name in schemas and f'"#/components/schemas/{name}"' not in text:
            schemas.pop(name)


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


def documented(spec: dict, examples: dict | None = None) -> dict:
    """A copy of BentoML's OpenAPI document (as a dict) with the service's real answers, the
    error and readiness bodies and the bearer scheme; ``examples`` ({route: body}) are the
    request bodies Swagger UI's "Try it out" starts from (else it builds one from the fields'
    examples)."""
    spec = _example(_nullable(copy.deepcopy(spec)))
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
                if path in (examples or {}):
                    media = op["requestBody"].get("content", {}).get("application/json")
                    if media is not None:
                        media["example"] = examples[path]
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
    _unreferenced_dropped(spec, BENTOML_ERRORS)
    return spec


class OpenApiDocument:
    """ASGI middleware: ``/docs.json`` answers :func:`documented` of the document the app
    below produces (any other answer, e.g. an error, passes through unchanged); ``/docs`` is
    a redirect (307) to BentoML's Swagger UI at ``/``, which reads ``./docs.json``. Both are
    public, as ``/`` is (``BearerAuth`` guards only the API routes)."""

    def __init__(
        self, app, path: str = "/docs.json", ui_alias: str = "/docs", examples: dict | None = None
    ):
        self.app = app
        self.path = path
        self.ui_alias = ui_alias
        self.examples = examples

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _route(scope) == self.ui_alias and scope.get("method") in ("GET", "HEAD"):
            ui = (scope.get("root_path", "").rstrip("/") + "/").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 307,
                    "headers": [(b"location", ui), (b"content-length", b"0")],
                }
            )
            return await send({"type": "http.response.body", "body": b""})
        if _route(scope) != self.path:
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
                await _send_json(send, 200, documented(spec, self.examples))

        return await self.app(scope, receive, capture)
