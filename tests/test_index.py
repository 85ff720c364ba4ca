"""PostIndex on a real Milvus Lite path in tmp_path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from socialrec.stores.index import TEXT_COLLECTION_PREFIX, PostIndex, category_filter

DIM = 8


def _posts(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.arange(100, 100 + n)
    return ids, ids % 4, ids % 7, 1_767_225_600 + ids, emb


@pytest.fixture
def index(tmp_path):
    idx = PostIndex(str(tmp_path / "milvus" / "posts.db"))
    yield idx
    idx.close()


def test_write_swap_search_filter(index):
    ids, cats, creators, created, emb = _posts()
    v1 = index.write_version(1, ids, cats, creators, created, emb)
    assert v1 == "posts_1"
    assert index.swap_alias("posts", v1) is None
    hits = index.search("posts", emb[:2], 5, None)
    assert len(hits) == 2 and len(hits[0]) == 5
    assert hits[0][0][0] == ids[0] and hits[0][0][1] == pytest.approx(1.0, abs=1e-4)
    scores = [s for _, s in hits[1]]
    assert scores == sorted(scores, reverse=True)

    cat_of = dict(zip(ids.tolist(), cats.tolist(), strict=True))
    filtered = index.search("posts", emb[:3], 10, [1, 3])
    assert all(cat_of[p] in (1, 3) for row in filtered for p, _ in row)
    assert all(len(row) == 10 for row in filtered)
    assert index.search("posts", emb[:1], 10, []) == [[]]

    # a new version behind the alias; the previous one stays for rollback, older ones go
    v2 = index.write_version(2, ids[:10], cats[:10], creators[:10], created[:10], emb[:10])
    assert index.swap_alias("posts", v2) == v1
    assert index.alias_target("posts") == v2
    assert {p for p, _ in index.search("posts", emb[:1], 50, None)[0]} <= set(ids[:10].tolist())
    v3 = index.write_version(3, ids, cats, creators, created, emb)
    assert index.swap_alias("posts", v3) == v2
    assert index.list_versions() == ["posts_2", "posts_3"]
    assert index.swap_alias("posts", v2) == v3  # rollback
    assert index.alias_target("posts") == "posts_2"


@pytest.mark.parametrize(
    "bad",
    [["1] or post_id > 0 or category_id in [1"], [1.5], [True], "1,2", [None]],
)
def test_filter_rejects_anything_but_ints(index, bad):
    with pytest.raises(ValueError):
        index.search("posts", np.zeros((1, DIM), np.float32), 5, bad)


def test_category_filter_expression():
    assert category_filter(None) == ""
    assert category_filter([3, np.int64(1), 3]) == "category_id in [1, 3]"


def test_version_names_are_validated(index):
    with pytest.raises(ValueError):
        index.collection_name("1; drop")


def test_close_releases_lite_path_for_another_process(tmp_path):
    path = str(tmp_path / "milvus" / "posts.db")
    ids, cats, creators, created, emb = _posts(20)
    idx = PostIndex(path)
    idx.swap_alias("posts", idx.write_version("7", ids, cats, creators, created, emb))
    idx.close()
    script = textwrap.dedent(
        f"""
        import numpy as np
        from socialrec.stores.index import PostIndex
        idx = PostIndex({path!r})
        hits = idx.search("posts", np.asarray({emb[3].tolist()!r}, dtype=np.float32), 3, [int({cats[3]})])
        print(hits[0][0][0])
        idx.close()
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(ids[3])
    # and this process can open it again afterwards
    again = PostIndex(path)
    try:
        assert again.search("posts", emb[3:4], 1, None)[0][0][0] == ids[3]
    finally:
        again.close()


def _ids(hits):
    return [p for p, _ in hits]


def test_a_reader_follows_the_alias_without_restart_and_a_swap_back_rolls_back(tmp_path):
    path = str(tmp_path / "milvus" / "posts.db")
    ids, cats, creators, created, emb = _posts(40, seed=1)
    old_ids, new_ids = ids, ids + 10_000  # two versions with disjoint ids, same vectors
    writer = PostIndex(path)
    v1 = writer.write_version("v1", old_ids, cats, creators, created, emb)
    writer.swap_alias("posts", v1)
    # the long-running reader (the service) is opened before the swap
    reader = PostIndex(path, alias_check_seconds=0.2)
    try:
        assert _ids(reader.search("posts", emb[:1], 3)[0])[0] == old_ids[0]
        assert reader.follow("posts") == v1

        v2 = writer.write_version("v2", new_ids, cats, creators, created, emb)
        t0 = time.perf_counter()
        assert writer.swap_alias("posts", v2) == v1
        writer.close()  # the reader keeps the process' Lite server alive
        # the very next search of the reader already resolves the alias to v2
        first = reader.search("posts", emb[:1], 3)[0]
        seen_after = time.perf_counter() - t0
        assert _ids(first)[0] == new_ids[0], first
        assert set(_ids(reader.search("posts", emb[:5], 10)[0])) <= set(new_ids.tolist())
        assert seen_after < 1.0
        time.sleep(0.25)
        assert reader.follow("posts") == v2  # its own view of the target caught up too

        # rollback: swap the alias back (from another client); the old version answers again
        with PostIndex(path) as admin:
            assert admin.list_versions() == ["posts_v1", "posts_v2"]
            assert admin.swap_alias("posts", v1) == v2
        assert _ids(reader.search("posts", emb[:1], 3)[0])[0] == old_ids[0]
        assert reader.similar("posts", int(old_ids[0]), 3)[0]["post_id"] in set(old_ids.tolist())
        assert reader.similar("posts", int(new_ids[0]), 3) is None  # not in the live version
    finally:
        reader.close()


def test_alias_checks_are_throttled_but_queries_resolve_the_alias(tmp_path):
    path = str(tmp_path / "milvus" / "posts.db")
    ids, cats, creators, created, emb = _posts(20, seed=2)
    with PostIndex(path) as writer, PostIndex(path, alias_check_seconds=3600) as reader:
        writer.swap_alias("posts", writer.write_version(1, ids, cats, creators, created, emb))
        assert reader.follow("posts") == "posts_1"
        writer.swap_alias("posts", writer.write_version(2, ids + 500, cats, creators, created, emb))
        assert reader.follow("posts") == "posts_1"  # checked at most every alias_check_seconds
        assert reader.follow("posts", force=True) == "posts_2"
        assert _ids(reader.search("posts", emb[:1], 1)[0]) == [ids[0] + 500]


def test_text_collections_are_a_second_kind_with_their_own_versions(tmp_path):
    ids, cats, creators, created, emb = _posts(30, seed=3)
    text = np.random.default_rng(4).normal(size=(30, 16)).astype(np.float32) * 3  # unnormalised
    with PostIndex(str(tmp_path / "milvus" / "posts.db")) as index:
        index.swap_alias("posts", index.write_version("a", ids, cats, creators, created, emb))
        for version in ("a", "b", "c"):
            name = index.write_text_version(version, ids, cats, creators, created, text)
            assert name == f"{TEXT_COLLECTION_PREFIX}{version}"
            index.swap_alias("post_texts", name)
        # at most two of a kind stay; the post collections are not touched by text swaps
        assert index.list_versions(TEXT_COLLECTION_PREFIX) == ["post_texts_b", "post_texts_c"]
        assert index.list_versions() == ["posts_a"]
        hits = index.search_hits("post_texts", normalized_like(text[3]), 3)
        assert hits[0]["post_id"] == ids[3]
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)  # cosine: stored normalised
        assert {"category_id", "creator_id", "created_at"} <= set(hits[0])
        assert hits[0]["creator_id"] == creators[3]


def test_upsert_post_into_both_collections_is_found_at_once(tmp_path):
    ids, cats, creators, created, emb = _posts(30, seed=5)
    text = emb[:, ::-1].copy()
    with PostIndex(str(tmp_path / "milvus" / "posts.db")) as index:
        index.swap_alias("posts", index.write_version(1, ids, cats, creators, created, emb))
        index.swap_alias(
            "post_texts", index.write_text_version(1, ids, cats, creators, created, text)
        )
        new_vec = normalized_like(emb[7] + 0.01)
        written = index.upsert_post(
            9_999, 2, 77, 1_767_300_000, new_vec, text[7] * 2, "posts", "post_texts"
        )
        assert written == {"posts": "posts_1", "post_texts": "post_texts_1"}
        # the new post's neighbours: the post it was made close to, never itself
        similar = index.similar("posts", 9_999, 5)
        assert len(similar) == 5 and similar[0]["post_id"] == ids[7]
        assert 9_999 not in {h["post_id"] for h in similar}
        scores = [h["score"] for h in similar]
        assert scores == sorted(scores, reverse=True)
        # and it is a neighbour of that post, and a text hit
        assert 9_999 in {h["post_id"] for h in index.similar("posts", int(ids[7]), 2)}
        assert 9_999 in {h["post_id"] for h in index.search_hits("post_texts", text[7], 2)}
        assert index.fetch("posts", [9_999])[0]["creator_id"] == 77
        assert index.similar("posts", 123_456, 5) is None
        assert index.ping("posts") == "posts_1" and index.ping("post_texts") == "post_texts_1"


def normalized_like(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)
