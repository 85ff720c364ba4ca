"""The seen store on ScyllaDB (production): :mod:`.schema` (names, consistency levels, the
migration's DDL, the driver's cluster), :mod:`.store` (``ScyllaSeenStore``) and the migration
command (``python -m socialrec.stores.seen.scylla migrate``, :mod:`.__main__`).

Importing this package registers the ``scylla`` backend without importing the driver; the
driver is loaded when a store is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from socialrec.settings import Settings
from socialrec.stores.seen.base import register

if TYPE_CHECKING:
    from socialrec.stores.seen.scylla.store import ScyllaSeenStore


@register("scylla")
def open_scylla(settings: Settings) -> ScyllaSeenStore:
    from socialrec.stores.seen.scylla.store import ScyllaSeenStore

    return ScyllaSeenStore.from_settings(settings)
