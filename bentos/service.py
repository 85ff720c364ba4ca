"""The socialrec recommender as a BentoML service (typed APIs; the logic lives in the core).

* ``POST /recommend`` {user_id, k}: the 4 stages of ``socialrec.recommender.Recommender`` —
  Feast online features -> user tower -> Milvus top-N -> seen/negative/own filter -> one
  batched Feast call + CatBoost -> category-diversity re-ranking. Unknown users get the
  cold-start answer (popular + fresh posts).
* ``POST /events`` {events: [...]}: marks the events in the seen store at once, so the next
  ``/recommend`` of that user already excludes those posts (read-your-writes). A batch with one
  invalid event is rejected whole.
* A body that fails validation gets a 422 whose JSON says which field is wrong and why.
* ``GET /healthz``, ``/livez``, ``/readyz``: BentoML's own probes.

Models come from the BentoML model store (packed into the bento by ``bentos/package.py``, each
labelled with its MLflow run); state that changes while serving (Feast online store, Milvus
index, seen store) is reached through ``socialrec.settings.Settings``, i.e. ``SOCIALREC_*``.
One worker: Milvus Lite (the embedded default) allows one process per index path.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS/SavedModels under Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import datetime as dt  # noqa: E402
from typing import Annotated, Literal  # noqa: E402

import bentoml  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from socialrec.settings import EVENT_TYPES  # noqa: E402

MAX_K = 200
MAX_EVENTS = 1000
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


class EventIn(BaseModel):
    """One interaction event, as the app emits it (ARCHITECTURE.md, data model)."""

    event_id: Annotated[str, Field(min_length=1, max_length=128)]
    user_id: Annotated[int, Field(ge=0)]
    post_id: Annotated[int, Field(ge=0)]
    event_type: EventType
    ts: dt.datetime
    dwell_ms: Annotated[int | None, Field(ge=0)] = None


class Item(BaseModel):
    post_id: int
    score: float
    ranker_score: float | None
    category_id: int
    creator_id: int


class RecommendResponse(BaseModel):
    user_id: int
    source: Literal["personalized", "cold_start"]
    items: list[Item]
    debug: dict | None = None


class EventsResponse(BaseModel):
    accepted: int


class UnprocessableBody:
    """ASGI middleware: a body that fails validation is answered 422 (Unprocessable Entity,
    as FastAPI does), not BentoML's generic 400; the JSON reason is passed through unchanged.
    BentoML answers 400 only for bad input, so every 400 of an API route is such a body."""

    def __init__(self, app, routes: tuple[str, ...] = ("/recommend", "/events")):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") not in self.routes:
            return await self.app(scope, receive, send)

        async def send_422(message):
            if message["type"] == "http.response.start" and message["status"] == 400:
                message = {**message, "status": 422}
            await send(message)

        return await self.app(scope, receive, send_422)


@bentoml.service(
    name="socialrec_recommender",
    workers=1,
    traffic={"timeout": 30},
)
class Recommender:
    two_tower_model = bentoml.models.BentoModel("socialrec_two_tower:latest")
    ranker_model = bentoml.models.BentoModel("socialrec_ranker:latest")
    catalog_model = bentoml.models.BentoModel("socialrec_catalog:latest")

    def __init__(self) -> None:
        from socialrec import features
        from socialrec.catalog import Catalog
        from socialrec.index import PostIndex
        from socialrec.ranker import Ranker
        from socialrec.recommender import Recommender as FourStages
        from socialrec.seen import open_seen_store
        from socialrec.settings import Settings
        from socialrec.two_tower import TwoTowerModel

        self.settings = Settings()
        self.index = PostIndex(str(self.settings.milvus_uri), self.settings.milvus_token)
        # a per-user Bloom filter in front of the seen store (SQLite or ScyllaDB)
        self.seen_store = open_seen_store(self.settings, bloom=True)
        self.recommender = FourStages(
            features=features.feature_store(self.settings),
            two_tower=TwoTowerModel.load(self.two_tower_model.path),
            index=self.index,
            seen_store=self.seen_store,
            ranker=Ranker.load(self.ranker_model.path),
            catalog=Catalog.load(self.catalog_model.path),
            settings=self.settings,
        )
        self.models = {
            str(m.tag): dict(m.info.labels)
            for m in (self.two_tower_model, self.ranker_model, self.catalog_model)
        }

    @bentoml.on_shutdown
    def close(self) -> None:
        self.index.close()
        self.seen_store.close()

    @bentoml.api
    def recommend(
        self,
        user_id: Annotated[int, Field(ge=0, description="the app's user id")],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="how many posts")] = 20,
        debug: bool = False,
    ) -> RecommendResponse:
        """The user's next k posts, best first (cold start for unknown users)."""
        rec = self.recommender.recommend(user_id, k, debug=debug)
        return RecommendResponse(
            user_id=rec.user_id,
            source=rec.path,
            items=[Item(**it) for it in rec.items],
            debug={**rec.debug, "models": self.models} if debug else None,
        )

    @bentoml.api
    def events(
        self, events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_EVENTS)]
    ) -> EventsResponse:
        """Record a batch of interaction events in the seen store (read-your-writes)."""
        n = self.recommender.mark_events((e.user_id, e.post_id, e.event_type, e.ts) for e in events)
        return EventsResponse(accepted=n)


Recommender.add_asgi_middleware(UnprocessableBody)
