"""The socialrec recommender as a BentoML service: typed APIs over the framework-free core.

What each endpoint does is in ``socialrec.serving.endpoints`` (the request/response models in
``socialrec.serving.schemas``); the service's parts are opened and wired by one composition
root, ``socialrec.serving.app.open_service``, which the service class calls in ``__init__``;
the pure-ASGI middlewares (bearer auth, 422 for bad bodies, the JSON readiness reason, request
metrics) are in ``socialrec.serving.asgi``, the door (415/413/422 before the service sees a
body) in ``socialrec.serving.gate``, the completed OpenAPI document in
``socialrec.serving.openapi``. This file only wires them to BentoML:

* ``POST /recommend`` {user_id, k, debug?, categories?}; ``POST /similar`` {post_id, k};
  ``POST /search`` {query, k, user_id?}; ``POST /posts`` {post_id, creator_id, category_id,
  media_type, description, created_at?} (bearer token); ``POST /events`` {events} (bearer
  token); ``POST /blocks`` {user_id, creator_ids, blocked?} (bearer token). Every field is
  typed and documented in the OpenAPI spec at ``/docs``.
* ``GET /healthz``, ``/livez``: BentoML's liveness. ``GET /readyz``: BentoML's readiness with
  ``__is_ready__`` (``Endpoints.readiness_report``), answered as JSON ``{"ready", "reason"}``
  plus ``"degraded"`` (every dependency that does not answer). A store that is down at start
  does not stop the service from starting (``open_service`` opens the stores on first use).
* ``GET /metrics``: BentoML's Prometheus metrics plus the ``socialrec_*`` ones
  (``socialrec.serving.metrics.ServiceMetrics``).
* ``GET /feed/``: the feed page (``bentos/page.py`` over ``socialrec.serving.page``; see
  docs/feed-page.md), a Starlette app mounted with ``@bentoml.asgi_app``.

Models come from the BentoML model store (packed into the bento by ``bentos/package.py``, each
labelled with its MLflow run); MiniLM comes from its wheel; state that changes while serving
(Feast online store, Milvus collections, seen store, landing bucket, event spool) is reached
through ``socialrec.settings.Settings``, i.e. ``SOCIALREC_*``. The event spool (a local
directory, ``settings.spool_dir``) is started with the service and closed — a final flush — by
the ``on_shutdown`` hook. Several workers (``SOCIALREC_SERVICE_WORKERS``, default 2) share
those stores; each keeps its own catalog view, which adopts posts another worker published
from the index (``socialrec.serving.posts.LiveCatalog``). Milvus Lite (a file path in
``SOCIALREC_MILVUS_URI``) allows one process per path: run one worker with it.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS/SavedModels under Keras 2

from socialrec.quiet import quiet  # noqa: E402

quiet()  # first, in the server and every worker (socialrec.quiet lists what and why)

import logging  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Annotated  # noqa: E402

import bentoml  # noqa: E402
from pydantic import Field, StrictBool, StringConstraints  # noqa: E402

from bentos.page import app as feed_page  # noqa: E402
from socialrec.serving.app import Artifacts, open_service  # noqa: E402
from socialrec.serving.asgi import (  # noqa: E402
    BearerAuth,
    MetricsRefresh,
    ReadinessReason,
    RequestMetrics,
    UnprocessableBody,
    set_readiness,
    token_scope,
)
from socialrec.serving.errors import ErrorAnswer, respond  # noqa: E402
from socialrec.serving.gate import RequestGate  # noqa: E402
from socialrec.serving.openapi import OpenApiDocument  # noqa: E402
from socialrec.serving.page import FeedPage  # noqa: E402
from socialrec.serving.schemas import (  # noqa: E402
    MAX_BLOCKS,
    MAX_CATEGORIES,
    MAX_DESCRIPTION_CHARS,
    MAX_EVENTS,
    MAX_K,
    MAX_QUERY_CHARS,
    NULLABLE,
    BlocksResponse,
    CategoryId,
    CreatorId,
    DeletionResponse,
    EventIn,
    EventsResponse,
    Id,
    K,
    MediaType,
    PostResponse,
    RecommendResponse,
    SearchResponse,
    SimilarResponse,
    Timestamp,
)
from socialrec.settings import Settings  # noqa: E402
from socialrec.stores.post_details import PostDetails  # noqa: E402
from socialrec.timeutil import iso, utc_now  # noqa: E402

log = logging.getLogger("socialrec.service")

# the example user of the document's /recommend and /search bodies: one with history in the demo
# data. The generator always makes users 1..n_users (2,000 by default) and, with its default
# seed, user 1639 has the most events (~1,300), so "Try it out" answers a personalized feed, not
# a cold-start one (``make demo``'s banner picks its sample user from the warehouse instead).
EXAMPLE_USER = 1639
# the bodies "Try it out" shows; the event is stamped when the service starts, so it falls
# within the event partitions of a log that runs up to now (the demo's does)
EXAMPLES = {
    "/recommend": {"user_id": EXAMPLE_USER, "k": 10},
    "/events": {
        "events": [
            {
                "event_id": "swagger-1",
                "user_id": EXAMPLE_USER,
                "post_id": 42,
                "event_type": "LIKE",
                "ts": iso(utc_now().replace(microsecond=0)),
            }
        ]
    },
}


# worker processes (``SOCIALREC_SERVICE_WORKERS``, default 2): each opens its own clients of
# the shared stores (Milvus server, seen store, Feast online store, spool directory)
WORKERS = int(
    os.environ.get("SOCIALREC_SERVICE_WORKERS") or Settings.model_fields["service_workers"].default
)


def _json_error(answer: ErrorAnswer, ctx=None):
    """The error answer as a JSON response. An API that takes ``ctx`` gets its status from
    ``ctx.response`` (BentoML sets it on whatever the API returns), so it is set there too."""
    from starlette.responses import JSONResponse

    if ctx is not None:
        ctx.response.status_code = answer.status_code
    return JSONResponse(answer.content, status_code=answer.status_code)


@bentoml.asgi_app(feed_page, path="/feed")  # the feed page (bentos/page.py)
@bentoml.service(
    name="socialrec_recommender",
    workers=WORKERS,
    traffic={"timeout": 30},
)
class Recommender:
    two_tower_model = bentoml.models.BentoModel("socialrec_two_tower:latest")
    ranker_model = bentoml.models.BentoModel("socialrec_ranker:latest")
    catalog_model = bentoml.models.BentoModel("socialrec_catalog:latest")
    neighbours_model = bentoml.models.BentoModel("socialrec_neighbours:latest")

    def __init__(self) -> None:
        models = (
            self.two_tower_model,
            self.ranker_model,
            self.catalog_model,
            self.neighbours_model,
        )
        self.app = open_service(
            Settings(),
            Artifacts(
                two_tower=self.two_tower_model.path,
                ranker=self.ranker_model.path,
                catalog=self.catalog_model.path,
                neighbours=self.neighbours_model.path,
                labels={str(m.tag): dict(m.info.labels) for m in models},
            ),
        )
        self.endpoints = self.app.endpoints
        # the feed page at /feed: cards read the post details kept next to the catalog
        details = PostDetails.load(self.catalog_model.path)
        self.page = FeedPage(self.endpoints, self.app.metrics, details)

    def __is_ready__(self) -> bool:
        """BentoML's readiness hook (``GET /readyz``): 503 while Milvus, the seen store or the
        feature store does not answer; every degraded dependency is in the JSON answer."""
        reason, degraded = self.endpoints.readiness_report()
        note = degraded.get("spool")  # reported, never a reason to be unready
        set_readiness(reason, note, degraded)
        if reason:
            log.warning("not ready: %s", reason)
        elif degraded:
            log.warning("degraded: %s", degraded)
        return reason is None

    @bentoml.on_shutdown
    def close(self) -> None:
        self.app.close()  # the event spool (a final flush; the rest stays on disk), the stores

    def _respond(self, endpoint: str, fn: Callable, *args, ctx=None, **kwargs):
        out = respond(endpoint, self.app.metrics, fn, *args, **kwargs)
        if isinstance(out, ErrorAnswer):
            return _json_error(out, ctx)
        return out

    @bentoml.api
    def recommend(
        self,
        user_id: Annotated[Id, Field(description="the app's user id", examples=[EXAMPLE_USER])],
        k: Annotated[K, Field(description=f"how many posts (1..{MAX_K})", examples=[20])] = 20,
        debug: StrictBool = False,
        categories: Annotated[
            list[CategoryId] | None,
            Field(
                max_length=MAX_CATEGORIES,
                description="category ids for this request, e.g. a new user's onboarding "
                "choice (replace the stored onboarding categories in retrieval)",
                examples=[[3, 7]],
                json_schema_extra=NULLABLE,
            ),
        ] = None,
        ctx: bentoml.Context = None,
    ) -> RecommendResponse:
        """The user's next k posts, best first (cold start for unknown users without
        categories; the cold-start list with source 'fallback' when a dependency fails).
        ``debug=true`` (the user's preferred categories, seen count, model runs) needs a read
        or write token."""
        if debug and ctx is not None and token_scope(ctx.request.state) is None:
            detail = "debug=true needs 'Authorization: Bearer <read token>' (SOCIALREC_READ_TOKEN)"
            return _json_error(ErrorAnswer(401, "unauthorized", detail), ctx)
        return self._respond(
            "/recommend", self.endpoints.recommend, user_id, k, debug, categories, ctx=ctx
        )

    @bentoml.api
    def events(
        self, events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_EVENTS)]
    ) -> EventsResponse:
        """Record a batch of interaction events: in the seen store at once (read-your-writes),
        then durably spooled for the landing bucket. Needs the bearer token."""
        return self._respond("/events", self.endpoints.events, events)

    @bentoml.api
    def blocks(
        self,
        user_id: Annotated[Id, Field(description="who blocks", examples=[17])],
        creator_ids: Annotated[
            list[CreatorId],
            Field(min_length=1, max_length=MAX_BLOCKS, description="creators", examples=[[8]]),
        ],
        blocked: Annotated[StrictBool, Field(description="false unblocks")] = True,
    ) -> BlocksResponse:
        """Block (or unblock) creators for a user: the next /recommend leaves their posts out.
        Needs the bearer token."""
        return self._respond("/blocks", self.endpoints.blocks, user_id, creator_ids, blocked)

    @bentoml.api
    def forget(
        self, user_id: Annotated[Id, Field(description="the user to forget", examples=[17])]
    ) -> DeletionResponse:
        """Forget a user: a tombstone lands (the deletion_job removes their events, features
        and training rows), their seen rows and blocks go at once. Needs the bearer token."""
        return self._respond("/forget", self.endpoints.forget, "user", user_id)

    @bentoml.api(route="/posts/delete")
    def delete_post(
        self, post_id: Annotated[Id, Field(description="the post to delete", examples=[42])]
    ) -> DeletionResponse:
        """Delete a post: a tombstone lands, the post leaves both Milvus collections at once.
        Needs the bearer token."""
        return self._respond("/posts/delete", self.endpoints.forget, "post", post_id)

    @bentoml.api
    def similar(
        self,
        post_id: Annotated[Id, Field(description="a post in the index", examples=[42])],
        k: Annotated[K, Field(description="how many neighbours", examples=[10])] = 10,
    ) -> SimilarResponse:
        """The k posts nearest to a post in the two-tower post-embedding space (itself
        excluded), best first; 404 if the post is not in the index."""
        return self._respond("/similar", self.endpoints.similar, post_id, k)

    @bentoml.api
    def search(
        self,
        query: Annotated[
            str,
            StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_QUERY_CHARS),
            Field(description="free text (1..512 characters)", examples=["street food lisbon"]),
        ],
        k: Annotated[K, Field(description="how many posts", examples=[10])] = 10,
        user_id: Annotated[
            Id | None,
            Field(
                description="personalize the ranking for this user",
                examples=[EXAMPLE_USER],
                json_schema_extra=NULLABLE,
            ),
        ] = None,
    ) -> SearchResponse:
        """Posts whose description matches the query (MiniLM cosine), best first; with user_id
        re-ranked by 0.7 * text_score + 0.3 * (user tower . post tower)."""
        return self._respond("/search", self.endpoints.search, query, k, user_id)

    @bentoml.api
    def posts(
        self,
        post_id: Annotated[Id, Field(description="the new post's id", examples=[900001])],
        creator_id: Annotated[Id, Field(description="its author (a user_id)", examples=[8])],
        category_id: Annotated[CategoryId, Field(examples=[3])],
        media_type: Annotated[MediaType, Field(examples=["image"])],
        description: Annotated[
            str,
            Field(max_length=MAX_DESCRIPTION_CHARS, examples=["Best pastel de nata in town"]),
        ],
        created_at: Annotated[
            Timestamp | None,
            Field(
                description="ISO-8601; default now (UTC)",
                examples=["2026-01-06T12:00:00Z"],
                json_schema_extra=NULLABLE,
            ),
        ] = None,
    ) -> PostResponse:
        """Publish (or edit) a post: into the landing bucket, the online feature store, both
        Milvus collections and the catalog view; found by /similar, /search and /recommend at
        once. Needs the bearer token."""
        return self._respond(
            "/posts",
            self.endpoints.add_post,
            post_id,
            creator_id,
            category_id,
            media_type,
            description,
            created_at,
        )


# first added = outermost: the request metrics see every answer, also the 401s and 422s;
# the gate validates a body with the input model BentoML derives for its route (api.input_spec)
Recommender.add_asgi_middleware(RequestMetrics)
Recommender.add_asgi_middleware(OpenApiDocument, examples=EXAMPLES)
Recommender.add_asgi_middleware(BearerAuth)
Recommender.add_asgi_middleware(
    RequestGate, models={api.route: api.input_spec for api in Recommender.apis.values()}
)
Recommender.add_asgi_middleware(UnprocessableBody)
Recommender.add_asgi_middleware(ReadinessReason)
Recommender.add_asgi_middleware(MetricsRefresh)
