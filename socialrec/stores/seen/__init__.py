"""The seen store: which posts a user has already been shown or reacted to, and which creators
they block (the interface in :mod:`.base`).

Backends register themselves when imported (this package imports them all; the interface never
does): ``sqlite`` (:mod:`.sqlite`, the embedded default), ``memory`` (:mod:`.memory`, offline
evaluation and tests) and ``scylla`` (:mod:`.scylla`, production; the driver is imported only
when that store is opened). :func:`open_seen_store` is the one place that chooses.
"""

from socialrec.stores.seen import memory, scylla, sqlite  # noqa: F401  (they register)
from socialrec.stores.seen.base import (
    SeenState,
    SeenStore,
    backend_of,
    backends,
    open_seen_store,
    register,
)
from socialrec.stores.seen.memory import InMemorySeenStore
from socialrec.stores.seen.sqlite import SQLiteSeenStore

__all__ = [
    "InMemorySeenStore",
    "SQLiteSeenStore",
    "SeenState",
    "SeenStore",
    "backend_of",
    "backends",
    "open_seen_store",
    "register",
]
