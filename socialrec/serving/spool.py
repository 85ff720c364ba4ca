"""The durable write path of ``POST /events``: a local spool flushed to the landing bucket.

Events accepted by the service are first appended to a LOCAL spool (SQLite in WAL mode with
``synchronous=FULL``: ``append`` returns only once its rows are fsynced) and then written to the
landing bucket in batches, when ``flush_events`` are pending or the oldest pending event is
``flush_seconds`` old. If the bucket is down the spool keeps everything and retries every
``retry_seconds``; ``close()`` makes a final attempt, and whatever is still pending stays on
disk and is flushed by the next ``EventSpool`` opened on the same directory. Nothing accepted
is ever lost.

How a batch lands, and why a retry is harmless:

1. ``flush`` CLAIMS the oldest unclaimed rows for the next batch number (one transaction that
   stamps the rows and bumps the counter, both persisted in the spool);
2. it writes one file per event day: ``events/dt=<UTC date of ts>/spool-<spool_id>-<batch>.jsonl.gz``
   (the landing layout of docs/contracts.md, bytes from ``socialrec.data.landing.encode_jsonl``, so
   the same batch always gives the same key AND the same bytes); ``spool_id`` is a random id
   made when the spool directory is created, so spools of different replicas never collide;
3. only when every file of the batch is written are its rows deleted from the spool.

A failure anywhere in 2 (bucket down, an upload that succeeded but was not acknowledged, a crash
before 3) leaves the batch claimed, and the next attempt - by this spool or by the next one
opened on the directory - rewrites exactly the same keys with the same content: an overwrite,
never a second copy. Even a duplicate line would be harmless: the raw loader
(``socialrec.data.warehouse.load_event_partitions``) replaces whole ``dt`` partitions with what the
bucket holds, and dbt's ``stg_events`` keeps one row per ``event_id`` (``row_number() over
(partition by event_id order by _loaded_at, _source_file, _line)``), which is also what makes a
client's retry of the same event (same ``event_id``) harmless.

Rows are event dicts as the app sends them (``event_id``, ``user_id``, ``post_id``,
``event_type``, ``ts``, optional ``dwell_ms``); ``ts`` (an ISO-8601 string or a datetime;
naive means UTC, like the raw loader) is written as ISO-8601 UTC, e.g. ``2026-01-03T10:11:12Z``.
The spool checks only what it needs (a non-empty ``event_id`` and a parseable ``ts``); the rest
is validated by the service and, for anything that still slips through, quarantined by the raw
loader. Everything is thread-safe (``append`` is called from request threads). One process per
spool directory is the intended use; processes sharing one (the service's workers) are still
safe (SQLite locking, and an exclusive file lock around flushes); ``stats()["pending"]`` is
the directory's, the other stats are per process. The SQLite side
(schema, claiming a batch, the rows' JSON) is ``socialrec.serving.spool_db``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import groupby
from pathlib import Path
from typing import Any

from socialrec.data.landing import LandingBucket, encode_jsonl, landing_key
from socialrec.serving.spool_db import SpoolDB, event_record

log = logging.getLogger(__name__)

LOCK_NAME = "flush.lock"
_IDLE_WAIT = 1.0  # the flusher re-checks at least this often (seconds)


class SpoolClosed(RuntimeError):
    """The spool was closed (the service is shutting down): an outage, not a bug."""


class EventSpool:
    """A durable local spool of events, flushed to a landing bucket by count and by time.

    ``append`` is durable before it returns; ``flush`` delivers what is pending (never raises:
    a failure is counted and kept for the next attempt); ``start`` runs a daemon thread that
    flushes when ``flush_events`` are pending or the oldest pending row is ``flush_seconds``
    old (by ``clock``) and waits ``retry_seconds`` after a failure; ``close`` stops it and
    makes a final attempt. ``stats()`` feeds /metrics and /readyz.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        bucket: LandingBucket,
        flush_events: int = 500,
        flush_seconds: float = 5.0,
        retry_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        max_batch_events: int = 10_000,
    ):
        if flush_events < 1 or max_batch_events < 1:
            raise ValueError("flush_events and max_batch_events must be >= 1")
        if flush_seconds <= 0 or retry_seconds <= 0:
            raise ValueError("flush_seconds and retry_seconds must be > 0")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bucket = bucket
        self.flush_events = flush_events
        self.flush_seconds = flush_seconds
        self.retry_seconds = retry_seconds
        self.max_batch_events = max(max_batch_events, flush_events)
        self._clock = clock

        self._db_lock = threading.Lock()  # the spool database (one SQLite connection)
        self._flush_lock = threading.Lock()  # one flush at a time in this process
        self._state = threading.Lock()  # the counters below
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

        self._db = SpoolDB(self.directory)
        self.spool_id: str = self._db.spool_id
        # flock()ed around every flush: one flusher per directory, across processes
        self._lock_file = open(self.directory / LOCK_NAME, "a+b")

        self._pending = self._count()
        # rows left by an earlier spool are overdue: the first check flushes them
        self._oldest_at: float | None = (
            self._clock() - self.flush_seconds if self._pending else None
        )
        self._retry_at: float | None = None
        self._flushed = 0
        self._batches = 0
        self._failures = 0
        self._consecutive_failures = 0
        self._last_error: str | None = None

    # --- writing ----------------------------------------------------------------------------

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Spool events; durable (fsynced) when this returns. All or nothing: a row without
        ``event_id`` or with an unparseable ``ts`` raises ValueError and nothing is kept."""
        records = [event_record(r) for r in rows]
        if not records:
            return 0
        with self._db_lock:
            if self._closed:
                raise SpoolClosed("the event spool is closed")
            self._db.insert(records)
            with self._state:
                if not self._pending:
                    self._oldest_at = self._clock()
                self._pending += len(records)
                wake = self._pending >= self.flush_events or self._pending == len(records)
        if wake:
            self._wake.set()
        return len(records)

    # --- flushing ---------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything pending to the bucket, batch by batch; the number of events
        delivered. Never raises: on a failure the rest stays pending (``stats()['last_error']``)
        and the retry rewrites the same keys. Another flush under way (another thread or
        process on this directory) makes this one wait (thread) or return 0 (process)."""
        with self._flush_lock:
            if self._closed:
                return 0
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # another process is flushing this directory
            try:
                return self._flush_locked()
            finally:
                with contextlib.suppress(ValueError, OSError):  # closed by a timed-out close()
                    fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)

    def _flush_locked(self) -> int:
        started = self._clock()
        delivered = 0
        try:
            # bounded: rows appended while flushing wait for the next round
            rounds = self._count() // self.max_batch_events + 2
            for _ in range(rounds):
                batch = self._claim()
                if batch is None:
                    break
                number, rows = batch
                for day, group in groupby(rows, key=lambda r: r[0]):
                    data = encode_jsonl(json.loads(payload) for _, payload in group)
                    self.bucket.write_bytes(self.key(day, number), data)
                delivered += self._complete(number)
            with self._db_lock, self._state:
                # re-synced with the disk (exact even if another process appended or flushed)
                self._pending = self._db.count()
                self._flushed += delivered
                self._retry_at = None
                self._consecutive_failures = 0
                self._last_error = None
                # what is left came in while flushing: it is no older than this flush
                self._oldest_at = started if self._pending else None
        except Exception as exc:  # noqa: BLE001 - kept for the retry, reported in stats()
            self._failed(exc, delivered)
            return delivered
        if delivered:
            log.debug("spool flushed %d events to %s", delivered, self.bucket.uri)
        return delivered

    def key(self, day: str, batch: int) -> str:
        """The landing key of one batch's events of one day (deterministic: a retry
        overwrites it)."""
        return landing_key("events", day, f"spool-{self.spool_id}-{batch:010d}.jsonl.gz")

    def _claim(self) -> tuple[int, list[tuple[str, str]]] | None:
        with self._db_lock:
            return self._db.claim(self.max_batch_events)

    def _complete(self, number: int) -> int:
        with self._db_lock:
            n = self._db.delete_batch(number)
            with self._state:
                self._pending = max(0, self._pending - n)
                self._batches += 1
        return n

    def _failed(self, exc: Exception, delivered: int) -> None:
        with self._state:
            self._flushed += delivered
            self._failures += 1
            self._consecutive_failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"[:500]
            self._retry_at = self._clock() + self.retry_seconds
            pending = self._pending
        log.warning(
            "spool flush to %s failed (%d events kept, retry in %.1fs): %s",
            getattr(self.bucket, "uri", self.bucket),
            pending,
            self.retry_seconds,
            self._last_error,
        )

    def due(self) -> bool:
        """Whether the flusher would flush now: enough pending or the oldest too old, and not
        waiting out ``retry_seconds`` after a failure."""
        with self._state:
            if not self._pending:
                return False
            now = self._clock()
            if self._retry_at is not None and now < self._retry_at:
                return False
            return self._pending >= self.flush_events or (
                self._oldest_at is not None and now - self._oldest_at >= self.flush_seconds
            )

    def maybe_flush(self) -> int:
        """``flush()`` if ``due()``, else 0 (one step of the background flusher). The pending
        count is re-read from disk first: rows another process sharing the directory left
        behind (a replica killed before its flush) are first seen here and flushed within
        ``flush_seconds``, not only when this process appends."""
        self._resync()
        return self.flush() if self.due() else 0

    def _resync(self) -> None:
        if self._closed:
            return
        pending = self._count()
        with self._state:
            if pending and self._oldest_at is None:
                self._oldest_at = self._clock()
            elif not pending:
                self._oldest_at = None
            self._pending = pending

    def _wait_seconds(self) -> float:
        """How long the flusher may sleep (an append that makes a flush due wakes it)."""
        with self._state:
            if not self._pending:
                return _IDLE_WAIT
            now = self._clock()
            at = (self._oldest_at if self._oldest_at is not None else now) + self.flush_seconds
            if self._pending >= self.flush_events:
                at = now
            if self._retry_at is not None:
                at = max(at, self._retry_at)
        return min(max(at - now, 0.0), _IDLE_WAIT)

    # --- the background flusher -------------------------------------------------------------

    def start(self) -> EventSpool:
        """Start the background flusher (a daemon thread); idempotent."""
        if self._closed:
            raise SpoolClosed("the event spool is closed")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"event-spool-{self.spool_id}", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.maybe_flush()
                wait = self._wait_seconds()
            except Exception:  # noqa: BLE001 - the flusher must outlive any surprise
                log.exception("event spool flusher")
                wait = self.retry_seconds
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop the flusher, try a final flush, close the spool. Whatever is not delivered
        stays on disk for the next spool opened on this directory. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        if thread is not None and thread.is_alive():
            log.warning("event spool flusher still busy after %ss; not flushing again", timeout)
        else:
            self.flush()
        with self._db_lock:
            self._closed = True
            self._db.close()
        self._lock_file.close()

    def __enter__(self) -> EventSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- state ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``pending`` (events on disk in the directory, not yet delivered: counted on disk, so
        every process sharing the directory reports the same), ``flushed`` (delivered by this
        spool object), ``failures`` (failed flush attempts), ``last_error`` (of the latest
        attempt; None once a flush succeeds), plus ``consecutive_failures``, ``batches`` and
        ``oldest_pending_seconds``."""
        # the directory's (exact when worker processes share it); a closed spool's last count
        pending = self._pending if self._closed else self._count()
        with self._state:
            oldest = (
                max(0.0, self._clock() - self._oldest_at)
                if pending and self._pending and self._oldest_at is not None
                else 0.0
            )
            return {
                "pending": pending,
                "flushed": self._flushed,
                "failures": self._failures,
                "last_error": self._last_error,
                "consecutive_failures": self._consecutive_failures,
                "batches": self._batches,
                "oldest_pending_seconds": oldest,
            }

    def _count(self) -> int:
        with self._db_lock:
            return self._db.count()


def open_spool(settings, bucket: LandingBucket | None = None) -> EventSpool:
    """The service's spool: ``settings.spool_dir``, flushed to ``bucket`` (default: the
    bucket of ``settings.landing_uri``) with the ``spool_*`` settings. Not started."""
    from socialrec.data.landing import open_bucket

    return EventSpool(
        settings.spool_dir,
        bucket if bucket is not None else open_bucket(str(settings.landing_uri)),
        flush_events=settings.spool_flush_events,
        flush_seconds=settings.spool_flush_seconds,
        retry_seconds=settings.spool_retry_seconds,
    )
