"""Offline evaluation: the real 4-stage pipeline for held-out users, beside baselines.

Protocol (temporal, full ranking):

* The ML sets carry a time split (``train`` / ``validation`` / ``test``: the first 80%, next
  10%, last 10% of the event time range). Models and baselines learn from ``train``.
* The evaluated users are those with at least one positive in ``test``; their relevant items
  are those test positives. Everything a user was exposed to before the test period (train and
  validation samples and positives) is "seen" and excluded from every method's candidates, as
  the pipeline's filtering stage does online.
* Every method ranks the whole catalog (no sampled negatives). Our pipeline runs
  :class:`socialrec.recommender.Recommender` — the code the service runs — with exact
  inner-product search (:class:`socialrec.index.InMemoryIndex`) in place of the ANN index,
  offline features (:class:`FrameFeatures`) in place of the Feast online store, and an
  in-memory seen store holding the pre-test exposure.

Metrics per method: recall@{10,50,100} of its ranked list (for our pipeline, of the retrieval
candidates after filtering, i.e. the retrieval stage), NDCG@10, MRR@10, precision@10 and
recall@10 of the final top 10, catalog coverage@10, and popularity bias of the top 10 (share
going to the top 1% of posts by training positives; Gini). The same metrics per user segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec import metrics as m

KS = (10, 50, 100)
FINAL_K = 10
NEW_USER_MAX_POSITIVES = 5  # users with fewer training positives form the "new" segment


class FrameFeatures:
    """Online features served from frames (one row per id, latest values), the shape
    :mod:`socialrec.features` online readers return: indexed by id, with ``found``.

    Like the online store, an id is ``found`` only when it has feature values: a row of nulls
    (a point-in-time read before the entity existed) is an unknown entity (cold start)."""

    def __init__(self, users: pd.DataFrame, posts: pd.DataFrame):
        self._users = self._known(users.drop_duplicates("user_id", keep="last"), "user_id")
        self._posts = self._known(posts.drop_duplicates("post_id", keep="last"), "post_id")

    @staticmethod
    def _known(frame: pd.DataFrame, id_col: str) -> pd.DataFrame:
        frame = frame.set_index(id_col)
        scalars = [c for c in frame.columns if not c.endswith("_embedding")]
        return frame[frame[scalars].notna().any(axis=1)] if scalars else frame

    @staticmethod
    def _lookup(frame: pd.DataFrame, ids: Iterable[int], name: str) -> pd.DataFrame:
        ids = list(dict.fromkeys(int(i) for i in ids))
        out = frame.reindex(ids)
        out.index.name = name
        out["found"] = out.index.isin(frame.index)
        return out

    def users(self, user_ids: Sequence[int]) -> pd.DataFrame:
        return self._lookup(self._users, user_ids, "user_id")

    def posts(self, post_ids: Sequence[int]) -> pd.DataFrame:
        return self._lookup(self._posts, post_ids, "post_id")


@dataclass
class EvalData:
    train: pd.DataFrame  # user_id, post_id, ts: training positives
    relevant: dict[int, set[int]]  # held-out users -> their test positives
    seen: dict[int, set[int]]  # user -> everything before the test period
    n_items: int
    popularity: dict[int, float]  # post -> training positives
    segments: dict[int, dict[str, str]] = field(default_factory=dict)

    @property
    def users(self) -> list[int]:
        return sorted(self.relevant)


def build_eval_data(
    positives: pd.DataFrame,
    samples: pd.DataFrame,
    catalog_post_ids: Iterable[int],
    user_categories: Mapping[int, Sequence[int]] | None = None,
    max_users: int | None = None,
    seed: int = 42,
) -> EvalData:
    """The evaluation split from ``ml_retrieval_positives`` and ``ml_ranking_samples``.

    Only posts of the catalog count (relevant items outside it cannot be recommended by
    anyone). ``user_categories``: each user's preferred categories (the first one names the
    category segment). ``max_users`` samples that many held-out users (seeded).
    """
    catalog = {int(p) for p in catalog_post_ids}
    pos = positives[positives["post_id"].astype("int64").isin(catalog)]
    train = pos[pos["split"] == "train"][["user_id", "post_id", "ts"]].reset_index(drop=True)
    test = pos[pos["split"] == "test"]
    before = pd.concat(
        [
            pos.loc[pos["split"] != "test", ["user_id", "post_id"]],
            samples.loc[samples["split"] != "test", ["user_id", "post_id"]],
        ]
    )
    seen: dict[int, set[int]] = {
        int(u): set(map(int, g)) for u, g in before.groupby("user_id")["post_id"]
    }
    relevant: dict[int, set[int]] = {}
    for u, g in test.groupby("user_id")["post_id"]:
        rel = set(map(int, g)) - seen.get(int(u), set())
        if rel:
            relevant[int(u)] = rel
    if max_users is not None and len(relevant) > max_users:
        rng = np.random.default_rng(seed)
        keep = set(rng.choice(sorted(relevant), size=max_users, replace=False).tolist())
        relevant = {u: r for u, r in relevant.items() if u in keep}
    popularity = train.groupby("post_id").size().astype(float)
    n_train = train.groupby("user_id").size()
    segments = {}
    for u in relevant:
        activity = "new" if n_train.get(u, 0) < NEW_USER_MAX_POSITIVES else "active"
        cats = list((user_categories or {}).get(u, ()))
        segments[u] = {"activity": activity, "category": str(cats[0]) if cats else "none"}
    return EvalData(
        train=train,
        relevant=relevant,
        seen=seen,
        n_items=len(catalog),
        popularity={int(k): float(v) for k, v in popularity.items()},
        segments=segments,
    )


def score_rankings(
    ranked: Mapping[int, Sequence[int]],
    data: EvalData,
    final: Mapping[int, Sequence[int]] | None = None,
    users: Iterable[int] | None = None,
) -> dict[str, float]:
    """The metrics of one method: ``ranked`` (long lists, for recall@K) and ``final`` (its top
    10; default: the head of ``ranked``), over ``users`` (default: every held-out user)."""
    users = list(data.relevant if users is None else users)
    relevant = {u: data.relevant[u] for u in users}
    final = final if final is not None else ranked
    ranked = {u: list(ranked.get(u, ())) for u in users}
    final = {u: list(final.get(u, ()))[:FINAL_K] for u in users}
    out = {f"recall@{k}": m.recall_at_k(ranked, relevant, k) for k in KS}
    out.update(
        {
            f"ndcg@{FINAL_K}": m.ndcg_at_k(final, relevant, FINAL_K),
            f"mrr@{FINAL_K}": m.mrr(final, relevant, FINAL_K),
            f"precision@{FINAL_K}": m.precision_at_k(final, relevant, FINAL_K),
            f"final_recall@{FINAL_K}": m.recall_at_k(final, relevant, FINAL_K),
            f"coverage@{FINAL_K}": m.catalog_coverage(final, data.n_items, FINAL_K),
        }
    )
    bias = m.popularity_bias(final, data.popularity, FINAL_K)
    out["top1%_share"] = bias["top_share"]
    out["gini"] = bias["gini"]
    out["users"] = float(len(users))
    return out


# the offline evaluation also scores the pipeline with the feed's policies off: what the
# diversity caps, the fresh share of cold start, the new-post boost and sampling cost in accuracy
PLAIN = "socialrec_plain"
PLAIN_POLICIES = {
    "max_per_category": None,
    "max_per_creator": None,
    "diversity_decay": 1.0,
    "cold_start_fresh_share": 0.0,
    "new_post_boost_hours": 0.0,
    "softmax_temperature": 0.0,
    "promoted_post_ids": [],
}


def run_pipeline(recommender, data: EvalData, now: Any = None) -> tuple[dict, dict]:
    """(retrieval candidates after filtering, final top 10) of the 4-stage pipeline per user.

    The recommender's seen store must hold ``data.seen`` (see :func:`seen_store_of`)."""
    candidates, final = {}, {}
    for u in data.users:
        # one request for the longest list; the final top 10 is its head
        rec = recommender.recommend(u, max(KS), now=now)
        items = [it["post_id"] for it in rec.items]
        # personalized: the retrieval stage's candidates; cold start: its popular/fresh list
        candidates[u] = rec.candidates or items
        final[u] = items[:FINAL_K]
    return candidates, final


def seen_store_of(data: EvalData):
    from socialrec.seen import InMemorySeenStore

    store = InMemorySeenStore()
    for u, posts in data.seen.items():
        store.mark(u, posts, "IMPRESSION")
    return store


def evaluate_baselines(
    data: EvalData, baselines: Iterable[Any], k: int = max(KS)
) -> dict[str, dict[str, float]]:
    """Fit every baseline on the training positives and score it on the held-out users."""
    out = {}
    for baseline in baselines:
        baseline.fit(data.train)
        ranked = baseline.recommend(data.users, k, data.seen)
        out[baseline.name] = {"ranked": ranked, "metrics": score_rankings(ranked, data)}
    return out


def by_segment(lists: Mapping[str, tuple[Mapping, Mapping | None]], data: EvalData) -> pd.DataFrame:
    """Metrics of every method per segment value (``activity=new``, ``category=3``, ...)."""
    rows = []
    for key in ("activity", "category"):
        values = sorted({s[key] for s in data.segments.values()})
        for value in values:
            users = [u for u, s in data.segments.items() if s[key] == value]
            for method, (ranked, final) in lists.items():
                scores = score_rankings(ranked, data, final, users)
                rows.append({"segment": f"{key}={value}", "method": method, **scores})
    return pd.DataFrame(rows)


def results_table(results: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per method; columns in the report's order."""
    cols = [
        *(f"recall@{k}" for k in KS),
        f"ndcg@{FINAL_K}",
        f"mrr@{FINAL_K}",
        f"precision@{FINAL_K}",
        f"final_recall@{FINAL_K}",
        f"coverage@{FINAL_K}",
        "top1%_share",
        "gini",
        "users",
    ]
    return pd.DataFrame.from_dict(results, orient="index")[cols]


def to_markdown(table: pd.DataFrame, index_name: str = "method") -> str:
    """A GitHub markdown table (no extra dependency)."""
    head = [index_name, *table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in table.iterrows():
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join([str(idx), *cells]) + " |")
    return "\n".join(lines)


def _axes():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4), dpi=110)


def _save(fig, ax, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_recall_curves(
    lists: Mapping[str, Mapping[int, Sequence[int]]], data: EvalData, path: str | Path
) -> Path:
    """recall@K for K = 1..100 of every method, as a PNG."""
    ks = np.unique(np.linspace(1, max(KS), 40).astype(int))
    fig, ax = _axes()
    for method, ranked in lists.items():
        ax.plot(ks, [m.recall_at_k(ranked, data.relevant, int(k)) for k in ks], label=method)
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.set_title("Held-out recall@K (temporal split, full ranking)")
    return _save(fig, ax, path)


def plot_popularity_bias(
    finals: Mapping[str, Mapping[int, Sequence[int]]], data: EvalData, path: str | Path
) -> Path:
    """Share of top-10 slots (y) going to the most popular x% of posts, per method (a Lorenz
    style curve: the diagonal would be no popularity preference at all)."""
    order = sorted(data.popularity, key=lambda i: (-data.popularity[i], i))
    rank = {p: i for i, p in enumerate(order)}
    n = max(data.n_items, 1)
    fig, ax = _axes()
    xs = np.linspace(0, 1, 101)
    for method, final in finals.items():
        # posts without training positives are tied at the head of the zero-popularity tail
        slots = [
            rank.get(p, len(order)) / n for recs in final.values() for p in list(recs)[:FINAL_K]
        ]
        if not slots:
            continue
        slots = np.sort(np.asarray(slots))
        ax.plot(xs * 100, np.searchsorted(slots, xs, side="right") / len(slots), label=method)
    ax.plot([0, 100], [0, 1], color="grey", lw=0.8, ls="--", label="no preference")
    ax.set_xlabel("most popular x% of posts (by training positives)")
    ax.set_ylabel("share of top-10 slots")
    ax.set_title("Popularity bias")
    return _save(fig, ax, path)


# ---- the whole offline evaluation (what the ``offline_evaluation`` asset runs) ---------------


@dataclass
class OfflineReport:
    table: pd.DataFrame  # one row per method
    segments: pd.DataFrame
    plots: dict[str, Path]
    protocol: str
    n_users: int

    def markdown(self) -> str:
        return to_markdown(self.table)


def test_start(rows: pd.DataFrame) -> pd.Timestamp:
    """The first ``ts`` of the test split: what every method may know ends there."""
    ts = pd.to_datetime(rows.loc[rows["split"] == "test", "ts"], utc=True)
    return ts.min() if len(ts) else pd.Timestamp.now(tz="UTC")


def run_offline_evaluation(
    settings,
    positives: pd.DataFrame,
    samples: pd.DataFrame,
    users: pd.DataFrame,
    posts: pd.DataFrame,
    two_tower,
    ranker,
    out_dir: str | Path,
    max_users: int | None = None,
) -> OfflineReport:
    """Our 4-stage pipeline and the baselines on the same temporal split.

    ``users`` / ``posts``: the entities' features as they were at the start of the test period
    (a point-in-time read, e.g. ``training.latest_features(..., as_of=test_start(positives))``):
    the ranker, the cold-start catalog and the user tower see nothing of the test period.
    """
    from socialrec.baselines import ALS, GlobalPopularity, RecentPopularity
    from socialrec.catalog import Catalog
    from socialrec.index import InMemoryIndex
    from socialrec.ranking_features import parse_categories
    from socialrec.recommender import Recommender

    now = test_start(positives)
    posts = posts.dropna(subset=["category_id"]).reset_index(drop=True)
    users = users.reset_index(drop=True)
    catalog_ids = posts["post_id"].astype("int64").tolist()
    categories = {
        int(u): parse_categories(c)
        for u, c in zip(users["user_id"], users["onboarding_categories"], strict=True)
    }
    data = build_eval_data(positives, samples, catalog_ids, categories, max_users, settings.seed)
    # post vectors as the index holds them: the age bucket at the evaluation's "now"
    index = InMemoryIndex(
        posts["post_id"], posts["category_id"], two_tower.post_embeddings(posts, now=now)
    )
    lists: dict[str, tuple[Mapping, Mapping | None]] = {}
    results = {}
    # the pipeline as configured, and the same models with the feed policies off
    variants = {"socialrec": settings, PLAIN: settings.model_copy(update=PLAIN_POLICIES)}
    for name, variant in variants.items():
        # the cold-start catalog's popularity is what was known at the start of the test period
        catalog = Catalog.from_dim_posts(
            posts.rename(columns={"created_at_ts": "created_at"}),
            fresh_share=variant.cold_start_fresh_share,
        )
        recommender = Recommender(
            FrameFeatures(users, posts),
            two_tower,
            index,
            seen_store_of(data),
            ranker,
            catalog,
            variant,
        )
        candidates, final = run_pipeline(recommender, data, now=now)
        lists[name] = (candidates, final)
        results[name] = score_rankings(candidates, data, final)
    for name, r in evaluate_baselines(
        data,
        [
            GlobalPopularity(catalog_ids),
            RecentPopularity("7D", catalog_ids),
            ALS(seed=settings.seed, candidates=catalog_ids),
        ],
    ).items():
        lists[name] = (r["ranked"], None)
        results[name] = r["metrics"]
    out_dir = Path(out_dir)
    plots = {
        "recall_at_k": plot_recall_curves(
            {k: v[0] for k, v in lists.items()}, data, out_dir / "recall_at_k.png"
        ),
        "popularity_bias": plot_popularity_bias(
            {k: (v[1] if v[1] is not None else v[0]) for k, v in lists.items()},
            data,
            out_dir / "popularity_bias.png",
        ),
    }
    protocol = (
        f"temporal split: models and baselines learn from the train split (first "
        f"{_split_share(positives, 'train'):.0%} of positives by time); evaluated on the "
        f"{len(data.users)} users with test positives (after {now:%Y-%m-%d %H:%M} UTC), full "
        f"ranking over {data.n_items} live posts, everything seen before the test period "
        f"excluded for every method; features as of the test start. {PLAIN}: the same "
        f"models and stages with the feed policies off (no category/creator caps, no fresh "
        f"share, new-post boost or sampling)."
    )
    return OfflineReport(
        results_table(results), by_segment(lists, data), plots, protocol, len(data.users)
    )


def _split_share(rows: pd.DataFrame, split: str) -> float:
    return float((rows["split"] == split).mean()) if len(rows) else 0.0
