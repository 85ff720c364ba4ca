"""The ScyllaDB seen store's schema and connection: CQL names, consistency levels, the
migration's DDL and the driver's ``Cluster``.

Schema (created by the migration command ``python -m socialrec.stores.seen.scylla migrate``,
never by the service)::

    CREATE KEYSPACE IF NOT EXISTS <keyspace> WITH replication = {...};
    CREATE TABLE IF NOT EXISTS <keyspace>.seen (
        user_id bigint, post_id bigint, event_type text, ts timestamp,
        PRIMARY KEY (user_id, post_id, event_type)
    ) WITH default_time_to_live = <SOCIALREC_SCYLLA_SEEN_TTL_DAYS * 86400>;
    CREATE TABLE IF NOT EXISTS <keyspace>.blocked_creators (
        user_id bigint, creator_id bigint, ts timestamp,
        PRIMARY KEY (user_id, creator_id)
    ) WITH default_time_to_live = 0;

``PRIMARY KEY (user_id, post_id, event_type)`` is the same key as
``PRIMARY KEY ((user_id), post_id, event_type)``: partition key ``user_id``, clustering columns
``post_id, event_type`` (the short form is the one cqlsh's grammar, used by the contract test,
accepts). One partition per user, so a user's seen rows are one single-partition read and,
with token-aware routing, go to a replica of that partition. Likewise ``blocked_creators`` is
keyed ``((user_id), creator_id)``: one small partition per user, read whole. Running
``migrate`` again on a cluster migrated before blocks existed adds that table and leaves the
others as they are.

The only text put into CQL is the keyspace and table names (checked against
:data:`IDENTIFIER`) and, in the DDL (which cannot be prepared), the replication factor, TTL
(ints) and datacenter name (checked against :data:`DATACENTER`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from cassandra import ConsistencyLevel

from socialrec.settings import Settings
from socialrec.timeutil import DAY_SECONDS

log = logging.getLogger(__name__)

# unquoted CQL names: lower case (unquoted names are case-insensitive), at most 48 characters
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,47}")
DATACENTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_TTL_SECONDS = 630_720_000  # 20 years: the largest TTL Scylla and Cassandra accept
DEFAULT_TABLE = "seen"
DEFAULT_BLOCKED_TABLE = "blocked_creators"

_CL = ConsistencyLevel
_WRITE_ONLY = {_CL.ANY}
_READ_ONLY = {_CL.SERIAL, _CL.LOCAL_SERIAL}


def check_identifier(name: str, what: str = "identifier") -> str:
    """``name`` if it is a plain lower-case CQL name, else ValueError (nothing is quoted)."""
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid CQL {what} {name!r}: must match {IDENTIFIER.pattern} "
            "(lower case letters, digits, '_'; at most 48 characters)"
        )
    return name


def check_datacenter(name: str) -> str:
    if not isinstance(name, str) or not DATACENTER.fullmatch(name):
        raise ValueError(f"invalid datacenter name {name!r}: must match {DATACENTER.pattern}")
    return name


def consistency_level(name: str, *, write: bool) -> int:
    """The ``cassandra.ConsistencyLevel`` value of a name such as ``"LOCAL_QUORUM"``."""
    value = _CL.name_to_value.get(str(name).strip().upper())
    if value is None:
        raise ValueError(f"unknown consistency level {name!r}; one of {sorted(_CL.name_to_value)}")
    if value in (_READ_ONLY if write else _WRITE_ONLY):
        raise ValueError(
            f"consistency level {name!r} is not valid for {'writes' if write else 'reads'}"
        )
    return value


def _replicas(level: int, rf: int) -> int:
    quorum = rf // 2 + 1
    return {
        _CL.ANY: 0,
        _CL.ONE: 1,
        _CL.LOCAL_ONE: 1,
        _CL.TWO: 2,
        _CL.THREE: 3,
        _CL.QUORUM: quorum,
        _CL.LOCAL_QUORUM: quorum,
        _CL.EACH_QUORUM: quorum,
        _CL.SERIAL: quorum,
        _CL.LOCAL_SERIAL: quorum,
        _CL.ALL: rf,
    }.get(level, 1)


def reads_see_writes(read_level: int, write_level: int, replication_factor: int) -> bool:
    """True when every read overlaps every acknowledged write (R + W > RF, per datacenter)."""
    rf = int(replication_factor)
    return _replicas(read_level, rf) + _replicas(write_level, rf) > rf


def ttl_seconds_of(settings: Settings) -> int:
    return int(settings.scylla_seen_ttl_days) * DAY_SECONDS


def check_ttl(ttl_seconds: int) -> int:
    ttl = int(ttl_seconds)
    if not 0 <= ttl <= MAX_TTL_SECONDS:
        raise ValueError(f"TTL must be within 0..{MAX_TTL_SECONDS} seconds, got {ttl}")
    return ttl


def check_tables(table: str, blocked_table: str) -> tuple[str, str]:
    tb = check_identifier(table, "table")
    bt = check_identifier(blocked_table, "table")
    if tb == bt:
        raise ValueError(f"the seen and blocked-creators tables must differ, both are {tb!r}")
    return tb, bt


def schema_statements(
    keyspace: str,
    table: str = DEFAULT_TABLE,
    *,
    blocked_table: str = DEFAULT_BLOCKED_TABLE,
    replication_factor: int = 1,
    local_dc: str | None = None,
    ttl_seconds: int = 90 * DAY_SECONDS,
) -> list[str]:
    """The migration's DDL: CREATE KEYSPACE, then the seen and the blocked-creators tables, all
    IF NOT EXISTS. ``ttl_seconds`` is the seen table's; blocks never expire (TTL 0).

    With a datacenter the keyspace uses NetworkTopologyStrategy with ``replication_factor``
    replicas in it (add other datacenters with ALTER KEYSPACE); without one, SimpleStrategy
    (a single-datacenter or development cluster). An existing keyspace or table is left as it
    is: changing replication needs a repair, which is an operator's step.
    """
    ks = check_identifier(keyspace, "keyspace")
    tb, bt = check_tables(table, blocked_table)
    rf = int(replication_factor)
    if rf < 1:
        raise ValueError(f"replication factor must be >= 1, got {replication_factor!r}")
    ttl = check_ttl(ttl_seconds)
    if local_dc:
        replication = (
            f"{{'class': 'NetworkTopologyStrategy', '{check_datacenter(local_dc)}': {rf}}}"
        )
    else:
        replication = f"{{'class': 'SimpleStrategy', 'replication_factor': {rf}}}"
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"
        " AND durable_writes = true",
        f"CREATE TABLE IF NOT EXISTS {ks}.{tb} ("
        "user_id bigint, post_id bigint, event_type text, ts timestamp, "
        "PRIMARY KEY (user_id, post_id, event_type)"
        f") WITH default_time_to_live = {ttl}",
        # blocks last until unblocked: no TTL, whatever the seen table's is
        f"CREATE TABLE IF NOT EXISTS {ks}.{bt} ("
        "user_id bigint, creator_id bigint, ts timestamp, "
        "PRIMARY KEY (user_id, creator_id)"
        ") WITH default_time_to_live = 0",
    ]


def settings_schema_statements(
    settings: Settings, table: str = DEFAULT_TABLE, blocked_table: str = DEFAULT_BLOCKED_TABLE
) -> list[str]:
    return schema_statements(
        settings.scylla_keyspace,
        table,
        blocked_table=blocked_table,
        replication_factor=settings.scylla_replication_factor,
        local_dc=settings.scylla_local_dc,
        ttl_seconds=ttl_seconds_of(settings),
    )


def migrate(session: Any, statements: Sequence[str]) -> list[str]:
    """Run the DDL statements in order (the driver waits for schema agreement after each)."""
    for statement in statements:
        session.execute(statement)
    return list(statements)


def contact_points(settings: Settings) -> list[str]:
    hosts = [h.strip() for h in str(settings.scylla_hosts or "").split(",") if h.strip()]
    if not hosts:
        raise ValueError("SOCIALREC_SCYLLA_HOSTS is not set (comma separated contact points)")
    return hosts


def build_cluster(settings: Settings):
    """A driver ``Cluster`` (not connected): token-aware over DC-aware round robin.

    Reads default to the read consistency through the execution profile; each prepared
    statement sets its own level as well.
    """
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    local_dc = settings.scylla_local_dc
    if local_dc:
        check_datacenter(local_dc)
    else:
        log.warning(
            "SOCIALREC_SCYLLA_LOCAL_DC is not set: the driver takes the datacenter of the "
            "first contact point as local"
        )
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc or "")),
        consistency_level=consistency_level(settings.scylla_read_consistency, write=False),
    )
    auth = None
    if settings.scylla_username:
        password = settings.scylla_password.get_secret_value() if settings.scylla_password else ""
        auth = PlainTextAuthProvider(username=settings.scylla_username, password=password)
    return Cluster(
        contact_points=contact_points(settings),
        port=int(settings.scylla_port),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        auth_provider=auth,
    )
