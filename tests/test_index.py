"""PostIndex on a real Milvus Lite path in tmp_path."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from socialrec.index import PostIndex, category_filter

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
        from socialrec.index import PostIndex
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
