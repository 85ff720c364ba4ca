"""The service's own Prometheus metrics (:class:`ServiceMetrics`, one per process:
:func:`service_metrics`), the outcome an endpoint notes for the request metrics
(:func:`note_outcome`, read by ``socialrec.serving.asgi.RequestMetrics``) and the stage timer of
the endpoints (:class:`Stages`)."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from socialrec.serving.schemas import API_ROUTES

log = logging.getLogger("socialrec.service")

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
        self.internal_errors = prom.Counter(
            "socialrec_internal_errors",
            "Bugs by endpoint: answered 500 with an error id that is also in the logged "
            "traceback (never a fallback, never counted as a dependency outage)",
            ["endpoint"],
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
            "Latency of each stage of an endpoint (recommend: features, retrieval with filtering, "
            "ranking, reranking; search: embed, search, personalize; posts: embed, landing, features, "
            "index; events: seen, spool)",
            ["endpoint", "stage"],
            buckets=STAGE_BUCKETS,
            **kw,
        )
        self.post_cache = prom.Counter(
            "socialrec_post_feature_cache",
            "Post-feature lookups of the ranking stage by result (hit: served from the worker's "
            "cache; miss: read from the online store)",
            ["result"],
            **kw,
        )
        # gauges of one process, combined over BentoML's worker processes: the pending count
        # and age are the shared spool directory's, so the value set last (by the worker that
        # answers the scrape, refreshed just before) wins; failures add up, runs take the max
        self.spool_pending = prom.Gauge(
            "socialrec_spool_pending",
            "Accepted /events events on the local spool, not yet written to the landing bucket",
            multiprocess_mode="livemostrecent",
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
            multiprocess_mode="livemostrecent",
            **kw,
        )
        # experiments (docs/experiments.md): labels are the configured arms' names (events
        # with another name count as "other", without one as "none"): bounded cardinality
        self.variants = prom.Counter(
            "socialrec_recommend_variant",
            "/recommend answers by experiment arm (control, holdout, a configured variant)",
            ["variant"],
            **kw,
        )
        self.event_variants = prom.Counter(
            "socialrec_event_variant",
            "/events events accepted by the experiment arm the app sent back (other: not a "
            "configured arm; none: no variant)",
            ["variant"],
            **kw,
        )
        for dep in DEPENDENCIES[:3]:  # every series exists from the start (0 until it happens)
            self.fallback.labels("/recommend", dep)
        for route in API_ROUTES:
            self.errors.labels(route, "internal")
            self.internal_errors.labels(route)
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

    def observe_variant(self, variant: str) -> None:
        """Count one /recommend answer of an experiment arm."""
        self.variants.labels(variant).inc()

    def count_event_variants(self, counts: dict[str, int]) -> None:
        """Count accepted /events events per arm label
        (``socialrec.recommender.experiments.count_labels``)."""
        for label, n in counts.items():
            self.event_variants.labels(label).inc(n)

    def observe_post_cache(self, hits: int, misses: int) -> None:
        """Count one ranking stage's post-feature lookups (``CachedPostFeatures``)."""
        if hits:
            self.post_cache.labels("hit").inc(hits)
        if misses:
            self.post_cache.labels("miss").inc(misses)

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


class Stages:
    """Wall time per stage of one request: ``done(name)`` closes the stage begun at the
    previous ``done`` (or at creation)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._t
        self._t = now
