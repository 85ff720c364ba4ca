"""The event spool's database (``socialrec.serving.spool``): one SQLite file in WAL mode with
``synchronous=FULL`` (a commit returns once it is fsynced), holding the pending events and the
batch counter. Not thread-safe: ``EventSpool`` serializes every call with its own lock."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from socialrec import timeutil

DB_NAME = "spool.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,  -- append order
    event_id TEXT NOT NULL,
    dt TEXT NOT NULL,  -- YYYY-MM-DD, the UTC date of ts: the landing partition
    payload TEXT NOT NULL,  -- the event as JSON, ts normalised
    batch INTEGER  -- NULL until a flush claims the row
);
CREATE INDEX IF NOT EXISTS events_batch ON events (batch) WHERE batch IS NOT NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SpoolDB:
    """The pending events of one spool directory (``spool.sqlite``) and its ``spool_id`` (a
    random id made when the directory is first used)."""

    def __init__(self, directory: Path):
        self._con = sqlite3.connect(
            directory / DB_NAME, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        self._con.executescript(_SCHEMA)
        with self._transaction() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO meta VALUES ('spool_id', ?), ('next_batch', '0')",
                [uuid.uuid4().hex[:16]],
            )
            row = cur.execute("SELECT value FROM meta WHERE key = 'spool_id'").fetchone()
        self.spool_id: str = row[0]

    def insert(self, records: Sequence[tuple[str, str, str]]) -> None:
        """Append ``(event_id, dt, payload)`` rows in one committed (fsynced) transaction."""
        with self._transaction() as cur:
            cur.executemany("INSERT INTO events (event_id, dt, payload) VALUES (?, ?, ?)", records)

    def claim(self, max_rows: int) -> tuple[int, list[tuple[str, str]]] | None:
        """The batch to write, ``(number, [(dt, payload)])`` by day then append order: one
        claimed earlier and not yet delivered (a retry: the same rows, so the same keys), else
        the oldest ``max_rows`` unclaimed rows stamped with the next batch number (the rows
        and the counter in one transaction); None when nothing is pending."""
        with self._transaction() as cur:
            number = cur.execute(
                "SELECT min(batch) FROM events WHERE batch IS NOT NULL"
            ).fetchone()[0]
            if number is None:
                number = int(
                    cur.execute("SELECT value FROM meta WHERE key = 'next_batch'").fetchone()[0]
                )
                claimed = cur.execute(
                    "UPDATE events SET batch = ? WHERE seq IN "
                    "(SELECT seq FROM events WHERE batch IS NULL ORDER BY seq LIMIT ?)",
                    [number, max_rows],
                ).rowcount
                if not claimed:
                    return None
                cur.execute("UPDATE meta SET value = ? WHERE key = 'next_batch'", [str(number + 1)])
            rows = cur.execute(
                "SELECT dt, payload FROM events WHERE batch = ? ORDER BY dt, seq", [number]
            ).fetchall()
        return number, rows

    def delete_batch(self, number: int) -> int:
        """Drop a delivered batch; how many rows it had."""
        with self._transaction() as cur:
            return cur.execute("DELETE FROM events WHERE batch = ?", [number]).rowcount

    def count(self) -> int:
        """Pending rows (claimed or not)."""
        return self._con.execute("SELECT count(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self._con.close()

    @contextlib.contextmanager
    def _transaction(self):
        cur = self._con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()


def event_record(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """(event_id, dt partition, JSON payload) of one event row; ``ts`` (an ISO-8601 string or
    a datetime, naive = UTC) written as ``timeutil.iso``. A row that is not a dict, has no
    ``event_id`` or an unparseable ``ts`` is a ValueError."""
    if not isinstance(row, Mapping):
        raise ValueError(f"an event is a dict, not {type(row).__name__}")
    event_id = row.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip():
        raise ValueError(f"bad event_id: {event_id!r}")
    ts = timeutil.utc(row.get("ts"))
    out = dict(row)
    out["ts"] = timeutil.iso(ts)
    payload = json.dumps(out, separators=(",", ":"), default=str)
    return event_id, ts.date().isoformat(), payload
