"""Forgetting a user and deleting a post: the durable request, and what the data layer keeps.

A deletion is a TOMBSTONE line in the landing bucket, in the dataset of what is deleted
(``users/dt=<today>/forget-*.jsonl.gz`` ``{"user_id": 7, "deleted": true, "updated_at": ...}``,
``posts/...`` likewise; docs/contracts.md): the warehouse gets it through the normal load path
(``raw_users`` / ``raw_posts`` reload every landed version, the latest one wins in
``stg_users`` / ``stg_posts``), so a deletion is as durable as the landing bucket and survives
a full rebuild. What follows from it (the ``deletion_job``, docs/operations.md):

* the events of a deleted USER are left out of ``stg_event_lines`` (not quarantined: gone from
  ``stg_events``, ``fct_interactions``, the feature marts, the ML sets and the quarantine
  table); the events of a deleted POST stay in the facts but never in the ML sets (as before);
* the feature tables, the text embeddings and the online store keep only live users and posts
  (:func:`live`, ``socialrec.features.deletion``), the seen store forgets the user's rows and
  blocks (``SeenStore.forget_user``), both Milvus collections drop a deleted post.

The landing files themselves are NOT rewritten (the event lines of a forgotten user stay in
``events/dt=*/`` and in ``raw.events``, excluded by the tombstone at every build): erasing the
raw lines is a landing rewrite, left to the bucket's retention (docs/operations.md).
"""

from __future__ import annotations

import datetime as dt
import uuid

import pandas as pd

from socialrec import timeutil
from socialrec.data.landing import LandingBucket, encode_jsonl, landing_key

KINDS = {"user": ("users", "user_id"), "post": ("posts", "post_id")}


def tombstone_rows(kind: str, ids, now: dt.datetime) -> list[dict]:
    """The landing lines that delete ``ids`` (users or posts): one tombstone each."""
    if kind not in KINDS:
        raise ValueError(f"unknown deletion kind {kind!r}; one of {sorted(KINDS)}")
    id_col = KINDS[kind][1]
    stamp = timeutil.iso(now)
    return [{id_col: int(i), "deleted": True, "updated_at": stamp} for i in ids]


def write_tombstones(bucket: LandingBucket, kind: str, ids, now: dt.datetime | None = None) -> str:
    """Write the tombstones of ``ids`` as one landing file of today; returns its key."""
    now = now or timeutil.utc_now()
    rows = tombstone_rows(kind, ids, now)
    dataset = KINDS[kind][0]
    name = f"forget-{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl.gz"
    key = landing_key(dataset, now.date(), name)
    bucket.write_bytes(key, encode_jsonl(rows))
    return key


def live(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ``dim_users`` / ``dim_posts`` frame that are not tombstoned."""
    if "is_deleted" not in frame.columns:
        return frame
    return frame[~frame["is_deleted"].fillna(False).astype(bool)]


def deleted_ids(frame: pd.DataFrame, id_col: str) -> list[int]:
    """The ids of the tombstoned rows of a ``dim_users`` / ``dim_posts`` frame, sorted."""
    if "is_deleted" not in frame.columns:
        return []
    gone = frame["is_deleted"].fillna(False).astype(bool)
    return sorted(int(i) for i in frame.loc[gone, id_col])
