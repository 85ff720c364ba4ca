"""The ranker: one CatBoost model predicting several outcomes, combined into one score.

Outcomes (``OUTCOMES``; labels of a replayed request's candidates, socialrec.training.retrieval):

* ``positive`` — any positive engagement (``POSITIVE_EVENTS``), the relevance of the offline
  protocol;
* ``full_view`` — watched to the end (``VIEW_FULL``);
* ``like`` — liked or bookmarked;
* ``share_comment`` — shared or commented;
* ``negative`` — disliked or reported.

``fit`` trains CatBoost's ``MultiLogloss`` (one set of trees, one probability per outcome;
plain ``Logloss`` when only one outcome has positives) on frames holding the
``RANKER_FEATURES`` columns and one ``y_<outcome>`` label column per outcome, early-stopped on a
validation frame. Outcomes that never happen in the training data (a ratings log has no full
views) are left out of the model and weigh nothing.

``predict_outcomes`` returns the probabilities; ``combine`` turns them into the ranking score,
``sum_o weight_o * p_o``, with the weights from settings or, by default, the ones the training
chose on validation (:func:`socialrec.training.retrieval.choose_weights`); negative outcomes carry
negative weights and subtract. ``predict`` = ``combine(predict_outcomes(...))``.

Saved as ``ranker.cbm`` (CatBoost's native format) plus ``ranker.json`` (outcomes, weights,
and the candidate sources' fusion weights learned with it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoost, Pool

from socialrec.features.ranking import CAT_FEATURES, RANKER_FEATURES
from socialrec.models.metrics import log_loss, roc_auc

OUTCOMES = ("positive", "full_view", "like", "share_comment", "negative")
NEGATIVE_OUTCOMES = ("negative",)
DEFAULT_WEIGHTS = {
    "positive": 1.0,
    "full_view": 0.0,
    "like": 0.0,
    "share_comment": 0.0,
    "negative": -1.0,
}
MODEL_FILE = "ranker.cbm"
META_FILE = "ranker.json"


def label(outcome: str) -> str:
    return f"y_{outcome}"


PROGRESS_EVERY = 25  # iterations between two progress lines of the ranker's training


class _IterationLine:
    """A CatBoost callback (``after_iteration``): the losses every PROGRESS_EVERY iterations."""

    def __init__(self, progress: Callable[[str], None], total: int):
        self.progress, self.total = progress, total

    def after_iteration(self, info) -> bool:
        done = info.iteration + 1
        if done % PROGRESS_EVERY == 0 or done == self.total:
            losses = ", ".join(
                f"{data} {name} {values[-1]:.4f}"
                for data, metrics in info.metrics.items()
                for name, values in metrics.items()
            )
            self.progress(f"ranker iteration {done}/{self.total}: {losses}")
        return True  # never stops the training: early stopping is CatBoost's own


class Ranker:
    """Multi-outcome CatBoost ranker; ``save``/``load`` keep the model and its weights."""

    def __init__(
        self,
        iterations: int = 300,
        learning_rate: float = 0.08,
        depth: int = 6,
        seed: int = 42,
        thread_count: int = 2,
        early_stopping_rounds: int | None = 50,
        weights: Mapping[str, float] | None = None,
        one_hot_max_size: int = 64,
    ):
        self.params = {
            "iterations": iterations,
            "learning_rate": learning_rate,
            "depth": depth,
            "random_seed": seed,
            "thread_count": thread_count,
            "one_hot_max_size": one_hot_max_size,
        }
        self.early_stopping_rounds = early_stopping_rounds
        self.outcomes: list[str] = []
        self.weights: dict[str, float] = dict(weights or DEFAULT_WEIGHTS)
        # the candidate sources' weights in the merged order, learned beside the ranker
        self.source_weights: dict[str, float] | None = None
        self.model: CatBoost | None = None

    # --- data ------------------------------------------------------------------------------
    @staticmethod
    def _x(df: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in RANKER_FEATURES if c not in df.columns]
        if missing:
            raise ValueError(f"missing ranker features: {missing}")
        x = df[RANKER_FEATURES].copy()
        for col in CAT_FEATURES:
            x[col] = x[col].astype(str)
        return x

    def _labels(self, df: pd.DataFrame) -> np.ndarray:
        y = df[[label(o) for o in self.outcomes]].to_numpy(dtype=np.float32)
        return y[:, 0] if len(self.outcomes) == 1 else y

    # --- training --------------------------------------------------------------------------
    def fit(
        self,
        train_df: pd.DataFrame,
        valid_df: pd.DataFrame | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Ranker:
        """Train on the outcomes that have positives in ``train_df`` (``positive`` always);
        ``progress`` hears CatBoost's losses every PROGRESS_EVERY iterations."""
        present = [o for o in OUTCOMES if label(o) in train_df.columns]
        if "positive" not in present or train_df[label("positive")].nunique() < 2:
            raise ValueError("the ranker needs positive and non-positive training rows")
        self.outcomes = [
            o for o in present if o == "positive" or train_df[label(o)].astype(bool).any()
        ]
        multi = len(self.outcomes) > 1
        has_valid = (
            valid_df is not None and len(valid_df) and valid_df[label("positive")].nunique() == 2
        )
        self.model = CatBoost(
            {
                "loss_function": "MultiLogloss" if multi else "Logloss",
                "allow_writing_files": False,
                "verbose": False,
                "use_best_model": bool(has_valid),
                **self.params,
            }
        )
        self.model.fit(
            Pool(self._x(train_df), self._labels(train_df), cat_features=CAT_FEATURES),
            eval_set=Pool(self._x(valid_df), self._labels(valid_df), cat_features=CAT_FEATURES)
            if has_valid
            else None,
            early_stopping_rounds=self.early_stopping_rounds if has_valid else None,
            callbacks=[_IterationLine(progress, self.params["iterations"])] if progress else None,
        )
        return self

    # --- scoring ---------------------------------------------------------------------------
    def predict_outcomes(self, features_df: pd.DataFrame) -> pd.DataFrame:
        """One probability column per modelled outcome, rows aligned with ``features_df``."""
        if self.model is None:
            raise RuntimeError("the ranker is neither trained nor loaded")
        if len(features_df) == 0:
            return pd.DataFrame({o: np.zeros(0) for o in self.outcomes})
        raw = self.model.predict(
            Pool(self._x(features_df), cat_features=CAT_FEATURES),
            prediction_type="RawFormulaVal",
            thread_count=self.params["thread_count"],
        )
        raw = np.asarray(raw, dtype=np.float64).reshape(len(features_df), -1)
        probs = 1.0 / (1.0 + np.exp(-raw))
        return pd.DataFrame(probs, columns=self.outcomes, index=features_df.index)

    def combine(
        self, outcomes: pd.DataFrame, weights: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """``sum_o weight_o * p_o`` over the modelled outcomes (``self.weights`` by default)."""
        w = self.weights if weights is None else weights
        score = np.zeros(len(outcomes))
        for o in outcomes.columns:
            score += float(w.get(o, 0.0)) * outcomes[o].to_numpy(dtype=np.float64)
        return score

    def predict(self, features_df: pd.DataFrame) -> np.ndarray:
        return self.combine(self.predict_outcomes(features_df))

    def evaluate(self, df: pd.DataFrame) -> dict[str, float]:
        """AUC and log loss of each modelled outcome on a labelled frame."""
        probs = self.predict_outcomes(df)
        out: dict[str, float] = {"n": float(len(df))}
        for o in self.outcomes:
            y = df[label(o)].astype(int).to_numpy()
            out[f"{o}_rate"] = float(y.mean()) if len(y) else float("nan")
            if len(np.unique(y)) == 2:
                out[f"{o}_auc"] = roc_auc(y, probs[o].to_numpy())
                out[f"{o}_logloss"] = log_loss(y, probs[o].to_numpy())
        return out

    @property
    def best_iteration(self) -> int | None:
        return None if self.model is None else self.model.get_best_iteration()

    def feature_importance(self) -> dict[str, float]:
        if self.model is None:
            return {}
        values = self.model.get_feature_importance()
        return dict(zip(RANKER_FEATURES, map(float, values), strict=False))

    # --- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<dir>/ranker.cbm`` and ``<dir>/ranker.json``; returns the model file."""
        if self.model is None:
            raise RuntimeError("nothing to save: fit the ranker first")
        d = Path(path)
        d = d.parent if d.suffix == ".cbm" else d
        d.mkdir(parents=True, exist_ok=True)
        self.model.save_model(str(d / MODEL_FILE), format="cbm")
        meta = {
            "outcomes": self.outcomes,
            "weights": self.weights,
            "source_weights": self.source_weights,
        }
        (d / META_FILE).write_text(json.dumps(meta, indent=2))
        return d / MODEL_FILE

    @classmethod
    def load(cls, path: str | os.PathLike, thread_count: int = -1) -> Ranker:
        """A saved ranker; ``thread_count``: CatBoost's threads per ``predict`` call (-1: one
        per core; the service passes ``settings.service_threads``)."""
        d = Path(path)
        d = d.parent if d.suffix == ".cbm" else d
        meta = json.loads((d / META_FILE).read_text())
        ranker = cls(weights=meta["weights"], thread_count=thread_count)
        ranker.outcomes = list(meta["outcomes"])
        ranker.source_weights = meta.get("source_weights")
        model = CatBoost()
        model.load_model(str(d / MODEL_FILE), format="cbm")
        ranker.model = model
        return ranker
