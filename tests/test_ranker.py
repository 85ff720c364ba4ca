"""Ranker features (one function for training and serving) and the multi-outcome CatBoost
ranker (one MultiLogloss model, outcomes combined with weights)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.features.ranking import (
    CAT_FEATURES,
    RANKER_FEATURES,
    SOURCE_FEATURES,
    ranking_features,
)
from socialrec.models.ranker import DEFAULT_WEIGHTS, OUTCOMES, Ranker, label
from tests.test_two_tower import tiny_frames


def with_outcomes(data: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``y_<outcome>`` labels of rows with a ``label`` and the ranking features: positive =
    label; like / share_comment = random subsets of the positives (like more likely in an
    onboarding category); full_view never happens (a log without it); negative = a sample of
    the non-positive rows on posts with a low positive rate (learnable from the features)."""
    rng = np.random.default_rng(seed)
    pos = data["label"].to_numpy().astype(bool)
    onboarding = data["category_in_onboarding"].to_numpy().astype(bool)
    rate = data["post_positive_rate"].fillna(0).to_numpy()
    low = rate < np.quantile(rate, 0.3)
    r = rng.random(len(data))
    return data.assign(
        **{
            label("positive"): pos.astype(np.int8),
            label("full_view"): np.zeros(len(data), np.int8),
            label("like"): (pos & (r < np.where(onboarding, 0.8, 0.2))).astype(np.int8),
            label("share_comment"): (pos & (r < 0.1)).astype(np.int8),
            label("negative"): (~pos & low & (r < 0.5)).astype(np.int8),
        }
    )


@pytest.fixture(scope="module")
def frames():
    return tiny_frames()


@pytest.fixture(scope="module")
def datasets(frames):
    s = frames.samples
    feats = ranking_features(frames.users, frames.posts, s, s["ts"])
    data = with_outcomes(pd.concat([feats, s[["label", "split"]]], axis=1))
    return {name: part for name, part in data.groupby("split")}


@pytest.fixture(scope="module")
def ranker(datasets):
    return Ranker(iterations=80, seed=3).fit(datasets["train"], datasets["validation"])


def test_features_have_the_promised_columns_and_values(frames, datasets):
    train = datasets["train"]
    assert list(train.columns[: len(RANKER_FEATURES)]) == RANKER_FEATURES
    assert set(CAT_FEATURES) <= set(RANKER_FEATURES)
    assert (train["post_age_hours"] >= 0).all()
    assert set(train["category_in_onboarding"].unique()) <= {0, 1}
    assert train["text_cosine"].between(-1, 1).all()
    # the stand-in text embeddings carry the category: matching pairs are more similar
    by_match = train.groupby("category_in_onboarding")["text_cosine"].mean()
    assert by_match[1] > by_match[0]
    # users who like what they onboarded with: the match feature is predictive
    assert train.groupby("category_in_onboarding")["label"].mean().diff().iloc[-1] > 0


def test_category_in_onboarding_matches_a_python_reference(frames):
    pairs = frames.samples.head(200)
    feats = ranking_features(
        frames.users, frames.posts, pairs, pd.Timestamp("2026-01-10", tz="UTC")
    )
    onb = dict(zip(frames.users["user_id"], frames.users["onboarding_categories"], strict=True))
    cat = dict(zip(frames.posts["post_id"], frames.posts["category_id"], strict=True))
    expected = [
        int(str(cat[p]) in onb[u].split(","))
        for u, p in zip(pairs["user_id"], pairs["post_id"], strict=True)
    ]
    assert feats["category_in_onboarding"].tolist() == expected


def test_500_candidates_batch_equals_one_pair_calls(frames):
    """Serving shape: one user (indexed frame, as the Feast online reader returns) x 500
    merged candidates (the sources' columns of socialrec.recommender.sources.merge)."""
    users = frames.users.set_index("user_id").iloc[[5]].assign(found=True)
    posts = frames.posts.set_index("post_id").iloc[:500].assign(found=True)
    # the Feast online readers return nullable integers
    posts = posts.astype({"n_impressions": "Int64", "category_id": "Int64"})
    user_id = int(users.index[0])
    ranks = np.arange(500, dtype=float)
    pairs = pd.DataFrame(
        {
            "user_id": user_id,
            "post_id": posts.index.to_numpy(),
            "retrieval_score": np.linspace(0.9, 0.1, 500),  # the older name of the ANN score
            "two_tower_rank": ranks,
            "popular_score": 500 - ranks,
            "popular_rank": np.where(ranks < 100, ranks, np.nan),  # not every source has all
            "merged_score": 1 / (60 + ranks),
            "n_sources": np.where(ranks < 100, 2, 1),
            "catalog_trending": ranks % 7,
            "catalog_popular": ranks % 11,
        }
    )
    now = pd.Timestamp("2026-01-07T12:00:00Z")
    batch = ranking_features(users, posts, pairs, now)
    assert len(batch) == 500
    # the two-tower score of the older "retrieval_score" name; the sources' columns as given
    np.testing.assert_array_equal(batch["two_tower_score"], pairs["retrieval_score"])
    for col in ("two_tower_rank", "popular_score", "merged_score", "catalog_popular"):
        np.testing.assert_array_equal(batch[col], pairs[col])
    assert batch["popular_rank"].isna().sum() == 400
    absent = [c for c in SOURCE_FEATURES if c not in pairs.columns and c != "two_tower_score"]
    assert absent and batch[absent].isna().all().all()  # sources that returned nothing
    # otherwise NaN only for the positive rate in a category the user never had events in
    rest = batch.drop(columns=["user_category_positive_rate", "popular_rank", *absent])
    assert rest.notna().all().all()
    for i in (0, 123, 499):
        one = ranking_features(users, posts, pairs.iloc[[i]], now)
        pd.testing.assert_frame_equal(one, batch.iloc[[i]])
    # an explicit two_tower_score wins over retrieval_score
    both = ranking_features(users, posts, pairs.assign(two_tower_score=0.5), now)
    assert (both["two_tower_score"] == 0.5).all()


def test_unknown_users_and_posts_get_missing_features_not_errors(frames):
    pairs = pd.DataFrame(
        {
            "user_id": [10**9, int(frames.users["user_id"].iloc[0])],
            "post_id": [int(frames.posts["post_id"].iloc[0]), 10**9],
        }
    )
    feats = ranking_features(frames.users, frames.posts, pairs, 1_767_225_600)
    assert np.isnan(feats.loc[0, "user_n_events"]) and feats.loc[0, "text_cosine"] == 0.0
    assert feats.loc[1, "post_category_id"] == "unknown"
    assert feats.loc[1, "category_in_onboarding"] == 0


def test_source_signals_of_any_dtype_become_floats(frames):
    # the merged candidates' columns: float64, nullable Float64 with NA, ints, text numbers
    user, post = int(frames.users["user_id"].iloc[0]), int(frames.posts["post_id"].iloc[0])
    pairs = pd.DataFrame(
        {
            "user_id": [user] * 3,
            "post_id": [post] * 3,
            "merged_score": [0.5, np.nan, 2.0],
            "two_tower_score": pd.array([0.25, pd.NA, 1.0], dtype="Float64"),
            "n_sources": [1, 2, 3],
            "popular_rank": ["4", "x", None],
        }
    )
    feats = ranking_features(frames.users, frames.posts, pairs, 1_767_225_600)
    assert list(feats.columns) == RANKER_FEATURES
    got = feats[["merged_score", "two_tower_score", "n_sources", "popular_rank"]]
    assert (got.dtypes == np.float64).all()
    expected = [[0.5, 0.25, 1, 4], [np.nan, np.nan, 2, np.nan], [2.0, 1.0, 3, np.nan]]
    np.testing.assert_array_equal(got.to_numpy(), np.array(expected, dtype=float))
    assert feats["trending_score"].isna().all()  # a source that found none of them


def test_ranker_models_the_outcomes_that_happen(ranker, datasets):
    # full views never happen in this data: left out of the model (and weigh nothing)
    assert ranker.outcomes == ["positive", "like", "share_comment", "negative"]
    assert ranker.model.get_params()["loss_function"] == "MultiLogloss"
    probs = ranker.predict_outcomes(datasets["test"])
    assert list(probs.columns) == ranker.outcomes
    assert probs.index.equals(datasets["test"].index)
    assert ((probs > 0) & (probs < 1)).all().all()
    metrics = ranker.evaluate(datasets["validation"])
    # each outcome is learned from the features it depends on
    for outcome in ("positive", "like", "negative"):
        assert metrics[f"{outcome}_auc"] > 0.65, metrics
        assert 0 < metrics[f"{outcome}_logloss"] < 0.7, metrics
    assert "full_view_auc" not in metrics
    assert metrics["positive_rate"] == pytest.approx(
        datasets["validation"][label("positive")].mean()
    )
    # the like model knows a like is likelier in an onboarding category
    test = datasets["test"]
    by_match = probs["like"].groupby(test["category_in_onboarding"].to_numpy()).mean()
    assert by_match[1] > by_match[0]


def test_predict_is_the_weighted_combination(ranker, datasets):
    test = datasets["test"]
    probs = ranker.predict_outcomes(test)
    assert ranker.weights == DEFAULT_WEIGHTS
    expected = probs["positive"] - probs["negative"]  # the default: positive minus negative
    np.testing.assert_allclose(ranker.predict(test), expected.to_numpy())
    weights = {"positive": 1.0, "like": 0.5, "negative": -2.0}
    np.testing.assert_allclose(
        ranker.combine(probs, weights),
        (probs["positive"] + 0.5 * probs["like"] - 2.0 * probs["negative"]).to_numpy(),
    )


def test_combine_by_hand():
    probs = pd.DataFrame(
        {"positive": [0.5, 0.2], "like": [0.1, 0.9], "negative": [0.4, 0.0], "other": [1, 1]}
    )
    r = Ranker(weights={"positive": 1.0, "like": 0.5, "negative": -1.0})
    # the negative outcome subtracts; an outcome without a weight counts 0
    assert r.combine(probs).tolist() == pytest.approx([0.5 + 0.05 - 0.4, 0.2 + 0.45])
    assert r.combine(probs, {"negative": -1.0}).tolist() == pytest.approx([-0.4, 0.0])
    assert r.combine(probs.iloc[:0]).tolist() == []


def test_save_and_load_keep_outcomes_weights_and_predictions(ranker, datasets, tmp_path):
    ranker.weights = {**DEFAULT_WEIGHTS, "like": 0.25}
    try:
        path = ranker.save(tmp_path / "ranker")
        assert path.name == "ranker.cbm" and path.exists()
        assert (tmp_path / "ranker" / "ranker.json").exists()
        loaded = Ranker.load(tmp_path / "ranker")
        assert loaded.outcomes == ranker.outcomes and loaded.weights == ranker.weights
        test = datasets["test"]
        np.testing.assert_allclose(loaded.predict_outcomes(test), ranker.predict_outcomes(test))
        np.testing.assert_array_equal(loaded.predict(test), ranker.predict(test))
        assert Ranker.load(path).outcomes == ranker.outcomes  # the .cbm path works too
    finally:
        ranker.weights = dict(DEFAULT_WEIGHTS)


def test_one_outcome_is_a_plain_logloss_model(datasets):
    train = datasets["train"].drop(columns=[label(o) for o in OUTCOMES if o != "positive"])
    single = Ranker(iterations=20, seed=1).fit(train)
    assert single.outcomes == ["positive"]
    assert single.model.get_params()["loss_function"] == "Logloss"
    probs = single.predict_outcomes(datasets["test"])
    assert list(probs.columns) == ["positive"] and probs["positive"].between(0, 1).all()
    np.testing.assert_allclose(single.predict(datasets["test"]), probs["positive"])
    assert single.predict_outcomes(datasets["test"].iloc[:0]).empty


def test_fit_needs_positive_and_other_rows_and_every_feature(datasets):
    train = datasets["train"]
    with pytest.raises(ValueError, match="positive"):
        Ranker(iterations=5).fit(train.assign(**{label("positive"): 1}))
    with pytest.raises(ValueError, match="positive"):
        Ranker(iterations=5).fit(train.drop(columns=[label("positive")]))
    with pytest.raises(ValueError, match="missing ranker features"):
        Ranker(iterations=5).fit(train.drop(columns=["merged_score"]))
    with pytest.raises(RuntimeError):
        Ranker().predict_outcomes(train)


def test_grouped_ndcg_by_hand():
    from socialrec.models.metrics import grouped_ndcg

    # user 1: the relevant post ranked first -> 1; user 2: ranked second of two -> 1/log2(3)
    # (gain 2^1-1 = 1); user 3 has no positive relevance and is left out
    groups = [1, 1, 2, 2, 3]
    relevance = [2.0, 0.0, 0.0, 1.0, -2.0]
    scores = [0.9, 0.1, 0.8, 0.2, 0.5]
    assert grouped_ndcg(groups, relevance, scores, 10) == pytest.approx((1 + 1 / np.log2(3)) / 2)


def test_user_x_post_history_features():
    """category / creator affinity, positive rate in the category and history cosine, from the
    user_history columns (hand-computed)."""
    emb = np.zeros(384, dtype=np.float32)
    emb[0] = 1.0
    other = np.zeros(384, dtype=np.float32)
    other[1] = 1.0
    users = pd.DataFrame(
        {
            "user_id": [1, 2],
            "onboarding_categories": ["3", ""],
            # user 1: 4 positives in 10 events of category 3, 1 positive in 5 of category 7
            "category_counts": ["3:4:10,7:1:5", None],
            "creator_positives": ["20:3,21:2", None],
            "history_embedding": [emb, None],
        }
    )
    posts = pd.DataFrame(
        {
            "post_id": [100, 101, 102],
            "category_id": [3, 7, 9],
            "creator_id": [20, 21, 22],
            "description_embedding": [emb, other, emb],
        }
    )
    pairs = pd.DataFrame({"user_id": [1, 1, 1, 2], "post_id": [100, 101, 102, 100]})
    f = ranking_features(users, posts, pairs, pd.Timestamp("2026-01-07T00:00Z"))
    assert f["category_affinity"].tolist() == pytest.approx([0.8, 0.2, 0.0, 0.0])
    assert f["user_category_events"].tolist() == [10, 5, 0, 0]
    assert f["user_category_positive_rate"].iloc[:2].tolist() == pytest.approx([0.4, 0.2])
    assert np.isnan(f["user_category_positive_rate"].iloc[2])  # no events in the category
    assert f["creator_affinity"].tolist() == pytest.approx([0.6, 0.4, 0.0, 0.0])
    assert f["history_cosine"].tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0])
    assert f[SOURCE_FEATURES].isna().all().all()  # no source columns given by the caller


def test_progress_hears_the_losses_every_25_iterations_and_changes_nothing(datasets):
    lines: list[str] = []
    heard = Ranker(iterations=60, seed=3, early_stopping_rounds=None).fit(
        datasets["train"], datasets["validation"], progress=lines.append
    )
    quiet = Ranker(iterations=60, seed=3, early_stopping_rounds=None).fit(
        datasets["train"], datasets["validation"]
    )
    np.testing.assert_allclose(
        heard.predict(datasets["validation"]), quiet.predict(datasets["validation"])
    )
    assert [line.split(":")[0] for line in lines] == [
        "ranker iteration 25/60", "ranker iteration 50/60", "ranker iteration 60/60"
    ]  # fmt: skip
    assert "learn" in lines[0] and "validation" in lines[0]
