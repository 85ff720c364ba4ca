"""A per-user Bloom filter in front of any seen store (framework-free: numpy only).

:class:`BloomFilteredSeenStore` wraps a ``SeenStore`` and is one itself (a drop-in for the
recommender). It keeps one :class:`BloomFilter` of seen post ids per user, for at most
``max_users`` users (least recently used first out):

* built from the store the first time a user is asked for (or after eviction, or after
  ``max_age_seconds``), and brought up to date with the store's answer on every ``seen``;
* updated on every ``mark`` / ``mark_events`` / ``bulk_load`` AFTER the store accepted it, so
  a mark is in the store and in the filter before the call returns (read-your-writes). Marks
  that land while a filter is being built are buffered and added before it is installed.

``might_have_seen(user_id, post_ids)`` answers from the filter alone: False means "not seen"
for certain with respect to every mark made through this object and everything the store held
when the filter was built or last refreshed by ``seen``; True may be a false positive (at about
``fp_rate``). Marks written by ANOTHER process (another service worker, the ``seen_history``
asset) reach the filter only on its next rebuild or ``seen`` call: bound that window with
``max_age_seconds`` or route a user's requests to one process. ``seen`` and ``negatives`` always
pass through to the store, so they stay exact.

Blocks (``block`` / ``unblock`` / ``blocked_creators``) pass straight through to the store: no
filter and no cache for them (a user's blocked set is small, read whole in one query, and an
unblock must take effect at once, which a Bloom filter -- no deletions -- could not give).

Memory: a filter for ``capacity`` posts at ``fp_rate`` takes ``-capacity * ln(fp_rate) / ln(2)^2``
bits (2,000 posts at 1%: 2.4 kB, so 100,000 users about 240 MB). A user past the capacity gets an
extra layer of twice the size at half the rate (a scalable Bloom filter): the rate stays below
``2 * fp_rate``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from socialrec.settings import Settings

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MIX2 = _U64(0x94D049BB133111EB)
_SALT = _U64(0x5851F42D4C957F2D)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array (wraps modulo 2**64, as intended)."""
    x = x + _GOLDEN
    x = (x ^ (x >> _U64(30))) * _MIX1
    x = (x ^ (x >> _U64(27))) * _MIX2
    return x ^ (x >> _U64(31))


def _ids(values: Iterable[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.int64)
    return arr.reshape(-1)


class _Layer:
    __slots__ = ("capacity", "fp_rate", "m", "k", "bits", "count")

    def __init__(self, capacity: int, fp_rate: float):
        self.capacity = int(capacity)
        self.fp_rate = float(fp_rate)
        self.m = max(8, math.ceil(-self.capacity * math.log(self.fp_rate) / math.log(2) ** 2))
        self.k = max(1, round(self.m / self.capacity * math.log(2)))
        self.bits = np.zeros((self.m + 7) // 8, dtype=np.uint8)
        self.count = 0

    def positions(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """(k, n) bit positions by double hashing: (h1 + i * h2) mod m."""
        m = _U64(self.m)
        a = h1 % m
        b = h2 % m
        i = np.arange(self.k, dtype=np.uint64)[:, None]
        return (a[None, :] + i * b[None, :]) % m

    def contains(self, pos: np.ndarray) -> np.ndarray:
        byte = self.bits[(pos >> _U64(3)).astype(np.intp)]
        bit = (byte >> (pos & _U64(7)).astype(np.uint8)) & np.uint8(1)
        return bit.astype(bool).all(axis=0)

    def add(self, pos: np.ndarray) -> None:
        flat = pos.reshape(-1)
        masks = np.left_shift(np.uint8(1), (flat & _U64(7)).astype(np.uint8))
        np.bitwise_or.at(self.bits, (flat >> _U64(3)).astype(np.intp), masks)
        self.count += pos.shape[1]


class BloomFilter:
    """A scalable Bloom filter of int64 ids: no false negatives, false positives at ~fp_rate.

    Double hashing over splitmix64 (Kirsch and Mitzenmacher); ``capacity`` ids per first layer,
    then layers of twice the capacity at half the rate. Not thread-safe on its own.
    """

    def __init__(self, capacity: int, fp_rate: float):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not 0.0 < fp_rate < 1.0:
            raise ValueError(f"fp_rate must be in (0, 1), got {fp_rate}")
        self.capacity = int(capacity)
        self.fp_rate = float(fp_rate)
        self._layers = [_Layer(self.capacity, self.fp_rate)]

    @staticmethod
    def _hashes(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h1 = _splitmix64(ids.view(np.uint64))
        h2 = _splitmix64(h1 ^ _SALT) | _U64(1)
        return h1, h2

    def contains(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """A bool array: True where the id may have been added (never False for an added id)."""
        arr = _ids(ids)
        out = np.zeros(arr.shape[0], dtype=bool)
        if not arr.size:
            return out
        h1, h2 = self._hashes(arr)
        for layer in self._layers:
            if layer.count:
                out |= layer.contains(layer.positions(h1, h2))
        return out

    def add(self, ids: Iterable[int] | np.ndarray) -> int:
        """Add ids; returns how many were not (probably) in the filter already."""
        arr = np.unique(_ids(ids))
        if not arr.size:
            return 0
        new = arr[~self.contains(arr)]
        added = int(new.size)
        while new.size:
            layer = self._layers[-1]
            room = layer.capacity - layer.count
            if room <= 0:
                layer = _Layer(layer.capacity * 2, layer.fp_rate / 2)
                self._layers.append(layer)
                room = layer.capacity
            take, new = new[:room], new[room:]
            h1, h2 = self._hashes(take)
            layer.add(layer.positions(h1, h2))
        return added

    def __contains__(self, post_id: int) -> bool:
        return bool(self.contains([post_id])[0])

    def __len__(self) -> int:
        """Ids added (distinct up to false positives at insertion)."""
        return sum(layer.count for layer in self._layers)

    @property
    def layers(self) -> int:
        return len(self._layers)

    @property
    def nbytes(self) -> int:
        return sum(layer.bits.nbytes for layer in self._layers)

    def expected_fp_rate(self) -> float:
        """The false-positive rate the layers' fill implies (1 - prod(1 - rate_i))."""
        keep = 1.0
        for layer in self._layers:
            if layer.count:
                rate = (1.0 - math.exp(-layer.k * layer.count / layer.m)) ** layer.k
                keep *= 1.0 - rate
        return 1.0 - keep


@dataclass
class _Entry:
    bloom: BloomFilter
    built_at: float


class BloomFilteredSeenStore:
    """A ``SeenStore`` that keeps a Bloom filter of each recent user's seen posts.

    ``store``: any SeenStore (writes go there first). ``capacity`` / ``fp_rate``: the filter of
    a user (sized up to twice the user's seen count when that is larger); ``max_users``: filters
    kept, least recently used evicted; ``max_age_seconds``: rebuild a filter older than this
    from the store (None: never), which bounds how long marks written by other processes go
    unnoticed by :meth:`might_have_seen`. Other attributes (``count``, ``path``...) are the
    store's.
    """

    def __init__(
        self,
        store,
        *,
        capacity: int = 2000,
        fp_rate: float = 0.01,
        max_users: int = 100_000,
        max_age_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        BloomFilter(capacity, fp_rate)  # validates both
        self.store = store
        self.capacity = int(capacity)
        self.fp_rate = float(fp_rate)
        self.max_users = int(max_users)
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._filters: OrderedDict[int, _Entry] = OrderedDict()
        # user -> buffers of post ids marked while a filter for that user is being built
        self._pending: dict[int, list[list[int]]] = {}
        self.hits = self.misses = self.builds = self.evictions = 0

    @classmethod
    def from_settings(cls, store, settings: Settings, **kwargs) -> BloomFilteredSeenStore:
        return cls(
            store,
            capacity=settings.seen_bloom_capacity,
            fp_rate=settings.seen_bloom_fp_rate,
            max_users=settings.seen_bloom_max_users,
            **kwargs,
        )

    def __getattr__(self, name: str):
        if name == "store":  # not set yet (during __init__ or unpickling)
            raise AttributeError(name)
        return getattr(self.store, name)

    # --- the filter cache -----------------------------------------------------------------------
    def _fresh(self, entry: _Entry | None) -> bool:
        if entry is None:
            return False
        return self.max_age_seconds is None or (
            self._clock() - entry.built_at < self.max_age_seconds
        )

    def _lookup(self, user_id: int) -> tuple[_Entry | None, list[int] | None]:
        """Under the lock: the fresh entry (LRU-touched), or a new pending buffer to build one."""
        entry = self._filters.get(user_id)
        if self._fresh(entry):
            self._filters.move_to_end(user_id)
            self.hits += 1
            return entry, None
        self.misses += 1
        buffer: list[int] = []
        self._pending.setdefault(user_id, []).append(buffer)
        return None, buffer

    def _drop_pending(self, user_id: int, buffer: list[int]) -> None:
        buffers = self._pending.get(user_id, [])
        for i, b in enumerate(buffers):
            if b is buffer:
                del buffers[i]
                break
        if not buffers:
            self._pending.pop(user_id, None)

    def _install(self, user_id: int, seen: set[int], buffer: list[int]) -> BloomFilter:
        bloom = BloomFilter(max(self.capacity, 2 * len(seen)), self.fp_rate)
        bloom.add(np.fromiter(seen, dtype=np.int64, count=len(seen)))
        with self._lock:
            self._drop_pending(user_id, buffer)
            bloom.add(buffer)  # marks made while the store was being read
            self._filters[user_id] = _Entry(bloom, self._clock())
            self._filters.move_to_end(user_id)
            self.builds += 1
            while len(self._filters) > self.max_users:
                self._filters.popitem(last=False)
                self.evictions += 1
        return bloom

    def _read(self, user_id: int) -> tuple[set[int], BloomFilter]:
        """``store.seen(user_id)`` and the user's filter, brought up to date with it."""
        with self._lock:
            entry, buffer = self._lookup(user_id)
        if buffer is not None:
            return self._build(user_id, buffer)
        seen = self.store.seen(user_id)
        with self._lock:
            entry.bloom.add(np.fromiter(seen, dtype=np.int64, count=len(seen)))
        return seen, entry.bloom

    def _build(self, user_id: int, buffer: list[int]) -> tuple[set[int], BloomFilter]:
        try:
            seen = self.store.seen(user_id)
        except BaseException:
            with self._lock:
                self._drop_pending(user_id, buffer)
            raise
        return seen, self._install(user_id, seen, buffer)

    def _note(self, marks: dict[int, list[int]]) -> None:
        """After the store accepted them: add marks to cached filters and pending builds."""
        with self._lock:
            for user_id, post_ids in marks.items():
                entry = self._filters.get(user_id)
                if entry is not None:
                    entry.bloom.add(post_ids)
                for buffer in self._pending.get(user_id, ()):
                    buffer.extend(post_ids)

    def filter_of(self, user_id: int) -> BloomFilter:
        """The user's filter, built from the store on a miss."""
        user_id = int(user_id)
        with self._lock:
            entry, buffer = self._lookup(user_id)
        if buffer is None:
            return entry.bloom
        return self._build(user_id, buffer)[1]

    def might_have_seen(self, user_id: int, post_ids: Iterable[int]) -> list[bool]:
        """For each post: False = certainly not seen, True = probably seen (see module doc)."""
        bloom = self.filter_of(user_id)
        ids = _ids(post_ids)
        with self._lock:
            return bloom.contains(ids).tolist()

    def invalidate(self, user_id: int | None = None) -> None:
        """Forget one user's filter (or all): the next use rebuilds it from the store."""
        with self._lock:
            if user_id is None:
                self._filters.clear()
            else:
                self._filters.pop(int(user_id), None)

    def cached_users(self) -> list[int]:
        """Users with a filter, least recently used first."""
        with self._lock:
            return list(self._filters)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "users": len(self._filters),
                "hits": self.hits,
                "misses": self.misses,
                "builds": self.builds,
                "evictions": self.evictions,
                "bytes": sum(e.bloom.nbytes for e in self._filters.values()),
            }

    # --- SeenStore ------------------------------------------------------------------------------
    def mark(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        post_ids = [int(p) for p in post_ids]
        n = self.store.mark(user_id, post_ids, event_type, ts)
        self._note({int(user_id): post_ids})
        return n

    def mark_seen(self, user_id: int, post_ids: Iterable[int], event_type: str, ts=None) -> int:
        return self.mark(user_id, post_ids, event_type, ts)

    def mark_events(self, events: Iterable[tuple[int, int, str, object]]) -> int:
        events = list(events)
        if hasattr(self.store, "mark_events"):
            n = self.store.mark_events(events)
        else:
            n = sum(self.store.mark(u, [p], e, ts) for u, p, e, ts in events)
        marks: dict[int, list[int]] = {}
        for u, p, _, _ in events:
            marks.setdefault(int(u), []).append(int(p))
        self._note(marks)
        return n

    def bulk_load(self, frame: pd.DataFrame) -> int:
        n = self.store.bulk_load(frame)
        if len(frame):
            with self._lock:
                users = set(self._filters) | set(self._pending)
            rows = frame[frame["user_id"].astype("int64").isin(users)]
            if len(rows):
                grouped = rows.groupby(rows["user_id"].astype("int64"))["post_id"]
                self._note({int(u): p.astype("int64").tolist() for u, p in grouped})
        return n

    def seen(self, user_id: int) -> set[int]:
        """The store's answer (exact); warms the user's filter with it on the way."""
        return self._read(int(user_id))[0]

    def negatives(self, user_id: int) -> set[int]:
        """The store's answer (exact)."""
        return self.store.negatives(int(user_id))

    # --- blocks: straight through to the store (explicit, not via __getattr__) ------------------
    def block(self, user_id: int, creator_ids: Iterable[int], ts=None) -> int:
        """The store's ``block`` (no filter: blocks are few and must be exact)."""
        return self.store.block(user_id, creator_ids, ts)

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int:
        """The store's ``unblock``."""
        return self.store.unblock(user_id, creator_ids)

    def blocked_creators(self, user_id: int) -> set[int]:
        """The store's answer (exact)."""
        return self.store.blocked_creators(user_id)

    def close(self) -> None:
        self.invalidate()
        self.store.close()

    def __enter__(self) -> BloomFilteredSeenStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
