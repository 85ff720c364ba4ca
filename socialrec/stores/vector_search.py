"""Vector search without Milvus: the category filter built from validated ints only, L2
normalisation, and ``InMemoryIndex`` (exact inner product, the ``PostIndex.search`` contract)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def validated_ints(values: Sequence[object], what: str = "category_ids") -> list[int]:
    """The values as python ints; ValueError for anything that is not an integer.

    Filter expressions are built only from the output of this function, so no user input can
    reach Milvus' expression parser as text.
    """
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise ValueError(f"{what} must be integers, got {v!r}")
        out.append(int(v))
    return out


def validated_categories(category_ids: Sequence[object] | None) -> list[int] | None:
    """A category restriction as sorted unique ints (None: no restriction); ValueError for a
    string or anything that is not an integer."""
    if category_ids is None:
        return None
    if isinstance(category_ids, str | bytes):
        raise ValueError(f"category_ids must be a list of integers, got {category_ids!r}")
    return sorted(set(validated_ints(list(category_ids))))


def category_filter(category_ids: Sequence[object] | None) -> str:
    """The Milvus filter expression for a category restriction ("" for none)."""
    ids = validated_categories(category_ids)
    if ids is None:
        return ""
    return f"category_id in [{', '.join(str(i) for i in ids)}]"


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero): inner product == cosine."""
    v = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


class InMemoryIndex:
    """Exact inner-product search over an embedding matrix, with the same ``search`` contract as
    :class:`PostIndex` (category restriction from validated ints only). The offline evaluation
    uses it so that its figures measure the models, not the ANN approximation."""

    def __init__(self, post_ids, category_ids, embeddings: np.ndarray):
        self.post_ids = np.asarray(post_ids, dtype=np.int64)
        self.category_ids = np.asarray(category_ids, dtype=np.int64)
        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        if not (len(self.post_ids) == len(self.category_ids) == len(self.embeddings)):
            raise ValueError("post_ids, category_ids and embeddings differ in length")

    def search(
        self,
        alias: str,
        vectors: np.ndarray,
        top_n: int,
        category_ids: Sequence[int] | None = None,
    ) -> list[list[tuple[int, float]]]:
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        mask = np.ones(len(self.post_ids), dtype=bool)
        cats = validated_categories(category_ids)
        if cats is not None:
            mask = np.isin(self.category_ids, cats)
        idx = np.flatnonzero(mask)
        top_n = min(int(top_n), len(idx))
        if top_n <= 0:
            return [[] for _ in range(len(queries))]
        scores = queries @ self.embeddings[idx].T
        out = []
        for row in scores:
            top = np.argpartition(-row, top_n - 1)[:top_n]
            top = top[np.lexsort((self.post_ids[idx[top]], -row[top]))]
            out.append([(int(self.post_ids[idx[i]]), float(row[i])) for i in top])
        return out
