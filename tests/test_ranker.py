"""Ranker features (one function for training and serving) and the CatBoost ranker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.ranker import Ranker
from socialrec.ranking_features import CAT_FEATURES, RANKER_FEATURES, ranking_features
from tests.test_two_tower import tiny_frames


@pytest.fixture(scope="module")
def frames():
    return tiny_frames()


@pytest.fixture(scope="module")
def datasets(frames):
    s = frames.samples
    feats = ranking_features(frames.users, frames.posts, s, s["ts"])
    data = pd.concat([feats, s[["label", "split"]]], axis=1)
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
    """Serving shape: one user (indexed frame, as the Feast online reader returns) x 500."""
    users = frames.users.set_index("user_id").iloc[[5]].assign(found=True)
    posts = frames.posts.set_index("post_id").iloc[:500].assign(found=True)
    # the Feast online readers return nullable integers
    posts = posts.astype({"n_impressions": "Int64", "category_id": "Int64"})
    user_id = int(users.index[0])
    pairs = pd.DataFrame(
        {
            "user_id": user_id,
            "post_id": posts.index.to_numpy(),
            "retrieval_score": np.linspace(0.9, 0.1, 500),  # the ANN similarity
        }
    )
    now = pd.Timestamp("2026-01-07T12:00:00Z")
    batch = ranking_features(users, posts, pairs, now)
    # NaN only for the positive rate in a category the user never had events in
    assert len(batch) == 500
    assert batch.drop(columns=["user_category_positive_rate"]).notna().all().all()
    for i in (0, 123, 499):
        one = ranking_features(users, posts, pairs.iloc[[i]], now)
        pd.testing.assert_frame_equal(one, batch.iloc[[i]])


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


def test_ranker_learns_and_predicts_probabilities(ranker, datasets):
    probs = ranker.predict(datasets["test"])
    assert probs.shape == (len(datasets["test"]),)
    assert ((probs >= 0) & (probs <= 1)).all()
    metrics = ranker.evaluate(datasets["validation"])
    assert metrics["auc"] > 0.6, metrics
    assert 0 < metrics["logloss"] < 0.7


def test_ranker_save_and_load_give_identical_predictions(ranker, datasets, tmp_path):
    path = ranker.save(tmp_path / "ranker")
    assert path.name == "ranker.cbm" and path.exists()
    loaded = Ranker.load(tmp_path / "ranker")
    np.testing.assert_array_equal(
        loaded.predict(datasets["test"]), ranker.predict(datasets["test"])
    )


def test_grouped_ndcg_by_hand():
    from socialrec.metrics import grouped_ndcg

    # user 1: the relevant post ranked first -> 1; user 2: ranked second of two -> 1/log2(3)
    # (gain 2^1-1 = 1); user 3 has no positive relevance and is left out
    groups = [1, 1, 2, 2, 3]
    relevance = [2.0, 0.0, 0.0, 1.0, -2.0]
    scores = [0.9, 0.1, 0.8, 0.2, 0.5]
    assert grouped_ndcg(groups, relevance, scores, 10) == pytest.approx((1 + 1 / np.log2(3)) / 2)


@pytest.fixture(scope="module")
def graded(frames):
    from socialrec.training import ranker_dataset

    s = frames.samples.assign(relevance=frames.samples["label"] * 2.0)
    data = ranker_dataset(s, frames.users, frames.posts)
    return {name: part for name, part in data.groupby("split")}


def test_yetirank_ranks_users_candidates_and_round_trips(graded, tmp_path):
    ranker = Ranker(iterations=60, seed=3, loss_function="YetiRank").fit(
        graded["train"], graded["validation"]
    )
    scores = ranker.predict(graded["test"])
    assert ((scores > 0) & (scores < 1)).all()  # sigmoid of the raw score: a score, not a prob
    report = ranker.evaluate(graded["test"])
    assert report["ndcg@10"] > 0.5 and report["auc"] > 0.55, report
    loaded = Ranker.load(ranker.save(tmp_path / "yeti"))
    assert loaded.loss_function == "YetiRank"
    np.testing.assert_allclose(loaded.predict(graded["test"]), scores)
    with pytest.raises(ValueError):
        Ranker(loss_function="RMSE")


def test_train_ranker_keeps_the_objective_with_the_better_validation_ndcg(frames, tmp_path):
    from socialrec.settings import Settings
    from socialrec.training import train_ranker

    samples = frames.samples.assign(relevance=frames.samples["label"] * 2.0)
    result = train_ranker(
        Settings(data_dir=tmp_path, ranker_iterations=40), samples, frames.users, frames.posts
    )
    m = result.metrics
    by_loss = {loss: m[f"validation_ndcg@10.{loss}"] for loss in ("Logloss", "YetiRank")}
    assert result.params["loss"] == max(by_loss, key=by_loss.get)
    assert result.model.loss_function == result.params["loss"]
    assert m["validation_ndcg@10"] == pytest.approx(by_loss[result.params["loss"]])


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
    assert f["retrieval_score"].isna().all()  # not given by the caller
