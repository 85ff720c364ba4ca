"""What the recommender service's endpoints do, without BentoML (``bentos/service.py`` is the
thin BentoML shell: typed APIs, the service class, middleware registration).

Endpoints (JSON bodies; the typed request/response models of ``socialrec.serving.schemas``
are the service's OpenAPI schema at ``/docs``):

* ``POST /recommend`` {user_id, k, debug?, categories?}: the 4 stages of
  ``socialrec.recommender.Recommender`` — Feast online features -> user tower -> Milvus top-N
  -> seen/negative/own filter -> one batched Feast call + CatBoost -> re-ranking (category and
  creator caps, new-post boost, promoted posts, optional softmax sampling). ``categories`` (at
  most ``MAX_CATEGORIES`` ids >= 0) are the app's categories for this request, e.g. a new
  user's onboarding choice: they replace the stored onboarding categories in the retrieval
  filter, and a user the feature store does not know yet is embedded from them and goes
  through the same 4 stages (``source: "personalized"``). Unknown users without categories get
  the cold-start answer (popular + fresh posts), ``source: "cold_start"``. Each item has
  ``boosted``, ``promoted`` and its ``reasons`` (``socialrec.recommender.reasons``); the
  answer has the user's experiment ``variant``. FALLBACK: when Milvus, the seen store or the
  online feature store raises, the answer is the catalog's popular/fresh list with
  ``source: "fallback"`` and a ``reason`` (``socialrec_fallback_total`` increments).
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
  (bearer token): embedded, then into the landing bucket, the online feature store, both
  Milvus collections and the catalog view, in that order (``socialrec.serving.posts``).
* ``POST /forget`` {user_id} and ``POST /posts/delete`` {post_id} (bearer token): a landing
  tombstone, then the user's seen rows and blocks, or the post in every Milvus collection and
  the catalog view; the ``deletion_job`` does the rest (docs/operations.md).
* ``POST /events`` {events: [...]} (bearer token): validated whole (event times in the
  window), appended to the durable event spool first (``socialrec.serving.spool``; fsynced
  before the answer; flushed to ``events/dt=<day>/`` in the landing bucket in the
  background), then marked in the seen store, so the user's next ``/recommend`` excludes those
  posts. A spool or seen store that fails is a 503; the app retries with the same
  ``event_id``s (idempotent downstream).
* Errors (``socialrec.serving.errors``): bad input is a 4xx with a JSON reason, never a 5xx;
  a dependency that does not answer is a 503 ``<dependency>_unavailable``; a bug is a 500.
* Readiness (:meth:`Endpoints.readiness_report`, ``socialrec.serving.readiness``): every
  dependency that does not answer is reported; the spool's state is reported but never makes
  the service unready (:meth:`Endpoints.spool_note`).
* Metrics: ``ServiceMetrics`` (``socialrec.serving.metrics``; listed in docs/endpoints.md).

The models are in ``socialrec.serving.schemas``, the pure-ASGI middlewares (auth, 422,
readiness reason, request metrics) in ``socialrec.serving.asgi``; the parts are opened and
wired once by ``socialrec.serving.app``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from socialrec.data.deletion import write_tombstones
from socialrec.recommender.experiments import Experiments, count_labels
from socialrec.recommender.reasons import fallback_reasons
from socialrec.serving.errors import ApiError, DependencyError
from socialrec.serving.metrics import ServiceMetrics, Stages, note_outcome
from socialrec.serving.readiness import readiness_report
from socialrec.serving.schemas import (
    BlocksResponse,
    DeletionResponse,
    EventIn,
    EventsResponse,
    Item,
    Neighbor,
    PostResponse,
    RecommendResponse,
    SearchHit,
    SearchResponse,
    SimilarResponse,
)

if TYPE_CHECKING:
    from socialrec.stores.seen.base import PostSet

log = logging.getLogger("socialrec.service")

SEARCH_USER_WEIGHT = 0.3  # w of the personalized /search blend (module docstring)
SEARCH_MIN_CANDIDATES = 50
SEARCH_MAX_CANDIDATES = 500
# failed spool flushes in a row after which /readyz reports the spool (it stays ready)
SPOOL_FAILING_AFTER = 3


class Endpoints:
    """What each endpoint does, over the parts it is given (real ones wired by
    ``socialrec.serving.app``, or fakes in unit tests).

    The stores come wrapped in ``Guarded`` so that an outage surfaces as
    :class:`DependencyError`: ``/recommend`` then answers from the cold-start list, the other
    endpoints answer 503 (through ``respond``). Bad input raises :class:`ApiError` (4xx).
    ``recommender``: the 4 stages (``recommend``, ``mark_events``); ``features``: the online
    features (users, for the personalized search); ``catalog``: the catalog view the
    recommender reads too (``socialrec.serving.posts.LiveCatalog``); ``spool`` (an
    ``EventSpool``, optional) receives the accepted events; ``publisher`` (a
    ``socialrec.serving.posts.PostPublisher``) publishes posts; ``models``: the loaded models'
    labels (in ``/recommend``'s debug answer).
    """

    def __init__(
        self,
        *,
        settings,
        recommender,
        metrics: ServiceMetrics,
        index=None,
        seen_store=None,
        features=None,
        catalog=None,
        two_tower=None,
        ranker=None,
        text_encoder=None,
        publisher=None,
        spool=None,
        models: dict | None = None,
    ):
        self.settings = settings
        self.recommender = recommender
        self.metrics = metrics
        self.index = index
        self.seen_store = seen_store
        self.features = features
        self.catalog = catalog
        self.two_tower = two_tower
        self.ranker = ranker
        self.text_encoder = text_encoder
        self.publisher = publisher
        self.spool = spool
        self.models = models or {}
        # the experiment arms of the settings (docs/experiments.md): who gets which policy
        self.experiments = Experiments(settings)

    # --- /recommend -------------------------------------------------------------------------
    def recommend(
        self,
        user_id: int,
        k: int,
        debug: bool = False,
        categories: list[int] | None = None,
    ) -> RecommendResponse:
        variant = self.experiments.assign(user_id)  # the user's arm picks the policy
        self.metrics.observe_variant(variant)
        recommender = self.experiments.recommender(variant, self.recommender)
        try:
            # debug=True: the stage timings feed the metrics
            rec = recommender.recommend(user_id, k, debug=True, categories=categories or None)
        except DependencyError as exc:
            return self.fallback(user_id, k, exc, categories, variant)
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
            variant=variant,
        )

    def fallback(
        self,
        user_id: int,
        k: int,
        exc: DependencyError,
        categories: list[int] | None = None,
        variant: str = "control",
    ) -> RecommendResponse:
        """The catalog's popular/fresh list (from ``categories`` first when given, then from
        all; own posts left out; seen posts too while the seen store answers), best first."""
        log.warning("recommend fallback for user %s: %s", user_id, exc)
        self.metrics.fallback.labels("/recommend", exc.dependency).inc()
        self.metrics.errors.labels("/recommend", exc.dependency).inc()
        note_outcome("fallback")
        exclude: PostSet = frozenset()
        if exc.dependency != "seen_store":
            try:  # tested by membership, not listed (it may be the user's Bloom filter)
                exclude = self.seen_store.state(user_id).excluded
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
                reasons=fallback_reasons(float(s), f"{exc.dependency} unavailable"),
            )
            for p, s in picks
        ]
        return RecommendResponse(
            user_id=user_id, source="fallback", items=items, reason=str(exc), variant=variant
        )

    # --- /events ----------------------------------------------------------------------------
    def events(self, events: list[EventIn]) -> EventsResponse:
        """Spool the events durably for the landing bucket (first: a request that fails after
        it has lost nothing), then mark them seen (read-your-writes, before the answer).
        Either failing is a 503 and writes nothing after it: a spool failure leaves the feed
        as it was; a seen-store failure leaves the events spooled, and the app's retry is
        harmless (dbt keeps one row per event_id, the seen store upserts)."""
        self._check_window(events)
        stages = Stages()
        spooled = 0
        if self.spool is not None:
            sent = [e.model_dump(mode="json", exclude_unset=True) for e in events]  # as sent
            spooled = self.spool.append(sent)
            stages.done("spool")
            self.observe_spool()
        n = self.recommender.mark_events((e.user_id, e.post_id, e.event_type, e.ts) for e in events)
        stages.done("seen")
        self.metrics.observe_stages("/events", stages.seconds)
        self.metrics.count_event_variants(
            count_labels((e.variant for e in events), self.experiments.names)
        )
        return EventsResponse(accepted=n, spooled=spooled)

    def _check_window(self, events: list[EventIn]) -> None:
        """A 422 naming the events whose ``ts`` the loader would quarantine (more than
        ``event_max_future_hours`` ahead, or older than ``event_retention_days``) or no
        partition holds (a day before ``first_event_day``): rejected here, before anything is
        written, rather than parked in a landing folder no load reads."""
        from socialrec.data.raw_records import EventWindow
        from socialrec.timeutil import utc, utc_now

        window = EventWindow.of(self.settings)
        first_day = self.settings.first_event_day
        now = utc_now().replace(tzinfo=None)
        bad = []
        for e in events:
            ts = utc(e.ts).replace(tzinfo=None)  # naive: UTC (pydantic gave aware or naive)
            reason = window.reason(ts, now, ts.isoformat())
            if not reason and ts.date().isoformat() < first_day:
                reason = f"ts {ts.isoformat()!r} is before the first event partition {first_day}"
            if reason:
                bad.append(f"event {e.event_id!r}: {reason}")
        if bad:
            raise ApiError(422, "invalid_request", "; ".join(bad[:5])[:500])

    # --- /blocks ----------------------------------------------------------------------------
    def blocks(self, user_id: int, creator_ids: list[int], blocked: bool = True) -> BlocksResponse:
        """Block (or unblock) creators for a user in the seen store: the very next /recommend
        filters their posts out. Idempotent."""
        store = self.seen_store
        if blocked:
            store.block(user_id, creator_ids)
        else:
            store.unblock(user_id, creator_ids)
        return BlocksResponse(
            user_id=user_id, blocked_creators=sorted(store.blocked_creators(user_id))
        )

    def forget(self, kind: str, entity_id: int) -> DeletionResponse:
        """A user's tombstone then seen rows and blocks; a post: ``PostPublisher.delete``."""
        if kind == "post":
            key, names = self.publisher.delete(entity_id)
            return DeletionResponse(kind=kind, id=entity_id, landing_key=key, collections=names)
        key = write_tombstones(self.publisher.bucket, "user", [entity_id])
        n = self.seen_store.forget_user(entity_id)
        return DeletionResponse(kind=kind, id=entity_id, landing_key=key, seen_rows_deleted=n)

    def observe_spool(self) -> dict[str, Any] | None:
        """The spool's stats, also set on the spool gauges (None without a spool)."""
        if self.spool is None:
            return None
        stats = self.spool.stats()
        self.metrics.observe_spool(stats)
        return stats

    # --- /similar ---------------------------------------------------------------------------
    def similar(self, post_id: int, k: int) -> SimilarResponse:
        stages = Stages()
        hits = self.index.similar(self.settings.collection_alias, post_id, k)
        stages.done("search")
        self.metrics.observe_stages("/similar", stages.seconds)
        if hits is None:
            raise ApiError(404, "unknown_post", f"post {post_id} is not in the index")
        return SimilarResponse(post_id=post_id, items=[Neighbor(**_neighbor(h)) for h in hits])

    # --- /search ----------------------------------------------------------------------------
    def search(self, query: str, k: int, user_id: int | None = None) -> SearchResponse:
        s = self.settings
        stages = Stages()
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
            users = self.features.users([user_id])
        except DependencyError as exc:
            self.metrics.errors.labels("/search", exc.dependency).inc()
            return None, f"not personalized: {exc}"
        if not len(users) or not bool(users["found"].iloc[0]):
            return None, f"not personalized: user {user_id} has no online features"
        return self.two_tower.user_embeddings(users.reset_index())[0], None

    def _post_vectors(self, post_ids: list[int]) -> dict[int, np.ndarray]:
        return self.index.vectors(self.settings.collection_alias, post_ids) if post_ids else {}

    # --- /posts -----------------------------------------------------------------------------
    def add_post(self, *args, **kwargs) -> PostResponse:
        """Publish (or edit) a post: ``PostPublisher.publish`` (``socialrec.serving.posts``)."""
        return self.publisher.publish(*args, **kwargs)

    # --- readiness --------------------------------------------------------------------------
    def readiness_report(self) -> tuple[str | None, dict[str, str]]:
        """(why not ready — None: ready —, every degraded dependency with why):
        :func:`socialrec.serving.readiness.readiness_report`."""
        return readiness_report(self)

    def readiness(self) -> str | None:
        """None when ready, else why not (:meth:`readiness_report`)."""
        return readiness_report(self)[0]

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
