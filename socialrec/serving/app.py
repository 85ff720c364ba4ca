"""The service's one composition root: from the settings and the loaded artifacts, open every
store, wrap each in ``Guarded`` once, build the 4-stage recommender and the endpoints.

* :func:`open_service` opens the real parts (Milvus, the seen store, the
  landing bucket, the event spool — started —, the Feast online store, MiniLM, the models) and
  returns a :class:`Service` whose ``close`` releases them (``bentos/service.py`` calls it
  from ``__init__`` and closes it on shutdown).
* :func:`compose` wires parts that are already open (the real ones, or fakes in unit tests)
  into :class:`~socialrec.serving.endpoints.Endpoints`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from socialrec.recommender import CachedPostFeatures, FeastFeatures
from socialrec.recommender import Recommender as FourStages
from socialrec.serving.endpoints import Endpoints
from socialrec.serving.errors import DependencyError, Guarded, guarded
from socialrec.serving.metrics import ServiceMetrics, service_metrics
from socialrec.serving.posts import LiveCatalog, OnlinePostWriter, PostPublisher
from socialrec.serving.spool import open_spool


@dataclass(frozen=True)
class Artifacts:
    """The model directories the service loads (BentoML model store entries in the bento) and
    the models' labels by tag (their MLflow runs; in ``/recommend``'s debug answer)."""

    two_tower: str | Path
    ranker: str | Path
    catalog: str | Path
    neighbours: str | Path | None = None
    labels: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Service:
    """The open service: its endpoints, its metrics and what :meth:`close` releases (the event
    spool after a final flush, the seen store, Milvus)."""

    endpoints: Endpoints
    metrics: ServiceMetrics
    resources: contextlib.ExitStack

    def close(self) -> None:
        self.resources.close()


_THREAD_LIMITS: list = []  # threadpoolctl's limits, kept in effect for the process's life


def limit_compute_threads(threads: int) -> None:
    """Run the numeric libraries of this process on ``threads`` threads per call: BLAS and
    OpenMP (threadpoolctl, also for libraries already loaded; the environment for those loaded
    later), TensorFlow's intra- and inter-op pools (before its runtime starts; a runtime that
    already runs keeps its pools), CatBoost (``Ranker.thread_count``, set by the caller).

    Measured at 100k posts, K=1000, in-process: a request took 173 ms with the libraries'
    default pools (one thread per core in every worker: they spin and oversubscribe the cores
    the other workers and Milvus need) and 79 ms with one thread each."""
    import os

    from threadpoolctl import threadpool_limits

    n = str(int(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, n)
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", n)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", n)
    _THREAD_LIMITS.append(threadpool_limits(limits=int(threads)))
    from socialrec.quiet import native_stderr_silenced

    with native_stderr_silenced():  # TF's C++ start-up lines (socialrec.quiet)
        import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    except RuntimeError:  # the runtime already started in this process (e.g. tests)
        pass


def open_index(settings) -> Guarded:
    """Milvus (``PostIndex``), opened on first use and reopened after an outage
    (:meth:`Guarded.reopening`): SOCIALREC_MILVUS_URI, else the running local server of the
    data dir (not started here: whoever starts a server stops it; several workers share it).
    No server running for the data dir is an outage too (the server may be started later)."""
    from socialrec.stores.index import PostIndex
    from socialrec.stores.milvus_server import MilvusServerError, milvus_uri

    def opener() -> PostIndex:
        try:
            uri = milvus_uri(settings)
        except MilvusServerError as exc:
            raise ConnectionRefusedError(str(exc)) from exc
        return PostIndex(uri, settings.milvus_token)

    return Guarded.reopening(opener, "milvus")


def open_seen_store(settings) -> Guarded:
    """The seen store (SQLite or ScyllaDB), opened on first use and reopened after an outage."""
    from socialrec.stores.seen import open_seen_store as opener

    return Guarded.reopening(lambda: opener(settings), "seen_store")


def open_features(settings) -> tuple[Guarded, Guarded]:
    """(online feature reads, online post writer) of the Feast store, each on a FeatureStore
    of its own opened on first use and reopened after an outage (a new store gets a new
    online-store connection: e.g. the SQLite file replaced while it was missing, or Redis)."""
    from socialrec.features.store import feature_store

    reads = Guarded.reopening(lambda: FeastFeatures(feature_store(settings)), "feature_store")
    writes = Guarded.reopening(lambda: OnlinePostWriter(feature_store(settings)), "feature_store")
    return reads, writes


def open_service(settings, artifacts: Artifacts, metrics: ServiceMetrics | None = None) -> Service:
    """Open every part from ``settings`` (``SOCIALREC_*``) and ``artifacts`` and compose the
    service; whatever was opened is closed again if a later part fails to load. The numeric
    libraries first get ``settings.service_threads`` threads (:func:`limit_compute_threads`).
    The remote stores (Milvus, the seen store, the Feast online store) are opened on first use
    and reopened after an outage (:func:`open_index`, :func:`open_seen_store`,
    :func:`open_features`): the service starts, and answers with fallbacks, while one is
    down, and uses it again once it is back."""
    limit_compute_threads(settings.service_threads)
    # heavy (TensorFlow, Feast, torch, pymilvus): imported when the service starts, not when
    # bentos/service.py is imported or built
    from socialrec.data.landing import open_bucket
    from socialrec.features.text import TextEncoder
    from socialrec.models.neighbours import NeighbourTable
    from socialrec.models.ranker import Ranker
    from socialrec.models.two_tower import TwoTowerModel
    from socialrec.stores.catalog import Catalog

    metrics = metrics or service_metrics()
    with contextlib.ExitStack() as opened:
        index = open_index(settings)
        opened.callback(index.close)
        seen_store = open_seen_store(settings)
        opened.callback(seen_store.close)
        bucket = open_bucket(str(settings.landing_uri))
        # /events: a durable local spool, flushed to the landing bucket in the background;
        # closing it stops the flusher after a final flush, the rest stays on disk
        spool = open_spool(settings, bucket).start()
        opened.callback(spool.close)
        text_encoder = TextEncoder()
        text_encoder.encode(["warm up"])  # load MiniLM now, not on the first /search
        features, post_writer = open_features(settings)
        opened.callback(features.close)
        opened.callback(post_writer.close)
        post_cache = None
        if settings.post_feature_cache_seconds > 0 and settings.post_feature_cache_size > 0:
            # post rows change at materialization or /posts (invalidated), not per request
            features = post_cache = CachedPostFeatures(
                features,
                settings.post_feature_cache_size,
                settings.post_feature_cache_seconds,
                observer=metrics.observe_post_cache,
            )
        endpoints = compose(
            settings,
            features=features,
            two_tower=TwoTowerModel.load(artifacts.two_tower),
            index=index,
            seen_store=seen_store,
            ranker=Ranker.load(artifacts.ranker, thread_count=settings.service_threads),
            catalog=Catalog.load(artifacts.catalog),
            neighbours=(
                None if artifacts.neighbours is None else NeighbourTable.load(artifacts.neighbours)
            ),
            text_encoder=text_encoder,
            bucket=bucket,
            metrics=metrics,
            models=artifacts.labels,
            spool=spool,
            post_writer=post_writer,
            post_cache=post_cache,
        )
        return Service(endpoints, metrics, opened.pop_all())


def compose(
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
    post_cache=None,
    neighbours=None,
) -> Endpoints:
    """The endpoints over open parts: each store wrapped in ``Guarded`` once (an outage
    becomes a ``DependencyError`` naming it), the recommender and the endpoints sharing the
    same guarded parts and one catalog view. ``features``: online features (``users``,
    ``posts``; e.g. ``FeastFeatures``); ``post_writer``: writes a published post's online
    features (None: not written); ``post_cache``: the ``CachedPostFeatures`` inside
    ``features`` (a published post is invalidated in it)."""
    index = guarded(index, "milvus")
    seen_store = guarded(seen_store, "seen_store")
    features = guarded(features, "feature_store")
    # a view per worker; posts another worker published are adopted from the index
    catalog = (
        None
        if catalog is None
        else LiveCatalog(catalog, index, settings.collection_alias, (DependencyError,))
    )
    recommender = FourStages(
        features=features,
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
    publisher = PostPublisher(
        settings=settings,
        text_encoder=text_encoder,
        two_tower=two_tower,
        bucket=Guarded(bucket, "landing"),
        features=features,
        index=index,
        catalog=catalog,
        metrics=metrics,
        post_writer=guarded(post_writer, "feature_store"),
        post_cache=post_cache,
    )
    endpoints = Endpoints(
        settings=settings,
        recommender=recommender,
        metrics=metrics,
        index=index,
        seen_store=seen_store,
        features=features,
        catalog=catalog,
        two_tower=two_tower,
        ranker=ranker,
        text_encoder=text_encoder,
        publisher=publisher,
        spool=None if spool is None else Guarded(spool, "spool"),
        models=models,
    )
    if spool is not None:
        metrics.add_refresher(endpoints.observe_spool)  # the spool gauges before each scrape
    return endpoints
