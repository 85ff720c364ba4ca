"""Offline metrics: recall@K, NDCG@K, their random baselines, AUC/logloss, and the retrieval
evaluation of a two-tower model over held-out positives.

Pure numpy/pandas: usable by the training assets, the offline evaluation and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd


def recall_at_k(
    ranked: Mapping[int, Sequence[int]], relevant: Mapping[int, Iterable[int]], k: int
) -> float:
    """Mean over users with at least one relevant item of |top-k ∩ relevant| / |relevant|."""
    scores = []
    for user, rel in relevant.items():
        rel = set(rel)
        if not rel:
            continue
        top = list(ranked.get(user, ()))[:k]
        scores.append(len(rel.intersection(top)) / len(rel))
    return float(np.mean(scores)) if scores else 0.0


def ndcg_at_k(
    ranked: Mapping[int, Sequence[int]], relevant: Mapping[int, Iterable[int]], k: int
) -> float:
    """Mean binary-relevance NDCG@k over users with at least one relevant item."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    scores = []
    for user, rel in relevant.items():
        rel = set(rel)
        if not rel:
            continue
        top = list(ranked.get(user, ()))[:k]
        dcg = sum(discounts[i] for i, item in enumerate(top) if item in rel)
        idcg = discounts[: min(len(rel), k)].sum()
        scores.append(dcg / idcg)
    return float(np.mean(scores)) if scores else 0.0


def precision_at_k(
    ranked: Mapping[int, Sequence[int]], relevant: Mapping[int, Iterable[int]], k: int
) -> float:
    """Mean over users with at least one relevant item of |top-k ∩ relevant| / k."""
    scores = []
    for user, rel in relevant.items():
        rel = set(rel)
        if rel:
            top = list(ranked.get(user, ()))[:k]
            scores.append(len(rel.intersection(top)) / k)
    return float(np.mean(scores)) if scores else 0.0


def mrr(
    ranked: Mapping[int, Sequence[int]], relevant: Mapping[int, Iterable[int]], k: int | None = None
) -> float:
    """Mean reciprocal rank of the first relevant item (0 when none is in the top k)."""
    scores = []
    for user, rel in relevant.items():
        rel = set(rel)
        if not rel:
            continue
        top = list(ranked.get(user, ()))
        top = top[:k] if k else top
        scores.append(next((1.0 / (i + 1) for i, item in enumerate(top) if item in rel), 0.0))
    return float(np.mean(scores)) if scores else 0.0


def catalog_coverage(ranked: Mapping[int, Sequence[int]], n_items: int, k: int) -> float:
    """Share of the catalog that appears in at least one user's top k."""
    shown = {item for items in ranked.values() for item in list(items)[:k]}
    return len(shown) / n_items if n_items else 0.0


def popularity_bias(
    ranked: Mapping[int, Sequence[int]], popularity: Mapping[int, float], k: int, top: float = 0.01
) -> dict[str, float]:
    """How concentrated the recommendations are on popular items.

    ``top_share``: share of all top-k slots that go to the ``top`` (1%) most popular items of
    ``popularity`` (e.g. training positives per item); ``gini``: Gini coefficient of how often
    each catalog item is recommended (0 = every item equally, 1 = one item gets everything).
    """
    items = sorted(popularity, key=lambda i: (-popularity[i], i))
    n_top = max(1, int(round(len(items) * top)))
    head = set(items[:n_top])
    slots = [item for recs in ranked.values() for item in list(recs)[:k]]
    counts = pd.Series(slots).value_counts() if slots else pd.Series(dtype=float)
    per_item = np.sort(counts.reindex(items, fill_value=0).to_numpy(dtype=float)) if items else []
    gini = 0.0
    if len(per_item) and per_item.sum() > 0:
        n = len(per_item)
        cum = np.cumsum(per_item)
        gini = float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)
    return {
        "top_share": (sum(1 for s in slots if s in head) / len(slots)) if slots else 0.0,
        "gini": gini,
    }


def random_recall_at_k(k: int, n_items: int, relevant: int | Iterable[int] = 1) -> float:
    """Expected recall@k of a uniformly random ranking of ``n_items`` candidates.

    Each relevant item is in a random top-k with probability min(k, n)/n, so the expectation
    does not depend on how many items are relevant (0 when none is).
    """
    n_rel = relevant if isinstance(relevant, int) else len(set(relevant))
    if n_items <= 0 or n_rel <= 0:
        return 0.0
    return min(k, n_items) / n_items


def grouped_ndcg(
    groups: Sequence, relevance: Sequence[float], scores: Sequence[float], k: int = 10
) -> float:
    """Mean NDCG@k over groups (e.g. users) of graded relevance (negatives count as 0) ranked
    by ``scores``; groups with no positive relevance are left out."""
    df = pd.DataFrame(
        {
            "g": np.asarray(groups),
            "rel": np.clip(np.asarray(relevance, float), 0, None),
            "s": np.asarray(scores, float),
        }
    )
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    out = []
    for _, grp in df.groupby("g", sort=False):
        rel = grp["rel"].to_numpy()
        if rel.max() <= 0:
            continue
        order = np.argsort(-grp["s"].to_numpy(), kind="stable")[:k]
        ideal = np.sort(rel)[::-1][:k]
        gains = 2.0 ** rel[order] - 1
        dcg = float((gains * discounts[: len(order)]).sum())
        idcg = float(((2.0**ideal - 1) * discounts[: len(ideal)]).sum())
        out.append(dcg / idcg)
    return float(np.mean(out)) if out else float("nan")


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged)."""
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, dtype=np.float64)).rank(method="average").to_numpy()
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels: Sequence[int], probs: Sequence[float], eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class EmbeddingModel(Protocol):
    def user_embeddings(self, users_df: pd.DataFrame) -> np.ndarray: ...

    def post_embeddings(self, posts_df: pd.DataFrame) -> np.ndarray: ...


def _by_user(pairs: pd.DataFrame) -> dict[int, set[int]]:
    if pairs is None or pairs.empty:
        return {}
    grouped = pairs.groupby("user_id")["post_id"]
    return {int(u): set(map(int, p)) for u, p in grouped}


def evaluate_retrieval(
    model: EmbeddingModel,
    users_df: pd.DataFrame,
    posts_df: pd.DataFrame,
    train_pos: pd.DataFrame,
    heldout_pos: pd.DataFrame,
    ks: Sequence[int] = (10, 50, 100),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Recall@K (and NDCG@K) of exhaustive dot-product retrieval for held-out users.

    Every post of ``posts_df`` is a candidate, minus the user's training positives; the
    relevant set is the user's held-out positives that are candidates. Returns
    ``recall@K``, ``ndcg@K``, ``random_recall@K`` for every K, plus ``n_users``/``n_posts``.
    """
    users_df = users_df.drop_duplicates("user_id", keep="last").reset_index(drop=True)
    posts_df = posts_df.drop_duplicates("post_id", keep="last").reset_index(drop=True)
    post_ids = posts_df["post_id"].to_numpy(dtype=np.int64)
    post_row = pd.Index(post_ids)
    seen = _by_user(train_pos)
    relevant = {
        u: {p for p in rel if p not in seen.get(u, ())} for u, rel in _by_user(heldout_pos).items()
    }
    relevant = {u: rel & set(post_ids.tolist()) for u, rel in relevant.items()}
    user_index = pd.Index(users_df["user_id"])
    eval_users = [u for u, rel in relevant.items() if rel and u in user_index]
    out: dict[str, float] = {"n_users": float(len(eval_users)), "n_posts": float(len(post_ids))}
    max_k = min(max(ks), len(post_ids))
    ranked: dict[int, list[int]] = {}
    n_candidates: dict[int, int] = {}
    if eval_users:
        post_emb = model.post_embeddings(posts_df)
        rows = user_index.get_indexer(eval_users)
        for start in range(0, len(eval_users), batch_size):
            chunk = eval_users[start : start + batch_size]
            user_emb = model.user_embeddings(users_df.iloc[rows[start : start + batch_size]])
            scores = user_emb @ post_emb.T
            for i, u in enumerate(chunk):
                excl = post_row.get_indexer(list(seen.get(u, ())))
                excl = excl[excl >= 0]
                scores[i, excl] = -np.inf
                n_candidates[u] = len(post_ids) - len(excl)
            top = np.argpartition(-scores, max_k - 1, axis=1)[:, :max_k]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            for i, u in enumerate(chunk):
                ranked[u] = post_ids[top[i]].tolist()
    eval_rel = {u: relevant[u] for u in eval_users}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranked, eval_rel, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranked, eval_rel, k)
        out[f"random_recall@{k}"] = (
            float(
                np.mean([random_recall_at_k(k, n_candidates[u], eval_rel[u]) for u in eval_users])
            )
            if eval_users
            else 0.0
        )
    return out
