"""The ranker: CatBoost over :mod:`socialrec.ranking_features`, with one of two objectives.

* ``Logloss``: a binary classifier of ``label`` (0/1); ``predict`` returns the probability of
  a positive interaction.
* ``YetiRank``: a ranking objective over the graded ``relevance`` (negatives clipped to 0),
  grouped by ``user_id`` (each user's samples are one query); ``predict`` returns
  ``sigmoid(raw score)`` — a score in (0, 1) that orders a user's candidates, NOT a probability.

``fit`` takes frames holding the ``RANKER_FEATURES`` columns plus ``label`` (and ``relevance``
and ``user_id`` for YetiRank); the validation frame drives early stopping and the best
iteration is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoost, CatBoostClassifier, Pool

from socialrec.metrics import grouped_ndcg, log_loss, roc_auc
from socialrec.ranking_features import CAT_FEATURES, RANKER_FEATURES

LABEL = "label"
RELEVANCE = "relevance"
GROUP = "user_id"
MODEL_FILE = "ranker.cbm"
LOSSES = ("Logloss", "YetiRank")


class Ranker:
    """CatBoost (Logloss) ranker; ``save``/``load`` use CatBoost's native ``.cbm`` format."""

    def __init__(
        self,
        iterations: int = 300,
        learning_rate: float = 0.08,
        depth: int = 6,
        seed: int = 42,
        thread_count: int = 2,
        early_stopping_rounds: int | None = 50,
        loss_function: str = "Logloss",
    ):
        if loss_function not in LOSSES:
            raise ValueError(f"loss_function must be one of {LOSSES}")
        self.loss_function = loss_function
        self.params = {
            "iterations": iterations,
            "learning_rate": learning_rate,
            "depth": depth,
            "random_seed": seed,
            "thread_count": thread_count,
        }
        self.early_stopping_rounds = early_stopping_rounds
        self.model: CatBoostClassifier | None = None

    @property
    def ranking(self) -> bool:
        return self.loss_function == "YetiRank"

    def _pool(self, df: pd.DataFrame, with_label: bool = True) -> Pool:
        missing = [c for c in RANKER_FEATURES if c not in df.columns]
        if missing:
            raise ValueError(f"missing ranker features: {missing}")
        if with_label and self.ranking:  # a query's rows must be contiguous
            df = df.sort_values(GROUP, kind="stable")
        x = df[RANKER_FEATURES].copy()
        for col in CAT_FEATURES:
            x[col] = x[col].astype(str)
        if not with_label:
            return Pool(x, cat_features=CAT_FEATURES)
        if self.ranking:
            label = df[RELEVANCE].astype(float).clip(lower=0).to_numpy()
            return Pool(x, label=label, group_id=df[GROUP].to_numpy(), cat_features=CAT_FEATURES)
        return Pool(x, label=df[LABEL].astype(int).to_numpy(), cat_features=CAT_FEATURES)

    def fit(self, train_df: pd.DataFrame, valid_df: pd.DataFrame | None = None) -> Ranker:
        has_valid = valid_df is not None and len(valid_df) and valid_df[LABEL].nunique() == 2
        if self.ranking:
            self.model = CatBoost(
                {
                    "loss_function": "YetiRank",
                    "eval_metric": "NDCG:top=10",
                    "allow_writing_files": False,
                    "verbose": False,
                    "use_best_model": bool(has_valid),
                    **self.params,
                }
            )
        else:
            self.model = CatBoostClassifier(
                loss_function="Logloss",
                eval_metric="AUC",
                custom_metric=["Logloss"],
                allow_writing_files=False,
                verbose=False,
                use_best_model=bool(has_valid),
                **self.params,
            )
        self.model.fit(
            self._pool(train_df),
            eval_set=self._pool(valid_df) if has_valid else None,
            early_stopping_rounds=self.early_stopping_rounds if has_valid else None,
        )
        return self

    def predict(self, features_df: pd.DataFrame) -> np.ndarray:
        """Probability of a positive for every row (float64 in [0, 1])."""
        if self.model is None:
            raise RuntimeError("the ranker is neither trained nor loaded")
        if len(features_df) == 0:
            return np.zeros(0)
        pool = self._pool(features_df, with_label=False)
        if isinstance(self.model, CatBoostClassifier):
            return self.model.predict_proba(pool)[:, 1]
        return 1.0 / (1.0 + np.exp(-self.model.predict(pool, prediction_type="RawFormulaVal")))

    def evaluate(self, df: pd.DataFrame) -> dict[str, float]:
        """``auc`` and ``logloss`` of the predictions on a labelled split, and ``ndcg@10``
        per user of the graded relevance when the split has ``relevance`` and ``user_id``."""
        probs = self.predict(df)
        labels = df[LABEL].astype(int).to_numpy()
        out = {
            "auc": roc_auc(labels, probs),
            "logloss": log_loss(labels, probs),
            "n": float(len(df)),
            "positive_rate": float(labels.mean()) if len(labels) else float("nan"),
        }
        if RELEVANCE in df.columns and GROUP in df.columns:
            out["ndcg@10"] = grouped_ndcg(df[GROUP], df[RELEVANCE], probs, 10)
        return out

    @property
    def best_iteration(self) -> int | None:
        return None if self.model is None else self.model.get_best_iteration()

    def feature_importance(self) -> dict[str, float]:
        if self.model is None:
            return {}
        try:
            values = self.model.get_feature_importance()
        except Exception:  # noqa: BLE001 - ranking losses need a dataset for importances
            return {}
        return dict(zip(RANKER_FEATURES, map(float, values), strict=False))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the ``.cbm`` file; a directory path gets ``<dir>/ranker.cbm``."""
        if self.model is None:
            raise RuntimeError("nothing to save: fit the ranker first")
        path = Path(path)
        if path.suffix != ".cbm":
            path = path / MODEL_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model.save_model(str(path), format="cbm")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Ranker:
        """Load a ``.cbm`` file (or ``<dir>/ranker.cbm``)."""
        path = Path(path)
        if path.is_dir():
            path = path / MODEL_FILE
        model = CatBoost()
        model.load_model(str(path), format="cbm")
        loss = model.get_all_params().get("loss_function", "Logloss")
        ranker = cls(loss_function="YetiRank" if loss.startswith("YetiRank") else "Logloss")
        if not ranker.ranking:
            model = CatBoostClassifier()
            model.load_model(str(path), format="cbm")
        ranker.model = model
        return ranker
