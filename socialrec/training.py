"""Training and evaluation of the two models, framework-free (the Dagster assets call these).

Training sets are read through Feast point-in-time joins (``get_historical_features``), so the
models learn from exactly the feature definitions the service reads online, as they were at
the right moment: :func:`latest_features` reads every user's / post's features at one moment
(the two-tower model: the end of its training period), :func:`ranker_frames` reads each ranking
sample's user and post features at the sample's own time. The feature histories are daily
(cumulative counts up to each day's end, valid from the next midnight), so a feature never
includes its sample's own day.

* :func:`train_two_tower` fits the TFRS model on the ``train`` split of
  ``ml_retrieval_positives`` (early stopping on ``validation``) and evaluates recall@K on the
  ``test`` split beside the recall@K of a random ranking of the same candidates.
* :func:`train_ranker` fits CatBoost on ``ml_ranking_samples`` (train split; validation split
  for early stopping) with :func:`socialrec.ranking_features.ranking_features`, and evaluates
  AUC / log loss per split.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from socialrec import features as fs
from socialrec import registry
from socialrec.metrics import evaluate_retrieval
from socialrec.settings import Settings

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
    id_col = fs.ENTITY_IDS[entity]
    ids = pd.unique(np.asarray(list(ids), dtype=np.int64))
    stamp = pd.Timestamp(as_of or dt.datetime.now(dt.UTC))
    entity_df = pd.DataFrame({id_col: ids, fs.TIMESTAMP: stamp})
    out = fs.historical_features(store, entity_df, fs.feature_refs(entity))
    return out.drop(columns=[fs.TIMESTAMP])


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
    id_col = fs.ENTITY_IDS[entity]
    entity_df = pd.DataFrame(
        {
            id_col: rows[id_col].to_numpy(dtype=np.int64),
            fs.TIMESTAMP: pd.to_datetime(rows["ts"], utc=True).to_numpy(),
        }
    )
    out = fs.historical_features(store, entity_df, fs.feature_refs(entity))
    return out.drop(columns=[fs.TIMESTAMP])


def retrieval_scores(two_tower, users: pd.DataFrame, posts: pd.DataFrame) -> np.ndarray:
    """The two-tower score (user vector . post vector, a cosine) of each aligned (user row,
    post row) pair: the ``retrieval_score`` ranker feature at training time, the same quantity
    the ANN search returns at serving time. Rows without features score NaN."""
    if two_tower is None or not len(users):
        return np.full(len(users), np.nan)
    u = two_tower.user_embeddings(users.reset_index(drop=True))
    p = two_tower.post_embeddings(posts.reset_index(drop=True))
    scores = np.einsum("ij,ij->i", u, p).astype(np.float64)
    missing = users.drop(columns=["user_id"], errors="ignore").isna().all(axis=1).to_numpy()
    missing |= posts.drop(columns=["post_id"], errors="ignore").isna().all(axis=1).to_numpy()
    scores[missing] = np.nan
    return scores


def champion_two_tower(settings: Settings):
    """The serving (``champion``) two-tower model, or None before the first one."""
    from socialrec.two_tower import TwoTowerModel

    if registry.aliased_version(settings, registry.TWO_TOWER, registry.CHAMPION) is None:
        return None
    return TwoTowerModel.load(registry.champion_dir(settings, registry.TWO_TOWER))


def _split(df: pd.DataFrame, *names: str) -> pd.DataFrame:
    return df[df["split"].isin(names)].reset_index(drop=True)


def train_two_tower(
    settings: Settings,
    positives: pd.DataFrame,
    users: pd.DataFrame,
    posts: pd.DataFrame,
    *,
    seed: int | None = None,
    store=None,
) -> TrainResult:
    """Fit on the train split, early-stopped on validation recall@100; recall@K on the test
    split (the latest period, never seen in training or model selection) beside random.

    With a Feast ``store``, each train positive gets its user's features as they were at the
    positive's time (:func:`point_in_time`), so the history inputs never contain the positive
    itself; ``users`` (one row per user) serves the validation and test evaluation."""
    from socialrec.two_tower import TwoTowerModel

    train = _split(positives, "train")
    valid = _split(positives, "validation")
    test = _split(positives, "test")
    model = TwoTowerModel(
        settings.two_tower_embedding_dim,
        id_dim=settings.two_tower_id_dim,
        text_dim=settings.two_tower_text_dim,
        hidden_dim=settings.two_tower_hidden_dim,
        temperature=settings.two_tower_temperature,
        random_negatives=settings.two_tower_random_negatives,
    )
    model.fit(
        train,
        users,
        posts,
        epochs=settings.two_tower_epochs,
        batch_size=settings.two_tower_batch_size,
        seed=settings.seed if seed is None else seed,
        validation_df=valid,
        aligned_users=None if store is None else point_in_time(store, "user", train),
    )
    seen = pd.concat([train, valid], ignore_index=True)  # exposure before the test period
    metrics = evaluate_retrieval(model, users, posts, seen, test, ks=RETRIEVAL_KS)
    info = model.meta["train"]
    metrics["final_loss"] = float(info["final_loss"] or float("nan"))
    metrics["epochs_run"] = float(info["epochs_run"])
    if info.get("best_val_recall") is not None:
        metrics["best_val_recall@100"] = float(info["best_val_recall"])
    params = {
        **model.hparams,
        "epochs": settings.two_tower_epochs,
        "batch_size": settings.two_tower_batch_size,
    }
    return TrainResult(model, params, metrics)


def ranker_dataset(
    samples: pd.DataFrame,
    users: pd.DataFrame,
    posts: pd.DataFrame,
    aligned: bool = False,
    two_tower=None,
) -> pd.DataFrame:
    """``RANKER_FEATURES`` + ``label`` + ``split`` for every sample; the post age is taken at
    the sample's own ``ts`` (the moment it was shown). ``aligned``: ``users`` / ``posts`` hold
    one row per sample (:func:`ranker_frames`) instead of one per id. ``two_tower``: the model
    whose score becomes ``retrieval_score`` (aligned frames only; NaN without one)."""
    from socialrec.ranking_features import ranking_features

    if aligned and two_tower is not None and "retrieval_score" not in samples.columns:
        samples = samples.assign(retrieval_score=retrieval_scores(two_tower, users, posts))

    feats = ranking_features(users, posts, samples, samples["ts"], aligned=aligned)
    relevance = samples["relevance"] if "relevance" in samples.columns else samples["label"]
    return feats.assign(
        label=samples["label"].astype(int).to_numpy(),
        relevance=pd.to_numeric(relevance, errors="coerce").fillna(0).to_numpy(dtype=float),
        user_id=samples["user_id"].astype("int64").to_numpy(),
        split=samples["split"].to_numpy(),
    )


def train_ranker(
    settings: Settings,
    samples: pd.DataFrame,
    users: pd.DataFrame,
    posts: pd.DataFrame,
    aligned: bool = False,
    two_tower=None,
) -> TrainResult:
    """Fit CatBoost with both objectives on the train split (validation split for early
    stopping) and keep the one with the better validation NDCG@10 per user (graded relevance):
    the ranker's job is the order of one user's candidates, which AUC over all pairs does not
    measure. AUC, log loss and NDCG@10 of the kept model on every split.
    ``aligned``: see :func:`ranker_dataset`."""
    from socialrec.ranker import LOSSES, Ranker

    data = ranker_dataset(
        samples.reset_index(drop=True), users, posts, aligned=aligned, two_tower=two_tower
    )
    train, valid, test = (_split(data, s) for s in ("train", "validation", "test"))
    if train["label"].nunique() < 2:
        raise ValueError("the ranking train split needs both positive and negative samples")
    candidates = {}
    for loss in LOSSES:
        ranker = Ranker(
            iterations=settings.ranker_iterations, seed=settings.seed, loss_function=loss
        ).fit(train, valid)
        score = ranker.evaluate(valid).get("ndcg@10", float("nan")) if len(valid) else float("nan")
        candidates[loss] = (ranker, score)
    best = max(
        LOSSES, key=lambda name: -np.inf if np.isnan(candidates[name][1]) else candidates[name][1]
    )
    ranker = candidates[best][0]
    metrics: dict[str, float] = {
        f"validation_ndcg@10.{loss}": float(score) for loss, (_, score) in candidates.items()
    }
    for name, part in (("train", train), ("validation", valid), ("test", test)):
        if len(part) and part["label"].nunique() == 2:
            for k, v in ranker.evaluate(part).items():
                metrics[f"{name}_{k}"] = v
    metrics["best_iteration"] = float(ranker.best_iteration or 0)
    metrics.update({f"importance.{k}": v for k, v in ranker.feature_importance().items()})
    params = {**ranker.params, "loss": best, "chosen_by": "validation NDCG@10 per user"}
    return TrainResult(ranker, params, metrics, {"example": test.head(5)})


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

    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def two_tower_validation_recall(
    model_path: Path,
    positives: pd.DataFrame,
    users: pd.DataFrame,
    posts: pd.DataFrame,
    k: int = 100,
) -> float:
    """Recall@k of a saved two-tower model on the ``validation`` positives (train positives of
    each user excluded from the candidates)."""
    from socialrec.two_tower import TwoTowerModel

    model = TwoTowerModel.load(model_path)
    train, valid = _split(positives, "train"), _split(positives, "validation")
    return evaluate_retrieval(model, users, posts, train, valid, ks=(k,))[f"recall@{k}"]


def ranker_validation_auc(model_path: Path, data: pd.DataFrame) -> float:
    """AUC of a saved ranker on the ``validation`` rows of :func:`ranker_dataset`."""
    from socialrec.ranker import Ranker

    valid = _split(data, "validation")
    if valid.empty or valid["label"].nunique() < 2:
        return float("nan")
    return Ranker.load(model_path).evaluate(valid)["auc"]


def ranker_validation_ndcg(model_path: Path, data: pd.DataFrame) -> float:
    """NDCG@10 per user (graded relevance) of a saved ranker on the ``validation`` rows of
    :func:`ranker_dataset`: comparable across objectives (only each user's order counts)."""
    from socialrec.ranker import Ranker

    valid = _split(data, "validation")
    if valid.empty:
        return float("nan")
    return Ranker.load(model_path).evaluate(valid).get("ndcg@10", float("nan"))


def quality_gate(
    settings: Settings, name: str, metric: str, evaluate: Callable[[Path], float]
) -> GateResult:
    """Evaluate the ``challenger`` and the ``champion`` versions of a registered model with
    ``evaluate`` (a saved model dir -> a higher-is-better metric on one validation set) and
    promote the challenger when it does not regress beyond ``settings.quality_gate_tolerance``.
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
    passed, reason = registry.gate(value, champion_value, settings.quality_gate_tolerance)
    if passed:
        registry.promote(settings, name, challenger.version, f"{metric}: {reason}")
    return GateResult(
        name,
        metric,
        int(challenger.version),
        None if champion is None else int(champion.version),
        value,
        champion_value,
        passed,
        reason,
    )
