"""A seen store in a dict (offline evaluation, tests): the same contract as the SQLite one,
with the same per-user Bloom filters (updated by every write; ``state`` hands out a copy), so
the tests exercise the request's Bloom path on either store. ``bloom_fp_rate=0``: no filters,
``state`` is exact."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from socialrec.settings import NEGATIVE_EVENTS, Settings
from socialrec.stores.seen.base import (
    SeenState,
    check_event_type,
    check_event_types,
    check_id,
    check_ids,
    register,
)
from socialrec.stores.seen.bloom import BloomFilter, updated_filter
from socialrec.timeutil import seconds


class InMemorySeenStore:
    """user -> post -> event types, and user -> blocked creators."""

    def __init__(self, bloom_fp_rate: float = 0.01, bloom_capacity: int = 1024) -> None:
        if not 0.0 <= bloom_fp_rate < 0.5 or bloom_capacity < 1:
            raise ValueError(f"bad Bloom filter settings {bloom_fp_rate}, {bloom_capacity}")
        self.bloom_fp_rate, self.bloom_capacity = float(bloom_fp_rate), int(bloom_capacity)
        self._rows: dict[int, dict[int, set[str]]] = {}
        self._blocked: dict[int, set[int]] = {}  # user_id -> blocked creator ids
        self._blooms: dict[int, BloomFilter] = {}  # user_id -> filter of their seen posts

    def mark(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        event_type = check_event_type(event_type)
        user_id = int(user_id)
        posts = self._rows.setdefault(user_id, {})
        added = []
        for p in post_ids:
            posts.setdefault(int(p), set()).add(event_type)
            added.append(int(p))
        self._add_to_bloom(user_id, added)
        return len(added)

    def _add_to_bloom(self, user_id: int, post_ids: list[int]) -> None:
        if not post_ids or self.bloom_fp_rate <= 0:
            return
        self._blooms[user_id] = updated_filter(
            self._blooms.get(user_id),
            post_ids,
            lambda: list(self._rows.get(user_id, {})),
            self.bloom_fp_rate,
            self.bloom_capacity,
        )

    def mark_seen(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        return self.mark(user_id, post_ids, event_type, ts)

    def mark_events(self, events: Iterable[tuple[int, int, str, object]]) -> int:
        return sum(self.mark(u, [p], e) for u, p, e, _ in events)

    def bulk_load(self, frame: pd.DataFrame) -> int:
        check_event_types(frame)
        added: dict[int, list[int]] = {}
        for u, p, e in zip(frame["user_id"], frame["post_id"], frame["event_type"], strict=True):
            self._rows.setdefault(int(u), {}).setdefault(int(p), set()).add(str(e))
            added.setdefault(int(u), []).append(int(p))
        for u, posts in added.items():
            self._add_to_bloom(u, posts)
        return len(frame)

    def state(self, user_id: int) -> SeenState:
        user_id = check_id(user_id, "user_id")
        rows = self._rows.get(user_id, {})
        negative = set(NEGATIVE_EVENTS)
        bloom = self._blooms.get(user_id) if self.bloom_fp_rate > 0 else None
        return SeenState(
            frozenset(rows) if bloom is None else bloom.copy(),
            frozenset(p for p, types in rows.items() if types & negative),
            frozenset(self._blocked.get(user_id, ())),
        )

    def seen(self, user_id: int) -> set[int]:
        return set(self._rows.get(int(user_id), {}))

    def negatives(self, user_id: int) -> set[int]:
        return {
            p
            for p, types in self._rows.get(int(user_id), {}).items()
            if types & set(NEGATIVE_EVENTS)
        }

    def block(self, user_id: int, creator_ids: Iterable[int], ts=None) -> int:
        user_id = check_id(user_id, "user_id")
        creators = check_ids(creator_ids, "creator_id")
        seconds(ts)  # validated like the other stores, not kept
        if creators:
            self._blocked.setdefault(user_id, set()).update(creators)
        return len(creators)

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int:
        user_id = check_id(user_id, "user_id")
        creators = check_ids(creator_ids, "creator_id")
        blocked = self._blocked.get(user_id)
        if blocked is not None:
            blocked.difference_update(creators)
            if not blocked:
                del self._blocked[user_id]
        return len(creators)

    def blocked_creators(self, user_id: int) -> set[int]:
        return set(self._blocked.get(check_id(user_id, "user_id"), ()))

    def forget_user(self, user_id: int) -> int:
        user_id = check_id(user_id, "user_id")
        self._blooms.pop(user_id, None)
        self._blocked.pop(user_id, None)
        posts = self._rows.pop(user_id, {})
        return sum(len(types) for types in posts.values())

    def count(self) -> int:
        return sum(len(types) for posts in self._rows.values() for types in posts.values())

    def close(self) -> None:
        pass

    def __enter__(self) -> InMemorySeenStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@register("memory")
def open_memory(settings: Settings) -> InMemorySeenStore:
    return InMemorySeenStore(settings.seen_bloom_fp_rate, settings.seen_bloom_capacity)
