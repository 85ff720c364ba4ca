"""The seen store's interface: the ``SeenStore`` protocol, the ``SeenState`` a request reads, the
validation every backend shares, and the registry the backends add themselves to.

Filtering (stage 2) drops every post the user has any event for, and the write path marks
events here at once, so a user never gets a post again right after reacting to it
(read-your-writes). ``negatives`` are the posts the user disliked or reported.

Blocks: the same store keeps which creators each user blocked (a second, small table), so
filtering also drops the posts of blocked creators. The protocol's block methods:

* ``block(user_id, creator_ids, ts=None) -> int``: block each creator for the user. Idempotent:
  blocking an already blocked creator keeps one block (its ``ts`` becomes this call's). ``ts``
  (None: now; a number, datetime or ISO string, as for ``mark``) is recorded, not used for
  ordering: the latest ``block`` / ``unblock`` call wins.
* ``unblock(user_id, creator_ids) -> int``: remove those blocks (unblocking a creator that is
  not blocked is a no-op).
* ``blocked_creators(user_id) -> set[int]``: the creators the user currently blocks.

Both writes return the number of distinct creator ids in the call (whether or not each one
changed state: a ScyllaDB write cannot tell without a read). A block lasts until it is
unblocked: unlike seen rows, blocks never expire (no TTL on ScyllaDB). User and creator ids must
be integers within int64 (``int``, numpy integers; not bools, floats or strings), else
ValueError, and a call with any bad id writes nothing.

A request reads the store once: ``state(user_id)`` returns a :class:`SeenState` (seen posts,
negatives, blocked creators) for the retrieval and filtering stages. The SQLite and in-memory
stores keep a Bloom filter of each user's seen posts (:mod:`.bloom`), updated with the seen rows
by every write, so ``state`` reads that filter instead of every seen row; the stages use only
``in``, ``len`` and :func:`contains_many` on the seen and excluded sets, never list them.

Backends (``sqlite``, ``memory``, ``scylla``) live in their own modules and register an opener
with :func:`register`; this module never imports them. :func:`open_seen_store` picks one from
the settings: ScyllaDB when ``SOCIALREC_SCYLLA_HOSTS`` is set, else the embedded SQLite store.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from socialrec.settings import EVENT_TYPES, NEGATIVE_EVENTS, Settings


@runtime_checkable
class PostSet(Protocol):
    """What the stages need of a set of post ids: ``in`` and ``len`` (a ``frozenset`` is one;
    so is a :class:`socialrec.stores.seen.bloom.BloomFilter`, which adds a vectorised
    ``contains_many``). Vectorised membership of any of them: :func:`contains_many`."""

    def __contains__(self, post_id: object) -> bool: ...

    def __len__(self) -> int: ...


class ExcludedPosts:
    """The union of a Bloom-backed ``seen`` and the exact ``negatives`` (what
    :attr:`SeenState.excluded` is when ``seen`` is a Bloom filter), without listing either."""

    __slots__ = ("negatives", "seen")

    def __init__(self, seen: PostSet, negatives: frozenset[int]):
        self.seen, self.negatives = seen, negatives

    def __contains__(self, post_id: object) -> bool:
        return post_id in self.negatives or post_id in self.seen

    def __len__(self) -> int:
        # every negative is a seen post in the stores; count any that is not, once
        return len(self.seen) + sum(p not in self.seen for p in self.negatives)

    def contains_many(self, ids) -> np.ndarray:
        return contains_many(self.seen, ids) | contains_many(self.negatives, ids)


def contains_many(container: PostSet | Iterable[int], ids) -> np.ndarray:
    """A bool per id of ``ids`` (any iterable of ints, or an int array): is it in
    ``container``? Vectorised for Bloom-backed sets (their ``contains_many``), a membership test
    per id for frozensets and sets; any other iterable (a list, a generator) is read into a set
    first."""
    arr = ids if isinstance(ids, np.ndarray) else np.fromiter((int(i) for i in ids), np.int64)
    many = getattr(container, "contains_many", None)
    if many is not None:
        return np.asarray(many(arr), dtype=bool)
    members = as_post_set(container)
    if not members:
        return np.zeros(len(arr), dtype=bool)
    return np.fromiter((p in members for p in arr.tolist()), dtype=bool, count=len(arr))


def as_post_set(exclude: PostSet | Iterable[int]) -> PostSet:
    """``exclude`` itself when it answers ``in`` cheaply (a set, a Bloom-backed set), else its
    ids in a frozenset (a list, a tuple, a generator)."""
    if isinstance(exclude, set | frozenset) or hasattr(exclude, "contains_many"):
        return exclude  # type: ignore[return-value]
    return frozenset(int(p) for p in exclude)  # type: ignore[union-attr]


@dataclass(frozen=True)
class SeenState:
    """What one request needs of the seen store, read once: the posts the user has any event
    for, the ones they disliked or reported, and the creators they block.

    ``seen`` is an exact frozenset, or the user's Bloom filter
    (:class:`socialrec.stores.seen.bloom.BloomFilter`: ``in``, ``len``, ``contains_many``; it
    cannot list its posts) when the store keeps one for the user (SQLite and in-memory stores, ``SOCIALREC_SEEN_BLOOM_FP_RATE`` > 0): then about
    that share of the unseen posts counts as seen too, and is filtered out. ``negatives`` and
    ``blocked`` are always exact."""

    seen: PostSet = frozenset()
    negatives: frozenset[int] = frozenset()
    blocked: frozenset[int] = frozenset()

    @property
    def excluded(self) -> PostSet:
        """The posts the user must not get again (seen or negative): a frozenset when ``seen``
        is one, else an :class:`ExcludedPosts`."""
        if isinstance(self.seen, frozenset):
            return self.seen | self.negatives
        return ExcludedPosts(self.seen, self.negatives)

    @property
    def exact(self) -> bool:
        """Whether ``seen`` is an exact set (no Bloom filter)."""
        return isinstance(self.seen, frozenset)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, str]], blocked: Iterable[int] = ()) -> SeenState:
        """From a user's (post_id, event_type) rows and blocked creator ids."""
        seen: set[int] = set()
        negatives: set[int] = set()
        for post_id, event_type in rows:
            seen.add(int(post_id))
            if event_type in NEGATIVE_EVENTS:
                negatives.add(int(post_id))
        return cls(frozenset(seen), frozenset(negatives), frozenset(int(c) for c in blocked))


@runtime_checkable
class SeenStore(Protocol):
    def mark(
        self, user_id: int, post_ids: Iterable[int], event_type: str, ts: object = None
    ) -> int: ...

    def mark_seen(
        self, user_id: int, post_ids: Iterable[int], event_type: str, ts: object = None
    ) -> int: ...

    def mark_events(self, events: Iterable[tuple[int, int, str, object]]) -> int: ...

    def bulk_load(self, frame: pd.DataFrame) -> int: ...

    def state(self, user_id: int) -> SeenState: ...

    def seen(self, user_id: int) -> set[int]: ...

    def negatives(self, user_id: int) -> set[int]: ...

    def block(self, user_id: int, creator_ids: Iterable[int], ts: object = None) -> int: ...

    def unblock(self, user_id: int, creator_ids: Iterable[int]) -> int: ...

    def blocked_creators(self, user_id: int) -> set[int]: ...

    def forget_user(self, user_id: int) -> int:
        """Delete every seen row, Bloom filter and block of the user (a forgotten user);
        returns the seen rows deleted (ScyllaDB: 0, a partition delete cannot count)."""
        ...

    def count(self) -> int | None:
        """The seen rows held, or None when the backend cannot count cheaply (ScyllaDB: it
        would be a full scan)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> SeenStore: ...

    def __exit__(self, *exc: object) -> None: ...


# --- validation every backend shares ----------------------------------------------------------
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_id(value, what: str = "id") -> int:
    """``value`` as an int if it is an integer within int64 (SQLite INTEGER, CQL bigint).

    Accepts ints and numpy integers; anything else (bool, float, str, None...) is a ValueError.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if not INT64_MIN <= out <= INT64_MAX:
        raise ValueError(f"{what} {out} is out of the int64 range")
    return out


def check_ids(values: Iterable[int], what: str = "id") -> list[int]:
    """The distinct ids of ``values`` (first-seen order), all checked before any is used."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{what}s must be an iterable of integers, got {values!r}")
    return list(dict.fromkeys(check_id(v, what) for v in values))


def check_event_type(event_type: str) -> str:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event_type {event_type!r}")
    return event_type


def check_event_types(frame: pd.DataFrame) -> None:
    """A bulk load's event types, all known (else ValueError naming the unknown ones)."""
    bad = sorted(set(frame["event_type"]) - set(EVENT_TYPES))
    if bad:
        raise ValueError(f"unknown event types {bad}")


# --- the registry -------------------------------------------------------------------------------
Opener = Callable[[Settings], SeenStore]
_OPENERS: dict[str, Opener] = {}


def register(name: str) -> Callable[[Opener], Opener]:
    """A decorator: ``opener(settings) -> SeenStore`` becomes the backend ``name``."""

    def add(opener: Opener) -> Opener:
        _OPENERS[name] = opener
        return opener

    return add


def backends() -> list[str]:
    """The registered backends' names."""
    return sorted(_OPENERS)


def backend_of(settings: Settings) -> str:
    """The backend these settings ask for: ``scylla`` with ``SOCIALREC_SCYLLA_HOSTS``, else
    ``sqlite``."""
    return "scylla" if settings.scylla_hosts else "sqlite"


def open_seen_store(settings: Settings, backend: str | None = None) -> SeenStore:
    """The seen store of these settings (``backend``: a registered name, default
    :func:`backend_of`). ScyllaDB connects on first use; its schema comes from
    ``python -m socialrec.stores.seen.scylla migrate``."""
    name = backend or backend_of(settings)
    opener = _OPENERS.get(name)
    if opener is None:
        raise ValueError(f"unknown seen store backend {name!r}; one of {backends()}")
    return opener(settings)
