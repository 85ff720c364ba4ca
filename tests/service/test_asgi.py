"""The service's pure-ASGI middlewares (``socialrec.serving.asgi``: bearer auth, the readiness
reason, the metrics refresh) over a dummy app."""

from __future__ import annotations

import json

import pytest

from socialrec.serving import asgi
from socialrec.serving.metrics import service_metrics
from tests.service.conftest import asgi_call, ok_app


@pytest.mark.parametrize("read_auth", [False, True])
def test_bearer_auth_guards_write_endpoints_and_read_ones_when_configured(read_auth):
    from socialrec.settings import Settings

    app = asgi.BearerAuth(
        ok_app, settings=Settings(api_token="s3cret", auth_read_endpoints=read_auth)
    )
    for path in ("/events", "/posts"):
        status, headers, body = asgi_call(app, path)
        assert status == 401 and b"www-authenticate" in headers
        assert json.loads(body) == {
            "error": "unauthorized",
            "detail": "missing 'Authorization: Bearer <token>' header",
        }
        status, _, body = asgi_call(app, path, [("Authorization", "Bearer wrong")])
        assert status == 401 and json.loads(body)["detail"] == "invalid bearer token"
        status, _, body = asgi_call(app, path, [("Authorization", "Basic s3cret")])
        assert status == 401 and "Bearer" in json.loads(body)["detail"]
        assert asgi_call(app, path, [("Authorization", "Bearer s3cret")])[0] == 200
    for path in ("/recommend", "/similar", "/search"):
        assert asgi_call(app, path)[0] == (401 if read_auth else 200)
        assert asgi_call(app, path, [("Authorization", "bearer s3cret")])[0] == 200
    for path in ("/readyz", "/healthz", "/metrics", "/docs"):
        assert asgi_call(app, path)[0] == 200


def test_readiness_reason_turns_bentomls_503_into_json():
    async def not_ready(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"Service is not ready"})

    asgi.set_readiness("milvus alias 'posts': gone")
    status, headers, body = asgi_call(asgi.ReadinessReason(not_ready), "/readyz")
    assert status == 503 and headers[b"content-type"] == b"application/json"
    assert json.loads(body) == {"ready": False, "reason": "milvus alias 'posts': gone"}
    # ready: JSON too, with the note of the check (a spool that cannot flush) or null
    asgi.set_readiness(None)
    status, headers, body = asgi_call(asgi.ReadinessReason(ok_app), "/readyz")
    assert status == 200 and json.loads(body) == {"ready": True, "reason": None}
    asgi.set_readiness(None, "event spool: 3 flushes to the landing bucket failed in a row")
    status, _, body = asgi_call(asgi.ReadinessReason(ok_app), "/readyz")
    assert status == 200 and "event spool" in json.loads(body)["reason"]
    asgi.set_readiness("seen_store unavailable", "event spool: down")
    status, _, body = asgi_call(asgi.ReadinessReason(not_ready), "/readyz")
    assert json.loads(body) == {
        "ready": False,
        "reason": "seen_store unavailable; event spool: down",
    }
    # other paths are untouched
    assert asgi_call(asgi.ReadinessReason(ok_app), "/healthz")[2] == b"ok"


def test_metrics_refresh_updates_the_gauges_before_a_scrape():
    calls: list[str] = []

    def refresher():
        calls.append("refreshed")

    def broken():
        raise RuntimeError("a broken refresher never fails the scrape")

    metrics = service_metrics()
    metrics.add_refresher(refresher)
    metrics.add_refresher(broken)
    try:
        assert asgi_call(asgi.MetricsRefresh(ok_app), "/metrics")[0] == 200
        assert calls == ["refreshed"]
        asgi_call(asgi.MetricsRefresh(ok_app), "/recommend")
        assert calls == ["refreshed"]
    finally:
        metrics._refreshers.remove(refresher)
        metrics._refreshers.remove(broken)


def _tokens(**extra):
    from socialrec.settings import Settings

    return Settings(
        api_token="w-new",
        api_token_previous="w-old",
        read_token="r-new",
        read_token_previous="r-old",
        **extra,
    )


def test_read_tokens_read_but_never_write_and_rotation_keeps_two_valid():
    app = asgi.BearerAuth(ok_app, settings=_tokens(auth_read_endpoints=True))
    for token in ("w-new", "w-old"):  # both write tokens of a rotation write (and read)
        assert asgi_call(app, "/events", [("Authorization", f"Bearer {token}")])[0] == 200
        assert asgi_call(app, "/recommend", [("Authorization", f"Bearer {token}")])[0] == 200
    for token in ("r-new", "r-old"):  # read tokens read, and are refused on a write: 403
        assert asgi_call(app, "/recommend", [("Authorization", f"Bearer {token}")])[0] == 200
        status, _, body = asgi_call(app, "/events", [("Authorization", f"Bearer {token}")])
        assert status == 403 and json.loads(body)["error"] == "forbidden"
    assert asgi_call(app, "/recommend", [("Authorization", "Bearer r-older")])[0] == 401


def test_every_request_carries_the_scope_of_its_token():
    seen = {}

    async def app(scope, receive, send):
        seen[scope["path"]] = scope["state"][asgi.AUTH_STATE]
        await ok_app(scope, receive, send)

    auth = asgi.BearerAuth(app, settings=_tokens())
    asgi_call(auth, "/recommend")
    assert seen["/recommend"] is None
    asgi_call(auth, "/similar", [("Authorization", "Bearer r-old")])
    assert seen["/similar"] == asgi.READ
    asgi_call(auth, "/search", [("Authorization", "Bearer w-new")])
    assert seen["/search"] == asgi.WRITE


def test_the_gcp_profile_needs_a_distinct_read_token_and_tls_termination(monkeypatch):
    from socialrec.settings import Settings

    gcp = {
        "profile": "gcp",
        "gcs_bucket": "b",
        "bigquery_project": "p",
        "milvus_uri": "http://m:19530",
        "mlflow_tracking_uri": "http://f:5000",
        "redis_connection_string": "r:6379",
        "api_token": "w",
    }
    with pytest.raises(ValueError, match="SOCIALREC_READ_TOKEN.*SOCIALREC_TLS_TERMINATION"):
        Settings(**gcp)
    with pytest.raises(ValueError, match="must differ"):
        Settings(**gcp, read_token="w", tls_termination="ingress")
    assert Settings(**gcp, read_token="r", tls_termination="ingress").read_token
