"""The ranker: a CatBoost binary classifier over :mod:`socialrec.ranking_features`.

``fit`` takes frames holding the ``RANKER_FEATURES`` columns plus ``label`` (0/1); the
validation frame drives early stopping and the best iteration is kept. ``predict`` returns
probabilities of a positive interaction.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier, Pool

from socialrec.metrics import log_loss, roc_auc
from socialrec.ranking_features import CAT_FEATURES, RANKER_FEATURES

LABEL = "label"
MODEL_FILE = "ranker.cbm"


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
    ):
        self.params = {
            "iterations": iterations,
            "learning_rate": learning_rate,
            "depth": depth,
            "random_seed": seed,
            "thread_count": thread_count,
        }
        self.early_stopping_rounds = early_stopping_rounds
        self.model: CatBoostClassifier | None = None

    @staticmethod
    def _pool(df: pd.DataFrame, with_label: bool = True) -> Pool:
        missing = [c for c in RANKER_FEATURES if c not in df.columns]
        if missing:
            raise ValueError(f"missing ranker features: {missing}")
        x = df[RANKER_FEATURES].copy()
        for col in CAT_FEATURES:
            x[col] = x[col].astype(str)
        label = df[LABEL].astype(int).to_numpy() if with_label else None
        return Pool(x, label=label, cat_features=CAT_FEATURES)

    def fit(self, train_df: pd.DataFrame, valid_df: pd.DataFrame | None = None) -> Ranker:
        has_valid = valid_df is not None and len(valid_df) and valid_df[LABEL].nunique() == 2
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
        return self.model.predict_proba(self._pool(features_df, with_label=False))[:, 1]

    def evaluate(self, df: pd.DataFrame) -> dict[str, float]:
        """``auc`` and ``logloss`` of the predictions on a labelled split."""
        probs = self.predict(df)
        labels = df[LABEL].astype(int).to_numpy()
        return {
            "auc": roc_auc(labels, probs),
            "logloss": log_loss(labels, probs),
            "n": float(len(df)),
            "positive_rate": float(labels.mean()) if len(labels) else float("nan"),
        }

    @property
    def best_iteration(self) -> int | None:
        return None if self.model is None else self.model.get_best_iteration()

    def feature_importance(self) -> dict[str, float]:
        if self.model is None:
            return {}
        return dict(
            zip(RANKER_FEATURES, map(float, self.model.get_feature_importance()), strict=False)
        )

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
        ranker = cls()
        ranker.model = CatBoostClassifier()
        ranker.model.load_model(str(path), format="cbm")
        return ranker
