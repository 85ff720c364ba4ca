"""Training of the models, framework-free (the Dagster assets call these).

Training sets are read through Feast point-in-time joins (``get_historical_features``), so the
models learn from exactly the feature definitions the service reads online, as they were at
the right moment: :func:`latest_features` reads every user's / post's features at one moment,
:func:`point_in_time` each row's at its own time. The feature histories are daily (cumulative
counts up to each day's end, valid from the next midnight), so a feature never includes its
row's own day.

* :func:`train_two_tower` fits the TFRS model twice: on the train split (early-stopped on
  validation: the selection, and the model the ranker's training replays go through), then on
  train + validation for the chosen epochs (the challenger that serves), evaluated on test.
* The ranker is trained on replayed requests: :mod:`socialrec.training.ranker`.
* :func:`quality_gate` compares a challenger with the champion on one held-out set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec.features import store as fs
from socialrec.features.tables import ENTITY_IDS, TIMESTAMP
from socialrec.models import registry
from socialrec.models.metrics import evaluate_retrieval
from socialrec.settings import Settings
from socialrec.timeutil import timestamp, timestamps, utc_now

RETRIEVAL_KS = (10, 50, 100)


@dataclass
class TrainResult:
    model: Any
    params: dict[str, Any]
    metrics: dict[str, float]
    data: dict[str, Any] = field(default_factory=dict)


def latest_features(store, entity: str, ids, as_of: dt.datetime | None = None) -> pd.DataFrame:
    """The features of every ``entity`` (``user`` or ``post``) id as they were at ``as_of``
    (default: now): a Feast point-in-time join with one entity row per id over both of the
    entity's views. Columns: the id and the features; ids without a row get nulls."""
    id_col = ENTITY_IDS[entity]
    ids = pd.unique(np.asarray(list(ids), dtype=np.int64))
    stamp = timestamp(utc_now() if as_of is None else as_of)  # epoch seconds too (eventlog)
    entity_df = pd.DataFrame({id_col: ids, TIMESTAMP: stamp})
    out = fs.historical_entity_features(store, entity, entity_df)
    return out.drop(columns=[TIMESTAMP])


class StoreFeatures:
    """A replay's feature reader (``socialrec.recommender.replay.FeatureReader``): the
    :func:`latest_features` of the Feast store of ``settings`` as of an instant. Picklable:
    a process it is sent to opens the store again (the ranker's side replay processes)."""

    def __init__(self, settings: Settings):
        self.settings, self._store = settings, None

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "_store": None}

    def __call__(self, entity: str, ids, as_of) -> pd.DataFrame:
        if self._store is None:
            self._store = fs.feature_store(self.settings)
        return latest_features(self._store, entity, ids, as_of=as_of)


def training_frames(store, positives_or_samples: pd.DataFrame, as_of=None):
    """(users, posts): the features at ``as_of`` of every user and post the rows mention."""
    users = latest_features(store, "user", positives_or_samples["user_id"], as_of)
    posts = latest_features(store, "post", positives_or_samples["post_id"], as_of)
    return users, posts


def split_end(rows: pd.DataFrame, split: str = "train") -> pd.Timestamp:
    """The latest ``ts`` of a split: the moment a model trained on it may know about."""
    ts = pd.to_datetime(rows.loc[rows["split"] == split, "ts"], utc=True)
    return ts.max() if len(ts) else pd.Timestamp.now(tz="UTC")


def ranker_frames(store, samples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(users, posts) aligned row by row with ``samples``: each sample's user and post
    features as they were at the sample's ``ts`` (one point-in-time join per entity; the two
    entities' views share feature names, so they are not joined in one call)."""
    return point_in_time(store, "user", samples), point_in_time(store, "post", samples)


def point_in_time(store, entity: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The ``entity``'s features for every row of ``rows`` (its id column and ``ts``) as they
    were at that row's ``ts``; one point-in-time join, rows in the same order."""
    id_col = ENTITY_IDS[entity]
    entity_df = pd.DataFrame(
        {
            id_col: rows[id_col].to_numpy(dtype=np.int64),
            TIMESTAMP: timestamps(rows["ts"]).to_numpy(),
        }
    )
    out = fs.historical_entity_features(store, entity, entity_df)
    return out.drop(columns=[TIMESTAMP])


def champion_two_tower(settings: Settings):
    """The serving (``champion``) two-tower model, or None before the first one."""
    from socialrec.models.two_tower import TwoTowerModel

    if registry.aliased_version(settings, registry.TWO_TOWER, registry.CHAMPION) is None:
        return None
    return TwoTowerModel.load(registry.champion_dir(settings, registry.TWO_TOWER))


def _split(df: pd.DataFrame, *names: str) -> pd.DataFrame:
    return df[df["split"].isin(names)].reset_index(drop=True)


AS_OF_VALIDATION = "as_of_validation"  # the train-split model, inside the two-tower dir


def _two_tower(settings: Settings):
    from socialrec.models.two_tower import TwoTowerModel

    return TwoTowerModel(
        settings.two_tower_embedding_dim,
        id_dim=settings.two_tower_id_dim,
        text_dim=settings.two_tower_text_dim,
        hidden_dim=settings.two_tower_hidden_dim,
        temperature=settings.two_tower_temperature,
        random_negatives=settings.two_tower_random_negatives,
    )


def _said(progress: Callable[[str], None] | None, fit: str) -> Callable[[str], None] | None:
    return None if progress is None else lambda line: progress(f"{line} ({fit})")


def train_two_tower(
    settings: Settings,
    positives: pd.DataFrame,
    store,
    validation_start,
    test_start,
    *,
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Two fits of the two-tower model, as the protocol wants (docs/benchmarks.md):

    1. *as of validation*: trained on the train split with the features as of the validation
       start, early-stopped on validation recall@100 (model selection). The ranker's training
       replays the validation split through this model: it never saw those days.
    2. *as of test* (the challenger that serves): refitted on train + validation with the
       features as of the test start, for the number of epochs the first fit chose; evaluated
       on the test split (recall@K beside random).

    Each positive gets its user's features as they were at the positive's time (a
    point-in-time join), so a history input never contains the positive itself. Returns the
    second model, with the first in ``data["as_of_validation"]``. ``progress`` hears a line
    per epoch of each fit."""
    seed = settings.seed if seed is None else seed
    train = _split(positives, "train")
    valid = _split(positives, "validation")
    test = _split(positives, "test")
    users_v, posts_v = training_frames(store, positives, validation_start)
    selection = _two_tower(settings)
    selection.fit(
        train, users_v, posts_v,
        epochs=settings.two_tower_epochs, batch_size=settings.two_tower_batch_size, seed=seed,
        validation_df=valid, aligned_users=point_in_time(store, "user", train),
        progress=_said(progress, "as of validation"),
    )  # fmt: skip
    info = selection.meta["train"]
    epochs = int(info.get("best_epoch") or info["epochs_run"] or settings.two_tower_epochs)
    refit_rows = _split(positives, "train", "validation")
    users_t, posts_t = training_frames(store, positives, test_start)
    model = _two_tower(settings)
    model.fit(
        refit_rows, users_t, posts_t, epochs=epochs, batch_size=settings.two_tower_batch_size,
        seed=seed, aligned_users=point_in_time(store, "user", refit_rows),
        progress=_said(progress, "as of test"),
    )  # fmt: skip
    metrics = evaluate_retrieval(model, users_t, posts_t, refit_rows, test, ks=RETRIEVAL_KS)
    metrics["final_loss"] = float(model.meta["train"]["final_loss"] or float("nan"))
    metrics["epochs"] = float(epochs)
    if info.get("best_val_recall") is not None:
        metrics["validation_recall@100"] = float(info["best_val_recall"])
    params = {
        **model.hparams,
        "epochs": epochs,
        "epochs_chosen_by": "validation recall@100 (early stopping of the train-split fit)",
        "batch_size": settings.two_tower_batch_size,
    }
    return TrainResult(model, params, metrics, {AS_OF_VALIDATION: selection, "users": users_t})


def save_two_tower(result: TrainResult, directory) -> Path:
    """The serving model in ``directory``, the as-of-validation one in its subdirectory."""
    out = result.model.save(directory)
    result.data[AS_OF_VALIDATION].save(Path(out) / AS_OF_VALIDATION)
    return Path(out)


def two_tower_test_recall(
    model_path: Path, positives: pd.DataFrame, store, test_start, k: int = 100
) -> float:
    """Recall@k on the test split of a saved (serving) two-tower model, train and validation
    positives of each user excluded; the features as of the test start."""
    from socialrec.models.two_tower import TwoTowerModel

    model = TwoTowerModel.load(model_path)
    users, posts = training_frames(store, positives, test_start)
    seen = _split(positives, "train", "validation")
    return evaluate_retrieval(model, users, posts, seen, _split(positives, "test"), ks=(k,))[
        f"recall@{k}"
    ]


# ---- the quality gate: challenger vs champion on the same validation set -------------------


@dataclass
class GateResult:
    model: str
    metric: str
    challenger_version: int
    champion_version: int | None
    challenger_value: float
    champion_value: float | None
    passed: bool
    reason: str
    warning: str | None = None

    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def quality_gate(
    settings: Settings, name: str, metric: str, evaluate: Callable[[Path], float]
) -> GateResult:
    """Evaluate the ``challenger`` and the ``champion`` versions of a registered model with
    ``evaluate`` (a saved model dir -> a higher-is-better metric on one held-out set) and decide
    (:func:`registry.gate`) whether the challenger may replace the champion, within
    ``settings.quality_gate_tolerance``. Only a decision: promotion is a separate step
    (:func:`registry.promote`).
    """
    challenger = registry.aliased_version(settings, name, registry.CHALLENGER)
    if challenger is None:
        raise ValueError(f"{name} has no challenger version to gate")
    champion = registry.aliased_version(settings, name, registry.CHAMPION)
    value = float(evaluate(registry.model_dir(settings, name, registry.CHALLENGER)))
    if champion is not None and champion.version == challenger.version:
        return GateResult(
            name,
            metric,
            int(challenger.version),
            int(champion.version),
            value,
            value,
            True,
            "the challenger is already the champion",
        )
    champion_value = (
        float(evaluate(registry.model_dir(settings, name, registry.CHAMPION)))
        if champion is not None
        else None
    )
    verdict = registry.gate(value, champion_value, settings.quality_gate_tolerance)
    return GateResult(
        name,
        metric,
        int(challenger.version),
        None if champion is None else int(champion.version),
        value,
        champion_value,
        verdict.passed,
        verdict.reason,
        verdict.warning,
    )


# ---- the co-engagement neighbours ---------------------------------------------------------------


def neighbour_params(settings: Settings, **chosen):
    """The neighbours' parameters from settings, with ``chosen`` values (from validation)
    replacing the settings' "auto" ones."""
    from socialrec.models.neighbours import NeighbourParams

    values = {
        "k": settings.neighbours_k,
        "alpha": settings.neighbours_alpha,
        "shrink": settings.neighbours_shrink,
        "l2": settings.neighbours_l2,
        "method": settings.neighbours_method,
        "signal": settings.neighbours_signal,
        **chosen,
    }
    for key, default in (("method", "cosine"), ("signal", "positive")):
        if values[key] == "auto":
            values[key] = default
    return NeighbourParams(**values)


def neighbour_grid(settings: Settings, n_posts: int) -> list[dict]:
    """The candidates for the settings' "auto" choices: both signals, both methods (EASE only
    where the catalog fits in memory, with a small L2 grid)."""
    from socialrec.data.eventlog import SIGNALS
    from socialrec.models.neighbours import EASE_MAX_POSTS

    signals = SIGNALS if settings.neighbours_signal == "auto" else (settings.neighbours_signal,)
    methods = (
        ("cosine", "ease")
        if settings.neighbours_method == "auto"
        else (settings.neighbours_method,)
    )
    grid = []
    for method in methods:
        if method == "ease" and n_posts > EASE_MAX_POSTS:
            continue
        l2s = (
            (50.0, 500.0, 5000.0)
            if method == "ease" and settings.neighbours_method == "auto"
            else (settings.neighbours_l2,)
        )
        grid += [{"method": method, "signal": sig, "l2": l2} for sig in signals for l2 in l2s]
    return grid


def choose_neighbours(settings: Settings, log, posts: pd.DataFrame, bounds) -> dict:
    """The neighbours' method, signal and L2 whose table, fitted on the train split, ranks the
    validation requests best (NDCG@10 of the warm users; every user's recent posts scored
    through the table). Returns {"chosen": {...}, "tried": [{..., "ndcg@10": x}]}."""
    from socialrec.evaluation.protocol import build_requests, score_lists, top_k_from_scores
    from socialrec.models.neighbours import NeighbourTable
    from socialrec.training.ranker_rows import created_seconds

    created = created_seconds(posts)
    index = pd.Index(np.sort(created.index.to_numpy()))
    created_arr = created.reindex(index).to_numpy(dtype=np.float64)
    V, T = bounds.validation_start, bounds.test_start
    requests = build_requests(log, created, V, T, settings.evaluation_max_users, settings.seed)
    grid = neighbour_grid(settings, len(index))
    if len(grid) == 1 or not len(requests):
        return {"chosen": grid[0], "tried": []}
    segment = "warm" if len(requests.segment("warm")) else "all"
    past = log.before(V)
    tried = []
    for point in grid:
        params = neighbour_params(settings, **point)
        table = NeighbourTable.fit(past, params)
        history = past.recent_posts(params.signal, settings.history_recent_posts)
        hist = [history.get(int(u), []) for u in requests.users]
        scores = table.score_matrix(hist, index)
        lists = top_k_from_scores(scores, index, requests, range(len(requests)), created_arr, 100)
        tried.append(
            {**point, "ndcg@10": score_lists(lists, requests, len(index), segment)["ndcg@10"]}
        )
    best = max(tried, key=lambda t: -np.inf if np.isnan(t["ndcg@10"]) else t["ndcg@10"])
    return {"chosen": {k: best[k] for k in ("method", "signal", "l2")}, "tried": tried}
