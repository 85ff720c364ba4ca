"""The interaction log in memory: the one compact form every offline learner and replay reads.

``fct_interactions`` rows become parallel numpy arrays sorted by time (user, post, ts in epoch
seconds, event type code, positive / negative flags, dwell). Cutting the log at an instant
(:meth:`EventLog.before`, :meth:`EventLog.between`) is a binary search, so "everything known at
time t" is cheap to ask for again and again: the co-engagement neighbours, the baselines, the
catalog's popularity and trending counts and the replayed requests of the offline evaluation
and of the ranker's training set are all fitted or built on such cuts.

Signals (what counts as an interaction for a learner):

* ``positive``: the positive events (``POSITIVE_EVENTS``);
* ``exposure``: every event of a (user, post) pair, impressions included: what the user was
  shown or engaged with at all (a feed's co-exposure carries its own recommender's signal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from socialrec.settings import EVENT_TYPES, NEGATIVE_EVENTS, POSITIVE_EVENTS
from socialrec.timeutil import DAY_SECONDS, epoch_seconds, to_seconds, to_timestamp

SIGNALS = ("positive", "exposure")
_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}


@dataclass(frozen=True)
class EventLog:
    """Events sorted by time; every array has one entry per event."""

    user: np.ndarray  # int64
    post: np.ndarray  # int64
    ts: np.ndarray  # int64 epoch seconds, non-decreasing
    event: np.ndarray  # int8 index into EVENT_TYPES
    positive: np.ndarray  # bool
    negative: np.ndarray  # bool
    dwell_ms: np.ndarray  # float64, NaN when unknown

    # --- building ------------------------------------------------------------------------
    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> EventLog:
        """From ``fct_interactions``-shaped rows (user_id, post_id, event_type, ts; optional
        is_positive / is_negative, else derived from the event type; optional dwell_ms)."""
        if df is None or df.empty:
            return cls.empty()
        types = df["event_type"].astype(str)
        unknown = sorted(set(types) - set(_CODE))
        if unknown:
            raise ValueError(f"unknown event types in the log: {unknown[:5]}")
        ts = epoch_seconds(df["ts"])
        order = np.argsort(ts, kind="stable")
        positive = (
            df["is_positive"].fillna(0).astype(bool).to_numpy()
            if "is_positive" in df.columns
            else types.isin(POSITIVE_EVENTS).to_numpy()
        )
        negative = (
            df["is_negative"].fillna(0).astype(bool).to_numpy()
            if "is_negative" in df.columns
            else types.isin(NEGATIVE_EVENTS).to_numpy()
        )
        dwell = (
            pd.to_numeric(df["dwell_ms"], errors="coerce").to_numpy(dtype=np.float64)
            if "dwell_ms" in df.columns
            else np.full(len(df), np.nan)
        )
        return cls(
            user=df["user_id"].to_numpy(dtype=np.int64)[order],
            post=df["post_id"].to_numpy(dtype=np.int64)[order],
            ts=ts[order],
            event=types.map(_CODE).to_numpy(dtype=np.int8)[order],
            positive=positive[order],
            negative=negative[order],
            dwell_ms=dwell[order],
        )

    @classmethod
    def empty(cls) -> EventLog:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z.astype(np.int8), z.astype(bool), z.astype(bool), z.astype(float))

    def __len__(self) -> int:
        return len(self.ts)

    def _take(self, sl) -> EventLog:
        return EventLog(*(getattr(self, f)[sl] for f in self.__dataclass_fields__))

    # --- cuts ----------------------------------------------------------------------------
    def before(self, cutoff) -> EventLog:
        """The events strictly before ``cutoff`` (what is known at that instant)."""
        return self._take(slice(0, int(np.searchsorted(self.ts, to_seconds(cutoff), "left"))))

    def between(self, start, end) -> EventLog:
        """The events in ``[start, end)``."""
        lo = int(np.searchsorted(self.ts, to_seconds(start), "left"))
        hi = int(np.searchsorted(self.ts, to_seconds(end), "left"))
        return self._take(slice(lo, hi))

    def of_users(self, users: Iterable[int]) -> EventLog:
        return self._take(np.isin(self.user, np.fromiter(users, dtype=np.int64)))

    def is_type(self, *names: str) -> np.ndarray:
        codes = [_CODE[n] for n in names]
        return np.isin(self.event, codes)

    def mask(self, signal: str) -> np.ndarray:
        """The events that count for ``signal`` (``SIGNALS``)."""
        if signal == "positive":
            return self.positive
        if signal == "exposure":
            return np.ones(len(self), dtype=bool)
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")

    @property
    def start(self) -> int | None:
        return int(self.ts[0]) if len(self) else None

    @property
    def end(self) -> int | None:
        return int(self.ts[-1]) if len(self) else None

    # --- shapes learners want ------------------------------------------------------------
    def matrix(
        self, signal: str, users: pd.Index, posts: pd.Index, binary: bool = True
    ) -> sp.csr_matrix:
        """users x posts (float32 CSR) of the ``signal`` events; pairs outside the indexes are
        left out; ``binary``: 1 per (user, post) pair, else the event count."""
        m = self.mask(signal)
        rows = users.get_indexer(self.user[m])
        cols = posts.get_indexer(self.post[m])
        ok = (rows >= 0) & (cols >= 0)
        x = sp.csr_matrix(
            (np.ones(int(ok.sum()), dtype=np.float32), (rows[ok], cols[ok])),
            shape=(len(users), len(posts)),
        )
        x.sum_duplicates()
        if binary:
            x.data[:] = 1.0
        return x

    def counts(self, posts: pd.Index, mask: np.ndarray | None = None) -> np.ndarray:
        """Events per post of ``posts`` (float64), optionally of the ``mask``ed events only."""
        post = self.post if mask is None else self.post[mask]
        idx = posts.get_indexer(post)
        return np.bincount(idx[idx >= 0], minlength=len(posts)).astype(np.float64)

    def users_with(self, signal: str) -> np.ndarray:
        return np.unique(self.user[self.mask(signal)])

    def recent_posts(self, signal: str, n: int) -> dict[int, list[int]]:
        """Each user's ``n`` latest distinct posts of the ``signal`` events, newest first."""
        m = self.mask(signal)
        users, posts = self.user[m][::-1], self.post[m][::-1]
        out: dict[int, list[int]] = {}
        seen: dict[int, set[int]] = {}
        for u, p in zip(users.tolist(), posts.tolist(), strict=True):
            lst = out.setdefault(u, [])
            if len(lst) < n and p not in seen.setdefault(u, set()):
                lst.append(p)
                seen[u].add(p)
        return out


@dataclass(frozen=True)
class SplitBounds:
    validation_start: int  # epoch seconds
    test_start: int
    data_start: int
    data_end: int

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> SplitBounds:
        """From the one row of the ``ml_split_bounds`` model."""
        if len(frame) != 1:
            raise ValueError(f"ml_split_bounds must have one row, got {len(frame)}")
        row = frame.iloc[0]
        return cls(
            *(
                to_seconds(pd.Timestamp(row[c]))
                for c in ("validation_start", "test_start", "data_start", "data_end")
            )
        )

    @classmethod
    def from_log(cls, log: EventLog, validation: float = 0.1, test: float = 0.1) -> SplitBounds:
        """The same rule as ``ml_split_bounds`` (for logs outside the warehouse and tests)."""
        if not len(log):
            raise ValueError("an empty log has no split")
        ts = log.ts
        q_v = int(ts[min(len(ts) - 1, int(np.ceil((1 - validation - test) * len(ts))) - 1)])
        q_t = int(ts[min(len(ts) - 1, int(np.ceil((1 - test) * len(ts))) - 1)])
        v_day, t_day = q_v // DAY_SECONDS * DAY_SECONDS, q_t // DAY_SECONDS * DAY_SECONDS
        if int(ts[0]) < v_day < t_day:
            q_v, q_t = v_day, t_day
        return cls(q_v, q_t, int(ts[0]), int(ts[-1]))

    def describe(self) -> str:
        f = "%Y-%m-%d %H:%M"
        return (
            f"train before {to_timestamp(self.validation_start):{f}}, validation until "
            f"{to_timestamp(self.test_start):{f}}, test until {to_timestamp(self.data_end):{f}} UTC"
        )
