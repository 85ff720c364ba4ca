"""The recommender tests' world (tests/test_recommender*.py): a real Milvus Lite index and
Catalog over 80 posts in 4 categories, and small deterministic stand-ins for the two-tower, the
online features and the ranker."""

from __future__ import annotations

import numpy as np
import pandas as pd

from socialrec.features.ranking import parse_categories
from socialrec.stores.catalog import Catalog
from socialrec.stores.index import PostIndex

N_CATS = 4
N_POSTS = 80


def _dim_posts() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    ids = np.arange(1000, 1000 + N_POSTS)
    imp = rng.integers(0, 200, N_POSTS)
    return pd.DataFrame(
        {
            "post_id": ids,
            "creator_id": ids % 10,  # users 0..9 are the creators
            "category_id": ids % N_CATS,
            "media_type": "text",
            "description": "x",
            "created_at": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 14 * 24, N_POSTS), unit="h"),
            "n_impressions": imp,
            "n_positives": (imp * rng.uniform(0, 0.5, N_POSTS)).astype(int),
            "n_negatives": rng.integers(0, 3, N_POSTS),
        }
    )


def _post_vectors(dim_posts: pd.DataFrame) -> np.ndarray:
    rng = np.random.default_rng(3)
    v = np.eye(N_CATS, dtype=np.float32)[dim_posts["category_id"].to_numpy()]
    v = v + 0.3 * rng.normal(size=v.shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class StandInTwoTower:
    """User vector = normalised one-hot of the onboarding categories."""

    def user_embeddings(self, users_df: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(users_df), N_CATS), dtype=np.float32)
        for i, cats in enumerate(users_df["onboarding_categories"]):
            for c in parse_categories(cats):
                out[i, c] = 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


class StandInFeatures:
    """Online features from frames, the shape socialrec.features.store returns."""

    def __init__(self, users: pd.DataFrame, posts: pd.DataFrame):
        self._users = users.set_index("user_id")
        self._posts = posts.set_index("post_id")
        self.post_calls = 0

    def _lookup(self, frame: pd.DataFrame, ids, name: str) -> pd.DataFrame:
        ids = list(dict.fromkeys(int(i) for i in ids))
        out = frame.reindex(ids)
        out.index.name = name
        out["found"] = out.index.isin(frame.index)
        return out

    def users(self, ids):
        return self._lookup(self._users, ids, "user_id")

    def posts(self, ids):
        self.post_calls += 1
        return self._lookup(self._posts, ids, "post_id")


def positive_rate_builder(users, posts, pairs, now_ts) -> pd.DataFrame:
    """A ranking-features stand-in: one row per pair, in pair order."""
    rate = posts.set_index("post_id")["positive_rate"]
    return pd.DataFrame({"positive_rate": rate.loc[pairs["post_id"]].to_numpy()})


class RateRanker:
    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return df["positive_rate"].to_numpy(dtype=float)


def build_world(tmp_path_factory):
    """The world (the test modules make it a module-scoped fixture named ``world``)."""
    root = tmp_path_factory.mktemp("rec")
    dim_posts = _dim_posts()
    index = PostIndex(str(root / "milvus" / "posts.db"))
    created = (dim_posts["created_at"].astype("int64") // 10**9).to_numpy()
    coll = index.write_version(
        1,
        dim_posts["post_id"],
        dim_posts["category_id"],
        dim_posts["creator_id"],
        created,
        _post_vectors(dim_posts),
    )
    index.swap_alias("posts", coll)
    posts = dim_posts[["post_id", "creator_id", "category_id"]].copy()
    posts["positive_rate"] = (
        dim_posts["n_positives"] / dim_posts["n_impressions"].clip(lower=1)
    ).astype(np.float32)
    users = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "onboarding_categories": ["1", "2,3", ""],
            "profile_embedding": [np.zeros(4, np.float32)] * 3,
            # user_history's latest posts (the neighbours source starts from them)
            "recent_post_ids": [None, "1009,1005", None],
            "recent_positive_ids": [None, "1005", None],
        }
    )
    yield {
        "root": root,
        "index": index,
        "dim_posts": dim_posts,
        "catalog": Catalog.from_dim_posts(dim_posts),
        "features": StandInFeatures(users, posts),
    }
    index.close()


def item_ids(items: list[dict]) -> list[int]:
    return [i["post_id"] for i in items]


def non_increasing(items: list[dict]) -> bool:
    scores = [i["score"] for i in items]
    return scores == sorted(scores, reverse=True)
