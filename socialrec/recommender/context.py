"""What the stages know about one request (:class:`Context`), read once: the seen store's
state, the user's online features, the user tower's vector."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from socialrec.recommender.parts import OnlineFeatures, UserEncoder
from socialrec.recommender.sources import preferred_categories
from socialrec.stores.seen import SeenState, SeenStore
from socialrec.stores.seen.base import PostSet
from socialrec.timeutil import timestamp, utc_now


@dataclass
class Context:
    """What the stages know about one request."""

    user_id: int
    now: pd.Timestamp
    user_df: pd.DataFrame  # one row: the user's features (or a new user's requested categories)
    found: bool  # the feature store knows the user
    new_user: bool  # unknown, but the request named categories
    categories: list[int]
    # seen posts (a set or the user's Bloom filter), negatives and blocked creators: one read
    # of the seen store
    state: SeenState
    vector: np.ndarray | None = None

    @property
    def personalized(self) -> bool:
        return self.found or self.new_user

    @property
    def seen(self) -> PostSet:
        return self.state.seen

    @property
    def negatives(self) -> frozenset[int]:
        return self.state.negatives

    @property
    def blocked(self) -> frozenset[int]:
        return self.state.blocked


def read_context(
    features: OnlineFeatures,
    seen_store: SeenStore,
    two_tower: UserEncoder | None,
    user_id: int,
    now: Any = None,
    categories: Sequence[int] | None = None,
) -> Context:
    """Read what the request needs: the seen store once (:meth:`SeenStore.state`), the user's
    features once, the user tower's vector once (a known user, or a new one with categories)."""
    user_id = int(user_id)
    now_ts = timestamp(utc_now() if now is None else now)
    state = seen_store.state(user_id)
    users = features.users([user_id])
    found = bool(len(users)) and bool(users["found"].iloc[0])
    requested = [int(c) for c in categories] if categories else []
    cats = requested or (preferred_categories(users.iloc[0]) if found else [])
    user_df = users.reset_index()
    if not found and requested:
        # a new user: embedded from the requested categories alone
        user_df = pd.DataFrame(
            {"user_id": [user_id], "onboarding_categories": [",".join(map(str, requested))]}
        )
        user_df["profile_embedding"] = [None]
    elif requested:
        user_df["onboarding_categories"] = ",".join(map(str, requested))
    ctx = Context(user_id, now_ts, user_df, found, not found and bool(requested), cats, state)
    if ctx.personalized and two_tower is not None:
        ctx.vector = two_tower.user_embeddings(user_df)[0]
    return ctx
