"""Locust load test of the recommender bento (as in BentoML's examples).

Serve the bento first (``make demo`` serves it on 127.0.0.1:3001, or
``bentoml serve <bento tag> --host 127.0.0.1 --port 3000``), then::

    locust -f bentos/locustfile.py --host http://127.0.0.1:3000

and open http://127.0.0.1:8089 to choose the number of users and the spawn rate; or headless::

    locust -f bentos/locustfile.py --host http://127.0.0.1:3000 --headless -u 8 -r 2 -t 2m

Each simulated app user mostly asks for its feed (``/recommend``), reports what it saw
(``/events``, with the bearer token of the write endpoints), opens similar posts
(``/similar``) and searches (``/search``). A ``/recommend`` answered from the fallback list
(a dependency failed) counts as a failure: it is fast but degraded.

Settings (environment):

* ``SOCIALREC_LOCUST_USER_IDS``: the user ids to impersonate, ``"1-2000"`` (a range) or
  ``"3,17,42"`` (default ``1-2000``, the demo's users);
* ``SOCIALREC_API_TOKEN``: the bearer token (default: the local profile's development token,
  ``socialrec.settings.LOCAL_API_TOKEN``);
* ``SOCIALREC_LOCUST_K``: posts per ``/recommend`` (default 20).

For the fixed-size benchmark with the issue's targets, see ``benchmarks/serving.py``
(``make bench-serving``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid

from locust import HttpUser, between, task

QUERIES = (
    "street food",
    "mountain hike at sunrise",
    "jazz concert",
    "football highlights",
    "cat photos",
    "home workout",
    "budget travel tips",
    "vegan recipes",
)


def _user_ids(spec: str) -> list[int]:
    if "-" in spec:
        lo, hi = (int(v) for v in spec.split("-", 1))
        return list(range(lo, hi + 1))
    return [int(v) for v in spec.split(",") if v.strip()]


def _token() -> str:
    token = os.environ.get("SOCIALREC_API_TOKEN")
    if token:
        return token
    from socialrec.settings import LOCAL_API_TOKEN

    return LOCAL_API_TOKEN


USER_IDS = _user_ids(os.environ.get("SOCIALREC_LOCUST_USER_IDS", "1-2000"))
K = int(os.environ.get("SOCIALREC_LOCUST_K", "20"))


class AppUser(HttpUser):
    """One app user: feed, events, similar posts, search."""

    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.user_id = random.choice(USER_IDS)
        self.auth = {"Authorization": f"Bearer {_token()}"}
        self.feed: list[int] = []  # post ids of the last /recommend answer

    @task(10)
    def recommend(self) -> None:
        with self.client.post(
            "/recommend", json={"user_id": self.user_id, "k": K}, catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            body = r.json()
            if body["source"] == "fallback":
                r.failure(f"fallback answer: {body.get('reason')}")
                return
            self.feed = [it["post_id"] for it in body["items"]]

    @task(3)
    def events(self) -> None:
        if not self.feed:
            return
        now = dt.datetime.now(dt.UTC).isoformat()
        seen = self.feed[:3]
        events = [
            {
                "event_id": f"locust-{uuid.uuid4().hex}",
                "user_id": self.user_id,
                "post_id": post_id,
                "event_type": "IMPRESSION",
                "ts": now,
            }
            for post_id in seen
        ]
        events.append({**events[0], "event_id": f"locust-{uuid.uuid4().hex}", "event_type": "VIEW"})
        self.client.post("/events", json={"events": events}, headers=self.auth)
        self.feed = self.feed[3:]

    @task(2)
    def similar(self) -> None:
        if not self.feed:
            return
        self.client.post("/similar", json={"post_id": random.choice(self.feed), "k": 10})

    @task(2)
    def search(self) -> None:
        body = {"query": random.choice(QUERIES), "k": 10}
        if random.random() < 0.5:
            body["user_id"] = self.user_id  # the personalized ranking
        self.client.post("/search", json=body)
