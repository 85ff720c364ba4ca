"""The seen store's request read and filter, exact vs Bloom filter, and its write cost.

A SQLite seen store with ``--users`` users x ``--posts`` seen posts each (one or more sizes),
requests of ``--candidates`` candidates of which ``--seen`` were seen: per request, the seen
store's ``state`` plus the filtering stage's seen test (:func:`contains_many` over the
candidates, as ``filter_merged``), (a) exact (filters off: every seen row read) and (b) with
the per-user Bloom filters. Then the cost of one ``mark_events`` batch of 50 events without and
with the filters. Milliseconds, min of 3 runs.

    uv run python -m benchmarks.seen_store --posts 2000 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from socialrec.stores.seen import SQLiteSeenStore
from socialrec.stores.seen.base import contains_many


def _fill(path: Path, users: int, posts: int, fp_rate: float, rng) -> None:
    with SQLiteSeenStore(path, bloom_fp_rate=fp_rate) as store:
        for u in range(users):
            ids = rng.choice(10 * posts, posts, replace=False) + 1
            kinds = np.where(rng.random(posts) < 0.02, "DISLIKE", "IMPRESSION")
            store.bulk_load(pd.DataFrame({"user_id": u, "post_id": ids, "event_type": kinds}))


def _requests(path: Path, users: int, candidates: int, seen: int, rng) -> list[np.ndarray]:
    with SQLiteSeenStore(path, bloom_fp_rate=0) as store:
        out = []
        for u in range(users):
            mine = np.fromiter(store.seen(u), np.int64)
            unseen = rng.integers(10**9, 2 * 10**9, candidates - seen)
            out.append(rng.permutation(np.concatenate([rng.choice(mine, seen), unseen])))
    return out


def _read_ms(store: SQLiteSeenStore, requests: list[np.ndarray]) -> tuple[float, float]:
    """(ms per request, share of the unseen candidates dropped), min of 3 runs."""
    best, dropped = np.inf, 0.0
    for _ in range(3):
        t = time.perf_counter()
        n_dropped = 0
        for u, cands in enumerate(requests):
            state = store.state(u)
            drop = contains_many(state.excluded, cands)
            n_dropped += int(drop.sum())
        best = min(best, (time.perf_counter() - t) * 1000 / len(requests))
        dropped = n_dropped
    return best, dropped


def _write_ms(store: SQLiteSeenStore, users: int, rng, batches: int = 50) -> float:
    best = np.inf
    for _ in range(3):
        events = [
            [(int(u), int(p), "IMPRESSION", None) for u, p in zip(us, ps, strict=True)]
            for us, ps in (
                (rng.integers(0, users, 50), rng.integers(3 * 10**9, 4 * 10**9, 50))
                for _ in range(batches)
            )
        ]
        t = time.perf_counter()
        for batch in events:
            store.mark_events(batch)
        best = min(best, (time.perf_counter() - t) * 1000 / batches)
    return best


def run(users: int, posts: int, candidates: int, seen: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        exact_path, bloom_path = Path(tmp) / "exact.sqlite", Path(tmp) / "bloom.sqlite"
        _fill(exact_path, users, posts, 0.0, np.random.default_rng(1))
        _fill(bloom_path, users, posts, 0.01, np.random.default_rng(1))  # the same rows
        requests = _requests(exact_path, users, candidates, seen, rng)
        with (
            SQLiteSeenStore(exact_path, bloom_fp_rate=0) as exact,
            SQLiteSeenStore(bloom_path, bloom_fp_rate=0.01) as bloom,
        ):
            exact_ms, exact_dropped = _read_ms(exact, requests)
            bloom_ms, bloom_dropped = _read_ms(bloom, requests)
            write_exact = _write_ms(exact, users, rng)
            write_bloom = _write_ms(bloom, users, rng)
        blob = np.mean([len(b) for b in _blobs(bloom_path)])
    unseen = users * (candidates - seen)
    return {
        "read_exact_ms": exact_ms,
        "read_bloom_ms": bloom_ms,
        "unseen_dropped_exact": (exact_dropped - users * seen) / unseen,
        "unseen_dropped_bloom": (bloom_dropped - users * seen) / unseen,
        "write_exact_ms": write_exact,
        "write_bloom_ms": write_bloom,
        "bloom_bytes_per_user": float(blob),
    }


def _blobs(path: Path) -> list[bytes]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT bits FROM seen_bloom")]
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--posts", type=int, nargs="+", default=[2000])
    parser.add_argument("--candidates", type=int, default=500)
    parser.add_argument("--seen", type=int, default=100)
    args = parser.parse_args()
    for posts in args.posts:
        out = run(args.users, posts, args.candidates, args.seen)
        print(f"{args.users} users x {posts} seen posts, {args.candidates} candidates:")
        for key, value in out.items():
            print(f"  {key:24s} {value:.4f}")


if __name__ == "__main__":
    main()
