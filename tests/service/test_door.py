"""The door of the JSON endpoints (``socialrec.serving.gate.RequestGate``, issue 13): every
bound of a field, the content type and the body size, checked with the very input models
BentoML derives for the service's routes (``bentos.service.Recommender.apis``) before anything
below sees the request; and the OpenAPI document (``socialrec.serving.openapi``) that says so."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from socialrec.serving import asgi
from socialrec.serving.gate import RequestGate
from socialrec.serving.openapi import OpenApiDocument
from socialrec.serving.schemas import MAX_BODY_BYTES, MAX_YEAR, MIN_YEAR, YEAR_PATTERN

INT64_MAX = 2**63 - 1
EVENT = {
    "event_id": "e-1",
    "user_id": 1,
    "post_id": 2,
    "event_type": "LIKE",
    "ts": "2026-01-06T12:00:00Z",
}
POST = {"post_id": 1, "creator_id": 2, "category_id": 3, "media_type": "text", "description": "hi"}


@pytest.fixture(scope="module")
def service():
    from bentos.service import Recommender

    return Recommender


@pytest.fixture(scope="module")
def gate(service):
    return RequestGate(echo_app, models={a.route: a.input_spec for a in service.apis.values()})


async def echo_app(scope, receive, send):
    """Answers 200 with the body it received (so a replayed body can be compared)."""
    message = await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": message.get("body", b"")})


def call(app, path, body=b"", headers=(("content-type", "application/json"),), chunks=None):
    """One POST through an ASGI app, the body in one message (or in ``chunks``, streamed
    without a Content-Length); (status, body)."""
    sent, parts = [], list(chunks) if chunks is not None else [body]

    async def receive():
        if parts:
            part = parts.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(parts)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    head = [(k.encode(), v.encode()) for k, v in headers]
    if chunks is None:
        head.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": head}
    asyncio.run(app(scope, receive, send))
    status = next(m for m in sent if m["type"] == "http.response.start")["status"]
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


BAD = [
    ("/recommend", {"user_id": INT64_MAX + 1}),
    ("/recommend", {"user_id": 2**70}),
    ("/recommend", {"user_id": -1}),
    ("/recommend", {"user_id": 1, "k": "5"}),
    ("/recommend", {"user_id": 1, "k": 5.0}),
    ("/recommend", {"user_id": 1, "k": True}),
    ("/recommend", {"user_id": 1, "k": 201}),
    ("/recommend", {"user_id": 1, "categories": [2**31]}),
    ("/recommend", {"user_id": 1, "categories": list(range(21))}),
    ("/similar", {"post_id": INT64_MAX + 1}),
    ("/similar", {"post_id": 1, "k": "5"}),
    ("/search", {"query": "x" * 513}),
    ("/search", {"query": "food", "user_id": INT64_MAX + 1}),
    ("/search", {"query": "food", "k": 5.0}),
    ("/blocks", {"user_id": 1, "creator_ids": [2**70]}),
    ("/blocks", {"user_id": INT64_MAX + 1, "creator_ids": [1]}),
    ("/blocks", {"user_id": 1, "creator_ids": list(range(101))}),
    ("/blocks", {"user_id": 1, "creator_ids": []}),
    ("/events", {"events": [{**EVENT, "event_id": "   "}]}),
    ("/events", {"events": [{**EVENT, "event_id": "x" * 129}]}),
    ("/events", {"events": [{**EVENT, "user_id": INT64_MAX + 1}]}),
    ("/events", {"events": [{**EVENT, "post_id": 2**70}]}),
    ("/events", {"events": [{**EVENT, "dwell_ms": 2**63}]}),
    ("/events", {"events": [{**EVENT, "dwell_ms": 86_400_001}]}),
    ("/events", {"events": [{**EVENT, "ts": "0001-01-01T00:00:00+05:00"}]}),
    ("/events", {"events": [{**EVENT, "ts": "9999-12-31T23:59:59-05:00"}]}),
    ("/events", {"events": [{**EVENT, "ts": "1677-01-01T00:00:00Z"}]}),
    ("/events", {"events": [EVENT] * 1001}),
    ("/events", {"events": []}),
    ("/posts", {**POST, "post_id": INT64_MAX + 1}),
    ("/posts", {**POST, "creator_id": 2**64}),
    ("/posts", {**POST, "category_id": 274877906943}),
    ("/posts", {**POST, "description": "x" * 5001}),
    ("/posts", {**POST, "created_at": "2300-01-01T00:00:00Z"}),
    ("/posts", {**POST, "created_at": "0001-01-01T00:00:00+05:00"}),
    ("/recommend", "not an object"),
    # what the document says is a boolean or a date-time string, not a number
    ("/recommend", {"user_id": 1, "debug": 0}),
    ("/blocks", {"user_id": 1, "creator_ids": [8], "blocked": 0}),
    ("/posts", {**POST, "created_at": 0}),
    ("/events", {"events": [{**EVENT, "ts": 1767700800}]}),
]


@pytest.mark.parametrize("path, body", BAD)
def test_a_value_the_storage_cannot_hold_is_a_422_at_the_door(gate, path, body, caplog):
    caplog.set_level(logging.DEBUG)
    status, answer = call(gate, path, json.dumps(body).encode())
    assert status == 422, answer
    answer = json.loads(answer)
    assert answer["error"] == "invalid_request" and answer["detail"][0]["msg"], answer
    assert not [r for r in caplog.records if r.exc_info], "a 422 logs no traceback"


@pytest.mark.parametrize(
    "path, body",
    [
        ("/recommend", {"user_id": INT64_MAX, "k": 200, "categories": [2**31 - 1]}),
        ("/similar", {"post_id": INT64_MAX, "k": 1}),
        ("/search", {"query": "x" * 512, "user_id": INT64_MAX}),
        ("/blocks", {"user_id": INT64_MAX, "creator_ids": [INT64_MAX] * 100}),
        ("/events", {"events": [{**EVENT, "dwell_ms": 86_400_000, "user_id": INT64_MAX}] * 1000}),
        ("/events", {"events": [{**EVENT, "ts": "2261-12-31T23:59:59Z", "dwell_ms": None}]}),
        ("/posts", {**POST, "post_id": INT64_MAX, "description": "x" * 5000, "created_at": None}),
    ],
)
def test_the_largest_storable_values_pass_the_door_unchanged(gate, path, body):
    data = json.dumps(body).encode()
    assert call(gate, path, data) == (200, data)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/vnd.bentoml+pickle",
    ],
)
def test_a_body_that_is_not_json_is_a_415(gate, content_type):
    for path in ("/recommend", "/events", "/posts", "/blocks", "/search", "/similar"):
        status, answer = call(gate, path, b'{"user_id": 1}', (("content-type", content_type),))
        assert status == 415, (path, answer)
        assert json.loads(answer)["error"] == "unsupported_media_type"


def test_json_with_a_charset_or_without_a_content_type_passes(gate):
    data = b'{"user_id": 1}'
    for headers in ((("content-type", "application/json; charset=utf-8"),), ()):
        assert call(gate, "/recommend", data, headers) == (200, data)


def test_a_body_over_the_limit_is_a_413_by_length_or_by_counting(gate):
    big = b'{"user_id": 1, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    status, answer = call(gate, "/recommend", big)
    assert status == 413 and json.loads(answer)["error"] == "body_too_large"
    # no Content-Length: the streamed bytes are counted
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    status, answer = call(gate, "/recommend", chunks=chunks)
    assert status == 413 and "bytes" in json.loads(answer)["detail"]
    # a streamed body under the limit reaches the app whole
    small = b'{"user_id": 1, "k": 3}'
    assert call(gate, "/recommend", chunks=[small[:5], small[5:]]) == (200, small)


def test_bentomls_400_becomes_the_documented_422(caplog):
    async def bentoml_400(scope, receive, send):
        data = json.dumps({"error": "1 validation error for Input", "detail": [{"loc": ["k"]}]})
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": data.encode()})

    status, answer = call(asgi.UnprocessableBody(bentoml_400), "/recommend", b"{}")
    assert status == 422
    assert json.loads(answer) == {"error": "invalid_request", "detail": [{"loc": ["k"]}]}


def test_the_openapi_document_lists_every_answer_and_the_bearer_scheme(service):
    spec_json = json.dumps(service.openapi_spec.asdict()).encode()

    async def bentoml_docs(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": spec_json})

    status, body = call(OpenApiDocument(bentoml_docs), "/docs.json")
    spec = json.loads(body)
    assert status == 200
    bearer = spec["components"]["securitySchemes"]["bearer"]
    assert {k: bearer[k] for k in ("type", "scheme")} == {"type": "http", "scheme": "bearer"}
    assert "SOCIALREC_API_TOKEN" in bearer["description"]
    assert "SOCIALREC_READ_TOKEN" in bearer["description"]
    error = {"$ref": "#/components/schemas/Error"}
    writes = ("/events", "/posts", "/blocks", "/forget", "/posts/delete")
    for path in ("/recommend", "/similar", "/search", *writes):
        op = spec["paths"][path]["post"]
        statuses = {"200", "401", "413", "415", "422", "500", "503"} | (
            {"404"} if path == "/similar" else set()
        )
        if path in writes:
            statuses.add("403")  # a read-only token on a write
        assert set(op["responses"]) == statuses, path
        for code in statuses - {"200"}:
            assert op["responses"][code]["content"]["application/json"]["schema"] == error
        assert {"bearer": []} in op["security"]
        if path in writes:
            assert op["security"] == [{"bearer": []}]
    assert set(spec["components"]["schemas"]["Error"]["required"]) == {"error", "detail"}
    readyz = spec["paths"]["/readyz"]["get"]["responses"]
    assert set(readyz) == {"200", "503"}
    # what can be null is nullable; OpenAPI 3.0 has no null type
    assert '"type": "null"' not in json.dumps(spec)
    recommend = spec["paths"]["/recommend"]["post"]["responses"]["200"]["content"]
    props = recommend["application/json"]["schema"]["properties"]
    assert props["reason"]["nullable"] and props["debug"]["nullable"]
    search = spec["components"]["schemas"]["SearchResponseIODescriptor"]["properties"]
    assert search["user_id"]["nullable"] and search["user_id"]["type"] == "integer"
    assert spec["components"]["schemas"]["Item"]["properties"]["ranker_score"]["nullable"]
    # every item's reasons: code and text never null, value nullable
    reasons = spec["components"]["schemas"]["Item"]["properties"]["reasons"]
    assert reasons["type"] == "array"
    assert reasons["items"] == {"$ref": "#/components/schemas/Reason"}
    reason = spec["components"]["schemas"]["Reason"]
    assert set(reason["required"]) == {"code", "text", "value"}
    assert reason["properties"]["code"]["type"] == "string"
    assert set(reason["properties"]["code"]["enum"]) == {
        "source", "similarity", "ranker", "outcome", "rule"
    }  # fmt: skip
    assert reason["properties"]["text"]["type"] == "string"
    assert not any(reason["properties"][f].get("nullable") for f in ("code", "text"))
    assert reason["properties"]["value"]["nullable"]
    assert reason["properties"]["value"]["type"] == "number"
    for path in ("/recommend", "/similar", "/search", "/events", "/posts", "/blocks"):
        assert spec["paths"][path]["post"]["requestBody"]["required"] is True, path
    event = spec["components"]["schemas"]["EventIn"]["properties"]["ts"]
    assert event["format"] == "date-time" and event["pattern"] == YEAR_PATTERN
    body = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]
    user_id = body["schema"]["properties"]["user_id"]
    assert user_id["maximum"] == INT64_MAX and user_id["minimum"] == 0


def test_the_documented_year_pattern_is_the_validators_range():
    import re

    years = [y for y in range(10_000) if re.match(YEAR_PATTERN, f"{y:04d}-01-01T00:00:00Z")]
    assert years == list(range(MIN_YEAR, MAX_YEAR + 1))
