"""The experiment mart and its check on a tiny DuckDB warehouse: generated events of four arms
(control; ``neutral``, whose users behave exactly like control's; ``bad``, with planted
dislikes; the holdout, also worse) plus lines without a variant, landed, loaded and built by
dbt (``experiment_daily_outcomes`` and its dbt tests). The mart equals a pandas computation of
its definition (Wilson intervals from scipy), and the Dagster check flags ``bad`` only."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binomtest

from assets.dbt import experiment_negative_rate
from assets.resources import SettingsResource, WarehouseResource
from socialrec.settings import POSITIVE_EVENTS
from tests.test_dbt_layer import Warehouse

pytestmark = pytest.mark.integration

DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")
N_USERS, N_POSTS = 100, 60  # users per arm
NEGATIVE_RATE = {"control": 0.03, "neutral": 0.03, "bad": 0.12, "holdout": 0.08}


def _events() -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(5)
    rows = []
    for u in range(1, N_USERS + 1):  # control's users; neutral's copy them (uid + 1000)
        for _ in range(12):
            post, day = int(rng.integers(N_POSTS)), DAYS[int(rng.integers(3))]
            pos, neg = rng.random() < 0.25, rng.random()
            rows.append((u, post, day, pos, neg))
    out = []
    for arm, offset in (("control", 0), ("neutral", 1000), ("bad", 2000), ("holdout", 3000)):
        for u, post, day, pos, neg in rows:
            uid, ts = u + offset, pd.Timestamp(day) + pd.Timedelta(hours=10 + post % 10)
            out.append((uid, post, "IMPRESSION", ts, arm))
            if pos:  # engagement an hour later, sometimes twice (counted once)
                out.append((uid, post, "LIKE", ts + pd.Timedelta(hours=1), arm))
                if post % 3 == 0:
                    out.append((uid, post, "VIEW_FULL", ts + pd.Timedelta(hours=2), arm))
            if neg < NEGATIVE_RATE[arm]:
                out.append((uid, post, "DISLIKE", ts + pd.Timedelta(minutes=30), arm))
    frame = pd.DataFrame(out, columns=["user_id", "post_id", "event_type", "ts", "variant"])
    # a dislike the next day (counted on the impression's day), a like without an impression
    # (no exposure), lines of an older app without a variant (left out)
    extra = [
        (1, 59, "IMPRESSION", pd.Timestamp("2026-01-01 23:50"), "control"),
        (1, 59, "DISLIKE", pd.Timestamp("2026-01-02 00:10"), "control"),
        (2, 58, "LIKE", pd.Timestamp("2026-01-02 12:00"), "control"),
        (3, 57, "IMPRESSION", pd.Timestamp("2026-01-02 12:00"), None),
        (3, 57, "LIKE", pd.Timestamp("2026-01-02 12:05"), None),
    ]
    frame = pd.concat([frame, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)
    return frame.assign(event_id=[f"e{i}" for i in range(len(frame))])


def _expected(events: pd.DataFrame) -> pd.DataFrame:
    ev = events[events.variant.notna()].assign(
        imp_ts=lambda d: d.ts.where(d.event_type == "IMPRESSION"),
        pos=lambda d: d.event_type.isin(POSITIVE_EVENTS),
        neg=lambda d: d.event_type.isin(["DISLIKE", "REPORT"]),
    )
    pairs = ev.groupby(["variant", "user_id", "post_id"]).agg(
        first=("imp_ts", "min"), pos=("pos", "max"), neg=("neg", "max")
    )
    pairs = pairs[pairs["first"].notna()].reset_index()
    pairs["day"] = pairs["first"].dt.date
    out = pairs.groupby(["variant", "day"]).agg(
        users=("user_id", "nunique"),
        impressions=("post_id", "size"),
        positives=("pos", "sum"),
        negatives=("neg", "sum"),
    )
    out = out.reset_index()
    for what in ("positive", "negative"):
        n, x = out["impressions"], out[f"{what}s"]
        out[f"{what}_rate"] = x / n
        cis = [
            binomtest(int(a), int(b)).proportion_ci(method="wilson")
            for a, b in zip(x, n, strict=True)
        ]
        out[f"{what}_rate_lower"] = [c.low for c in cis]
        out[f"{what}_rate_upper"] = [c.high for c in cis]
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    wh = Warehouse(tmp_path_factory.mktemp("exp"))
    events = _events()
    users = sorted(set(events.user_id))
    wh.land("categories/categories.jsonl.gz", [{"category_id": 0, "name": "all"}])
    created = "2025-12-01T00:00:00Z"
    wh.land("users/users-0.jsonl.gz", [{"user_id": int(u), "created_at": created} for u in users])
    posts = [
        {"post_id": p, "creator_id": 99_999, "category_id": 0, "media_type": "text",
         "description": "x", "created_at": created}
        for p in range(N_POSTS)
    ]  # fmt: skip
    wh.land("users/users-1.jsonl.gz", [{"user_id": 99_999, "created_at": created}])
    wh.land("posts/posts-0.jsonl.gz", posts)
    for day in DAYS:
        part = events[events.ts.dt.strftime("%Y-%m-%d") == day]
        lines = []
        for r in part.itertuples():
            line = {"event_id": r.event_id, "user_id": int(r.user_id), "post_id": int(r.post_id),
                    "event_type": r.event_type, "ts": r.ts.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
            if r.variant is not None:  # an older app's line has no variant key at all
                line["variant"] = r.variant
            lines.append(line)
        wh.land(f"events/dt={day}/part-0.jsonl.gz", lines)
    for name in ("categories", "users", "posts"):
        wh.load_dimension(name)
    wh.load_events(*DAYS)
    results = wh.dbt("build")  # every model: the dbt tests of the parents need them
    assert [r["unique_id"] for r in results if r["status"] not in ("success", "pass")] == []
    return wh, events


def test_the_variant_reaches_fct_interactions(built):
    wh, events = built
    fct = wh.table("fct_interactions").set_index("event_id")
    expected = events.set_index("event_id")["variant"]
    assert fct["variant"].where(fct["variant"].notna(), None).to_dict() == expected.to_dict()


def test_the_mart_equals_a_pandas_computation(built):
    wh, events = built
    mart = wh.table("experiment_daily_outcomes")
    mart["day"] = pd.to_datetime(mart["day"]).dt.date
    got = mart.sort_values(["variant", "day"], ignore_index=True)
    want = _expected(events).sort_values(["variant", "day"], ignore_index=True)
    assert set(got.variant) == {"control", "neutral", "bad", "holdout"}
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False, rtol=1e-9)
    # the late dislike counts on its impression's day; the like without an impression does not
    assert (
        got.loc[got.variant.eq("control"), "negatives"].sum()
        == want.loc[want.variant.eq("control"), "negatives"].sum()
    )


def test_the_check_flags_the_bad_variant_and_passes_the_neutral_one(built):
    wh, _ = built
    settings = SettingsResource(data_dir=str(wh.settings.data_dir))
    result = experiment_negative_rate(
        settings=settings, warehouse=WarehouseResource.from_settings(settings)
    )
    assert result.passed is False
    assert result.metadata["worse"].value == "bad"
    arms = {
        k.removeprefix("arm_"): v.value for k, v in result.metadata.items() if k.startswith("arm_")
    }
    assert arms["bad"]["worse"] is True and arms["bad"]["p_value"] < 0.05
    assert arms["neutral"]["worse"] is False and arms["neutral"]["p_value"] > 0.4
    # the holdout is worse too, reported but never flagged
    assert arms["holdout"]["worse"] is True and arms["holdout"]["negative_rate"] > 0.05
