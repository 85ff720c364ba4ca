"""The migration command: ``python -m socialrec.stores.seen.scylla migrate [--dry-run]``
(settings from ``SOCIALREC_*`` variables)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from socialrec.settings import Settings
from socialrec.stores.seen.scylla.schema import (
    DEFAULT_BLOCKED_TABLE,
    DEFAULT_TABLE,
    build_cluster,
    migrate,
    settings_schema_statements,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m socialrec.stores.seen.scylla",
        description="ScyllaDB seen store administration (settings from SOCIALREC_* variables).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser(
        "migrate",
        help="create the keyspace, the seen and the blocked-creators tables if they do not exist",
    )
    mig.add_argument("--table", default=DEFAULT_TABLE)
    mig.add_argument("--blocked-table", default=DEFAULT_BLOCKED_TABLE)
    mig.add_argument(
        "--dry-run", action="store_true", help="print the CQL without connecting to the cluster"
    )
    args = parser.parse_args(argv)

    settings = Settings()
    statements = settings_schema_statements(settings, args.table, args.blocked_table)
    if args.dry_run:
        for statement in statements:
            print(statement + ";")
        return 0
    cluster = build_cluster(settings)
    try:
        session = cluster.connect()
        for statement in migrate(session, statements):
            print(statement + ";")
        if not session.wait_for_schema_agreement():
            print("warning: the cluster did not reach schema agreement in time", file=sys.stderr)
            return 1
    finally:
        cluster.shutdown()
    ks = settings.scylla_keyspace
    print(f"seen store schema ready: {ks}.{args.table}, {ks}.{args.blocked_table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
