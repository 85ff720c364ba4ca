"""A compact Bloom filter of int64 post ids, persisted with the seen rows (one per user).

Positions: ``k`` per id by double hashing, ``(h1 + i * h2) mod m`` for ``i < k``, with ``h1`` and
``h2`` two splitmix64 mixes of the id (``h2`` forced odd). The hash is a fixed function of the
id's 64 bits, so every process (service workers, the ``seen_history`` asset) computes the same
bits: no Python ``hash()``. Vectorised over numpy arrays (:meth:`BloomFilter.add_many`,
:meth:`BloomFilter.contains_many`); a single id (``in``) is hashed in plain Python, which is
cheaper than a numpy round trip for one value.

Sizing from (capacity, false-positive rate): ``m = ceil(-capacity * ln(p) / ln(2)^2)`` bits
(rounded up to whole bytes), ``k = round(m / capacity * ln 2)``. Past its capacity the filter
still answers correctly for every added id (no false negatives, ever) but its false-positive
rate climbs: the stores rebuild a user's filter at twice the capacity from their rows
(:func:`updated_filter`).

Serialised (:meth:`BloomFilter.to_bytes`) as a 32-byte little-endian header -- magic ``SRBF``,
version (1), k, two reserved bytes, m (bits), count, capacity -- followed by the ``m / 8`` bytes
of the bit array (bit ``j`` is bit ``j % 8`` of byte ``j // 8``).
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Iterable

import numpy as np

MAGIC = b"SRBF"
VERSION = 1
_HEADER = struct.Struct("<4sBBHQQQ")  # magic, version, k, reserved, m, count, capacity
_MASK = (1 << 64) - 1
SMALL = 16  # add_many of at most this many ids (not an array) hashes them in plain Python
_SEED2 = 0x5851F42D4C957F2D  # xored into the id before the second mix
_C0, _C1, _C2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser of ``z + golden``, on a uint64 array (wrapping arithmetic)."""
    z = z + np.uint64(_C0)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
    return z ^ (z >> np.uint64(31))


def _mix_int(z: int) -> int:
    """:func:`_mix` of one unsigned 64-bit Python int."""
    z = (z + _C0) & _MASK
    z = ((z ^ (z >> 30)) * _C1) & _MASK
    z = ((z ^ (z >> 27)) * _C2) & _MASK
    return z ^ (z >> 31)


def as_ids(ids: Iterable[int] | np.ndarray) -> np.ndarray:
    """``ids`` as a uint64 array holding each int64 id's two's-complement bits."""
    arr = ids if isinstance(ids, np.ndarray) else np.fromiter((int(i) for i in ids), np.int64)
    return np.ascontiguousarray(arr, dtype=np.int64).view(np.uint64)


def size_for(capacity: int, fp_rate: float) -> tuple[int, int]:
    """(m bits, k hashes) of a filter holding ``capacity`` ids at ``fp_rate``."""
    if capacity < 1 or not 0.0 < fp_rate < 1.0:
        raise ValueError(f"capacity must be >= 1 and 0 < fp_rate < 1, got {capacity}, {fp_rate}")
    m = math.ceil(-capacity * math.log(fp_rate) / math.log(2) ** 2)
    m = max(64, -(-m // 8) * 8)
    k = min(32, max(1, round(m / capacity * math.log(2))))
    return m, k


class BloomFilter:
    """A Bloom filter of int64 ids: no false negatives; false positives at about the rate it
    was sized for while it holds at most ``capacity`` ids.

    ``len()`` is the number of distinct ids added, estimated: an id counts when the filter did
    not already (maybe) contain it, so a false positive at add time is not counted (an
    undercount of about the false-positive rate)."""

    __slots__ = ("bits", "capacity", "count", "k", "m")

    def __init__(self, m: int, k: int, capacity: int, bits: np.ndarray | None = None, count=0):
        if m < 8 or m % 8 or not 1 <= k <= 255:
            raise ValueError(f"bad Bloom filter size m={m}, k={k}")
        self.m, self.k, self.capacity, self.count = int(m), int(k), int(capacity), int(count)
        self.bits = np.zeros(m // 8, dtype=np.uint8) if bits is None else bits
        if self.bits.dtype != np.uint8 or self.bits.shape != (m // 8,):
            raise ValueError("the bit array does not match m")

    @classmethod
    def for_capacity(cls, capacity: int, fp_rate: float) -> BloomFilter:
        m, k = size_for(capacity, fp_rate)
        return cls(m, k, capacity)

    @classmethod
    def build(cls, ids: Iterable[int] | np.ndarray, fp_rate: float, min_capacity: int = 1):
        """A filter of ``ids`` sized to hold twice as many (at least ``min_capacity``; a power
        of two), so it grows by doubling."""
        arr = np.unique(as_ids(ids))
        bloom = cls.for_capacity(capacity_for(len(arr), min_capacity), fp_rate)
        bloom.add_many(arr)
        return bloom

    # --- hashing ------------------------------------------------------------------------------
    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """(k, n) bit positions of the uint64 ``ids``."""
        h1 = _mix(ids)
        h2 = _mix(ids ^ np.uint64(_SEED2)) | np.uint64(1)
        i = np.arange(self.k, dtype=np.uint64)[:, None]
        return (h1[None, :] + i * h2[None, :]) % np.uint64(self.m)

    def _test(self, pos: np.ndarray) -> np.ndarray:
        return (
            (self.bits[pos >> np.uint64(3)] >> (pos & np.uint64(7)).astype(np.uint8)) & 1
        ).astype(bool)

    # --- the set operations -------------------------------------------------------------------
    def _positions_int(self, post_id: int) -> list[int]:
        """The ``k`` bit positions of one id, in plain Python (:meth:`_positions`' values)."""
        x = post_id & _MASK
        h1, h2, m = _mix_int(x), _mix_int(x ^ _SEED2) | 1, self.m
        return [((h1 + i * h2) & _MASK) % m for i in range(self.k)]

    def add_many(self, ids: Iterable[int] | np.ndarray) -> int:
        """Add ``ids``; returns how many were new (not already maybe present)."""
        if not isinstance(ids, np.ndarray):
            ids = list(ids)
            if len(ids) <= SMALL:  # a write's few posts: plain Python beats numpy's overhead
                return self._add_few(dict.fromkeys(operator.index(i) for i in ids))
        arr = np.unique(as_ids(ids))
        if not len(arr):
            return 0
        pos = self._positions(arr)
        new = int((~self._test(pos).all(axis=0)).sum())
        flat = pos.ravel()
        np.bitwise_or.at(
            self.bits, flat >> np.uint64(3), np.left_shift(1, flat & np.uint64(7)).astype(np.uint8)
        )
        self.count += new
        return new

    def _add_few(self, ids: Iterable[int]) -> int:
        bits, new = self.bits, 0
        for post_id in ids:
            present = True
            for j in self._positions_int(post_id):
                byte, bit = j >> 3, 1 << (j & 7)
                if not bits[byte] & bit:
                    present = False
                    bits[byte] |= bit
            new += not present
        self.count += new
        return new

    def contains_many(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """A bool per id: True when it may have been added (always True when it was)."""
        arr = as_ids(ids)
        if not len(arr):
            return np.zeros(0, dtype=bool)
        return self._test(self._positions(arr)).all(axis=0)

    def __contains__(self, post_id: object) -> bool:
        try:
            x = operator.index(post_id)  # type: ignore[arg-type]
        except TypeError:  # not an integer (a str, a float): not an id, never added
            return False
        bits = self.bits
        return all(bits[j >> 3] >> (j & 7) & 1 for j in self._positions_int(x))

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"BloomFilter(~{self.count} ids, capacity={self.capacity}, m={self.m}, k={self.k})"

    @property
    def over_capacity(self) -> bool:
        return self.count > self.capacity

    def copy(self) -> BloomFilter:
        return BloomFilter(self.m, self.k, self.capacity, self.bits.copy(), self.count)

    # --- serialisation ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = _HEADER.pack(MAGIC, VERSION, self.k, 0, self.m, self.count, self.capacity)
        return header + self.bits.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> BloomFilter:
        if len(data) < _HEADER.size:
            raise ValueError("not a Bloom filter: too short")
        magic, version, k, _, m, count, capacity = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"not a version {VERSION} Bloom filter ({magic!r}, {version})")
        if len(data) != _HEADER.size + m // 8:
            raise ValueError("Bloom filter bytes do not match its header")
        bits = np.frombuffer(data, dtype=np.uint8, offset=_HEADER.size).copy()
        return cls(m, k, capacity, bits, count)


def add_in_place(blob, ids: Iterable[int]) -> bool:
    """Add ``ids`` to the serialised filter ``blob`` holds (a mutable bytes-like object with
    item and slice access, e.g. a ``sqlite3.Blob``), reading and writing only its header and the
    bytes of the ids' positions: a write's cost does not grow with the filter. False, with
    nothing written, when ``blob`` is not a valid filter; False, with the ids added, when the
    filter is now past its capacity (the caller rebuilds it); else True."""
    header = bytes(blob[0 : _HEADER.size])
    try:
        magic, version, k, _, m, count, capacity = _HEADER.unpack(header)
    except struct.error:
        return False
    if magic != MAGIC or version != VERSION or len(blob) != _HEADER.size + m // 8 or not k:
        return False
    probe = BloomFilter(8, k, capacity)  # only its hashing: positions modulo m
    probe.m = m
    changed: dict[int, int] = {}
    for post_id in dict.fromkeys(operator.index(i) for i in ids):
        present = True
        for j in probe._positions_int(post_id):
            at, bit = _HEADER.size + (j >> 3), 1 << (j & 7)
            byte = changed[at] if at in changed else blob[at]
            if not byte & bit:
                present = False
                changed[at] = byte | bit
        count += not present
    for at, byte in changed.items():
        blob[at] = byte
    blob[0 : _HEADER.size] = _HEADER.pack(MAGIC, VERSION, k, 0, m, count, capacity)
    return count <= capacity


def capacity_for(n: int, minimum: int = 1) -> int:
    """The capacity of a filter built over ``n`` ids: the smallest power of two >= ``2 n``, at
    least ``minimum``."""
    return max(int(minimum), 1 << max(0, 2 * int(n) - 1).bit_length())


def updated_filter(
    bloom: BloomFilter | None,
    new_ids: Iterable[int] | np.ndarray,
    all_ids: Callable[[], Iterable[int] | np.ndarray],
    fp_rate: float,
    min_capacity: int,
) -> BloomFilter:
    """A user's filter after a write of ``new_ids``: ``bloom`` with them added, or, when there
    is no filter yet (rows written before filters existed) or it outgrew its capacity, a new one
    built from ``all_ids()`` (every post of the user, the new ones included) at twice their
    number (at least ``min_capacity``, and at least double the old capacity)."""
    if bloom is not None:
        bloom.add_many(new_ids)
        if not bloom.over_capacity:
            return bloom
        min_capacity = max(min_capacity, 2 * bloom.capacity)
    return BloomFilter.build(all_ids(), fp_rate, min_capacity)
