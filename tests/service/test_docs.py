"""What a new user reads and clicks in the service's documentation (issue 14): ``/docs`` leads to
BentoML's Swagger UI (at ``/``), both and ``/docs.json`` are public, the document has the
**Authorize** button's bearer scheme on the operations that need it, only the answers the service
gives, and example bodies Swagger UI (OpenAPI 3.0) fills in, with a user of the demo data who
has history. The last test checks it all on the BUILT bento served on loopback."""

from __future__ import annotations

import asyncio
import json

import pytest

from socialrec.serving.asgi import BearerAuth
from socialrec.serving.openapi import OpenApiDocument, documented
from socialrec.serving.schemas import EventIn
from socialrec.timeutil import utc_now
from tests.conftest import bearer
from tests.service.conftest import ok_app

WRITES = ("/events", "/posts", "/blocks", "/forget", "/posts/delete")
READS = ("/recommend", "/similar", "/search")


def get(app, path: str, root_path: str = "") -> tuple[int, dict, bytes]:
    """One GET without a token through an ASGI app; (status, headers, body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    if root_path:
        scope["root_path"] = root_path
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def test_docs_is_a_public_redirect_to_the_swagger_ui():
    from socialrec.settings import Settings

    guarded = Settings(api_token="s3cret", auth_read_endpoints=True)
    auth = BearerAuth(ok_app, settings=guarded)
    app = OpenApiDocument(auth)  # the service's order: the document outside the auth
    for path in ("/docs", "/docs/"):
        status, headers, _ = get(app, path)
        assert status == 307 and headers[b"location"] == b"/", path
    assert get(app, "/docs", root_path="/api")[1][b"location"] == b"/api/"
    for path in ("/", "/docs", "/docs.json"):  # the UI and its document: no token needed
        assert get(auth, path)[0] == 200, path
    assert get(app, "/recommend")[0] == 401  # what needs a token still does


@pytest.fixture(scope="module")
def spec():
    from bentos.service import EXAMPLES, Recommender

    return documented(Recommender.openapi_spec.asdict(), EXAMPLES)


def test_the_document_is_openapi_30_with_the_example_user_and_no_unused_errors(spec):
    from bentos.service import EXAMPLE_USER

    assert spec["openapi"].startswith("3.0")
    assert '"examples": [' not in json.dumps(spec)  # 3.1's list: Swagger UI 3.0 ignores it
    body = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]
    assert body["example"] == {"user_id": EXAMPLE_USER, "k": 10}  # what "Try it out" shows
    assert body["schema"]["properties"]["user_id"]["example"] == EXAMPLE_USER
    events = spec["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]
    (event,) = [EventIn.model_validate(e) for e in events["example"]["events"]]
    assert event.user_id == EXAMPLE_USER  # stamped at the service's start: within the partitions
    assert abs((utc_now() - event.ts).total_seconds()) < 3600
    search = spec["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]
    assert search["schema"]["properties"]["user_id"]["example"] == EXAMPLE_USER
    schemas = spec["components"]["schemas"]
    assert not {"InvalidArgument", "NotFound", "InternalServerError"} & set(schemas)
    for path in WRITES:
        assert spec["paths"][path]["post"]["security"] == [{"bearer": []}], path
    for path in READS:  # optional: a read token unlocks /recommend's debug answer
        assert {"bearer": []} in spec["paths"][path]["post"]["security"], path
    assert "400" not in json.dumps({p: i for p, i in spec["paths"].items()})


def test_the_example_user_has_history_in_the_demo_data():
    """The generator makes users 1..demo_users; with the default seed the example user is one
    of the most active (not a cold start), whatever day the demo runs."""
    from bentos.service import EXAMPLE_USER
    from socialrec.data.generator import generate_dataset
    from socialrec.settings import Settings

    s = Settings()
    ds = generate_dataset(
        s.demo_users, s.demo_posts, s.demo_events, s.demo_days, s.demo_start_date, s.seed
    )
    counts = ds.events["user_id"].value_counts()
    assert EXAMPLE_USER in set(ds.users["user_id"])
    assert counts.get(EXAMPLE_USER, 0) >= counts.quantile(0.99)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_served_docs_lead_to_swagger_and_its_document(e2e_service):
    r = e2e_service.get("/docs")
    assert r.status_code == 307 and r.headers["location"] == "/"
    ui = e2e_service.get("/docs", follow_redirects=True)
    assert ui.status_code == 200 and "swagger-ui" in ui.text
    assert e2e_service.get("/static_content/swagger-initializer.js").status_code == 200
    spec = e2e_service.get("/docs.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        **spec["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    for path in WRITES:
        op = spec["paths"][path]["post"]
        assert op["security"] == [{"bearer": []}], path
        assert {"401", "403", "415", "422", "503"} <= set(op["responses"]), path
        assert not {"400", "404"} & set(op["responses"]), path
        # what the document promises: no token is a 401, a read-only body is never needed
        assert e2e_service.post(path, json={}).status_code == 401, path
    # the example body Swagger UI fills in answers (a 200, never a 422; the e2e data is smaller
    # than the demo's, so the user may be a cold start here: test_the_example_user_has_history)
    media = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]
    r = e2e_service.post("/recommend", json=media["example"])
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == media["example"]["user_id"] and r.json()["items"]
    r = e2e_service.post("/events", json={"events": []}, headers=bearer())
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
