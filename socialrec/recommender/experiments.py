"""Experiments and a holdout (docs/experiments.md), without any framework.

* Assignment (:func:`assign`): ``sha256("<experiment_salt>:<user_id>")`` read as a number in
  [0, 1) (:func:`bucket`). The first ``holdout_share`` of that interval is the holdout, then
  each of ``settings.variants`` takes its ``share`` in the order configured, the rest is
  ``control``. Stable across processes, restarts and settings reloads (hashlib, never Python's
  salted ``hash``); a new salt reshuffles everyone.
* Policy (:class:`Experiments`): control serves the settings as they are; a variant serves them
  with its overrides (:meth:`socialrec.settings.Variant.overrides`: outcome weights, candidate
  sources and their fusion, the re-ranking knobs, the collection alias); the holdout serves a
  plain baseline: the popular and fresh sources in their merged order, no ranker, no caps,
  boost, sampling nor promotion (an empty list falls to the same cold start as everyone).
* Analysis (:func:`negative_rate_alarms`): per arm, its impressions and negatives summed over
  the days of ``experiment_daily_outcomes`` against control's, one-sided two-proportion z-test.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from socialrec.settings import CONTROL, HOLDOUT, Settings

_SCALE = float(2**64)

# the holdout's baseline: the catalog's popular + fresh lists merged, nothing on top
HOLDOUT_OVERRIDES: dict[str, Any] = {
    "candidate_sources": ["popular", "fresh"],
    "source_weights": None,
    "ranker_outcome_weights": None,
    "max_per_category": None,
    "max_per_creator": None,
    "diversity_decay": 1.0,
    "new_post_boost_hours": 0.0,
    "softmax_temperature": 0.0,
    "promoted_post_ids": [],
}


def bucket(salt: str, user_id: int) -> float:
    """The user's place in [0, 1): the first 8 bytes of sha256("<salt>:<user_id>") / 2**64."""
    digest = hashlib.sha256(f"{salt}:{int(user_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def assign(settings: Settings, user_id: int) -> str:
    """The arm of ``user_id``: ``holdout``, a variant's name or ``control``."""
    u = bucket(settings.experiment_salt, user_id)
    edge = settings.holdout_share
    if u < edge:
        return HOLDOUT
    for variant in settings.variants:
        edge += variant.share
        if u < edge:
            return variant.name
    return CONTROL


def arm_names(settings: Settings) -> list[str]:
    """Every arm /recommend may answer: control, the holdout (when it has a share), the
    variants (the bounded label set of the per-variant metrics)."""
    holdout = [HOLDOUT] if settings.holdout_share > 0 else []
    return [CONTROL, *holdout, *(v.name for v in settings.variants)]


def arm_settings(settings: Settings, name: str) -> Settings:
    """The settings an arm serves with (control: ``settings`` itself)."""
    if name == CONTROL:
        return settings
    if name == HOLDOUT:
        return settings.model_copy(update=HOLDOUT_OVERRIDES)
    for variant in settings.variants:
        if variant.name == name:
            return settings.model_copy(update=variant.overrides())
    raise KeyError(f"no experiment arm {name!r} (arms: {arm_names(settings)})")


def check_outcome_weights(settings: Settings) -> None:
    """ValueError for a variant weighting an outcome the ranker does not predict (at start)."""
    from socialrec.models.ranker import OUTCOMES

    for variant in settings.variants:
        unknown = sorted(set(variant.outcome_weights or {}) - set(OUTCOMES))
        if unknown:
            raise ValueError(
                f"variants[{variant.name}].outcome_weights: unknown {unknown} "
                f"(known: {list(OUTCOMES)})"
            )


class WeightedRanker:
    """A multi-outcome ranker whose outcomes are combined with other weights (a variant's);
    everything else (``predict_outcomes``, ``source_weights``, ...) is the ranker's."""

    def __init__(self, ranker: Any, weights: Mapping[str, float]):
        self.ranker = ranker
        self.weights = dict(weights)

    def combine(self, outcomes: pd.DataFrame, weights: Mapping[str, float] | None = None):
        return self.ranker.combine(outcomes, self.weights if weights is None else weights)

    def predict(self, features_df: pd.DataFrame):
        return self.combine(self.ranker.predict_outcomes(features_df))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ranker, name)


class Experiments:
    """The arms of one Settings: :meth:`assign` a user, :meth:`recommender` the arm's
    recommender (made once per arm from the control's ``Recommender``). No settings: every
    user is in control."""

    def __init__(self, settings: Settings | None):
        if settings is not None:
            check_outcome_weights(settings)
        self.settings = settings
        self.names = arm_names(settings) if settings is not None else [CONTROL]
        self._arms: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def assign(self, user_id: int) -> str:
        return CONTROL if self.settings is None else assign(self.settings, user_id)

    def recommender(self, name: str, control: Any) -> Any:
        """``control`` (a :class:`socialrec.recommender.Recommender`) as arm ``name`` serves
        it: the same parts with the arm's settings and ranker (:meth:`Recommender.with_policy`)."""
        if name == CONTROL:
            return control
        key = (name, id(control))
        with self._lock:
            arm = self._arms.get(key)
            if arm is None:
                arm = self._arms[key] = self._make(name, control)
        return arm

    def _make(self, name: str, control: Any) -> Any:
        settings = arm_settings(self.settings, name)
        ranker = control.ranker
        if name == HOLDOUT:
            ranker = None  # the merged popular/fresh order as it is
        elif ranker is not None and settings.ranker_outcome_weights is not None:
            if hasattr(ranker, "predict_outcomes"):
                ranker = WeightedRanker(ranker, settings.ranker_outcome_weights)
        return control.with_policy(settings, ranker)


# --- analysis -------------------------------------------------------------------------------
def _upper_tail(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def negative_rate_alarms(
    outcomes: pd.DataFrame,
    alpha: float = 0.05,
    min_impressions: int = 1000,
    control: str = CONTROL,
) -> list[dict[str, Any]]:
    """One row per arm other than ``control`` in ``outcomes`` (the columns ``variant``,
    ``impressions``, ``negatives`` of ``experiment_daily_outcomes``, summed over its rows):
    its negative rate against control's, the one-sided two-proportion z statistic (pooled) and
    p-value of "the arm's negative rate is higher", and ``worse``: p < ``alpha`` with both arms
    holding at least ``min_impressions`` impressions (``reason`` says why an arm is not
    tested). The holdout is reported like any arm; whether it counts is the caller's choice."""
    totals = outcomes.groupby("variant")[["impressions", "negatives"]].sum()
    base = totals.loc[control] if control in totals.index else None
    rows = []
    for name, row in totals.iterrows():
        if name == control:
            continue
        n1, x1 = int(row["impressions"]), int(row["negatives"])
        out: dict[str, Any] = {
            "variant": str(name),
            "impressions": n1,
            "negatives": x1,
            "negative_rate": x1 / n1 if n1 else None,
            "control_negative_rate": None,
            "z": None,
            "p_value": None,
            "worse": False,
            "reason": None,
        }
        rows.append(out)
        if base is None:
            out["reason"] = f"no {control} rows"
            continue
        n0, x0 = int(base["impressions"]), int(base["negatives"])
        out["control_negative_rate"] = x0 / n0 if n0 else None
        if min(n0, n1) < min_impressions:
            out["reason"] = f"fewer than {min_impressions} impressions"
            continue
        pooled = (x0 + x1) / (n0 + n1)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n0 + 1 / n1))
        z = 0.0 if se == 0 else (x1 / n1 - x0 / n0) / se
        out["z"], out["p_value"] = z, _upper_tail(z)
        out["worse"] = out["p_value"] < alpha
    return rows


def count_labels(values: Iterable[str | None], known: Iterable[str]) -> dict[str, int]:
    """How many of ``values`` per label: a known arm's name, ``other`` (a name not configured
    now, e.g. sent by an older app) or ``none`` (no variant): bounded metric labels."""
    known = set(known)
    counts: dict[str, int] = {}
    for value in values:
        label = "none" if value is None else value if value in known else "other"
        counts[label] = counts.get(label, 0) + 1
    return counts
