"""Nothing accepted is lost: events are sent to the BUILT bento in batches while its whole
process tree is SIGKILLed mid-stream; the service is served again on the same data directory
(same spool, same landing bucket), the rest is sent, and the service stops cleanly (its final
flush). Every event answered 200 is then in the landing bucket or still in the spool - exactly
once after dedup by ``event_id`` (a copy in both, or twice in the bucket, is allowed: the
pipeline is at-least-once and ``stg_events`` keeps one row per ``event_id``); the batch in flight
when the service died may or may not be there, and is reported.

Uses the session's materialized graph and Milvus server (tests/conftest.py); a second bento is
served on the same data directory, and the events carry an id prefix of their own so that other
tests' events (the session's service shares the spool and the bucket) are not counted. The
figures are printed and written to ``durability.json`` in the test's tmp directory."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import sqlite3
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import (
    E2E_SPOOL_FLUSH_SECONDS,
    bearer,
    served_bento,
    spool_pending_when_drained,
)

BATCH = 25  # events per request
BATCHES_BEFORE_KILL = 40  # the kill comes once this many batches are answered
BATCHES_AFTER_RESTART = 20


def server_tree(client: httpx.Client) -> list[psutil.Process]:
    """The served bento's processes: the one listening on the client's port, up to the child
    of this process (``bentoml serve``), and all it started."""
    port = client.base_url.port
    listening = {
        c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }
    assert listening, f"nothing listens on port {port}"
    proc = psutil.Process(next(iter(listening)))
    while proc.ppid() != os.getpid():
        proc = proc.parent()
    return [proc, *proc.children(recursive=True)]


def sigkill(tree: list[psutil.Process]) -> None:
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, alive


def events(prefix: str, first: int, n: int, users: list[int], posts: list[int]) -> list[dict]:
    ts = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return [
        {
            "event_id": f"{prefix}-{i}",
            "user_id": users[i % len(users)],
            "post_id": posts[i % len(posts)],
            "event_type": "VIEW",
            "ts": ts,
            "dwell_ms": 1000,
        }
        for i in range(first, first + n)
    ]


class Sender:
    """Sends batches until ``stop`` or the service stops answering; per batch: its ids and the
    answer (status code, or None when the connection failed)."""

    def __init__(self, client, prefix, users, posts, start=0):
        self.client, self.prefix, self.users, self.posts = client, prefix, users, posts
        self.next = start
        self.log: list[tuple[list[str], int | None]] = []
        self.stop = threading.Event()

    def send(self, batches: int | None = None) -> None:
        sent = 0
        while not self.stop.is_set() and (batches is None or sent < batches):
            body = events(self.prefix, self.next, BATCH, self.users, self.posts)
            self.next += BATCH
            sent += 1
            ids = [e["event_id"] for e in body]
            try:
                r = self.client.post("/events", json={"events": body}, headers=bearer())
            except httpx.HTTPError:
                self.log.append((ids, None))
                return
            self.log.append((ids, r.status_code))
            if r.status_code != 200:
                return

    def answered(self) -> int:
        return sum(status == 200 for _, status in self.log)


def landed(data_dir: Path, prefix: str) -> Counter:
    out = Counter()
    for path in (data_dir / "landing" / "events").glob("dt=*/spool-*.jsonl.gz"):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            if line.strip() and (event_id := json.loads(line)["event_id"]).startswith(prefix):
                out[event_id] += 1
    return out


def spooled(data_dir: Path, prefix: str) -> Counter:
    uri = f"file:{data_dir / 'spool' / 'spool.sqlite'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as con:
        rows = con.execute(
            "SELECT event_id FROM events WHERE event_id LIKE ?", [f"{prefix}-%"]
        ).fetchall()
    return Counter(r[0] for r in rows)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_every_accepted_event_survives_a_sigkill_exactly_once_after_dedup(
    e2e_service, e2e_materialized, e2e_warehouse, tmp_path
):
    posts, users = e2e_warehouse
    user_ids = [int(u) for u in users["user_id"].head(20)]
    post_ids = [int(p) for p in posts["post_id"].head(50)]
    env = e2e_materialized
    data_dir = Path(env["SOCIALREC_DATA_DIR"])
    prefix = f"dur-{uuid.uuid4().hex[:10]}"
    flush = {"SOCIALREC_SPOOL_FLUSH_SECONDS": str(E2E_SPOOL_FLUSH_SECONDS)}

    with served_bento(env, flush) as client:
        sender = Sender(client, prefix, user_ids, post_ids)
        thread = threading.Thread(target=sender.send, daemon=True)
        thread.start()
        deadline = time.time() + 300
        while sender.answered() < BATCHES_BEFORE_KILL and thread.is_alive():
            assert time.time() < deadline, "the service answers too slowly"
            time.sleep(0.01)
        sigkill(server_tree(client))  # mid-stream: the thread is sending
        pending_at_kill = sum(spooled(data_dir, prefix).values())
        thread.join(timeout=120)
        assert not thread.is_alive()
        sender.stop.set()
    before_restart = list(sender.log)
    assert before_restart[-1][1] is None  # the stream was cut by the kill

    with served_bento(env, flush) as client:  # the same data dir: the same spool and bucket
        sender.client = client
        sender.stop.clear()
        sender.send(BATCHES_AFTER_RESTART)
    # served_bento stopped it with SIGTERM: the spool's final flush ran

    accepted = {i for ids, status in sender.log if status == 200 for i in ids}
    unanswered = {i for ids, status in sender.log if status is None for i in ids}
    in_bucket, in_spool = landed(data_dir, prefix), spooled(data_dir, prefix)
    copies = in_bucket + in_spool
    figures = {
        "sent": sum(len(ids) for ids, _ in sender.log),
        "accepted": len(accepted),
        "unanswered (in flight at the kill)": len(unanswered),
        "unanswered found": len(unanswered & set(copies)),
        "landed": sum(in_bucket.values()),
        "in the spool right after the kill": pending_at_kill,
        "still in the spool": sum(in_spool.values()),
        "distinct after dedup": len(copies),
        "duplicates before dedup": sum(copies.values()) - len(copies),
        "lost": len(accepted - set(copies)),
    }
    (tmp_path / "durability.json").write_text(json.dumps(figures, indent=2))
    print("durability:", json.dumps(figures))
    assert {status for _, status in sender.log} <= {200, None}, sender.log
    assert len(accepted) >= (BATCHES_BEFORE_KILL + BATCHES_AFTER_RESTART) * BATCH
    assert not accepted - set(copies), sorted(accepted - set(copies))[:20]
    assert set(copies) <= accepted | unanswered  # nothing that was never sent

    # the session's own service, which shared the spool with both servers, still reports its
    # own spool: its metric files survived the other servers' starts (each has a BentoML home
    # of its own) and its flusher delivered whatever the killed server had left
    pending = spool_pending_when_drained(e2e_service, 20 * E2E_SPOOL_FLUSH_SECONDS + 10)
    assert pending and float(pending[0].split()[-1]) == 0, pending
