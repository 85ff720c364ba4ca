"""The ranker's training on replayed requests (socialrec.training.ranker): candidate rows and
their labels, held-out users, the outcome weights, the fit, the test replay and the gate (real
MLflow on SQLite for the gate)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from socialrec.data.eventlog import SplitBounds
from socialrec.evaluation.protocol import build_requests
from socialrec.features.ranking import RANKER_FEATURES
from socialrec.models import registry
from socialrec.models.ranker import OUTCOMES, Ranker, label
from socialrec.recommender.replay import Snapshot
from socialrec.settings import Settings
from socialrec.training import ranker as rt
from socialrec.training import ranker_rows as rr
from tests.conftest import at
from tests.test_replay import AS_OF, POSTS, ROWS, reader
from tests.test_replay import log as replay_log  # noqa: F401 (a fixture)

CREATED = rr.created_seconds(POSTS)


def _settings(tmp_path, **kw) -> Settings:
    return Settings(
        data_dir=tmp_path,
        **{"candidate_sources": ["popular"], "source_top_n": 50, "ranker_iterations": 40, **kw},
    )


def test_created_seconds_of_the_live_posts():
    assert CREATED.to_dict() == {p: at(0) for p in range(1, 11)} | {11: at(4)}


def test_holdout_users_is_a_stable_fifth_of_the_users():
    users = np.arange(10_000)
    hold = rr.holdout_users(users)
    assert 0.17 < hold.mean() < 0.23
    np.testing.assert_array_equal(rr.holdout_users(users[::-1]), hold[::-1])  # per id
    assert rr.holdout_users(users, share=0.0).sum() == 0


# --- candidate rows -----------------------------------------------------------------------------
@pytest.fixture
def replayed(replay_log, tmp_path):  # noqa: F811
    requests = build_requests(replay_log, CREATED, AS_OF, at(5))
    settings = _settings(tmp_path)
    snap = Snapshot.build(AS_OF, replay_log, POSTS, reader(replay_log, []), settings)
    rec, seen = snap.recommender(None, settings)
    return requests, rec, seen


def test_candidate_rows_label_the_candidates_with_the_requests_outcomes(replayed):
    requests, rec, seen = replayed
    rows = rr.candidate_rows(rec, seen, requests, np.array([True, True]), 0.01, seed=0)
    assert set(RANKER_FEATURES) <= set(rows.columns)
    assert {label(o) for o in OUTCOMES} | {"request", "day", "user_id", "post_id"} <= set(rows)
    for i in range(len(requests)):
        part = rows[rows["request"] == i]
        # held out: every candidate the sources gave (the posts existing and not seen; post 11
        # is published between the two requests)
        ts = requests.frame["ts"].iat[i]
        seen_i = set(requests.seen[i].tolist())
        expected = sorted(p for p, t in CREATED.items() if t <= ts and p not in seen_i)
        assert expected == ([*range(1, 11)] if i == 0 else [*range(3, 12)])
        assert sorted(part["post_id"]) == expected
        for outcome in OUTCOMES:
            got = set(part.loc[part[label(outcome)] == 1, "post_id"])
            assert got == set(requests.outcomes[outcome][i].tolist()) & set(expected), outcome
    # day 3's like of post 2 and day 4's like of post 3
    assert rows.loc[rows[label("positive")] == 1, ["request", "post_id"]].values.tolist() == [
        [0, 2],
        [1, 3],
    ]
    assert set(rows.loc[rows[label("like")] == 1, "post_id"]) == {2, 3}
    # the sources' signals are features of the rows
    assert rows["popular_rank"].notna().all() and rows["two_tower_score"].isna().all()
    assert (rows["n_sources"] == 1).all()


def test_candidate_rows_sample_the_negatives_of_training_users(replayed):
    requests, rec, seen = replayed
    # nearly no negative sampled: the positives only
    rows = rr.candidate_rows(rec, seen, requests, np.array([False, False]), 1e-9, seed=0)
    assert rows[["request", "post_id"]].values.tolist() == [[0, 2], [1, 3]]
    assert (rows[label("positive")] == 1).all()
    # every negative kept at share 1; a held-out user keeps everything regardless
    full = rr.candidate_rows(rec, seen, requests, np.array([False, True]), 1.0, seed=0)
    mixed = rr.candidate_rows(rec, seen, requests, np.array([True, False]), 1e-9, seed=0)
    assert len(full) == 10 + 9
    assert (mixed["request"] == 0).sum() == 10 and (mixed["request"] == 1).sum() == 1


def test_training_windows_are_whole_days_at_most_max_windows():
    assert rr.training_windows(at(3), at(5), 8) == [(at(3), at(4)), (at(4), at(5))]
    # a split that starts mid-day: its first window ends at the next midnight
    assert rr.training_windows(at(3, 6), at(5), 8) == [(at(3, 6), at(4)), (at(4), at(5))]
    # ten days in at most three windows: four days each, the last one shorter
    assert rr.training_windows(at(0), at(10), 3) == [
        (at(0), at(4)),
        (at(4), at(8)),
        (at(8), at(10)),
    ]
    assert rr.training_windows(at(0), at(0, 5), 8) == [(at(0), at(0, 5))]
    assert rr.training_windows(at(1), at(1), 8) == []


def test_build_training_set_replays_every_day_as_of_its_start(replay_log, tmp_path):  # noqa: F811
    settings = _settings(tmp_path, ranker_negative_share=1.0)  # keep every candidate
    calls = []
    data, info = rr.build_training_set(
        settings, replay_log, POSTS, CREATED, AS_OF, at(5), reader(replay_log, calls), None
    )
    assert (info["windows"], info["requests"]) == (2, 2)
    assert info["rows"] == len(data) == 10 + 9 and data["request"].nunique() == 2
    assert info["positive_rate"] == pytest.approx(2 / 19)
    # one snapshot per day, as of the day's midnight
    assert sorted({as_of for _, _, as_of in calls}) == [at(3), at(4)]
    day3, day4 = (data[data["day"] == d] for d in sorted(data["day"].unique()))
    assert set(day3.loc[day3[label("positive")] == 1, "post_id"]) == {2}
    assert set(day4.loc[day4[label("positive")] == 1, "post_id"]) == {3}
    # user 1 has no features at day 3's start; at day 4's start its two day-3 events count
    assert day3["user_n_events"].isna().all() and (day4["user_n_events"] == 2).all()
    assert day4["post_id"].tolist()[:2] == [3, 4]  # the popular order minus the seen posts
    # at most ranker_max_requests requests, spread over the windows
    one = rr.build_training_set(
        _settings(tmp_path, ranker_max_requests=1), replay_log, POSTS, CREATED, AS_OF, at(5),
        reader(replay_log, []), None,
    )[1]  # fmt: skip
    assert one["requests"] == 2  # one per window at least


class FrameReader:
    """The replay log's feature reader as an object another process can load (a closure
    cannot be pickled: then the windows stay in the training's process)."""

    def __init__(self, log):
        self.log = log

    def __call__(self, entity, ids, as_of):
        return reader(self.log, [])(entity, ids, as_of)


def test_windows_replayed_elsewhere_give_the_same_rows(replay_log, tmp_path, monkeypatch):  # noqa: F811
    started, submitted = [], []

    class Spy(rr.Elsewhere):
        ended = False

        def __init__(self, *args):
            started.append(args)
            super().__init__(*args)

        def submit(self, fn, *args):
            submitted.append(args[0])  # the window
            super().submit(fn, *args)

        def close(self):
            super().close()
            Spy.ended = self._proc.poll() is not None

    monkeypatch.setattr(rr, "Elsewhere", Spy)
    monkeypatch.setattr(rr, "PRELOAD", ())  # none of it needed here: a faster start
    args = (replay_log, POSTS, CREATED, AS_OF, at(5), FrameReader(replay_log), None)
    alone = _settings(tmp_path, ranker_negative_share=1.0, ranker_replay_processes=1)
    here = rr.build_training_set(alone, *args)
    assert not started
    lines: list[str] = []
    side_by_side = _settings(tmp_path, ranker_negative_share=1.0, ranker_replay_processes=2)
    both = rr.build_training_set(side_by_side, *args, progress=lines.append)
    assert len(started) == 1 and submitted == [(at(4), at(5))]  # day 4 elsewhere, 3 here
    assert Spy.ended  # the process of its own ended with it
    pd.testing.assert_frame_equal(both[0], here[0], check_exact=True)
    assert both[1] == here[1] and len(lines) == 2
    # a closure does not pickle: everything stays here
    rr.build_training_set(side_by_side, *args[:5], reader(replay_log, []), None)
    assert len(submitted) == 1


def _fails(message: str):
    raise ValueError(message)


def _twice(x: int) -> int:
    return 2 * x


def test_one_process_answers_its_calls_in_order_and_reports_an_error():
    other = rr.Elsewhere(preload=())
    try:
        for x in (1, 2):
            other.submit(_twice, x)
        other.submit(_fails, "no rows")
        other.submit(_twice, 5)
        assert [other.result(), other.result()] == [2, 4]
        with pytest.raises(RuntimeError, match="(?s)a replay process failed.*ValueError: no rows"):
            other.result()
        assert other.result() == 10  # an error ends the call, not the process
    finally:
        other.close()
    assert other._proc.poll() == 0  # its calls ended: it stopped when told


def test_a_call_still_running_is_killed_when_the_block_ends():
    other = rr.Elsewhere(preload=())
    other.submit(time.sleep, 60)
    t0 = time.monotonic()
    other.close()
    assert other._proc.poll() is not None and time.monotonic() - t0 < 10


def test_one_snapshot_for_a_window_of_several_days(replay_log, tmp_path):  # noqa: F811
    settings = _settings(tmp_path, ranker_negative_share=1.0, ranker_max_snapshots=1)
    calls = []
    data, info = rr.build_training_set(
        settings, replay_log, POSTS, CREATED, AS_OF, at(5), reader(replay_log, calls), None
    )
    assert (info["windows"], info["requests"]) == (1, 2)
    assert {as_of for _, _, as_of in calls} == {at(3)}
    # day 4's request is asked from day 3's snapshot: user 1 still has no features, and the
    # seen set of the request is its own (posts 1 and 2 are not candidates on day 4)
    assert data["user_n_events"].isna().all()
    day4 = data[data["day"] == data["day"].max()]
    assert not {1, 2} & set(day4["post_id"]) and len(day4) == 9


# --- weights and metrics ----------------------------------------------------------------------
def test_ndcg_by_request_averages_per_user():
    rows = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1, 2, 2],
            "day": [0, 0, 1, 1, 0, 0],
            "request": [0, 0, 1, 1, 2, 2],
            "post_id": [10, 11, 10, 11, 10, 11],
            label("positive"): [1, 0, 0, 1, 0, 0],
        }
    )
    scores = np.array([0.9, 0.1, 0.9, 0.1, 0.5, 0.5])
    # user 1: 1 and 1/log2(3); user 2 has no positive: left out
    assert rt.ndcg_by_request(rows, scores) == pytest.approx((1 + 1 / np.log2(3)) / 2)
    # a tie goes to the lower post id
    assert rt.ndcg_by_request(rows.iloc[:2], np.array([0.5, 0.5])) == 1.0
    assert np.isnan(rt.ndcg_by_request(rows.iloc[4:], scores[4:]))


def test_ndcg_by_request_is_the_protocols_ndcg_to_the_last_bit():
    """The array version against the protocol's own per-request NDCG, request by request
    (ties in scores, requests without a positive, users with several requests)."""
    from socialrec.evaluation.protocol import request_metrics

    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 40, 300)
    request = np.repeat(np.arange(len(sizes)), sizes)
    rows = pd.DataFrame(
        {
            "user_id": rng.integers(0, 60, len(sizes))[request],
            "day": request // 50,
            "request": request,
            "post_id": np.concatenate([rng.permutation(1000)[:n] for n in sizes]),
            label("positive"): (rng.random(len(request)) < 0.1).astype(np.int8),
        }
    ).sample(frac=1.0, random_state=3)  # a request's rows need not be together
    scores = np.round(rng.random(len(rows)), 1)  # many ties
    per_request = []
    for (user, _, _), g in rows.assign(s=scores).groupby(["user_id", "day", "request"], sort=False):
        g = g.sort_values(["s", "post_id"], ascending=[False, True])
        relevant = g.loc[g[label("positive")] == 1, "post_id"].tolist()
        if relevant:
            per_request.append((user, request_metrics(g["post_id"].tolist(), relevant)["ndcg@10"]))
    expected = float(pd.DataFrame(per_request).groupby(0)[1].mean().mean())
    assert rt.ndcg_by_request(rows, scores) == expected


class FixedOutcomes(Ranker):
    """A ranker whose outcome probabilities are given (one row per holdout row)."""

    def __init__(self, probs: pd.DataFrame):
        super().__init__()
        self.outcomes = list(probs.columns)
        self.probs = probs

    def predict_outcomes(self, features_df):
        return self.probs.set_index(features_df.index)


def test_choose_weights_picks_the_best_held_out_weighting():
    holdout = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2],
            "day": 0,
            "request": [0, 0, 0, 1, 1],
            "post_id": [1, 2, 3, 4, 5],
            label("positive"): [0, 1, 0, 0, 1],
        }
    )
    probs = pd.DataFrame(
        {
            # post 1 looks likelier than post 2, but it is likely disliked
            "positive": [0.6, 0.5, 0.1, 0.5, 0.4],
            "like": [0.0, 0.0, 0.0, 0.0, 0.3],  # post 5 is the one likely to be liked
            "negative": [0.5, 0.0, 0.0, 0.0, 0.0],
        }
    )
    weights, tried = rt.choose_weights(FixedOutcomes(probs), holdout)
    assert weights == {"positive": 1.0, "like": 0.5, "negative": -1.0}
    miss = 1 / np.log2(3)  # the relevant post second
    got = {(t["like"], t["negative"]): t["ndcg@10"] for t in tried}
    assert got == pytest.approx(
        {
            (0.0, 0.0): miss,
            (0.0, -1.0): (1 + miss) / 2,
            (0.5, 0.0): (miss + 1) / 2,
            (0.5, -1.0): 1.0,
        }  # fmt: skip
    )
    # an outcome the model does not predict is not tried
    only, tried = rt.choose_weights(FixedOutcomes(probs[["positive", "negative"]]), holdout)
    assert only == {"positive": 1.0, "negative": -1.0} and len(tried) == 2


def synthetic_rows(n_users: int = 200, per_request: int = 20, seed: int = 0) -> pd.DataFrame:
    """Replayed-candidate-shaped rows: the positives have a higher post positive rate; the
    merged score knows nothing; the negatives have many 1-day events."""
    rng = np.random.default_rng(seed)
    n = n_users * per_request
    relevant = np.zeros(n, dtype=bool)
    relevant[rng.choice(n, n // 10, replace=False)] = True
    frame = pd.DataFrame({c: np.full(n, np.nan) for c in RANKER_FEATURES})
    frame["post_category_id"] = "1"
    frame["post_media_type"] = "video"
    frame["post_positive_rate"] = rng.random(n) + relevant * 0.8
    frame["post_n_events_1d"] = rng.random(n)
    frame["merged_score"] = rng.random(n)
    negative = ~relevant & (frame["post_n_events_1d"].to_numpy() > 0.8)
    return frame.assign(
        **{
            label("positive"): relevant.astype(np.int8),
            label("full_view"): np.zeros(n, np.int8),
            label("like"): (relevant & (rng.random(n) < 0.5)).astype(np.int8),
            label("share_comment"): np.zeros(n, np.int8),
            label("negative"): negative.astype(np.int8),
            "request": np.repeat(np.arange(n_users), per_request),
            "day": 0,
            "user_id": np.repeat(np.arange(1000, 1000 + n_users), per_request),
            "post_id": np.tile(np.arange(per_request), n_users),
        }
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    settings = _settings(tmp_path_factory.mktemp("fit"))
    return rt.fit_ranker(settings, synthetic_rows())


def test_fit_ranker_trains_on_some_users_and_measures_on_the_others(fitted):
    m = fitted.metrics
    data = synthetic_rows()
    hold = rr.holdout_users(data["user_id"].to_numpy())
    assert m["train_rows"] == (~hold).sum() and m["validation_rows"] == hold.sum()
    # the ranker learned the positive rate; the merged score is noise
    assert m["validation_ndcg@10"] > m["validation_merged_ndcg@10"] + 0.2, m
    assert fitted.ranker.outcomes == ["positive", "like", "negative"]
    assert fitted.ranker.weights["negative"] <= 0 and fitted.ranker.weights["positive"] == 1.0
    assert fitted.weights_tried and fitted.params["weights_from"].startswith("validation")
    assert any(k.startswith("importance.") for k in m)
    assert fitted.params["one_hot_max_size"] == 64  # logged with the model's parameters


def test_fit_ranker_takes_the_settings_weights_but_never_a_rewarded_negative(tmp_path):
    settings = _settings(tmp_path, ranker_iterations=5, ranker_one_hot_max_size=3)
    fit = rt.fit_ranker(settings, synthetic_rows(60), {"positive": 1.0, "negative": 0.7})
    assert fit.ranker.weights == {"positive": 1.0, "negative": 0.0}
    assert fit.params["weights_from"] == "settings"
    # and CatBoost's one-hot bound (the default's in the fixture above)
    assert fit.ranker.model.get_all_params()["one_hot_max_size"] == 3
    with pytest.raises(ValueError, match="too few"):
        rt.fit_ranker(settings, synthetic_rows(60).assign(**{label("positive"): 0}))


# --- the test replay and the gate -----------------------------------------------------------------
class ByImpressions:
    """A stand-in ranker: prefers posts whose impression count is near ``target``."""

    def __init__(self, target: float):
        self.target = target

    def predict(self, feats):
        return -np.abs(feats["post_n_impressions"].to_numpy() - self.target)


BOUNDS = SplitBounds(validation_start=at(2), test_start=AS_OF, data_start=at(0), data_end=at(5) - 1)


@pytest.fixture
def gate_numbers(replay_log, tmp_path):  # noqa: F811
    return rt.test_replay_ndcg(
        _settings(tmp_path), replay_log, POSTS, BOUNDS, reader(replay_log, []), None, None,
        {"good": ByImpressions(9), "bad": ByImpressions(0), "none": None},
    )  # fmt: skip


def test_test_replay_ndcg_ranks_the_test_requests_without_feed_policies(gate_numbers):
    # the merged (popular) order: day 3 has post 2 second, day 4 post 3 first
    assert gate_numbers["merged"] == pytest.approx((1 / np.log2(3) + 1) / 2)
    # post 2 has 9 impressions: first on day 3; on day 4 post 3 (8) is the nearest unseen
    assert gate_numbers["good"] == pytest.approx(1.0)
    # fewest impressions first: post 2 ninth of 10 on day 3; on day 4 post 3 ninth of 9, after
    # post 11 (published on day 4, after the snapshot: zero counts, a candidate all the same)
    assert gate_numbers["bad"] == pytest.approx(1 / np.log2(10))
    assert "none" not in gate_numbers and gate_numbers["requests"] == 2.0
    assert set(ROWS) and len(gate_numbers) == 4


def test_the_gate_replayed_side_by_side_gives_the_same_numbers(
    gate_numbers,
    replay_log,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    monkeypatch.setattr(rr, "PRELOAD", ())
    rankers = {"good": ByImpressions(9), "bad": ByImpressions(0), "none": None}
    args = (replay_log, POSTS, BOUNDS, FrameReader(replay_log), None, None, rankers)
    with rr.replay_processes(1) as others:
        both = rt.test_replay_ndcg(_settings(tmp_path), *args, others)
        assert others[0]._collected == 1  # the second request was replayed there
    assert both == gate_numbers


@pytest.fixture(scope="module")
def mlflow_settings(tmp_path_factory):
    s = Settings(data_dir=tmp_path_factory.mktemp("mlflow"), quality_gate_tolerance=0.02)
    s.ensure_dirs()
    return s


def _register(settings, ranker: Ranker, metrics: dict, directory) -> int:
    ranker.save(directory)
    reg = registry.log_ranker(settings, ranker, directory, params={"n": 1}, metrics=metrics,
                              data={"bounds": BOUNDS.__dict__})  # fmt: skip
    return reg.version


@pytest.mark.integration
def test_the_ranker_gate_promotes_only_a_challenger_that_beats_the_merged_order(
    mlflow_settings, fitted, gate_numbers, tmp_path
):
    s, ranker = mlflow_settings, fitted.ranker
    assert registry.version_metrics(s, registry.RANKER) == {}  # nothing registered yet
    with pytest.raises(ValueError, match="no challenger"):
        rt.ranker_gate(s, {})
    merged = gate_numbers["merged"]

    def gate(challenger: float, champion: float | None = None):
        # what the asset logs (its test replay's numbers) and the check reads back
        numbers = {"challenger": challenger, "merged": merged}
        if champion is not None:
            numbers["champion"] = champion
        version = _register(s, ranker, {f"test_ndcg@10.{k}": v for k, v in numbers.items()},
                            tmp_path / f"v{challenger}")  # fmt: skip
        logged = registry.version_metrics(s, registry.RANKER, registry.CHALLENGER)
        assert logged["version"] == version
        result = rt.ranker_gate(s, logged)
        if result.passed:  # the promotion step, after the gate (which never promotes)
            registry.promote(s, registry.RANKER, result.challenger_version, result.reason)
        return version, result

    # v1 does not beat the merged order: blocked, even without a champion
    v1, first = gate(gate_numbers["bad"])
    assert not first.passed and "does not beat the merged" in first.reason, first
    assert registry.aliased_version(s, registry.RANKER, registry.CHAMPION) is None
    # v2 beats it: promoted (nothing to regress against)
    v2, second = gate(gate_numbers["good"])
    assert second.passed and second.champion_version is None, second
    assert second.challenger_value == pytest.approx(gate_numbers["good"])
    assert int(registry.champion_version(s, registry.RANKER).version) == v2
    assert rt.ranker_gate(s, registry.version_metrics(s, registry.RANKER)).reason == (
        "the challenger is already the champion"
    )
    # v3 beats the merged order but regresses against the champion's 1.0 by more than 2%
    v3, third = gate(0.9, champion=gate_numbers["good"])
    assert not third.passed and third.champion_version == v2, third
    assert int(registry.champion_version(s, registry.RANKER).version) == v2
    # v4 within the tolerance: promoted
    v4, fourth = gate(0.99, champion=gate_numbers["good"])
    assert fourth.passed and int(registry.champion_version(s, registry.RANKER).version) == v4
    # both spellings of the metric names are read
    assert rt.ranker_gate(s, {"test_ndcg@10.challenger": 1.0}).passed  # already the champion
    assert v1 < v2 < v3 < v4
    # a champion whose NDCG@10 is missing (logged NaN is dropped) is replaced, with a warning
    v5 = _register(s, ranker, {}, tmp_path / "v5")
    nan_champion = rt.ranker_gate(s, {"test_ndcg@10.challenger": 0.5, "test_ndcg@10.merged": 0.1})
    assert nan_champion.passed and "champion metric is nan" in nan_champion.warning
    assert nan_champion.challenger_version == v5 and nan_champion.champion_version == v4
    assert int(registry.champion_version(s, registry.RANKER).version) == v4  # gate alone: no


def test_top_hits_ranks_each_positive_as_a_sort_would():
    """The fusion weights' recall (rt._TopHits: each positive's rank counted from its request's
    rows) against sorting every request's rows, on ties in score and requests without a
    positive."""

    def by_sorting(rows, scores, k):
        req = rows["request"].to_numpy()
        order = np.lexsort((rows["post_id"].to_numpy(), -scores, req))
        req_sorted = req[order]
        start = np.r_[0, np.flatnonzero(np.diff(req_sorted)) + 1]
        rank = np.arange(len(order)) - np.repeat(start, np.diff(np.r_[start, len(order)]))
        y = rows[label("positive")].to_numpy()[order].astype(bool)
        hits = pd.Series(y & (rank < k)).groupby(req_sorted).sum()
        total = pd.Series(y).groupby(req_sorted).sum()
        ok = total > 0
        return float((hits[ok] / total[ok]).mean())

    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 60, 200)
    request = np.repeat(rng.permutation(1000)[: len(sizes)], sizes)
    rows = pd.DataFrame(
        {
            "request": request,
            "post_id": np.concatenate([rng.permutation(500)[:n] for n in sizes]),
            label("positive"): (rng.random(len(request)) < 0.05).astype(np.int8),
        }
    ).sample(frac=1.0, random_state=2)
    top_hits = rt._TopHits(rows)
    for _ in range(5):
        scores = np.round(rng.random(len(rows)), 1)  # many ties
        for k in (1, 5, 20):
            assert top_hits(scores, k) == by_sorting(rows, scores, k)
    none = rows.assign(**{label("positive"): 0})
    assert np.isnan(rt._TopHits(none)(np.zeros(len(none)), 10))
