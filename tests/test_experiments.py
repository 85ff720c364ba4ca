"""Experiments and the holdout (socialrec.recommender.experiments, docs/experiments.md):
stable assignment (across processes and settings reloads), shares within tolerance, validated
variants, the holdout's plain baseline and a variant's policy through the real 4-stage
recommender (Milvus Lite, SQLite seen store, the stand-ins of tests/recommender_world.py), the
variant in /recommend's answer and the per-variant counters, the variant on the events' way to
the raw rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from socialrec.data.raw_records import _parse_event
from socialrec.models.ranker import Ranker
from socialrec.recommender import Recommender
from socialrec.recommender.experiments import (
    Experiments,
    WeightedRanker,
    arm_names,
    assign,
    bucket,
)
from socialrec.serving.metrics import ServiceMetrics
from socialrec.serving.schemas import EventIn
from socialrec.settings import CONTROL, HOLDOUT, Settings, get_settings
from socialrec.stores.seen import SQLiteSeenStore
from socialrec.timeutil import iso, utc_now
from tests.recommender_world import (
    RateRanker,
    StandInTwoTower,
    build_world,
    positive_rate_builder,
)
from tests.service.conftest import make_endpoints

_world = pytest.fixture(scope="module", name="world")(build_world)

VARIANTS = [{"name": "fewer_caps", "share": 0.2, "max_per_creator": 5}, {"name": "b", "share": 0.3}]
ENV = {
    "SOCIALREC_EXPERIMENT_SALT": "exp-7",
    "SOCIALREC_HOLDOUT_SHARE": "0.1",
    "SOCIALREC_VARIANTS": json.dumps(VARIANTS),
}


@pytest.fixture
def env(monkeypatch, tmp_path):
    for key, value in {**ENV, "SOCIALREC_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)


# --- assignment -----------------------------------------------------------------------------
def test_assignment_is_stable_across_processes_and_reloads(env, tmp_path):
    ids = list(range(0, 5000, 7)) + [2**63 - 1]
    here = [assign(get_settings(), u) for u in ids]
    assert here == [assign(get_settings(), u) for u in ids]  # a settings reload
    code = (
        "import json, sys; from socialrec.settings import get_settings; "
        "from socialrec.recommender.experiments import assign; s = get_settings(); "
        "print(json.dumps([assign(s, u) for u in json.loads(sys.argv[1])]))"
    )
    # another interpreter with another hash seed: hashlib, not hash()
    proc_env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(ids)],
        env=proc_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert json.loads(out.stdout) == here
    assert set(here) == {CONTROL, HOLDOUT, "fewer_caps", "b"}
    # another salt reshuffles
    other = Settings(**{**_kw(), "experiment_salt": "exp-8"})
    assert [assign(other, u) for u in ids] != here


def _kw() -> dict:
    return {"data_dir": Path("/nonexistent"), "experiment_salt": "exp-7", "holdout_share": 0.1,
            "variants": VARIANTS}  # fmt: skip


def test_shares_within_tolerance_on_100k_ids():
    s = Settings(**_kw())
    counts = Counter(assign(s, u) for u in range(100_000))
    expected = {HOLDOUT: 0.1, "fewer_caps": 0.2, "b": 0.3, CONTROL: 0.4}
    for name, share in expected.items():
        # 5 standard deviations of a binomial share at n = 100k is < 0.008
        assert abs(counts[name] / 100_000 - share) < 0.008, (name, counts)
    u = np.array([bucket("exp-7", i) for i in range(20_000)])
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


def test_defaults_put_everyone_in_control():
    s = Settings(data_dir=Path("/nonexistent"))
    assert {assign(s, u) for u in range(1000)} == {CONTROL}
    assert arm_names(s) == [CONTROL]


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"variants": [{"name": "a", "share": 0.1, "max_per_kategory": 3}]}, "max_per_kategory"),
        ({"variants": [{"name": "control", "share": 0.1}]}, "reserved"),
        ({"variants": [{"name": "a", "share": 0.1}, {"name": "a", "share": 0.1}]}, "repeated"),
        ({"variants": [{"name": "a", "share": 0.6}], "holdout_share": 0.5}, "at most 1"),
        ({"variants": [{"name": "a", "share": 0.1, "candidate_sources": ["ann"]}]}, "unknown"),
        ({"variants": [{"name": "Bad name", "share": 0.1}]}, "pattern"),
    ],
)
def test_a_wrong_variant_is_an_error_at_start(kw, message):
    with pytest.raises(ValidationError, match=message):
        Settings(data_dir=Path("/nonexistent"), **kw)


def test_unknown_outcome_weights_are_an_error_at_start(monkeypatch):
    bad = [{"name": "a", "share": 0.1, "outcome_weights": {"clicks": 1.0}}]
    monkeypatch.setenv("SOCIALREC_VARIANTS", json.dumps(bad))
    with pytest.raises(ValueError, match="clicks"):
        Experiments(get_settings(data_dir=Path("/nonexistent")))


# --- the policies through the real recommender ----------------------------------------------
class NoRanker:
    def predict(self, df):
        raise AssertionError("the holdout must not call the ranker")


def _user_in(settings: Settings, arm: str, candidates=(1, 2, 3)) -> int:
    return next(u for u in candidates if assign(settings, u) == arm)


def test_the_holdout_gets_the_plain_popular_fresh_baseline(world, tmp_path):
    # a salt that puts user 2 (known: onboarding categories 2, 3) in a 50% holdout
    salt = next(f"s{i}" for i in range(1000) if bucket(f"s{i}", 2) < 0.5)
    s = Settings(data_dir=tmp_path, experiment_salt=salt, holdout_share=0.5, source_top_n=10)
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as seen:
        control = Recommender(
            features=world["features"], two_tower=StandInTwoTower(), index=world["index"],
            seen_store=seen, ranker=NoRanker(), catalog=world["catalog"], settings=s,
            feature_builder=positive_rate_builder,
        )  # fmt: skip
        top = int(world["catalog"].top("popular", 1)[0][0])
        seen.mark(2, [top], "VIEW")
        experiments = Experiments(s)
        assert experiments.assign(2) == HOLDOUT
        holdout = experiments.recommender(HOLDOUT, control)
        assert experiments.recommender(HOLDOUT, control) is holdout  # made once
        rec = holdout.recommend(2, k=8, debug=True)
        with pytest.raises(AssertionError, match="must not call the ranker"):
            control.recommend(2, k=8)  # control ranks (with this ranker: fails)
    assert rec.debug["stages"]["retrieval"]["sources"] == {"popular": 10, "fresh": 10}
    catalog = world["catalog"]
    lists = {p for name in ("popular", "fresh") for p, _ in catalog.top(name, 50)}
    ids = [i["post_id"] for i in rec.items]
    assert len(ids) == 8 and set(ids) <= lists and top not in ids  # seen posts filtered
    assert not any(i["boosted"] or i["promoted"] for i in rec.items)
    # no ranker: the merged popular/fresh order is the score, best first
    scores = [i["score"] for i in rec.items]
    assert scores == sorted(scores, reverse=True)


def test_a_variant_serves_its_overrides(world, tmp_path):
    variants = [{"name": "only_fresh", "share": 0.5, "candidate_sources": ["fresh"]}]
    salt = next(f"s{i}" for i in range(1000) if bucket(f"s{i}", 2) < 0.5)
    s = Settings(data_dir=tmp_path, experiment_salt=salt, variants=variants, source_top_n=6)
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as seen:
        control = Recommender(
            features=world["features"], two_tower=StandInTwoTower(), index=world["index"],
            seen_store=seen, ranker=RateRanker(), catalog=world["catalog"], settings=s,
            feature_builder=positive_rate_builder,
        )  # fmt: skip
        experiments = Experiments(s)
        arm = experiments.recommender("only_fresh", control)
        rec = arm.recommend(2, k=5, debug=True)
        base = control.recommend(2, k=5, debug=True)
    assert rec.debug["stages"]["retrieval"]["sources"] == {"fresh": 6}
    assert set(base.debug["stages"]["retrieval"]["sources"]) >= {"two_tower", "popular"}
    assert control.settings.candidate_sources == s.candidate_sources  # control untouched


def test_a_variants_outcome_weights_combine_the_rankers_outcomes():
    class Outcomes(Ranker):
        def predict_outcomes(self, features_df):
            return pd.DataFrame({"positive": [0.5, 0.2], "negative": [0.4, 0.0]})

    ranker = Outcomes(weights={"positive": 1.0, "negative": -1.0})
    weighted = WeightedRanker(ranker, {"positive": 1.0, "negative": -3.0})
    np.testing.assert_allclose(ranker.predict(pd.DataFrame(index=[0, 1])), [0.1, 0.2])
    np.testing.assert_allclose(weighted.predict(pd.DataFrame(index=[0, 1])), [-0.7, 0.2])
    probs = ranker.predict_outcomes(None)
    np.testing.assert_allclose(weighted.combine(probs), [-0.7, 0.2])
    assert weighted.source_weights is None  # the rest is the ranker's


# --- the service: the variant in the answer and in the counters ------------------------------
def test_recommend_answers_the_variant_and_counts_it(tmp_path):
    s = Settings(
        data_dir=Path("/nonexistent"), **{k: v for k, v in _kw().items() if k != "data_dir"}
    )
    metrics = ServiceMetrics(CollectorRegistry())
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as seen:
        endpoints = make_endpoints(metrics, seen, settings=s)
        users = list(range(100, 160))
        answers = [endpoints.recommend(u, 3) for u in users]
    for u, out in zip(users, answers, strict=True):
        assert out.variant == assign(s, u)
        assert out.model_dump(mode="json")["variant"] == out.variant
    counts = Counter(a.variant for a in answers)
    for name in arm_names(s):
        value = metrics.registry.get_sample_value(
            "socialrec_recommend_variant_total", {"variant": name}
        )
        assert (value or 0) == counts.get(name, 0)


def test_events_carry_the_variant_to_the_raw_rows_and_the_counters(tmp_path):
    s = Settings(
        data_dir=Path("/nonexistent"), **{k: v for k, v in _kw().items() if k != "data_dir"}
    )
    ts = iso(utc_now().replace(microsecond=0))  # inside the accepted window
    base = {"user_id": 1, "post_id": 2, "event_type": "LIKE", "ts": ts}
    events = [
        EventIn(event_id="a", variant="b", **base),
        EventIn(event_id="c", variant="gone", **base),
        EventIn(event_id="d", **base),
    ]
    with pytest.raises(ValidationError):
        EventIn(event_id="x", variant="Not A Name", **base)
    with pytest.raises(ValidationError):
        EventIn(event_id="x", variant="a" * 33, **base)
    # the spool writes what the app sent (model_dump(mode="json", exclude_unset=True)): the
    # loader reads the variant back, and a line without one as null
    rows = [_parse_event(e.model_dump(mode="json", exclude_unset=True)) for e in events]
    assert [r["variant"] for r in rows] == ["b", "gone", None]
    assert _parse_event({**base, "event_id": "old"})["variant"] is None  # an older line
    metrics = ServiceMetrics(CollectorRegistry())
    with SQLiteSeenStore(tmp_path / "seen.sqlite") as seen:
        endpoints = make_endpoints(metrics, seen, settings=s)
        assert endpoints.events(events).accepted == 3

    def counted(label):
        return metrics.registry.get_sample_value(
            "socialrec_event_variant_total", {"variant": label}
        )

    assert (counted("b"), counted("other"), counted("none")) == (1, 1, 1)
