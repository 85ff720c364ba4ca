"""Several service workers: each holds its own catalog view, and a post published through one
worker (it is in the shared index and the shared online store at once) is recommended by the
others, while a post deleted since the index was built stays out."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pymilvus.client.types import Status
from pymilvus.exceptions import MilvusException

from socialrec.serving.errors import DependencyError, Guarded
from socialrec.serving.posts import LiveCatalog
from socialrec.stores.catalog import Catalog
from tests.service.conftest import (
    TWO_TOWER_ONLY,
    AnsweringIndex,
    FakeFeatures,
    ScoringRanker,
    known_posts,
    make_catalog,
    make_endpoints,
    make_settings,
)

PUBLISHED = 31  # published through another worker: in the index, not in this worker's catalog


class SharedIndex(AnsweringIndex):
    """The index every worker reads: the catalog's posts plus ``extra`` ({post_id: metadata});
    ``fetches`` records the ids each ``fetch`` asked for."""

    def __init__(self, extra: dict[int, dict]):
        super().__init__()
        self.extra = extra
        self.fetches: list[list[int]] = []

    def search(self, alias, vectors, top_n, category_ids=None):
        hits = [(p, 2.0) for p in self.extra]  # the newest posts first
        rest = super().search(alias, vectors, top_n, category_ids)[0]
        return [(hits + rest)[:top_n] for _ in range(len(np.atleast_2d(vectors)))]

    def fetch(self, alias, post_ids):
        self.fetches.append(list(post_ids))
        return [{"post_id": p, **self.extra[p]} for p in post_ids if p in self.extra]


def meta(category: int, creator: int) -> dict:
    return {"category_id": category, "creator_id": creator, "created_at": 1_767_300_000}


def test_a_catalog_keeps_the_ids_of_deleted_posts(tmp_path):
    dim_posts = pd.DataFrame(
        {
            "post_id": [1, 2, 3],
            "category_id": [1, 1, 2],
            "creator_id": [7, 8, 9],
            "created_at": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-03"], utc=True),
            "is_deleted": [False, True, False],
        }
    )
    catalog = Catalog.from_dim_posts(dim_posts)
    assert sorted(catalog.posts.index) == [1, 3] and catalog.deleted == {2}
    loaded = Catalog.load(catalog.save(tmp_path / "catalog"))
    assert loaded.deleted == {2} and sorted(loaded.posts.index) == [1, 3]
    revived = catalog.with_post(2, 1, 8, 1_767_300_000)  # published again
    assert 2 in revived.posts.index and revived.deleted == frozenset()
    (tmp_path / "catalog" / "deleted.parquet").unlink()  # a catalog saved before tombstones
    assert Catalog.load(tmp_path / "catalog").deleted == frozenset()


def test_a_catalog_view_adopts_what_the_index_has_once():
    index = SharedIndex({PUBLISHED: meta(1, 3), 40: meta(2, 4)})
    base = make_catalog()
    base.deleted = frozenset({40})  # deleted after the index was built
    view = LiveCatalog(base, index, "posts")
    assert view.adopt([1, 2, PUBLISHED, 40, 99]) == 1
    assert index.fetches == [[PUBLISHED, 99]]  # known and tombstoned ids are not asked for
    assert view.metadata([PUBLISHED])["creator_id"].tolist() == [3]
    assert view.adopt([PUBLISHED, 99]) == 0 and len(index.fetches) == 1  # 99: remembered
    view.add(99, 1, 2, 1_767_300_000)  # published through this worker after all
    assert 99 in view.posts.index


def test_an_index_outage_adopts_nothing():
    class DownIndex(SharedIndex):
        def fetch(self, alias, post_ids):
            raise MilvusException(
                code=Status.CONNECT_FAILED,  # what pymilvus 3 raises (tests/service/test_outages.py)
                message="Fail connecting to server on 127.0.0.1:19530, illegal connection params "
                "or server unavailable",
            )

    down = Guarded(DownIndex({PUBLISHED: meta(1, 3)}), "milvus")
    view = LiveCatalog(make_catalog(), down, "posts", (DependencyError,))
    assert view.adopt([PUBLISHED]) == 0 and PUBLISHED not in view.posts.index


def test_a_post_published_through_another_worker_is_recommended_here(metrics, seen_store):
    posts = {**known_posts(), PUBLISHED: {"category_id": 1, "creator_id": 3}}
    index = SharedIndex({PUBLISHED: meta(1, 3)})
    settings = make_settings(**TWO_TOWER_ONLY)
    worker = make_endpoints(
        metrics,
        seen_store,
        index=index,
        settings=settings,
        features=FakeFeatures({2}, posts=posts),
        ranker=ScoringRanker(),
    )
    out = worker.recommend(2, 10)
    assert PUBLISHED in [item.post_id for item in out.items]
    # a view that does not adopt (no index given) drops it as unknown: the case being fixed
    view = LiveCatalog(make_catalog())
    assert view.adopt([PUBLISHED]) == 0 and PUBLISHED not in view.posts.index


def test_a_worker_runs_its_numeric_libraries_on_the_configured_threads():
    import json
    import subprocess
    import sys

    code = (
        "import json, threadpoolctl\n"
        "from socialrec.serving.app import limit_compute_threads\n"
        "limit_compute_threads(1)\n"
        "import numpy, tensorflow as tf\n"
        "print(json.dumps([tf.config.threading.get_intra_op_parallelism_threads(),\n"
        "    tf.config.threading.get_inter_op_parallelism_threads(),\n"
        "    sorted({i['num_threads'] for i in threadpoolctl.threadpool_info()})]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    intra, inter, pools = json.loads(out.stdout.strip().splitlines()[-1])
    assert (intra, inter) == (1, 1)
    assert pools == [1]  # every BLAS / OpenMP pool loaded in the process
