"""What the recommender service's endpoints do, without BentoML (``bentos/service.py`` is the
thin BentoML shell: typed APIs, the service class, middleware registration).

Endpoints (JSON bodies; the typed request/response models below are the service's OpenAPI
schema at ``/docs``):

* ``POST /recommend`` {user_id, k, debug?, categories?}: the 4 stages of
  ``socialrec.recommender.pipeline.Recommender`` — Feast online features -> user tower -> Milvus top-N
  -> seen/negative/own filter -> one batched Feast call + CatBoost -> re-ranking (category and
  creator caps, new-post boost, promoted posts, optional softmax sampling). ``categories`` (at
  most ``MAX_CATEGORIES`` ids >= 0) are the app's categories for this request, e.g. a new
  user's onboarding choice: they replace the stored onboarding categories in the retrieval
  filter, and a user the feature store does not know yet is embedded from them and goes
  through the same 4 stages (``source: "personalized"``). Unknown users without categories get
  the cold-start answer (popular + fresh posts), ``source: "cold_start"``. Each item says
  whether the new-post boost applied (``boosted``) and whether it was promoted
  (``promoted``). FALLBACK: when Milvus, the seen store or the online feature store raises, the
  answer comes from the catalog's popular/fresh cold-start list with ``source: "fallback"`` and
  a ``reason`` (and ``socialrec_fallback_total`` increments) instead of an error.
* ``POST /similar`` {post_id, k}: the k nearest posts of a post in the two-tower post-embedding
  space (its own stored vector as the query, itself excluded). 404 for a post not in the index.
* ``POST /search`` {query (1..512 chars), k, user_id?}: the MiniLM embedding of the query
  against the description collection (cosine). With ``user_id`` the top
  ``max(5k, 50)`` (at most 500) text hits are re-ranked by

      score = (1 - w) * text_score + w * user_score,   w = SEARCH_USER_WEIGHT = 0.3

  with ``text_score`` = cos(query, description) (MiniLM) and ``user_score`` = the dot product
  of the user-tower and post-tower vectors (both L2-normalised: a cosine in [-1, 1]). A hit
  without a post-tower vector keeps ``score = text_score``. An unknown user (no online
  features) or an unavailable feature store gives the text ranking with
  ``personalized: false`` and a ``reason``.
* ``POST /posts`` {post_id, creator_id, category_id, media_type, description, created_at?}
  (bearer token): the description is embedded with MiniLM, the post with the post tower (a new
  id is embedded from its content: category, media type, creator, text). In this order: the
  post lands in the landing bucket as a posts upsert file (``posts/dt=<today>/api-...jsonl.gz``,
  docs/contracts.md; the source of truth for the next index build); its online features are
  written to Feast (``post_features`` with zero engagement counts — an edit keeps the counts
  the store already has — and ``post_content``, through ``FeatureStore.write_to_online_store``,
  :func:`socialrec.features.store.write_online_post`), so the ranking stage of ``/recommend`` knows
  it; it is upserted into both Milvus collections (found by ``/similar``, ``/search`` and
  retrieval at once); it is added to the service's catalog view (filtering knows its creator,
  cold start its freshness).
* ``POST /events`` {events: [...]} (bearer token): marks the events in the seen store first,
  so the next ``/recommend`` of that user already excludes those posts (read-your-writes), then
  appends them to the durable event spool (``socialrec.serving.spool``; fsynced before the answer),
  which flushes them to the landing bucket (``events/dt=<day>/spool-*.jsonl.gz``) in the
  background. A batch with one invalid event is rejected whole; a seen store or spool that
  fails is a 503 (the client retries with the same ``event_id``s: both writes are idempotent
  downstream).
* Errors: a body that fails validation gets a 422 whose JSON says which field is wrong and why;
  an unknown post a 404; a missing or wrong bearer token a 401; a dependency that does not
  answer (Milvus, seen store, feature store, landing bucket, event spool) a 503 — always JSON
  ``{"error": <code>, "detail": <reason>}``. Bad input never gets a 5xx.
* Readiness (:meth:`Endpoints.readiness`): ready when the models are loaded and Milvus (a
  one-row query through each alias) and the seen store (one lookup) answer. A landing bucket
  that is down does NOT make the service unready — the spool rides that out — but after
  ``SPOOL_FAILING_AFTER`` failed flushes in a row the readiness answer carries a ``reason``
  with the spool's state (:meth:`Endpoints.spool_note`).
* Metrics (:class:`ServiceMetrics`): ``socialrec_requests_total{endpoint, outcome}``,
  ``socialrec_errors_total{endpoint, kind}``, ``socialrec_fallback_total{endpoint,
  dependency}``, ``socialrec_stage_duration_seconds{endpoint, stage}`` and the spool gauges
  ``socialrec_spool_pending``, ``socialrec_spool_failures``,
  ``socialrec_spool_consecutive_failures``, ``socialrec_spool_oldest_pending_seconds``.

The pure-ASGI middlewares (auth, 422, readiness reason, request metrics) are in
``socialrec.serving.asgi``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from socialrec.settings import EVENT_TYPES, MEDIA_TYPES

log = logging.getLogger("socialrec.service")

MAX_K = 200
MAX_EVENTS = 1000
MAX_CATEGORIES = 20
MAX_QUERY_CHARS = 512
MAX_DESCRIPTION_CHARS = 5000
SEARCH_USER_WEIGHT = 0.3  # w of the personalized /search blend (module docstring)
SEARCH_MIN_CANDIDATES = 50
SEARCH_MAX_CANDIDATES = 500
FUTURE_SLACK = dt.timedelta(minutes=5)  # clock skew tolerated on a post's created_at
# failed spool flushes in a row after which /readyz reports the spool (it stays ready)
SPOOL_FAILING_AFTER = 3
WRITE_ROUTES = ("/events", "/posts", "/blocks")
READ_ROUTES = ("/recommend", "/similar", "/search")
API_ROUTES = READ_ROUTES + WRITE_ROUTES
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
MediaType = Literal[MEDIA_TYPES]  # type: ignore[valid-type]
CategoryId = Annotated[int, Field(strict=True, ge=0)]
CreatorId = Annotated[int, Field(strict=True, ge=0)]
MAX_BLOCKS = 100  # creators per /blocks request


# --- bodies ---------------------------------------------------------------------------------
class EventIn(BaseModel):
    """One interaction event, as the app emits it (ARCHITECTURE.md, data model)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "event_id": "e-1",
                "user_id": 17,
                "post_id": 42,
                "event_type": "LIKE",
                "ts": "2026-01-06T12:00:00Z",
                "dwell_ms": 5300,
            }
        }
    )

    event_id: Annotated[str, Field(min_length=1, max_length=128)]
    user_id: Annotated[int, Field(strict=True, ge=0)]
    post_id: Annotated[int, Field(strict=True, ge=0)]
    event_type: EventType
    ts: dt.datetime
    dwell_ms: Annotated[int | None, Field(strict=True, ge=0)] = None


class Item(BaseModel):
    post_id: int
    score: float
    ranker_score: float | None
    category_id: int
    creator_id: int
    boosted: bool = Field(
        default=False, description="the new-post boost applied (a post younger than the window)"
    )
    promoted: bool = Field(
        default=False, description="a promoted post moved to the front (SOCIALREC_PROMOTED_*)"
    )


class RecommendResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "user_id": 17,
                "source": "personalized",
                "reason": None,
                "items": [
                    {
                        "post_id": 42,
                        "score": 0.91,
                        "ranker_score": 0.91,
                        "category_id": 3,
                        "creator_id": 8,
                        "boosted": False,
                        "promoted": False,
                    }
                ],
                "debug": None,
            }
        }
    )

    user_id: int
    source: Literal["personalized", "cold_start", "fallback"]
    items: list[Item]
    reason: str | None = Field(
        default=None, description="why the fallback answered (source 'fallback' only)"
    )
    debug: dict | None = None


class EventsResponse(BaseModel):
    accepted: int = Field(description="events marked in the seen store (read-your-writes)")
    spooled: int = Field(
        default=0, description="events durably spooled for the landing bucket (the warehouse)"
    )


class BlocksResponse(BaseModel):
    user_id: int
    blocked_creators: list[int] = Field(
        description="every creator the user blocks now (their posts are filtered out)"
    )


class Neighbor(BaseModel):
    post_id: int
    score: float = Field(description="cosine of the two posts' post-tower vectors")
    category_id: int
    creator_id: int


class SimilarResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "post_id": 42,
                "items": [{"post_id": 77, "score": 0.83, "category_id": 3, "creator_id": 5}],
            }
        }
    )

    post_id: int
    items: list[Neighbor]


class SearchHit(BaseModel):
    post_id: int
    score: float = Field(description="the ranking score: text_score, or the personalized blend")
    text_score: float = Field(description="cosine of the query and the description (MiniLM)")
    user_score: float | None = Field(
        default=None, description="user-tower . post-tower (personalized searches only)"
    )
    category_id: int
    creator_id: int


class SearchResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "query": "street food in lisbon",
                "user_id": 17,
                "personalized": True,
                "reason": None,
                "items": [
                    {
                        "post_id": 42,
                        "score": 0.61,
                        "text_score": 0.66,
                        "user_score": 0.49,
                        "category_id": 3,
                        "creator_id": 8,
                    }
                ],
            }
        }
    )

    query: str
    user_id: int | None
    personalized: bool
    reason: str | None = Field(default=None, description="why a search was not personalized")
    items: list[SearchHit]


class PostResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "post_id": 900001,
                "collections": {"posts": "posts_v3_20260106120000"},
                "landing_key": "posts/dt=2026-01-06/api-20260106T120000000000-900001.jsonl.gz",
                "online_features": True,
            }
        }
    )

    post_id: int
    collections: dict[str, str] = Field(description="alias -> the collection the post went into")
    landing_key: str = Field(description="the posts upsert file in the landing bucket")
    online_features: bool = Field(
        default=False,
        description="its online features were written (the ranking stage of /recommend knows it)",
    )


# --- errors ---------------------------------------------------------------------------------
class ApiError(Exception):
    """An answer other than 200 with a reason: ``{"error": code, "detail": reason}``."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class DependencyError(Exception):
    """A call into Milvus, the seen store, the feature store, the landing bucket or the event
    spool failed."""

    def __init__(self, dependency: str, cause: BaseException):
        super().__init__(f"{dependency} unavailable: {type(cause).__name__}: {cause}"[:300])
        self.dependency = dependency
        self.cause = cause


class Guarded:
    """A proxy whose method calls raise :class:`DependencyError` (tagged with the dependency)
    instead of the driver's own exception, so a failure can be told from a bug."""

    def __init__(self, target: Any, dependency: str):
        self._target = target
        self._dependency = dependency

    def __getattr__(self, name: str):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except (DependencyError, ValueError, TypeError):
                raise  # bad input (e.g. non-int filter values) is not an outage
            except Exception as exc:
                raise DependencyError(self._dependency, exc) from exc

        return call


@dataclass(frozen=True)
class ErrorAnswer:
    """A JSON error answer, ``{"error": ..., "detail": ...}`` with an HTTP status; the web
    layer turns it into its own response type (``bentos/service.py``: a starlette
    JSONResponse)."""

    status_code: int
    error: str
    detail: str

    @property
    def content(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}

    @property
    def body(self) -> bytes:
        return json.dumps(self.content).encode()


# --- metrics --------------------------------------------------------------------------------
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEPENDENCIES = ("milvus", "seen_store", "feature_store", "landing", "spool")


class ServiceMetrics:
    """The service's own Prometheus metrics (next to BentoML's ``bentoml_service_*``).

    Created lazily in the serving process (:func:`service_metrics`): BentoML sets
    ``PROMETHEUS_MULTIPROC_DIR`` for its workers and collects every worker's metrics on
    ``/metrics``; ``registry`` is for tests only. prometheus_client is used directly, as BentoML
    1.4 recommends (``bentoml.metrics`` is a deprecated alias of it).

    The spool gauges are set from ``EventSpool.stats()`` by :meth:`observe_spool`, which runs
    after every ``/events``, every readiness check and, through :meth:`refresh` (the
    ``socialrec.serving.asgi.MetricsRefresh`` middleware), before every ``/metrics`` scrape."""

    def __init__(self, registry=None):
        import prometheus_client as prom

        self.registry = registry
        kw = {} if registry is None else {"registry": registry}
        self.requests = prom.Counter(
            "socialrec_requests",
            "API requests by endpoint and outcome (ok, fallback, cold_start, invalid, "
            "unauthorized, not_found, unavailable, error)",
            ["endpoint", "outcome"],
            **kw,
        )
        self.errors = prom.Counter(
            "socialrec_errors",
            "Failures by endpoint and kind (a dependency that raised, or internal)",
            ["endpoint", "kind"],
            **kw,
        )
        self.fallback = prom.Counter(
            "socialrec_fallback",
            "Recommendations answered from the cold-start list because a dependency failed",
            ["endpoint", "dependency"],
            **kw,
        )
        self.stage_seconds = prom.Histogram(
            "socialrec_stage_duration_seconds",
            "Latency of each stage of an endpoint (recommend: retrieval, filtering, ranking, "
            "reranking; search: embed, search, personalize; posts: embed, landing, features, "
            "index; events: seen, spool)",
            ["endpoint", "stage"],
            buckets=STAGE_BUCKETS,
            **kw,
        )
        # gauges of one process; "livesum"/"livemax" combine BentoML's worker processes
        self.spool_pending = prom.Gauge(
            "socialrec_spool_pending",
            "Accepted /events events on the local spool, not yet written to the landing bucket",
            multiprocess_mode="livesum",
            **kw,
        )
        self.spool_failures = prom.Gauge(
            "socialrec_spool_failures",
            "Failed flushes of the event spool to the landing bucket since the service started",
            multiprocess_mode="livesum",
            **kw,
        )
        self.spool_consecutive_failures = prom.Gauge(
            "socialrec_spool_consecutive_failures",
            "Failed spool flushes in a row (0 after a successful flush)",
            multiprocess_mode="livemax",
            **kw,
        )
        self.spool_oldest_seconds = prom.Gauge(
            "socialrec_spool_oldest_pending_seconds",
            "Age of the oldest event on the spool not yet in the landing bucket (0: none)",
            multiprocess_mode="livemax",
            **kw,
        )
        for dep in DEPENDENCIES[:3]:  # every series exists from the start (0 until it happens)
            self.fallback.labels("/recommend", dep)
        for route in API_ROUTES:
            self.errors.labels(route, "internal")
        self._refreshers: list[Callable[[], Any]] = []

    def observe_stages(self, endpoint: str, stages: dict[str, Any]) -> None:
        """``stages``: {name: {"ms": float, ...}} (the recommender's debug timings) or
        {name: seconds}."""
        for name, value in stages.items():
            ms = value.get("ms") if isinstance(value, dict) else float(value) * 1000
            if ms is not None:
                self.stage_seconds.labels(endpoint, name).observe(float(ms) / 1000)

    def observe_spool(self, stats: dict[str, Any]) -> None:
        """Set the spool gauges from ``EventSpool.stats()``."""
        self.spool_pending.set(stats.get("pending", 0))
        self.spool_failures.set(stats.get("failures", 0))
        self.spool_consecutive_failures.set(stats.get("consecutive_failures", 0))
        self.spool_oldest_seconds.set(stats.get("oldest_pending_seconds", 0.0))

    def add_refresher(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` before every scrape (:meth:`refresh`), e.g. to read the spool's stats."""
        self._refreshers.append(fn)

    def refresh(self) -> None:
        """Bring the gauges up to date (called before ``/metrics`` answers); never raises."""
        for fn in list(self._refreshers):
            try:
                fn()
            except Exception:  # noqa: BLE001 - a scrape must not fail because of a gauge
                log.exception("metrics refresh")


_METRICS: ServiceMetrics | None = None
_METRICS_LOCK = threading.Lock()


def service_metrics() -> ServiceMetrics:
    """The process' ServiceMetrics, created on first use (in the worker, after BentoML set up
    the multiprocess directory)."""
    global _METRICS
    with _METRICS_LOCK:
        if _METRICS is None:
            _METRICS = ServiceMetrics()
        return _METRICS


# the outcome an endpoint reports for the request being served (read by the RequestMetrics
# middleware of socialrec.serving.asgi); a dict set per request, shared with the worker thread that
# runs the endpoint
OUTCOME: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "socialrec_outcome", default=None
)


def note_outcome(outcome: str) -> None:
    note = OUTCOME.get()
    if note is not None:
        note["outcome"] = outcome


class _Stages:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._t
        self._t = now


class OnlinePostWriter:
    """Writes a post's online features into a Feast store
    (:func:`socialrec.features.store.write_online_post`); one write at a time (the SQLite online
    store shares one connection between threads)."""

    def __init__(self, store: Any):
        self.store = store
        self._lock = threading.Lock()

    def write(self, post: dict, counts: dict | None = None, at: dt.datetime | None = None):
        from socialrec.features.store import write_online_post

        with self._lock:
            return write_online_post(self.store, post, counts=counts, at=at)


# --- the endpoints' logic -------------------------------------------------------------------
class Endpoints:
    """What each endpoint does, over the real parts (or fakes in unit tests).

    Dependencies are wrapped in :class:`Guarded` so that an outage surfaces as
    :class:`DependencyError`: ``/recommend`` then answers from the cold-start list, the other
    endpoints answer 503 (through :func:`respond`). Bad input raises :class:`ApiError` (4xx).
    ``spool`` (an ``EventSpool``, optional) receives the accepted events; ``post_writer``
    (anything with ``write(post, counts=None, at=None)``, optional) the online features of a
    published post.
    """

    def __init__(
        self,
        *,
        settings,
        recommender,
        index,
        seen_store,
        two_tower,
        text_encoder,
        bucket,
        metrics: ServiceMetrics,
        models: dict | None = None,
        spool=None,
        post_writer=None,
    ):
        self.settings = settings
        self.recommender = (
            recommender  # socialrec.recommender.pipeline.Recommender over guarded parts
        )
        self.index = index  # Guarded PostIndex
        self.seen_store = seen_store  # Guarded seen store
        self.two_tower = two_tower
        self.text_encoder = text_encoder
        self.bucket = bucket  # Guarded LandingBucket
        self.metrics = metrics
        self.models = models or {}
        self.spool = spool  # Guarded EventSpool, or None
        self.post_writer = post_writer  # Guarded OnlinePostWriter, or None
        self._catalog_lock = threading.Lock()

    @classmethod
    def create(
        cls,
        settings,
        *,
        features,
        two_tower,
        index,
        seen_store,
        ranker,
        catalog,
        text_encoder,
        bucket,
        metrics: ServiceMetrics,
        models: dict | None = None,
        feature_builder=None,
        spool=None,
        post_writer=None,
        neighbours=None,
    ) -> Endpoints:
        """Wrap the parts in guards and compose the 4-stage recommender over them.
        ``features``: a Feast FeatureStore (then ``post_writer`` defaults to an
        :class:`OnlinePostWriter` on it) or anything with ``users`` and ``posts``."""
        from socialrec.recommender import CachedPostFeatures, FeastFeatures
        from socialrec.recommender import Recommender as FourStages

        post_cache = None
        if not (hasattr(features, "users") and hasattr(features, "posts")):
            if post_writer is None:
                post_writer = OnlinePostWriter(features)
            features = FeastFeatures(features)
            if settings.post_feature_cache_seconds > 0 and settings.post_feature_cache_size > 0:
                # post rows change at materialization or /posts (invalidated), not per request
                features = post_cache = CachedPostFeatures(
                    features, settings.post_feature_cache_size, settings.post_feature_cache_seconds
                )
        index = Guarded(index, "milvus")
        seen_store = Guarded(seen_store, "seen_store")
        recommender = FourStages(
            features=Guarded(features, "feature_store"),
            two_tower=two_tower,
            index=index,
            seen_store=seen_store,
            ranker=ranker,
            catalog=catalog,
            settings=settings,
            feature_builder=feature_builder,
            neighbours=neighbours,
            # a source whose store is down is skipped; the other sources answer (fail open)
            outage=(DependencyError,),
        )
        endpoints = cls(
            settings=settings,
            recommender=recommender,
            index=index,
            seen_store=seen_store,
            two_tower=two_tower,
            text_encoder=text_encoder,
            bucket=Guarded(bucket, "landing"),
            metrics=metrics,
            models=models,
            spool=None if spool is None else Guarded(spool, "spool"),
            post_writer=None if post_writer is None else Guarded(post_writer, "feature_store"),
        )
        endpoints.post_cache = post_cache
        if spool is not None:
            metrics.add_refresher(endpoints.observe_spool)
        return endpoints

    @property
    def catalog(self):
        return self.recommender.catalog

    # --- /recommend -------------------------------------------------------------------------
    def recommend(
        self,
        user_id: int,
        k: int,
        debug: bool = False,
        categories: list[int] | None = None,
    ) -> RecommendResponse:
        try:
            # debug=True: the stage timings feed the metrics
            rec = self.recommender.recommend(user_id, k, debug=True, categories=categories or None)
        except DependencyError as exc:
            return self.fallback(user_id, k, exc, categories)
        stages = (rec.debug or {}).get("stages", {})
        self.metrics.observe_stages("/recommend", stages)
        reason = None
        if rec.degraded:  # a source's dependency was down: the others answered (fail open)
            for source, exc in rec.degraded.items():
                dependency = getattr(exc, "dependency", source)
                log.warning("recommend for user %s without source %s: %s", user_id, source, exc)
                self.metrics.fallback.labels("/recommend", dependency).inc()
                self.metrics.errors.labels("/recommend", dependency).inc()
            reason = "; ".join(
                f"{name} source skipped: {exc}" for name, exc in rec.degraded.items()
            )
        if rec.path != "personalized":
            note_outcome(rec.path)
        return RecommendResponse(
            user_id=rec.user_id,
            source=rec.path,
            items=[Item(**it) for it in rec.items],
            reason=reason,
            debug={**rec.debug, "models": self.models} if debug else None,
        )

    def fallback(
        self,
        user_id: int,
        k: int,
        exc: DependencyError,
        categories: list[int] | None = None,
    ) -> RecommendResponse:
        """The catalog's popular/fresh list (from ``categories`` first when given, then from
        all; own posts left out; seen posts too while the seen store answers), best first."""
        log.warning("recommend fallback for user %s: %s", user_id, exc)
        self.metrics.fallback.labels("/recommend", exc.dependency).inc()
        self.metrics.errors.labels("/recommend", exc.dependency).inc()
        note_outcome("fallback")
        exclude: set[int] = set()
        if exc.dependency != "seen_store":
            try:
                exclude = self.seen_store.seen(user_id) | self.seen_store.negatives(user_id)
            except DependencyError:
                pass
        catalog = self.catalog
        cats = [int(c) for c in categories] if categories else None
        picks = catalog.cold_start(k, cats, exclude=exclude, exclude_creator=int(user_id))
        meta = catalog.metadata(p for p, _ in picks)
        items = [
            Item(
                post_id=p,
                score=float(s),
                ranker_score=None,
                category_id=int(meta.at[p, "category_id"]),
                creator_id=int(meta.at[p, "creator_id"]),
            )
            for p, s in picks
        ]
        return RecommendResponse(user_id=user_id, source="fallback", items=items, reason=str(exc))

    # --- /events ----------------------------------------------------------------------------
    def events(self, events: list[EventIn]) -> EventsResponse:
        """Mark the events seen (read-your-writes, first), then spool them durably for the
        landing bucket. Either failing is a 503; a retry is harmless (the seen store upserts,
        dbt keeps one row per event_id)."""
        stages = _Stages()
        n = self.recommender.mark_events((e.user_id, e.post_id, e.event_type, e.ts) for e in events)
        stages.done("seen")
        spooled = 0
        if self.spool is not None:
            spooled = self.spool.append([e.model_dump(mode="json") for e in events])
            stages.done("spool")
            self.observe_spool()
        self.metrics.observe_stages("/events", stages.seconds)
        return EventsResponse(accepted=n, spooled=spooled)

    # --- /blocks ----------------------------------------------------------------------------
    def blocks(self, user_id: int, creator_ids: list[int], blocked: bool = True) -> BlocksResponse:
        """Block (or unblock) creators for a user in the seen store: the very next /recommend
        filters their posts out. Idempotent."""
        store = self.recommender.seen_store
        if blocked:
            store.block(user_id, creator_ids)
        else:
            store.unblock(user_id, creator_ids)
        return BlocksResponse(
            user_id=user_id, blocked_creators=sorted(store.blocked_creators(user_id))
        )

    def observe_spool(self) -> dict[str, Any] | None:
        """The spool's stats, also set on the spool gauges (None without a spool)."""
        if self.spool is None:
            return None
        stats = self.spool.stats()
        self.metrics.observe_spool(stats)
        return stats

    # --- /similar ---------------------------------------------------------------------------
    def similar(self, post_id: int, k: int) -> SimilarResponse:
        stages = _Stages()
        hits = self.index.similar(self.settings.collection_alias, post_id, k)
        stages.done("search")
        self.metrics.observe_stages("/similar", stages.seconds)
        if hits is None:
            raise ApiError(404, "unknown_post", f"post {post_id} is not in the index")
        return SimilarResponse(post_id=post_id, items=[Neighbor(**_neighbor(h)) for h in hits])

    # --- /search ----------------------------------------------------------------------------
    def search(self, query: str, k: int, user_id: int | None = None) -> SearchResponse:
        s = self.settings
        stages = _Stages()
        vector = self.text_encoder.encode([query])[0]
        stages.done("embed")
        n = k if user_id is None else min(max(5 * k, SEARCH_MIN_CANDIDATES), SEARCH_MAX_CANDIDATES)
        hits = self.index.search_hits(s.text_collection_alias, vector, n)
        stages.done("search")
        items = [
            SearchHit(
                post_id=h["post_id"],
                score=h["score"],
                text_score=h["score"],
                category_id=h["category_id"],
                creator_id=h["creator_id"],
            )
            for h in hits
        ]
        personalized, reason = False, None
        if user_id is not None:
            user_vector, reason = self._user_vector(user_id)
            if user_vector is not None:
                personalize(items, user_vector, self._post_vectors([it.post_id for it in items]))
                personalized = True
            stages.done("personalize")
        self.metrics.observe_stages("/search", stages.seconds)
        return SearchResponse(
            query=query, user_id=user_id, personalized=personalized, reason=reason, items=items[:k]
        )

    def _user_vector(self, user_id: int) -> tuple[np.ndarray | None, str | None]:
        try:
            users = self.recommender.features.users([user_id])
        except DependencyError as exc:
            self.metrics.errors.labels("/search", exc.dependency).inc()
            return None, f"not personalized: {exc}"
        if not len(users) or not bool(users["found"].iloc[0]):
            return None, f"not personalized: user {user_id} has no online features"
        return self.two_tower.user_embeddings(users.reset_index())[0], None

    def _post_vectors(self, post_ids: list[int]) -> dict[int, np.ndarray]:
        return self.index.vectors(self.settings.collection_alias, post_ids) if post_ids else {}

    # --- /posts -----------------------------------------------------------------------------
    def add_post(
        self,
        post_id: int,
        creator_id: int,
        category_id: int,
        media_type: str,
        description: str,
        created_at: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> PostResponse:
        import pandas as pd

        from socialrec.data.landing import encode_jsonl

        s = self.settings
        now = now or dt.datetime.now(dt.UTC)
        created = _utc(created_at) if created_at is not None else now
        if created > now + FUTURE_SLACK:
            raise ApiError(
                422, "invalid_post", f"created_at {created.isoformat()} is in the future"
            )
        stages = _Stages()
        text_vector = self.text_encoder.encode([description])[0]
        frame = pd.DataFrame(
            {
                "post_id": [post_id],
                "category_id": [category_id],
                "media_type": [media_type],
                "creator_id": [creator_id],
                "description_embedding": [text_vector],
                "age_hours": [0.0],  # a new post: the youngest age bucket
            }
        )
        post_vector = self.two_tower.post_embeddings(frame)[0]
        stages.done("embed")

        # the landing file first: it is what the next index build (and the warehouse) reads
        key = (
            f"posts/dt={now:%Y-%m-%d}/api-{now:%Y%m%dT%H%M%S%f}-{post_id}-"
            f"{uuid.uuid4().hex[:8]}.jsonl.gz"
        )
        row = {
            "post_id": post_id,
            "creator_id": creator_id,
            "category_id": category_id,
            "media_type": media_type,
            "description": description,
            "created_at": _iso(created),
            "updated_at": _iso(now),
        }
        self.bucket.write_bytes(key, encode_jsonl([row]))
        stages.done("landing")

        # its online features before the index: once retrieval can return it, ranking knows it
        online = self._write_online_features(
            post_id, creator_id, category_id, media_type, created, text_vector, now
        )
        stages.done("features")
        if getattr(self, "post_cache", None) is not None:
            self.post_cache.invalidate([post_id])  # the next ranking reads the new row

        collections = self.index.upsert_post(
            post_id,
            category_id,
            creator_id,
            int(created.timestamp()),
            post_vector,
            text_vector,
            alias=s.collection_alias,
            text_alias=s.text_collection_alias,
        )
        stages.done("index")
        self._add_to_catalog(post_id, category_id, creator_id, int(created.timestamp()))
        self.metrics.observe_stages("/posts", stages.seconds)
        return PostResponse(
            post_id=post_id, collections=collections, landing_key=key, online_features=online
        )

    def _write_online_features(
        self,
        post_id: int,
        creator_id: int,
        category_id: int,
        media_type: str,
        created: dt.datetime,
        text_vector: np.ndarray,
        now: dt.datetime,
    ) -> bool:
        """``post_features`` (zero engagement counts for a new post; an edit keeps the counts
        the online store has) and ``post_content`` of the post; False without a writer."""
        if self.post_writer is None:
            return False
        from socialrec.features.store import POST_COUNT_COLUMNS

        known = self.recommender.features.posts([post_id])
        counts = None
        if len(known) and bool(known["found"].iloc[0]):
            current = known.iloc[0]
            counts = {c: current[c] for c in POST_COUNT_COLUMNS if c in known.columns}
        post = {
            "post_id": post_id,
            "creator_id": creator_id,
            "category_id": category_id,
            "media_type": media_type,
            "created_at": created,
            "description_embedding": text_vector,
        }
        self.post_writer.write(post, counts=counts, at=now)
        return True

    def _add_to_catalog(self, post_id: int, category_id: int, creator_id: int, created: int):
        """Swap in a catalog view with the post (``Catalog.with_post``: no re-sort)."""
        with self._catalog_lock:
            self.recommender.catalog = self.recommender.catalog.with_post(
                post_id, category_id, creator_id, created
            )

    # --- readiness --------------------------------------------------------------------------
    def readiness(self) -> str | None:
        """None when ready, else why not: the models are loaded, Milvus answers a one-row query
        through each alias, the seen store answers one lookup. (The landing bucket and the
        spool never make the service unready: see :meth:`spool_note`.)"""
        if self.two_tower is None or self.recommender.ranker is None or self.catalog is None:
            return "models not loaded"
        if self.text_encoder is None:
            return "text encoder not loaded"
        s = self.settings
        for alias in (s.collection_alias, s.text_collection_alias):
            try:
                self.index.ping(alias)
            except DependencyError as exc:
                return f"milvus alias {alias!r}: {exc}"
        try:
            self.seen_store.negatives(-1)
        except DependencyError as exc:
            return str(exc)
        return None

    def spool_note(self) -> str | None:
        """What readiness reports about the event spool: None while flushing works, else (after
        ``SPOOL_FAILING_AFTER`` failed flushes in a row) its state. It never makes the service
        unready: accepted events are on local disk and are delivered when the bucket is back;
        the gauges (``socialrec_spool_*``) are what to alert on."""
        try:
            stats = self.observe_spool()
        except DependencyError as exc:
            return f"event spool: {exc}"
        if not stats or stats["consecutive_failures"] < SPOOL_FAILING_AFTER:
            return None
        return (
            f"event spool: {stats['consecutive_failures']} flushes to the landing bucket failed "
            f"in a row ({stats['failures']} since start); {stats['pending']} events kept on "
            f"local disk, oldest {stats['oldest_pending_seconds']:.0f}s; "
            f"last error: {stats['last_error']}"
        )


def personalize(items: list[SearchHit], user_vector: np.ndarray, post_vectors: dict) -> None:
    """Re-rank text hits in place: ``score = (1 - w) * text_score + w * user_score`` with
    ``w = SEARCH_USER_WEIGHT`` and ``user_score`` the user . post tower dot product (a hit
    without a post vector keeps its text score); best first, ties by post_id."""
    u = np.asarray(user_vector, dtype=np.float32)
    for it in items:
        vec = post_vectors.get(it.post_id)
        if vec is None:
            continue
        it.user_score = float(np.dot(u, vec))
        it.score = (1 - SEARCH_USER_WEIGHT) * it.text_score + SEARCH_USER_WEIGHT * it.user_score
    items.sort(key=lambda it: (-it.score, it.post_id))


def _neighbor(hit: dict) -> dict:
    return {k: hit[k] for k in ("post_id", "score", "category_id", "creator_id")}


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def respond(endpoint: str, metrics: ServiceMetrics, fn: Callable, *args, **kwargs):
    """``fn(...)``'s result, or an :class:`ErrorAnswer`: ApiError -> its status, a dependency
    outage -> 503; the outcome is noted for the request metrics. Anything else propagates
    (the web layer answers 500) after counting it."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        note_outcome("not_found" if exc.status == 404 else "invalid")
        return ErrorAnswer(exc.status, exc.error, exc.detail)
    except DependencyError as exc:
        log.warning("%s: %s", endpoint, exc)
        metrics.errors.labels(endpoint, exc.dependency).inc()
        note_outcome("unavailable")
        return ErrorAnswer(503, f"{exc.dependency}_unavailable", str(exc))
    except Exception:
        metrics.errors.labels(endpoint, "internal").inc()
        note_outcome("error")
        raise
