"""Bring your own interaction log: write it into the landing layout (docs/importing.md).

``import_interactions`` takes a table of interactions (user, item, time, and an event type, a
rating, or flag columns; CSV, parquet or a DataFrame, or a list of them), optionally an items
table (text, category, creator, creation time) and a users table (headline, about), and
writes the four landing datasets of docs/contracts.md into a ``LandingBucket``: every line it
writes passes the raw loader's parsers (socialrec/data/raw_records.py), so the whole asset graph runs
on the log. ``import_dataset`` does the same for a folder with an ``import.json``.

All the mapping is DATA (``ImportOptions``, loadable from JSON): a new log of the same shape
needs options, not code. ``import_movielens`` is one such preset plus the MovieLens-specific
reading (tags.csv aggregated into the descriptions).

Decisions (also documented in docs/importing.md):

* Events: one event per (source row, event type); ``event_id = f"{source}-{row}-{type}"``
  (``row`` = 0-based position in the interactions, continued across files), so a re-import
  writes the same ids. All the events of a row share its timestamp. A row's types come from
  ``event_col`` (+ ``event_map``), ``rating_col`` (+ ``rating_rules``), or, for a wide log,
  ``row_event`` (every row) and ``event_flags`` (a type per truthy flag column).
* Ids: a user or item id column whose values are all non-negative integers keeps them;
  otherwise every id of that column is mapped to ``hash_id(namespace, value)``, a stable
  53-bit integer (blake2b), the same in every import and every batch (report: the mapping).
* Posts: one per item with at least one event; ``created_at`` = ``created_col`` when given
  and not after the first interaction, else the first interaction; ``category_id`` from the
  vocabulary (1..n over the sorted category names; the first value of a multi-valued
  category; ``unknown`` when the item has none); ``media_type`` a fixed option;
  ``description`` = the text columns joined with ". ".
* Creators: ``creator_col`` (user ids, or ``creator_ids="separate"``: ``hash_id("creator",
  value)``); posts without one get a synthetic creator user per category
  (``CREATOR_ID_BASE + category_id``), one for the source (``CREATOR_ID_BASE``), one per item
  (``hash_id("item-creator", item)``), or none (``creator="none"``: ``creator_id`` null, an
  unknown creator). Creators are written as users (created at their first post).
* Users: every user with an event; ``created_at`` = the first interaction; headline / about
  empty unless a users table gives them; ``onboarding_categories`` = the ``onboarding_top_k``
  most frequent categories among the user's first ``onboarding_first_n`` interactions (rows
  with a DISLIKE/REPORT left out; ties: the earlier first occurrence), a proxy for what the
  user would have picked at sign-up.
* Times are written as ISO-8601 UTC; ``shift_to`` moves the whole log (creation times too) by
  whole days so that it starts on a given date (the Dagster event partitions start at
  SOCIALREC_DEMO_START_DATE). Events in the future (after the shift) are dropped, since the
  loader would quarantine them.
* Files: ``events/dt=<day>/<source>-events-NNNN.jsonl.gz`` per UTC day of the events; posts,
  users and categories in ``<dataset>/dt=<last day>/<source>-<dataset>-NNNN.jsonl.gz``.
"""

from socialrec.data.importers.cli import _parse_event_map, main
from socialrec.data.importers.core import import_interactions
from socialrec.data.importers.datasets import CONFIG_FILE, import_dataset, load_dataset
from socialrec.data.importers.movielens import MOVIELENS_OPTIONS, import_movielens, movielens_items
from socialrec.data.importers.options import (
    CREATOR_ID_BASE,
    CREATOR_ID_SPACES,
    CREATOR_MODES,
    FIVE_STAR_RULES,
    HASH_ID_BITS,
    RATING_PRESETS,
    TIME_UNITS,
    ImportOptions,
)
from socialrec.data.importers.reading import hash_id, read_table

__all__ = [
    "CONFIG_FILE",
    "CREATOR_ID_BASE",
    "CREATOR_ID_SPACES",
    "CREATOR_MODES",
    "FIVE_STAR_RULES",
    "HASH_ID_BITS",
    "MOVIELENS_OPTIONS",
    "RATING_PRESETS",
    "TIME_UNITS",
    "ImportOptions",
    "_parse_event_map",
    "hash_id",
    "import_dataset",
    "import_interactions",
    "import_movielens",
    "load_dataset",
    "main",
    "movielens_items",
    "read_table",
]
