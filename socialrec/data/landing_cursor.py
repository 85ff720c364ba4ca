"""Which landing files are new: the exact, durable cursor of the landing sensor (no Dagster here).

A *version* of a landing file is ``(key, updated)``: re-uploading a key gives a new ``updated``
and so a new version, which is processed again (the raw loads are idempotent reloads, so a
second load of the same content is harmless; a changed file MUST be reloaded). A metadata
change of a GCS object bumps ``updated`` too: one harmless reload.

The cursor (a JSON string, the sensor's only state) holds

* ``watermark``: the highest ``updated`` of any version processed so far;
* ``floor`` = ``watermark - lag`` (never moves back): every version with ``updated <= floor`` is
  settled and never looked at again;
* ``seen``: the versions processed whose ``updated`` is above the floor, grouped by ``updated``;
* ``pending``: event files whose ``dt=`` day is a valid date but not yet a partition (up to
  ``max_days_ahead`` past the last one); they are requested as soon as the partition exists;
* ``invalid_total``: how many files were skipped because their ``dt`` is not a partition.

A listed version is NEW iff ``updated > floor`` and it is not in ``seen`` (nor ``pending``).
New versions are processed in ``(updated, key)`` order, at most ``max_keys`` per tick; the
cursor advances only over what was processed, so the rest is new again on the next tick. Ties
(equal ``updated``) are safe: the tied versions stay in ``seen`` until the floor passes them,
so a version with the same ``updated`` that becomes visible later is still new. A file landing
late into an old ``dt=`` folder has a fresh ``updated`` and is new like any other.

The one assumption: a version becomes visible in a listing less than ``lag`` after a version
with a later ``updated`` is visible (GCS listings are strongly consistent and ``updated`` is
set by the server at finalisation, so the real window is seconds; the default lag is 600 s).
``seen`` holds at most the versions of one lag window; ``max_seen`` bounds it hard (the floor
is then raised early, but never to or above the watermark or an unprocessed new version).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from socialrec.data.landing import BlobInfo, event_partition, key_dataset

CURSOR_VERSION = 1
MAX_KEYS_PER_TICK = 500
MAX_SEEN = 20_000
MAX_PENDING = 2_000
MAX_DAYS_AHEAD = 2  # default: an event file this many days past the last partition waits

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

Version = tuple[str, int]  # (key, updated in epoch microseconds)


def to_us(ts: dt.datetime) -> int:
    """Epoch microseconds of an aware datetime (exact, no float rounding)."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime: {ts!r}")
    return (ts - _EPOCH) // _US


def from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _fmt(us: int | None) -> str | None:
    return None if us is None else from_us(us).strftime(_TS_FORMAT)


def _parse(text: str | None) -> int | None:
    if text is None:
        return None
    return to_us(dt.datetime.strptime(text, _TS_FORMAT).replace(tzinfo=dt.UTC))


def version(blob: BlobInfo) -> Version:
    return blob.key, to_us(blob.updated)


@dataclass
class LandingCursor:
    watermark: int | None = None  # epoch us; None: nothing processed yet
    floor: int | None = None  # epoch us; None: minus infinity
    seen: set[Version] = field(default_factory=set)
    pending: set[Version] = field(default_factory=set)
    invalid_total: int = 0

    def is_new(self, v: Version) -> bool:
        return (self.floor is None or v[1] > self.floor) and v not in self.seen

    # --- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "watermark": _fmt(self.watermark),
                "floor": _fmt(self.floor),
                "seen": _grouped(self.seen),
                "pending": _grouped(self.pending),
                "invalid_total": self.invalid_total,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> LandingCursor:
        """The cursor of a string; None or "" is the empty cursor (everything is new).

        Anything else that does not parse raises: silently starting over would reprocess the
        whole bucket."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError(f"cursor version {data.get('v')!r} != {CURSOR_VERSION}")
            return cls(
                watermark=_parse(data["watermark"]),
                floor=_parse(data["floor"]),
                seen=_ungrouped(data["seen"]),
                pending=_ungrouped(data["pending"]),
                invalid_total=int(data["invalid_total"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a landing sensor cursor: {text[:200]!r} ({e})") from e


def _grouped(versions: Iterable[Version]) -> dict[str, list[str]]:
    by_ts: dict[int, list[str]] = {}
    for key, us in versions:
        by_ts.setdefault(us, []).append(key)
    return {_fmt(us): sorted(keys) for us, keys in sorted(by_ts.items())}


def _ungrouped(grouped: dict[str, list[str]]) -> set[Version]:
    return {(key, _parse(ts)) for ts, keys in grouped.items() for key in keys}


@dataclass
class TickPlan:
    """What one tick requests, and the cursor to store once the requests are emitted."""

    events: dict[str, list[BlobInfo]]  # dt partition -> its new file versions
    dimensions: dict[str, list[BlobInfo]]  # posts/users/categories -> new file versions
    invalid: list[BlobInfo]  # event files whose dt is not a partition (skipped for good)
    deferred: list[BlobInfo]  # event files of a day that is not a partition yet (pending)
    remaining: int  # new versions left over for the next tick (max_keys)
    seen_overflow: bool  # max_seen could not be honoured without risking a skip
    cursor: LandingCursor

    @property
    def n_processed(self) -> int:
        return (
            sum(map(len, self.events.values()))
            + sum(map(len, self.dimensions.values()))
            + len(self.invalid)
            + len(self.deferred)
        )


def days_ahead(max_future_hours: float) -> int:
    """How many days past today an event's UTC day may be when its ``ts`` is at most
    ``max_future_hours`` ahead (``settings.event_max_future_hours``): the sensor's tolerance."""
    return math.ceil(max_future_hours / 24)


def event_file_place(
    key: str, first_partition: str, last_partition: str, max_days_ahead: int = MAX_DAYS_AHEAD
) -> str:
    """Where an ``events/`` file belongs: ``partition`` (its day is one), ``ahead`` (at most
    ``max_days_ahead`` past the last: it waits) or ``outside`` (before the first, further
    ahead, malformed or no ``dt=`` folder: no partition will ever load it)."""
    day = event_partition(key)
    if day is None:
        return "outside"
    if first_partition <= day <= last_partition:
        return "partition"
    latest = dt.date.fromisoformat(last_partition) + dt.timedelta(days=max_days_ahead)
    return "ahead" if last_partition < day <= latest.isoformat() else "outside"


def outside_partitions(
    blobs: Iterable[BlobInfo],
    first_partition: str,
    last_partition: str,
    max_days_ahead: int = MAX_DAYS_AHEAD,
) -> list[BlobInfo]:
    """The ``events/`` files no partition loads (see :func:`event_file_place`)."""
    return [
        b
        for b in blobs
        if key_dataset(b.key) == "events"
        and event_file_place(b.key, first_partition, last_partition, max_days_ahead) == "outside"
    ]


def plan_tick(
    blobs: Iterable[BlobInfo],
    cursor: LandingCursor,
    *,
    lag_seconds: float,
    first_partition: str,
    last_partition: str,
    max_keys: int = MAX_KEYS_PER_TICK,
    max_seen: int = MAX_SEEN,
    max_pending: int = MAX_PENDING,
    max_days_ahead: int = MAX_DAYS_AHEAD,
) -> TickPlan:
    """Decide one tick from a listing of ``events/ posts/ users/ categories/``.

    Event partitions are the days ``first_partition..last_partition`` (ISO dates). An event
    file of a day at most ``max_days_ahead`` later is deferred (kept in ``pending``, requested once
    its day is a partition; producers a timezone ahead); one of an earlier or a later day, a
    malformed day or without a ``dt=`` folder is invalid: skipped for good and counted.
    """
    if max_keys < 1:
        raise ValueError("max_keys must be >= 1")
    lag_us = int(lag_seconds * 1_000_000)
    listed = {version(b): b for b in blobs}
    pending = set(cursor.pending)
    events: dict[str, list[BlobInfo]] = {}
    dimensions: dict[str, list[BlobInfo]] = {}
    invalid: list[BlobInfo] = []
    deferred: list[BlobInfo] = []

    # 1. pending files whose day has become a partition (requested even if deleted since)
    for key, us in sorted(pending):
        day = event_partition(key)
        if day is not None and day <= last_partition:
            pending.discard((key, us))
            blob = listed.get((key, us)) or BlobInfo(key, 0, from_us(us))
            events.setdefault(day, []).append(blob)

    # 2. new versions, oldest first, at most max_keys of them
    new = sorted(
        (v for v in listed if cursor.is_new(v) and v not in cursor.pending),
        key=lambda v: (v[1], v[0]),
    )
    taken, left = new[:max_keys], new[max_keys:]
    for v in taken:
        blob = listed[v]
        dataset = key_dataset(blob.key)
        if dataset != "events":
            dimensions.setdefault(dataset, []).append(blob)
            continue
        day = event_partition(blob.key)
        where = event_file_place(blob.key, first_partition, last_partition, max_days_ahead)
        if where == "partition":
            events.setdefault(day, []).append(blob)
        elif where == "ahead" and len(pending) < max_pending:
            pending.add(v)
            deferred.append(blob)
        else:
            invalid.append(blob)

    # 3. advance: watermark over what was processed, floor = watermark - lag (monotone), but
    #    always below the oldest unprocessed new version; then drop what the floor settles
    watermark = cursor.watermark
    if taken:
        top = max(us for _, us in taken)
        watermark = top if watermark is None else max(watermark, top)
    limit = left[0][1] - 1 if left else None  # the floor must stay below every leftover
    floor = cursor.floor
    if watermark is not None:
        target = watermark - lag_us if limit is None else min(watermark - lag_us, limit)
        floor = target if floor is None else max(floor, target)
    seen = {v for v in cursor.seen | set(taken) if floor is None or v[1] > floor}

    # 4. hard bound on seen: raise the floor early, never to the watermark or past `limit`
    overflow = False
    if len(seen) > max_seen:
        times = sorted(us for _, us in seen)
        early = min(times[len(times) - max_seen - 1], watermark - 1)  # drop the oldest surplus
        if limit is not None:
            early = min(early, limit)
        if floor is None or early > floor:
            floor = early
            seen = {v for v in seen if v[1] > floor}
        overflow = len(seen) > max_seen

    return TickPlan(
        events=events,
        dimensions=dimensions,
        invalid=invalid,
        deferred=deferred,
        remaining=len(left),
        seen_overflow=overflow,
        cursor=LandingCursor(
            watermark=watermark,
            floor=floor,
            seen=seen,
            pending=pending,
            invalid_total=cursor.invalid_total + len(invalid),
        ),
    )
