"""Replaying the past through the service's own recommender: one code path for the ranker's
training set, the quality gate and the offline evaluation.

A :class:`Snapshot` is everything the service would have known at an instant ``as_of``: the
catalog with its popularity and trending counts, the co-engagement neighbours, the users' and
posts' features (read point in time, e.g. from Feast) and a two-tower model fitted before that
instant, with its post vectors in an exact in-memory index (so the figures measure the models,
not the ANN approximation). :meth:`Snapshot.recommender` builds the real
:class:`socialrec.recommender.recommender.Recommender` over it; replayed requests
(:mod:`socialrec.evaluation.protocol`) are then asked at their own time, each with the posts
its user had seen by then (:class:`ReplaySeen`).

Posts created after ``as_of`` have no engagement yet; they get the online features a new post
gets from ``POST /posts`` (attributes and zero counts), so they can be retrieved and ranked
from their creation on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from socialrec.data.eventlog import EventLog
from socialrec.models.neighbours import NeighbourParams, NeighbourTable
from socialrec.recommender.recommender import Recommender
from socialrec.stores.catalog import Catalog, creator_id_array, live_posts
from socialrec.stores.seen import SeenState
from socialrec.timeutil import epoch_seconds, to_seconds, to_timestamp

FeatureReader = Callable[[str, Sequence[int], int], pd.DataFrame]
# the settings that turn the feed policies off (the "plain" ablation: the ranker's own order)
PLAIN_POLICIES = {
    "max_per_category": None,
    "max_per_creator": None,
    "diversity_decay": 1.0,
    "cold_start_fresh_share": 0.0,
    "new_post_boost_hours": 0.0,
    "softmax_temperature": 0.0,
    "promoted_post_ids": [],
}


class FrameFeatures:
    """Online features served from frames (one row per id), the shape the online readers
    return: indexed by id, with ``found``. Like the online store, an id is ``found`` only when
    it has feature values: a row of nulls (read before the entity existed) is unknown."""

    def __init__(self, users: pd.DataFrame, posts: pd.DataFrame):
        self._users = self._known(users.drop_duplicates("user_id", keep="last"), "user_id")
        self._posts = self._known(posts.drop_duplicates("post_id", keep="last"), "post_id")

    @staticmethod
    def _known(frame: pd.DataFrame, id_col: str) -> pd.DataFrame:
        frame = frame.set_index(id_col)
        scalars = [c for c in frame.columns if not c.endswith("_embedding")]
        return frame[frame[scalars].notna().any(axis=1)] if scalars else frame

    @staticmethod
    def _lookup(frame: pd.DataFrame, ids: Iterable[int], name: str) -> pd.DataFrame:
        ids = list(dict.fromkeys(int(i) for i in ids))
        out = frame.reindex(ids)
        out.index.name = name
        out["found"] = out.index.isin(frame.index)
        return out

    def users(self, user_ids: Sequence[int]) -> pd.DataFrame:
        return self._lookup(self._users, user_ids, "user_id")

    def posts(self, post_ids: Sequence[int]) -> pd.DataFrame:
        return self._lookup(self._posts, post_ids, "post_id")


class ReplaySeen:
    """A seen store for replays: the posts of the request being replayed (``current``); no
    blocks. Negatives are part of what the user had seen, so they need no set of their own."""

    def __init__(self) -> None:
        self.current: set[int] = set()

    def state(self, user_id: int) -> SeenState:
        return SeenState(frozenset(self.current))

    def seen(self, user_id: int) -> set[int]:
        return self.current

    def negatives(self, user_id: int) -> set[int]:
        return set()

    def blocked_creators(self, user_id: int) -> set[int]:
        return set()


class CachedUserVectors:
    """The user tower's vectors of known users computed once per snapshot (their features do
    not change within it); anything else (a new user's categories) goes to the model."""

    def __init__(self, model: Any, users: pd.DataFrame):
        self.model = model
        ids = users["user_id"].to_numpy(dtype=np.int64)
        vectors = model.user_embeddings(users.reset_index(drop=True)) if len(users) else []
        onboarding = (
            users["onboarding_categories"].tolist()
            if "onboarding_categories" in users.columns
            else [None] * len(users)
        )
        self._vectors = {int(u): (o, v) for u, o, v in zip(ids, onboarding, vectors, strict=True)}

    def user_embeddings(self, users_df: pd.DataFrame) -> np.ndarray:
        if len(users_df) == 1:
            hit = self._vectors.get(int(users_df["user_id"].iloc[0]))
            asked = (
                users_df["onboarding_categories"].iloc[0]
                if "onboarding_categories" in users_df.columns
                else None
            )
            # the stored row (not a request's own categories): its vector is known
            if hit is not None and (hit[0] == asked or (pd.isna(hit[0]) and pd.isna(asked))):
                return hit[1].reshape(1, -1)
        return self.model.user_embeddings(users_df)

    def post_embeddings(self, posts_df: pd.DataFrame, now=None) -> np.ndarray:
        return self.model.post_embeddings(posts_df, now=now)


def new_post_rows(posts: pd.DataFrame, known: pd.Index, as_of: int) -> pd.DataFrame:
    """post_features-shaped rows of the posts created after ``as_of`` (not in ``known``): the
    attributes and zero engagement counts, as ``POST /posts`` writes them online."""
    created = pd.to_datetime(posts["created_at"], utc=True)
    late = posts[(created > to_timestamp(as_of)) & ~posts["post_id"].isin(known)]
    if late.empty:
        return pd.DataFrame(columns=["post_id"])
    return pd.DataFrame(
        {
            "post_id": late["post_id"].to_numpy(dtype=np.int64),
            "creator_id": creator_id_array(late["creator_id"]),
            "category_id": late["category_id"].to_numpy(dtype=np.int64),
            "media_type": late["media_type"].astype(str).to_numpy(),
            "created_at_ts": epoch_seconds(late["created_at"]),
            "n_impressions": 0,
            "n_positives": 0,
            "positive_rate": 0.0,
        }
    )


@dataclass
class Snapshot:
    """What the service knew at ``as_of`` (epoch seconds)."""

    as_of: int
    catalog: Catalog
    neighbours: NeighbourTable | None
    features: FrameFeatures
    two_tower: Any = None
    index: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        as_of,
        log: EventLog,
        posts: pd.DataFrame,
        read_features: FeatureReader,
        settings,
        two_tower: Any = None,
        neighbour_params: NeighbourParams | None = None,
        users: Iterable[int] | None = None,
    ) -> Snapshot:
        """``posts``: dim_posts-shaped (live posts are kept); ``read_features(entity, ids,
        as_of)``: the entity's feature rows as of the instant (Feast point in time);
        ``users``: the users to read (default: every user of the log before ``as_of``)."""
        from socialrec.stores.vector_search import InMemoryIndex

        as_of = to_seconds(as_of)
        posts = live_posts(posts).drop_duplicates("post_id", keep="last").reset_index(drop=True)
        past = log.before(as_of)
        catalog = Catalog.from_log(posts, log, as_of, settings.trending_days)
        neighbours = (
            NeighbourTable.fit(past, neighbour_params or NeighbourParams())
            if "neighbours" in settings.candidate_sources and len(past)
            else None
        )
        user_ids = np.unique(np.asarray(list(users) if users is not None else past.user))
        user_rows = read_features("user", user_ids.tolist(), as_of)
        post_rows = read_features("post", posts["post_id"].tolist(), as_of)
        post_rows = post_rows.dropna(subset=["category_id"])
        late = new_post_rows(posts, pd.Index(post_rows["post_id"]), as_of)
        if len(late):
            post_rows = pd.concat([post_rows, late], ignore_index=True)
        features = FrameFeatures(user_rows, post_rows)
        index = None
        encoder = None
        if two_tower is not None and len(post_rows):
            known = user_rows.drop(columns=["user_id"]).notna().any(axis=1)
            encoder = CachedUserVectors(two_tower, user_rows[known.to_numpy()])
            # the post tower's age bucket at the snapshot's clock, as the index is built
            vectors = two_tower.post_embeddings(
                post_rows.reset_index(drop=True), now=to_timestamp(as_of)
            )
            index = InMemoryIndex(
                post_rows["post_id"].to_numpy(dtype=np.int64),
                post_rows["category_id"].to_numpy(dtype=np.int64),
                vectors,
            )
        info = {
            "as_of": str(to_timestamp(as_of)),
            "posts": len(catalog),
            "new_posts": len(late),
            "users": int(len(user_rows)),
            "neighbour_pairs": len(neighbours) if neighbours is not None else 0,
        }
        return cls(as_of, catalog, neighbours, features, encoder, index, info)

    def recommender(self, ranker, settings, **overrides: Any):
        """The service's recommender over this snapshot (``overrides``: settings fields, e.g.
        the feed policies off) and the seen store the replay drives."""
        if overrides:
            settings = settings.model_copy(update=overrides)
        seen = ReplaySeen()
        rec = Recommender(
            self.features, self.two_tower, self.index, seen, ranker, self.catalog, settings,
            neighbours=self.neighbours,
        )  # fmt: skip
        return rec, seen


@dataclass
class ReplayLists:
    """Per replayed request: the merged candidate order, the ranker's order and the feed."""

    candidates: list[list[int]]
    ranked: list[list[int]]
    final: list[list[int]]
    paths: list[str]


def replay(recommender, seen: ReplaySeen, requests, k: int = 100) -> ReplayLists:
    """Ask every request of ``requests`` (protocol.Requests) at its own time."""
    out = ReplayLists([], [], [], [])
    frame = requests.frame
    for i, (user, ts) in enumerate(frame[["user_id", "ts"]].itertuples(index=False)):
        seen.current = set(requests.seen[i].tolist())
        rec = recommender.recommend(int(user), k, now=to_timestamp(int(ts)))
        out.candidates.append(rec.candidates)
        out.ranked.append(rec.ranked or [it["post_id"] for it in rec.items])
        out.final.append([it["post_id"] for it in rec.items])
        out.paths.append(rec.path)
    return out


def replay_candidates(recommender, seen: ReplaySeen, requests) -> list[pd.DataFrame]:
    """Only stages 1 and 2 of every request (the merged, filtered candidates with each
    source's rank): what the sources alone and merged would give, in one pass."""
    out = []
    for i, (user, ts) in enumerate(requests.frame[["user_id", "ts"]].itertuples(index=False)):
        seen.current = set(requests.seen[i].tolist())
        ctx = recommender.context(int(user), to_timestamp(int(ts)))
        out.append(recommender.candidates(ctx)[0])
    return out


def source_lists(frames: Sequence[pd.DataFrame], source: str | None = None) -> list[list[int]]:
    """Per request: one source's own list (its candidates by its rank) or, without
    ``source``, the merged order."""
    out = []
    for frame in frames:
        if source is None:
            out.append(frame["post_id"].astype("int64").tolist())
            continue
        col = f"{source}_rank"
        if col not in frame.columns or frame.empty:
            out.append([])
            continue
        own = frame[frame[col].notna()].sort_values([col, "post_id"])
        out.append(own["post_id"].astype("int64").tolist())
    return out
