"""A deterministic synthetic social network: users, creators, posts and interaction events.

Everything is drawn from one seeded ``numpy.random.Generator``, so the same parameters give the
same data (and, through ``landing.encode_jsonl``, the same bytes).

The latent structure that a recommender should be able to learn:

* every user has a Dirichlet interest vector over categories; their onboarding categories and
  their profile text (headline, about) come from their strongest interests;
* creators are users who post in one or two home categories; every post has a latent quality;
* users follow a few creators (creator affinity);
* a feed impression is drawn from the user's interests, the followed creators or the global
  popular pool, weighted by quality and recency; engagement (VIEW, VIEW_FULL, LIKE, COMMENT,
  SHARE, BOOKMARK) grows with interest, quality and following, DISLIKE and REPORT with the
  lack of them;
* post descriptions use a per-category vocabulary, so text embeddings carry the category signal;
* a small share of events is sent twice with the same ``event_id`` (client retries), as a real
  app would, so downstream deduplication has work to do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from socialrec.data.landing import LandingBucket, encode_jsonl, landing_key, open_bucket
from socialrec.data.vocabulary import CATEGORIES, MEDIA_PREFIX, POST_TEMPLATES, ROLES
from socialrec.settings import DEMO_RECORD, MEDIA_TYPES, Settings
from socialrec.timeutil import iso

__all__ = ["CATEGORIES", "Dataset", "generate_dataset", "main", "write_landing"]

_EVENT_LAGS_S = {
    "VIEW": 2,
    "VIEW_FULL": 25,
    "LIKE": 30,
    "COMMENT": 45,
    "SHARE": 50,
    "BOOKMARK": 55,
    "DISLIKE": 8,
    "REPORT": 12,
}


@dataclass
class Dataset:
    """The four landing datasets as DataFrames (timestamps are tz-aware UTC)."""

    users: pd.DataFrame
    posts: pd.DataFrame
    events: pd.DataFrame
    categories: pd.DataFrame


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sample_rows(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a row-wise cumulative probability matrix."""
    r = rng.random(cum.shape[0]) * cum[:, -1]
    return np.minimum((cum < r[:, None]).sum(axis=1), cum.shape[1] - 1)


def _sample_weighted(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    cum = np.cumsum(weights)
    return np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(cum) - 1)


def generate_dataset(
    n_users: int = 2000,
    n_posts: int = 5000,
    n_events: int = 200_000,
    days: int = 14,
    start_date: str = "2026-01-01",
    seed: int = 42,
    duplicate_rate: float = 0.002,
) -> Dataset:
    """Generate a whole synthetic social network. ``n_events`` is approximate (within ~10%)."""
    if min(n_users, n_posts, n_events, days) <= 0:
        raise ValueError("n_users, n_posts, n_events and days must be positive")
    rng = np.random.default_rng(seed)
    names = list(CATEGORIES)
    n_cat = len(names)
    cat_ids = np.arange(1, n_cat + 1)
    start = pd.Timestamp(start_date, tz="UTC")
    day_s = 86_400

    # ---- users ------------------------------------------------------------------------------
    interests = rng.dirichlet(np.full(n_cat, 0.3), size=n_users)
    activity = rng.lognormal(0.0, 1.0, n_users)
    # 90% signed up during the 60 days before the window, 10% join during it (new users)
    joined_late = rng.random(n_users) < 0.10
    created_s = np.where(
        joined_late,
        rng.uniform(0, days * day_s, n_users),
        rng.uniform(-60 * day_s, -1 * day_s, n_users),
    )
    users_rows = []
    for u in range(n_users):
        order = np.argsort(-interests[u])
        n_onb = int(rng.integers(1, 4))
        onboarding = sorted(int(cat_ids[c]) for c in order[:n_onb])
        kw = [CATEGORIES[names[order[i % 2]]][int(rng.integers(0, 12))] for i in range(3)]
        role = ROLES[int(rng.integers(0, len(ROLES)))]
        users_rows.append(
            {
                "user_id": u + 1,
                "created_at": start + pd.Timedelta(seconds=round(float(created_s[u]))),
                "headline": f"{role.capitalize()} into {kw[0]} and {kw[1]}",
                "about": f"I post and read about {names[order[0]]}, {kw[2]} and "
                f"{names[order[1]]}. Always looking for great {kw[0]} content.",
                "onboarding_categories": onboarding,
            }
        )
    users = pd.DataFrame(users_rows)

    # ---- creators and posts -----------------------------------------------------------------
    n_creators = max(1, n_users // 10)
    early = np.flatnonzero(~joined_late)
    pool = early if len(early) >= n_creators else np.arange(n_users)
    creators = rng.choice(pool, size=n_creators, replace=False)
    creator_home = np.stack(
        [np.argmax(interests[creators], axis=1), rng.integers(0, n_cat, n_creators)], axis=1
    )
    creator_skill = rng.normal(0, 0.6, n_creators)
    post_creator_idx = _sample_weighted(rng, rng.lognormal(0, 0.8, n_creators), n_posts)
    post_cat = creator_home[post_creator_idx, (rng.random(n_posts) < 0.25).astype(int)]
    post_quality = creator_skill[post_creator_idx] + rng.normal(0, 0.8, n_posts)
    # 30% of the posts exist before the window, the rest appear during it
    post_created_s = np.where(
        rng.random(n_posts) < 0.3,
        rng.uniform(-30 * day_s, 0, n_posts),
        rng.uniform(0, days * day_s, n_posts),
    )
    # a creator cannot post before joining
    post_created_s = np.maximum(post_created_s, created_s[creators[post_creator_idx]] + 3600)
    media = rng.choice(len(MEDIA_TYPES), size=n_posts, p=[0.25, 0.3, 0.35, 0.1])
    descriptions = []
    for p in range(n_posts):
        vocab = CATEGORIES[names[post_cat[p]]]
        a, b, c = rng.choice(12, size=3, replace=False)
        tmpl = POST_TEMPLATES[int(rng.integers(0, len(POST_TEMPLATES)))]
        text = tmpl.format(a=vocab[a], b=vocab[b], c=vocab[c])
        descriptions.append(MEDIA_PREFIX[MEDIA_TYPES[media[p]]] + text)
    posts = pd.DataFrame(
        {
            "post_id": np.arange(1, n_posts + 1),
            "creator_id": creators[post_creator_idx] + 1,
            "category_id": cat_ids[post_cat],
            "media_type": [MEDIA_TYPES[m] for m in media],
            "description": descriptions,
            "created_at": start + pd.to_timedelta(np.round(post_created_s), unit="s"),
        }
    )

    # ---- follows: each user follows up to 3 creators, mostly in their interests -------------
    follow_w = interests[:, creator_home[:, 0]] + 1e-3  # [n_users, n_creators]
    follows = np.stack(
        [_sample_rows(rng, np.cumsum(follow_w, axis=1)) for _ in range(3)], axis=1
    )  # creator indices
    creator_posts = [np.flatnonzero(post_creator_idx == c) for c in range(n_creators)]

    # ---- events -----------------------------------------------------------------------------
    interest_cum = np.cumsum(interests, axis=1)
    n_imp_total = max(days, int(n_events / 3.1))  # ~3.1 events per impression
    per_day = np.full(days, n_imp_total // days)
    per_day[: n_imp_total % days] += 1
    ev_users, ev_posts, ev_ts, ev_type, ev_dwell = [], [], [], [], []
    for d in range(days):
        day_start = d * day_s
        eligible = post_created_s < day_start
        if not eligible.any():
            eligible = post_created_s < day_start + day_s
        age_days = np.clip((day_start - post_created_s) / day_s, 0, None)
        weight = np.where(eligible, np.exp(post_quality) * np.exp(-age_days / 5.0), 0.0)
        active_w = activity * (created_s < day_start + day_s)
        n = int(per_day[d])
        u = _sample_weighted(rng, active_w, n)
        mode = rng.random(n)
        chosen = np.empty(n, dtype=np.int64)
        # personalised by interest (55%)
        pers = mode < 0.55
        cats = _sample_rows(rng, interest_cum[u[pers]])
        picked = np.empty(pers.sum(), dtype=np.int64)
        for c in range(n_cat):
            sel = cats == c
            if not sel.any():
                continue
            w = np.where(post_cat == c, weight, 0.0)
            if w.sum() == 0:
                w = weight
            picked[sel] = _sample_weighted(rng, w, int(sel.sum()))
        chosen[pers] = picked
        # followed creators (15%)
        fol = (mode >= 0.55) & (mode < 0.70)
        for i in np.flatnonzero(fol):
            cp = creator_posts[follows[u[i], int(rng.integers(0, 3))]]
            w = weight[cp] if len(cp) else np.array([])
            chosen[i] = (
                cp[_sample_weighted(rng, w, 1)[0]]
                if len(cp) and w.sum() > 0
                else _sample_weighted(rng, weight, 1)[0]
            )
        # global popular + fresh (30%)
        glob = mode >= 0.70
        chosen[glob] = _sample_weighted(rng, weight, int(glob.sum()))

        ts = day_start + rng.uniform(0, day_s - 120, n)
        ts = np.maximum(ts, np.maximum(created_s[u], post_created_s[chosen]) + 1)
        followed = (follows[u] == post_creator_idx[chosen][:, None]).any(axis=1)
        s = (
            0.9 * np.log(interests[u, post_cat[chosen]] * n_cat + 0.1)
            + 0.6 * post_quality[chosen]
            + 0.8 * followed
        )
        draws = {
            "VIEW": _sigmoid(s + 0.5),
            "DISLIKE": _sigmoid(-s - 3.0),
            "REPORT": _sigmoid(-s - 5.5),
        }
        viewed = rng.random(n) < draws["VIEW"]
        outcome = {"IMPRESSION": np.ones(n, dtype=bool), "VIEW": viewed}
        for name, shift in (
            ("VIEW_FULL", -0.3),
            ("LIKE", -1.2),
            ("COMMENT", -3.0),
            ("SHARE", -3.2),
            ("BOOKMARK", -2.8),
        ):
            outcome[name] = viewed & (rng.random(n) < _sigmoid(s + shift))
        outcome["DISLIKE"] = rng.random(n) < draws["DISLIKE"]
        outcome["REPORT"] = outcome["DISLIKE"] & (rng.random(n) < _sigmoid(-s - 2.5))
        dwell = np.where(viewed, rng.lognormal(9.0 + 0.3 * s, 0.6), rng.lognormal(6.5, 0.5))
        for name, mask in outcome.items():
            idx = np.flatnonzero(mask)
            ev_users.append(u[idx])
            ev_posts.append(chosen[idx])
            ev_ts.append(ts[idx] + _EVENT_LAGS_S.get(name, 0))
            ev_type.append(np.full(len(idx), name, dtype=object))
            ev_dwell.append(
                dwell[idx].astype(np.int64)
                if name in ("VIEW", "VIEW_FULL")
                else np.full(len(idx), -1)
            )

    u_all = np.concatenate(ev_users)
    ts_all = np.concatenate(ev_ts)
    order = np.lexsort((np.concatenate(ev_type).astype(str), ts_all))
    n_ev = len(order)
    event_ids = [f"{x:016x}" for x in rng.integers(0, 2**63 - 1, n_ev, dtype=np.int64)]
    dwell_all = np.concatenate(ev_dwell)[order]
    events = pd.DataFrame(
        {
            "event_id": event_ids,
            "user_id": u_all[order] + 1,
            "post_id": np.concatenate(ev_posts)[order] + 1,
            "event_type": np.concatenate(ev_type)[order],
            "ts": start + pd.to_timedelta(np.round(ts_all[order]), unit="s"),
            "dwell_ms": pd.array(np.where(dwell_all >= 0, dwell_all, 0), dtype="Int64"),
        }
    )
    events.loc[dwell_all < 0, "dwell_ms"] = pd.NA
    # client retries: the same event (same event_id) delivered twice
    n_dup = int(round(duplicate_rate * n_ev))
    if n_dup:
        dups = events.iloc[np.sort(rng.choice(n_ev, size=n_dup, replace=False))]
        events = pd.concat([events, dups]).sort_values("ts", kind="stable", ignore_index=True)

    categories = pd.DataFrame({"category_id": cat_ids, "name": names})
    return Dataset(users=users, posts=posts, events=events, categories=categories)


def _records(df: pd.DataFrame, ts_cols: tuple[str, ...]) -> Iterator[dict]:
    for rec in df.to_dict("records"):
        for c in ts_cols:
            rec[c] = iso(rec[c])  # whole seconds: 2026-01-01T00:00:00Z
        for k, v in rec.items():
            if v is pd.NA:
                rec[k] = None
            elif isinstance(v, np.integer):
                rec[k] = int(v)
        yield rec


def write_landing(ds: Dataset, bucket: LandingBucket, rows_per_file: int = 50_000) -> list[str]:
    """Write the dataset in the landing layout, one ``dt=`` folder per day; returns the keys."""
    keys: list[str] = []
    specs = (
        ("events", ds.events, "ts", ("ts",)),
        ("posts", ds.posts, "created_at", ("created_at",)),
        ("users", ds.users, "created_at", ("created_at",)),
    )
    for name, df, by, ts_cols in specs:
        day = df[by].dt.strftime("%Y-%m-%d")
        for d, part in df.groupby(day, sort=True):
            for i in range(0, len(part), rows_per_file):
                key = landing_key(name, d, f"{name}-{i // rows_per_file:04d}.jsonl.gz")
                bucket.write_bytes(
                    key, encode_jsonl(_records(part.iloc[i : i + rows_per_file], ts_cols))
                )
                keys.append(key)
    first_day = ds.events["ts"].min().strftime("%Y-%m-%d")
    key = landing_key("categories", first_day, "categories-0000.jsonl.gz")
    bucket.write_bytes(key, encode_jsonl(_records(ds.categories, ())))
    keys.append(key)
    return keys


def main(argv: list[str] | None = None) -> None:
    settings = Settings()
    p = argparse.ArgumentParser(description="Write the synthetic demo data into the landing bucket")
    p.add_argument("--users", type=int, default=settings.demo_users)
    p.add_argument("--posts", type=int, default=settings.demo_posts)
    p.add_argument("--events", type=int, default=settings.demo_events)
    p.add_argument("--days", type=int, default=settings.demo_days)
    p.add_argument(
        "--start-date",
        help="the first day or instant (default: SOCIALREC_DEMO_START_DATE, else --days ending "
        "now, so that the demo's last day is today)",
    )
    p.add_argument("--seed", type=int, default=settings.seed)
    p.add_argument("--landing", default=settings.landing_uri, help="directory or gs://bucket")
    args = p.parse_args(argv)
    settings.ensure_dirs()
    t0 = dt.datetime.now()
    days = settings.model_copy(update={"demo_days": args.days})
    start = args.start_date or iso(days.demo_start(recorded=False))
    ds = generate_dataset(args.users, args.posts, args.events, args.days, start, args.seed)
    keys = write_landing(ds, open_bucket(args.landing))
    # the raw_events partitions start with these days, even on a later day (Settings.demo_start)
    record = {"start": iso(pd.Timestamp(start, tz="UTC")), "days": args.days}
    (settings.data_dir / DEMO_RECORD).write_text(json.dumps(record) + "\n")
    secs = (dt.datetime.now() - t0).total_seconds()
    print(
        f"wrote {len(ds.users)} users, {len(ds.posts)} posts, {len(ds.events)} events "
        f"in {len(keys)} files to {args.landing} ({secs:.1f}s)"
    )


if __name__ == "__main__":
    main()
