"""The local Milvus standalone server (``socialrec.stores.milvus_server``) and ``PostIndex`` on
it: the code path of a Milvus server or cluster URI (HNSW, STL_SORT on the category of a 2.3
server, flush + index build + load, alias swap at query time).

Every server a test starts is stopped by a finalizer (and gets SIGTERM if pytest dies:
``die_with_parent``); the finalizers check that no process of its group is left. Select with
``-m milvus_server``; about a minute in all (two server starts, three collections).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from assets.resources import MilvusResource, SettingsResource
from socialrec.stores.index import PostIndex
from socialrec.stores.milvus import scalar_index_type, server_version
from socialrec.stores.milvus_server import (
    LocalMilvusServer,
    _group_pids,
    ensure_running,
    read_state,
    running_uri,
    server_dir,
    stop_server,
)

DIM = 64


def _posts(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(1000, 1000 + n)
    return ids, ids % 10, ids % 97, 1_767_225_600 + ids, emb


def _stopped(server: LocalMilvusServer) -> None:
    pgid = server.pgid
    server.stop()
    if pgid is not None:
        assert _group_pids(pgid) == [], "a process of the Milvus server's group is left"


def test_scalar_index_follows_the_server_version():
    assert server_version("v2.3.5-lite") == (2, 3, 5)
    assert server_version("milvus_lite-3.2.2") is None
    assert scalar_index_type("v2.3.5-lite") == "STL_SORT"  # the local server rejects INVERTED
    assert scalar_index_type("v2.4.13") == "INVERTED"
    assert scalar_index_type("2.5.0-beta") == "INVERTED"
    assert scalar_index_type("milvus_lite-3.2.2") == "INVERTED"


@pytest.mark.milvus_server
def test_start_find_and_stop_leave_no_process(tmp_path):
    server = LocalMilvusServer(tmp_path, die_with_parent=True)
    try:
        uri = server.start()
        pgid = server.pgid
        assert uri.startswith("http://127.0.0.1:")
        assert server.start() == uri  # a no-op while it runs
        # a second process finds it through server.json (same data dir, same server)
        state = read_state(tmp_path)
        assert state is not None and state["pid"] == server.pid and state["uri"] == uri
        assert running_uri(tmp_path) == uri
        assert ensure_running(tmp_path) == uri
        assert (server_dir(tmp_path) / "data" / "etcd.data").is_dir()
    finally:
        _stopped(server)
    assert _group_pids(pgid) == []
    assert read_state(tmp_path) is None and running_uri(tmp_path) is None
    server.stop()  # idempotent
    assert stop_server(tmp_path) is False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LocalMilvusServer(tmp_path_factory.mktemp("milvus"), die_with_parent=True)
    try:
        srv.start()
        yield srv
    finally:
        _stopped(srv)


@pytest.fixture(scope="module")
def index(server):
    idx = PostIndex(server.uri, alias_check_seconds=0.0)
    yield idx
    idx.close()


@pytest.mark.milvus_server
def test_alias_swap_on_the_server(server, index):
    assert index.server_version.startswith("v2.3")
    ids, cats, creators, created, emb = _posts(2000)
    v1 = index.write_version("s1", ids, cats, creators, created, emb)
    assert index.swap_alias("posts", v1) is None
    idx_stl = index.client.describe_index(v1, "category_id")
    assert idx_stl["index_type"] == "STL_SORT"
    reader = PostIndex(server.uri)  # a second client, opened before the swap
    try:
        assert reader.search("posts", emb[:1], 1)[0][0][0] == ids[0]
        # version 2: the same posts with negated vectors; the best hit for emb[0] changes
        v2 = index.write_version("s2", ids, cats, creators, created, -emb)
        assert index.swap_alias("posts", v2) == v1
        expected = int(ids[np.argmax(-emb @ emb[0])])
        assert index.search("posts", emb[:1], 1)[0][0][0] == expected
        # the reader resolves the alias at query time: the new version's hits at once
        assert reader.search("posts", emb[:1], 1)[0][0][0] == expected
        assert index.list_versions() == [v1, v2]
        assert index.swap_alias("posts", v1) == v2  # rollback
        assert reader.search("posts", emb[:1], 1)[0][0][0] == ids[0]
    finally:
        reader.close()


@pytest.mark.milvus_server
def test_filtered_search_upsert_and_fetch_on_the_server(index):
    ids, cats, creators, created, emb = _posts(2000)
    index.swap_alias("posts", index.write_version("f1", ids, cats, creators, created, emb))
    cat_of = dict(zip(ids.tolist(), cats.tolist(), strict=True))
    hits = index.search("posts", emb[:3], 50, [2, 7])
    # HNSW under a filter (Knowhere 2.3) may come back a hit or two short of top_n
    assert all(45 <= len(row) <= 50 for row in hits)
    assert all(cat_of[p] in (2, 7) for row in hits for p, _ in row)
    assert index.search("posts", emb[:1], 10, []) == [[]]
    assert [h["post_id"] for h in index.similar("posts", int(ids[5]), 3)] != []
    assert int(ids[5]) not in [h["post_id"] for h in index.similar("posts", int(ids[5]), 3)]
    assert {r["post_id"] for r in index.fetch("posts", ids[:3].tolist())} == set(ids[:3].tolist())
    # a new post is retrievable shortly after the upsert returns (bounded consistency)
    query = np.full((1, DIM), 1 / np.sqrt(DIM), dtype=np.float32)
    index.upsert("posts", [999_999], [3], [1], [1_767_225_600], query)
    t0 = time.monotonic()
    while index.search("posts", query, 1)[0][0][0] != 999_999:
        assert time.monotonic() - t0 < 10, "the upserted post did not become searchable"
        time.sleep(0.05)
    print(f"\nupserted post searchable after {1000 * (time.monotonic() - t0):.0f} ms")


@pytest.mark.milvus_server
def test_search_at_20k_posts_is_fast(index):
    ids, cats, creators, created, emb = _posts(20_000, seed=1)
    t0 = time.perf_counter()
    index.swap_alias("posts", index.write_version("p20k", ids, cats, creators, created, emb))
    build_s = time.perf_counter() - t0
    queries = emb[:40]
    index.search("posts", queries[:1], 500)  # warm-up
    figures = {}
    for label, k, categories in (
        ("top-100", 100, None),
        ("top-500", 500, None),
        ("top-500, 3 categories", 500, [1, 4, 8]),
    ):
        times = []
        for q in queries:
            t = time.perf_counter()
            hits = index.search("posts", q, k, categories)
            times.append(time.perf_counter() - t)
            # a filtered HNSW search now and then returns k - 1 hits (seen on 2.3.5)
            assert (len(hits[0]) == k) if categories is None else (0.95 * k <= len(hits[0]) <= k)
        figures[label] = 1000 * float(np.median(times))
    print(
        f"\n20k x {DIM}-d on the local server: write+index+load {build_s:.1f}s; median search "
        + ", ".join(f"{label} {ms:.1f} ms" for label, ms in figures.items())
    )
    assert max(figures.values()) < 50


# --- the default: the local server of the data directory, whoever starts it stops it -----------
def test_milvus_uri_without_a_server_says_how_to_start_one(tmp_path):
    from socialrec.settings import Settings
    from socialrec.stores.milvus_server import MilvusServerError, milvus_uri

    settings = Settings(data_dir=tmp_path)
    assert settings.milvus_uri is None  # the local profile's default: the local server
    with pytest.raises(MilvusServerError, match="milvus_server start"):
        milvus_uri(settings)
    lite = Settings(data_dir=tmp_path, milvus_uri=str(tmp_path / "posts.db"))
    assert milvus_uri(lite) == str(tmp_path / "posts.db")  # a configured URI is used as is


@pytest.mark.milvus_server
def test_serving_milvus_stops_the_server_it_started_and_only_that_one(tmp_path):
    from socialrec.settings import Settings
    from socialrec.stores.milvus_server import milvus_uri, serving_milvus

    settings = Settings(data_dir=tmp_path)
    with serving_milvus(settings) as uri:
        state = read_state(tmp_path)
        assert state is not None and uri == state["uri"] and milvus_uri(settings) == uri
        with serving_milvus(settings) as again:  # a running server is reused, not stopped
            assert again == uri
        assert running_uri(tmp_path) == uri
    assert _group_pids(int(state["pgid"])) == []
    assert read_state(tmp_path) is None


@pytest.mark.milvus_server
def test_a_dagster_run_starts_and_stops_the_local_server(tmp_path):
    import dagster as dg

    seen: dict = {}

    @dg.asset
    def probe(milvus: MilvusResource) -> None:
        seen["uri"] = milvus.uri
        seen["state"] = read_state(tmp_path)
        with milvus.open_index() as index:  # the product's client on the run's server
            seen["version"] = index.server_version

    settings = SettingsResource(data_dir=str(tmp_path))
    result = dg.materialize([probe], resources={"milvus": MilvusResource(settings=settings)})
    assert result.success
    assert seen["uri"].startswith("http://127.0.0.1:") and seen["version"].startswith("v2.3")
    assert seen["state"] is not None and seen["state"]["uri"] == seen["uri"]
    assert read_state(tmp_path) is None  # stopped when the run ended
    assert _group_pids(int(seen["state"]["pgid"])) == []
