"""The options of an import (``ImportOptions``): plain data, loadable from JSON."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from socialrec.settings import EVENT_TYPES, MEDIA_TYPES

TIME_UNITS = ("s", "ms", "us", "ns", "iso")
CREATOR_MODES = ("category", "source", "item", "none")
CREATOR_ID_SPACES = ("users", "separate")
# synthetic creators get user ids from here up (real integer user ids must stay below it)
CREATOR_ID_BASE = 1_000_000_000_000
HASH_ID_BITS = 53  # hashed ids stay exact in JSON readers that use doubles
FIVE_STAR_RULES: tuple[dict, ...] = (
    {"min": None, "max": None, "event": "VIEW"},
    {"min": 4, "event": "LIKE"},
    {"max": 2, "event": "DISLIKE"},
)
RATING_PRESETS: dict[str, tuple[dict, ...]] = {"five_star": FIVE_STAR_RULES}

_SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class ImportOptions:
    """How a log maps onto the landing layout. Every field is plain data (JSON-able)."""

    source: str = "import"  # names event ids, files and synthetic creators
    # --- interactions table ---
    user_col: str = "user_id"
    item_col: str = "item_id"
    time_col: str = "timestamp"
    time_unit: str = "s"  # s | ms | us | ns (epoch) | iso (ISO-8601 strings or datetimes)
    event_col: str | None = None  # either an event column (+ event_map) ...
    # source value -> an EVENT_TYPE, a list of them, or null (ignored); None = values are
    # already EVENT_TYPES (case-insensitive)
    event_map: dict[str, str | list[str] | None] | None = None
    rating_col: str | None = None  # ... or a rating column (+ rating_rules)
    # [{"min": x or null, "max": y or null, "event": TYPE}, ...] (bounds inclusive) or the
    # name of a preset ("five_star": every rating VIEW, >= 4 LIKE, <= 2 DISLIKE)
    rating_rules: list[dict] | str | None = None
    # ... or a wide log (one row per impression with flag columns): row_event is emitted for
    # every valid row, event_flags {column: TYPE or [TYPES]} when the column is truthy
    row_event: str | None = None
    event_flags: dict[str, str | list[str]] | None = None
    dwell_col: str | None = None  # milliseconds, optional
    # --- items table (default: the item columns of the interactions table, if any) ---
    items_item_col: str | None = None  # default: item_col
    text_cols: list[str] = field(default_factory=list)  # joined with ". " into the description
    category_col: str | None = None
    category_sep: str | None = None  # multi-valued categories: the first value is used
    creator_col: str | None = None  # the creator's id
    # creator_col ids are user ids ("users") or their own id space ("separate": hash_id)
    creator_ids: str = "users"
    # the item's creation time (default: its first interaction), in created_unit (as time_unit)
    created_col: str | None = None
    created_unit: str = "iso"
    media_type: str = "text"  # one of MEDIA_TYPES, for every post
    unknown_category: str = "unknown"  # the category of items without one
    # --- users table (optional) ---
    users_user_col: str | None = None  # default: user_col
    headline_col: str | None = None
    about_col: str | None = None
    # --- derived fields ---
    # the creator of posts without a creator_col value: a synthetic one per "category", one for
    # the whole "source", one per "item", or "none" (creator_id null: unknown)
    creator: str = "category"
    onboarding_first_n: int = 10
    onboarding_top_k: int = 3
    shift_to: str | None = None  # YYYY-MM-DD: the log is moved to start on this day
    # --- reading and writing ---
    csv_sep: str = ","
    rows_per_file: int = 50_000

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImportOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown import option(s): {', '.join(unknown)}")
        opts = cls(**dict(data))
        opts.validate()
        return opts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Check the options (raises ValueError) and normalise a few of them in place."""
        if not _SOURCE_RE.match(self.source or ""):
            raise ValueError(f"source must match {_SOURCE_RE.pattern}: {self.source!r}")
        if isinstance(self.text_cols, str):
            self.text_cols = [c.strip() for c in self.text_cols.split(",") if c.strip()]
        wide = self.row_event is not None or self.event_flags is not None
        if (self.event_col is not None) + (self.rating_col is not None) + wide != 1:
            raise ValueError(
                "give exactly one of event_col (+ event_map), rating_col (+ rating_rules), or "
                "row_event and/or event_flags (a wide log)"
            )
        if self.row_event is not None and self.row_event not in EVENT_TYPES:
            raise ValueError(f"row_event: not in EVENT_TYPES {EVENT_TYPES}: {self.row_event!r}")
        if self.event_flags is not None:
            self.event_flags = _flags(self.event_flags)
        if self.rating_col is not None:
            if self.rating_rules is None:
                raise ValueError(
                    f"rating_col needs rating_rules (a list or one of {sorted(RATING_PRESETS)})"
                )
            self.rating_rules = _rules(self.rating_rules)
        elif self.rating_rules is not None:
            raise ValueError("rating_rules need rating_col")
        if self.event_map is not None:
            if self.event_col is None:
                raise ValueError("event_map needs event_col")
            for key, value in self.event_map.items():
                _event_types(value, f"event_map[{key!r}]")
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"time_unit must be one of {TIME_UNITS}: {self.time_unit!r}")
        if self.created_unit not in TIME_UNITS:
            raise ValueError(f"created_unit must be one of {TIME_UNITS}: {self.created_unit!r}")
        if self.media_type not in MEDIA_TYPES:
            raise ValueError(f"media_type must be one of {MEDIA_TYPES}: {self.media_type!r}")
        if self.creator not in CREATOR_MODES:
            raise ValueError(f"creator must be one of {CREATOR_MODES}: {self.creator!r}")
        if self.creator_ids not in CREATOR_ID_SPACES:
            raise ValueError(
                f"creator_ids must be one of {CREATOR_ID_SPACES}: {self.creator_ids!r}"
            )
        if self.creator_ids != "users" and self.creator_col is None:
            raise ValueError(f"creator_ids {self.creator_ids!r} needs creator_col")
        if self.onboarding_first_n < 0 or self.onboarding_top_k < 0:
            raise ValueError("onboarding_first_n and onboarding_top_k must be >= 0")
        if self.rows_per_file < 1:
            raise ValueError("rows_per_file must be >= 1")
        if self.shift_to is not None:
            dt.date.fromisoformat(self.shift_to)
        if not self.unknown_category.strip():
            raise ValueError("unknown_category must not be empty")


def _event_types(value: Any, what: str) -> tuple[str, ...]:
    """An event_map value as a tuple of EVENT_TYPES (null or [] = no event)."""
    if value is None:
        return ()
    if not isinstance(value, str | list | tuple):
        raise ValueError(f"{what}: an EVENT_TYPE or a list of them, not {value!r}")
    values = [value] if isinstance(value, str) else list(value)
    bad = [v for v in values if v not in EVENT_TYPES]
    if bad:
        raise ValueError(f"{what}: not in EVENT_TYPES {EVENT_TYPES}: {bad}")
    return tuple(dict.fromkeys(values))


def _flags(flags: Any) -> dict[str, list[str]]:
    """event_flags as {column: [EVENT_TYPES]} (every column names at least one type)."""
    if not isinstance(flags, Mapping) or not flags:
        raise ValueError("event_flags must be a non-empty {column: EVENT_TYPE or [types]}")
    out = {}
    for col, value in flags.items():
        types = _event_types(value, f"event_flags[{col!r}]")
        if not types:
            raise ValueError(f"event_flags[{col!r}] gives no event type: leave the column out")
        out[str(col)] = list(types)
    return out


def _rules(rules: list[dict] | tuple[dict, ...] | str) -> list[dict]:
    if isinstance(rules, str):
        if rules not in RATING_PRESETS:
            raise ValueError(f"unknown rating_rules preset {rules!r} ({sorted(RATING_PRESETS)})")
        rules = RATING_PRESETS[rules]
    out = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping) or set(rule) - {"min", "max", "event"}:
            raise ValueError(f"rating_rules[{i}]: keys are min, max, event: {rule!r}")
        if rule.get("event") not in EVENT_TYPES:
            raise ValueError(f"rating_rules[{i}]: event not in EVENT_TYPES: {rule.get('event')!r}")
        for bound in ("min", "max"):
            value = rule.get(bound)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise ValueError(f"rating_rules[{i}]: {bound} must be a number or null")
        out.append({"min": rule.get("min"), "max": rule.get("max"), "event": rule["event"]})
    if not out:
        raise ValueError("rating_rules is empty")
    return out
