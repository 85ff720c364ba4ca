"""The served bento's log stays quiet: a request the service refuses (4xx) is one line with
its method, path, status and reason, never a traceback (issue 14)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import assert_quiet, bearer


def _log(env: dict) -> str:
    data_dir = Path(env["SOCIALREC_DATA_DIR"])
    return "".join(p.read_text(errors="replace") for p in data_dir.glob("bentoml-serve*.log"))


def test_a_refused_request_is_one_log_line_without_a_traceback(e2e_service, e2e_materialized):
    # refused at the door (the gate's 422) and by an endpoint (its own 422: an event from the
    # far future), and a 401 without the token
    bad_body = e2e_service.post("/recommend", json={"user_id": 1, "k": -5})
    assert bad_body.status_code == 422
    event = {
        "event_id": "quiet-1",
        "user_id": 1,
        "post_id": 1,
        "event_type": "VIEW",
        "ts": "2099-01-01T00:00:00Z",
    }
    future = e2e_service.post("/events", json={"events": [event]}, headers=bearer())
    assert future.status_code == 422, future.text
    assert e2e_service.post("/events", json={"events": [event]}).status_code == 401

    wanted = ("POST /recommend 422 invalid_request", "POST /events 422", "POST /events 401")
    deadline = time.time() + 10  # the workers write their log lines as they answer
    while not all(w in _log(e2e_materialized) for w in wanted) and time.time() < deadline:
        time.sleep(0.2)
    log = _log(e2e_materialized)
    for line in wanted:
        assert line in log, log[-3000:]
    assert_quiet(log)
