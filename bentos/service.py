"""The socialrec recommender as a BentoML service (typed APIs; the logic lives in the core).

Endpoints (JSON bodies; every field is typed and documented in the OpenAPI spec at ``/docs``):

* ``POST /recommend`` {user_id, k, debug?}: the 4 stages of ``socialrec.recommender.Recommender``
  — Feast online features -> user tower -> Milvus top-N -> seen/negative/own filter -> one
  batched Feast call + CatBoost -> category-diversity re-ranking. Unknown users get the
  cold-start answer (popular + fresh posts), ``source: "cold_start"``. FALLBACK: when Milvus,
  the seen store or the online feature store raises, the answer comes from the catalog's
  popular/fresh cold-start list with ``source: "fallback"`` and a ``reason`` (and the
  ``socialrec_fallback_total`` counter increments) instead of an error.
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
  (bearer token): the description is embedded with MiniLM, the post with the post tower
  (a new id is embedded from its content: category, media type, creator, text); the post lands
  in the landing bucket as a posts upsert file (``posts/dt=<today>/api-...jsonl.gz``,
  docs/contracts.md; the source of truth for the next index build), is upserted into both
  Milvus collections (found by ``/similar`` and ``/search`` at once) and added to the
  service's catalog view (filtering knows its creator, cold start its freshness).
* ``POST /events`` {events: [...]} (bearer token): marks the events in the seen store at once,
  so the next ``/recommend`` of that user already excludes those posts (read-your-writes). A
  batch with one invalid event is rejected whole.
* Errors: a body that fails validation gets a 422 whose JSON says which field is wrong and why;
  an unknown post a 404; a missing or wrong bearer token a 401; a dependency that does not
  answer (Milvus, seen store, feature store, landing bucket) a 503 — always JSON
  ``{"error": <code>, "detail": <reason>}``. Bad input never gets a 5xx.
* Auth: ``/events`` and ``/posts`` need ``Authorization: Bearer <SOCIALREC_API_TOKEN>``
  (the local profile's token is ``socialrec.settings.LOCAL_API_TOKEN``); ``/recommend``,
  ``/similar`` and ``/search`` too when ``SOCIALREC_AUTH_READ_ENDPOINTS=true``. Probes,
  ``/metrics`` and ``/docs`` stay open.
* ``GET /healthz``, ``/livez``: BentoML's liveness. ``GET /readyz``: BentoML's readiness with
  ``__is_ready__``: 200 only when the models are loaded and Milvus (a one-row query through
  each alias) and the seen store (one lookup) answer; else 503 with JSON
  ``{"ready": false, "reason": ...}``.
* ``GET /metrics``: BentoML's Prometheus metrics plus ``socialrec_requests_total{endpoint,
  outcome}``, ``socialrec_errors_total{endpoint, kind}``, ``socialrec_fallback_total{endpoint,
  dependency}`` and ``socialrec_stage_duration_seconds{endpoint, stage}`` (the recommender's
  retrieval/filtering/ranking/reranking timings; embed/search/personalize/landing/index of the
  other endpoints).

Models come from the BentoML model store (packed into the bento by ``bentos/package.py``, each
labelled with its MLflow run); MiniLM comes from its wheel; state that changes while serving
(Feast online store, Milvus collections, seen store, landing bucket) is reached through
``socialrec.settings.Settings``, i.e. ``SOCIALREC_*``. The Milvus aliases are followed while
serving (a new index version or a rollback is picked up without restart, see
``socialrec.index``). One worker: Milvus Lite (the embedded default) allows one process per
index path.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS/SavedModels under Keras 2
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import contextvars  # noqa: E402
import datetime as dt  # noqa: E402
import functools  # noqa: E402
import hmac  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Annotated, Any, Literal  # noqa: E402

import bentoml  # noqa: E402
import numpy as np  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, StringConstraints  # noqa: E402

from socialrec.settings import EVENT_TYPES, MEDIA_TYPES  # noqa: E402

log = logging.getLogger("socialrec.service")

MAX_K = 200
MAX_EVENTS = 1000
MAX_QUERY_CHARS = 512
MAX_DESCRIPTION_CHARS = 5000
SEARCH_USER_WEIGHT = 0.3  # w of the personalized /search blend (module docstring)
SEARCH_MIN_CANDIDATES = 50
SEARCH_MAX_CANDIDATES = 500
FUTURE_SLACK = dt.timedelta(minutes=5)  # clock skew tolerated on a post's created_at
WRITE_ROUTES = ("/events", "/posts")
READ_ROUTES = ("/recommend", "/similar", "/search")
API_ROUTES = READ_ROUTES + WRITE_ROUTES
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
MediaType = Literal[MEDIA_TYPES]  # type: ignore[valid-type]


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
    accepted: int


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
            }
        }
    )

    post_id: int
    collections: dict[str, str] = Field(description="alias -> the collection the post went into")
    landing_key: str = Field(description="the posts upsert file in the landing bucket")


# --- errors ---------------------------------------------------------------------------------
class ApiError(Exception):
    """An answer other than 200 with a reason: ``{"error": code, "detail": reason}``."""

    def __init__(self, status: int, error: str, detail: str):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


class DependencyError(Exception):
    """A call into Milvus, the seen store, the feature store or the landing bucket failed."""

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


# --- metrics --------------------------------------------------------------------------------
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DEPENDENCIES = ("milvus", "seen_store", "feature_store", "landing")


class ServiceMetrics:
    """The service's own Prometheus metrics (next to BentoML's ``bentoml_service_*``).

    Created lazily in the serving process (:func:`service_metrics`): BentoML sets
    ``PROMETHEUS_MULTIPROC_DIR`` for its workers and collects every worker's metrics on
    ``/metrics``; ``registry`` is for tests only. prometheus_client is used directly, as BentoML
    1.4 recommends (``bentoml.metrics`` is a deprecated alias of it)."""

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
            "reranking; search: embed, search, personalize; posts: embed, landing, index)",
            ["endpoint", "stage"],
            buckets=STAGE_BUCKETS,
            **kw,
        )
        for dep in DEPENDENCIES[:3]:  # every series exists from the start (0 until it happens)
            self.fallback.labels("/recommend", dep)
        for route in API_ROUTES:
            self.errors.labels(route, "internal")

    def observe_stages(self, endpoint: str, stages: dict[str, Any]) -> None:
        """``stages``: {name: {"ms": float, ...}} (the recommender's debug timings) or
        {name: seconds}."""
        for name, value in stages.items():
            ms = value.get("ms") if isinstance(value, dict) else float(value) * 1000
            if ms is not None:
                self.stage_seconds.labels(endpoint, name).observe(float(ms) / 1000)


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


# the outcome an endpoint reports for the request being served (read by RequestMetrics); a
# dict set per request, shared with the worker thread that runs the endpoint
_OUTCOME: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "socialrec_outcome", default=None
)


def note_outcome(outcome: str) -> None:
    note = _OUTCOME.get()
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


# --- the endpoints' logic, without BentoML --------------------------------------------------
class Endpoints:
    """What each endpoint does, over the real parts (or fakes in unit tests).

    Dependencies are wrapped in :class:`Guarded` so that an outage surfaces as
    :class:`DependencyError`: ``/recommend`` then answers from the cold-start list, the other
    endpoints answer 503 (through :func:`respond`). Bad input raises :class:`ApiError` (4xx).
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
    ):
        self.settings = settings
        self.recommender = recommender  # socialrec.recommender.Recommender over guarded parts
        self.index = index  # Guarded PostIndex
        self.seen_store = seen_store  # Guarded seen store
        self.two_tower = two_tower
        self.text_encoder = text_encoder
        self.bucket = bucket  # Guarded LandingBucket
        self.metrics = metrics
        self.models = models or {}
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
    ) -> Endpoints:
        """Wrap the parts in guards and compose the 4-stage recommender over them.
        ``features``: a Feast FeatureStore or anything with ``users`` and ``posts``."""
        from socialrec.recommender import FeastFeatures
        from socialrec.recommender import Recommender as FourStages

        if not (hasattr(features, "users") and hasattr(features, "posts")):
            features = FeastFeatures(features)
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
        )
        return cls(
            settings=settings,
            recommender=recommender,
            index=index,
            seen_store=seen_store,
            two_tower=two_tower,
            text_encoder=text_encoder,
            bucket=Guarded(bucket, "landing"),
            metrics=metrics,
            models=models,
        )

    @property
    def catalog(self):
        return self.recommender.catalog

    # --- /recommend -------------------------------------------------------------------------
    def recommend(self, user_id: int, k: int, debug: bool = False) -> RecommendResponse:
        try:
            rec = self.recommender.recommend(user_id, k, debug=True)  # timings for the metrics
        except DependencyError as exc:
            return self.fallback(user_id, k, exc)
        stages = (rec.debug or {}).get("stages", {})
        self.metrics.observe_stages("/recommend", stages)
        if rec.path != "personalized":
            note_outcome(rec.path)
        return RecommendResponse(
            user_id=rec.user_id,
            source=rec.path,
            items=[Item(**it) for it in rec.items],
            debug={**rec.debug, "models": self.models} if debug else None,
        )

    def fallback(self, user_id: int, k: int, exc: DependencyError) -> RecommendResponse:
        """The catalog's popular/fresh list (own posts left out; seen posts too while the
        seen store answers), best first."""
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
        picks = catalog.cold_start(k, None, exclude=exclude, exclude_creator=int(user_id))
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
        n = self.recommender.mark_events((e.user_id, e.post_id, e.event_type, e.ts) for e in events)
        return EventsResponse(accepted=n)

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

        from socialrec.landing import encode_jsonl

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
        return PostResponse(post_id=post_id, collections=collections, landing_key=key)

    def _add_to_catalog(self, post_id: int, category_id: int, creator_id: int, created: int):
        """A new catalog view with the post (its popularity kept if it is an edit, else 0);
        swapped in whole, so a request in flight keeps a consistent view."""
        import pandas as pd

        from socialrec.catalog import COLUMNS, Catalog

        with self._catalog_lock:
            old = self.recommender.catalog
            posts = old.posts[COLUMNS]
            popularity = float(posts.at[post_id, "popularity"]) if post_id in posts.index else 0.0
            row = pd.DataFrame(
                {
                    "post_id": [post_id],
                    "category_id": [category_id],
                    "creator_id": [creator_id],
                    "created_at": [created],
                    "popularity": [popularity],
                }
            )
            rest = posts[posts["post_id"] != post_id]
            frame = pd.concat([rest, row], ignore_index=True).astype(
                {c: "int64" for c in COLUMNS[:4]}
            )
            self.recommender.catalog = Catalog(frame, old.fresh_share)

    # --- readiness --------------------------------------------------------------------------
    def readiness(self) -> str | None:
        """None when ready, else why not: the models are loaded, Milvus answers a one-row query
        through each alias, the seen store answers one lookup."""
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
    """``fn(...)``'s result, or the JSON error answer: ApiError -> its status, a dependency
    outage -> 503; the outcome is noted for the request metrics. Anything else propagates
    (BentoML answers 500) after counting it."""
    from starlette.responses import JSONResponse

    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        note_outcome("not_found" if exc.status == 404 else "invalid")
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)
    except DependencyError as exc:
        log.warning("%s: %s", endpoint, exc)
        metrics.errors.labels(endpoint, exc.dependency).inc()
        note_outcome("unavailable")
        return JSONResponse(
            {"error": f"{exc.dependency}_unavailable", "detail": str(exc)}, status_code=503
        )
    except Exception:
        metrics.errors.labels(endpoint, "internal").inc()
        note_outcome("error")
        raise


# --- ASGI middlewares -----------------------------------------------------------------------
def _route(scope) -> str:
    return scope.get("path", "").rstrip("/") or "/"


async def _send_json(send, status: int, body: dict, headers: tuple = ()) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return {401: "unauthorized", 404: "not_found", 400: "invalid", 422: "invalid"}.get(
        status, "error" if status >= 500 else "rejected"
    )


class RequestMetrics:
    """ASGI middleware: ``socialrec_requests_total{endpoint, outcome}`` for every API request,
    also those answered before the service runs (401, 422). The outcome is the one the
    endpoint noted (fallback, cold_start, ...) or follows from the status."""

    def __init__(self, app, routes: tuple[str, ...] = API_ROUTES):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) not in self.routes:
            return await self.app(scope, receive, send)
        note: dict = {}
        token = _OUTCOME.set(note)

        async def send_status(message):
            if message["type"] == "http.response.start":
                note.setdefault("status", message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            note["outcome"] = "error"
            raise
        finally:
            _OUTCOME.reset(token)
            outcome = note.get("outcome") or _outcome_of(note.get("status", 500))
            service_metrics().requests.labels(_route(scope), outcome).inc()


class BearerAuth:
    """ASGI middleware: the write endpoints (and the read endpoints when
    ``settings.auth_read_endpoints``) need ``Authorization: Bearer <settings.api_token>``;
    otherwise 401 with a JSON reason. The token is compared in constant time."""

    def __init__(self, app, settings=None):
        if settings is None:
            from socialrec.settings import Settings

            settings = Settings()
        self.app = app
        token = settings.api_token.get_secret_value() if settings.api_token else ""
        self.token = token.encode()
        self.routes = WRITE_ROUTES + (READ_ROUTES if settings.auth_read_endpoints else ())

    def reason(self, header: bytes | None) -> str | None:
        """Why a request with this Authorization header is refused (None: it is not)."""
        if not self.token:
            return "no API token is configured (SOCIALREC_API_TOKEN)"
        if not header:
            return "missing 'Authorization: Bearer <token>' header"
        scheme, _, given = header.strip().partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            return "the Authorization header must be 'Bearer <token>'"
        if not hmac.compare_digest(given.strip(), self.token):
            return "invalid bearer token"
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) not in self.routes:
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), None)
        reason = self.reason(header)
        if reason is None:
            return await self.app(scope, receive, send)
        await _send_json(
            send,
            401,
            {"error": "unauthorized", "detail": reason},
            ((b"www-authenticate", b'Bearer realm="socialrec"'),),
        )


class UnprocessableBody:
    """ASGI middleware: a body that fails validation is answered 422 (Unprocessable Entity,
    as FastAPI does), not BentoML's generic 400; the JSON reason is passed through unchanged.
    BentoML answers 400 only for bad input, so every 400 of an API route is such a body."""

    def __init__(self, app, routes: tuple[str, ...] = API_ROUTES):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) not in self.routes:
            return await self.app(scope, receive, send)

        async def send_422(message):
            if message["type"] == "http.response.start" and message["status"] == 400:
                message = {**message, "status": 422}
            await send(message)

        return await self.app(scope, receive, send_422)


# why the last readiness check failed (set by __is_ready__, read by ReadinessReason)
_READINESS: dict[str, str | None] = {"reason": "not checked yet"}


class ReadinessReason:
    """ASGI middleware: BentoML's ``/readyz`` answers 503 with a fixed text when
    ``__is_ready__`` returns False; this replaces that body with JSON
    ``{"ready": false, "reason": ...}`` (the reason of the check that just failed)."""

    def __init__(self, app, path: str = "/readyz"):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route(scope) != self.path:
            return await self.app(scope, receive, send)
        state: dict = {}

        async def send_json_503(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if message["status"] != 503:
                    await send(message)
                return
            if state.get("status") != 503:
                await send(message)
                return
            if not message.get("more_body", False):
                reason = _READINESS.get("reason") or "not ready"
                await _send_json(send, 503, {"ready": False, "reason": reason})

        return await self.app(scope, receive, send_json_503)


# --- the BentoML service --------------------------------------------------------------------
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
        from socialrec.landing import open_bucket
        from socialrec.ranker import Ranker
        from socialrec.seen import open_seen_store
        from socialrec.settings import Settings
        from socialrec.text import TextEncoder
        from socialrec.two_tower import TwoTowerModel

        self.settings = Settings()
        self.metrics = service_metrics()
        self.index = PostIndex(str(self.settings.milvus_uri), self.settings.milvus_token)
        # a per-user Bloom filter in front of the seen store (SQLite or ScyllaDB)
        self.seen_store = open_seen_store(self.settings, bloom=True)
        text_encoder = TextEncoder()
        text_encoder.encode(["warm up"])  # load MiniLM now, not on the first /search
        models = {
            str(m.tag): dict(m.info.labels)
            for m in (self.two_tower_model, self.ranker_model, self.catalog_model)
        }
        self.endpoints = Endpoints.create(
            self.settings,
            features=features.feature_store(self.settings),
            two_tower=TwoTowerModel.load(self.two_tower_model.path),
            index=self.index,
            seen_store=self.seen_store,
            ranker=Ranker.load(self.ranker_model.path),
            catalog=Catalog.load(self.catalog_model.path),
            text_encoder=text_encoder,
            bucket=open_bucket(str(self.settings.landing_uri)),
            metrics=self.metrics,
            models=models,
        )

    def __is_ready__(self) -> bool:
        """BentoML's readiness hook (``GET /readyz``)."""
        reason = self.endpoints.readiness()
        _READINESS["reason"] = reason
        if reason:
            log.warning("not ready: %s", reason)
        return reason is None

    @bentoml.on_shutdown
    def close(self) -> None:
        self.index.close()
        self.seen_store.close()

    def _respond(self, endpoint: str, fn: Callable, *args, **kwargs):
        return respond(endpoint, self.metrics, fn, *args, **kwargs)

    @bentoml.api
    def recommend(
        self,
        user_id: Annotated[int, Field(ge=0, description="the app's user id", examples=[17])],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="how many posts", examples=[20])] = 20,
        debug: bool = False,
    ) -> RecommendResponse:
        """The user's next k posts, best first (cold start for unknown users; the cold-start
        list with source 'fallback' when a dependency fails)."""
        return self._respond("/recommend", self.endpoints.recommend, user_id, k, debug)

    @bentoml.api
    def events(
        self, events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_EVENTS)]
    ) -> EventsResponse:
        """Record a batch of interaction events in the seen store (read-your-writes).
        Needs the bearer token."""
        return self._respond("/events", self.endpoints.events, events)

    @bentoml.api
    def similar(
        self,
        post_id: Annotated[int, Field(ge=0, description="a post in the index", examples=[42])],
        k: Annotated[
            int, Field(ge=1, le=MAX_K, description="how many neighbours", examples=[10])
        ] = 10,
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
        k: Annotated[int, Field(ge=1, le=MAX_K, description="how many posts", examples=[10])] = 10,
        user_id: Annotated[
            int | None,
            Field(ge=0, description="personalize the ranking for this user", examples=[17]),
        ] = None,
    ) -> SearchResponse:
        """Posts whose description matches the query (MiniLM cosine), best first; with user_id
        re-ranked by 0.7 * text_score + 0.3 * (user tower . post tower)."""
        return self._respond("/search", self.endpoints.search, query, k, user_id)

    @bentoml.api
    def posts(
        self,
        post_id: Annotated[int, Field(ge=0, description="the new post's id", examples=[900001])],
        creator_id: Annotated[int, Field(ge=0, description="its author (a user_id)", examples=[8])],
        category_id: Annotated[int, Field(ge=0, examples=[3])],
        media_type: Annotated[MediaType, Field(examples=["image"])],
        description: Annotated[
            str,
            Field(max_length=MAX_DESCRIPTION_CHARS, examples=["Best pastel de nata in town"]),
        ],
        created_at: Annotated[
            dt.datetime | None,
            Field(description="ISO-8601; default now (UTC)", examples=["2026-01-06T12:00:00Z"]),
        ] = None,
    ) -> PostResponse:
        """Publish (or edit) a post: into the landing bucket, both Milvus collections and the
        catalog view; found by /similar and /search at once. Needs the bearer token."""
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


# first added = outermost: the request metrics see every answer, also the 401s and 422s
Recommender.add_asgi_middleware(RequestMetrics)
Recommender.add_asgi_middleware(BearerAuth)
Recommender.add_asgi_middleware(UnprocessableBody)
Recommender.add_asgi_middleware(ReadinessReason)
