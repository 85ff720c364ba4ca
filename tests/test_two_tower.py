"""The TFRS two-tower model on tiny generated data: it learns, it round-trips, it cold-starts.

``tiny_frames`` builds the model inputs (the contract's feature tables and ML datasets) from
the generator with pandas, standing in for dbt + MiniLM + Feast: text embeddings are a fixed
random projection of the post category / onboarding categories plus noise, which carries the
same kind of signal as MiniLM does on the generator's per-category vocabulary.
"""

from __future__ import annotations

import os
import pickle
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from socialrec.data.generator import generate_dataset
from socialrec.features.build import build_user_history
from socialrec.features.tables import TIMESTAMP
from socialrec.settings import NEGATIVE_EVENTS, POSITIVE_EVENTS, TEXT_EMBEDDING_DIM

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _split(ts: pd.Series) -> np.ndarray:
    lo, hi = ts.min(), ts.max()
    frac = (ts - lo) / (hi - lo)
    return np.where(frac < 0.8, "train", np.where(frac < 0.9, "validation", "test"))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@lru_cache(maxsize=4)
def tiny_frames(
    n_users: int = 300, n_posts: int = 600, n_events: int = 30_000, seed: int = 7
) -> SimpleNamespace:
    """users (user_features), posts (post_features), positives (ml_retrieval_positives) and
    samples (ml_ranking_samples), shaped as in docs/contracts.md. Cached: treat as read-only."""
    ds = generate_dataset(n_users=n_users, n_posts=n_posts, n_events=n_events, days=6, seed=seed)
    rng = np.random.default_rng(seed)
    n_cat = len(ds.categories)
    basis = rng.normal(size=(n_cat + 1, TEXT_EMBEDDING_DIM))
    ev = ds.events.drop_duplicates("event_id")
    ev = ev.assign(pos=ev["event_type"].isin(POSITIVE_EVENTS))
    ev = ev.assign(neg=ev["event_type"].isin(NEGATIVE_EVENTS))
    ev = ev.assign(imp=ev["event_type"].eq("IMPRESSION"))

    u = ev.groupby("user_id").agg(
        n_events=("pos", "size"), n_impressions=("imp", "sum"), n_positives=("pos", "sum")
    )
    users = ds.users[["user_id", "onboarding_categories"]].merge(
        u, left_on="user_id", right_index=True, how="left"
    )
    users[["n_events", "n_impressions", "n_positives"]] = (
        users[["n_events", "n_impressions", "n_positives"]].fillna(0).astype("int64")
    )
    users["positive_rate"] = (users["n_positives"] / users["n_impressions"].clip(lower=1)).astype(
        "float32"
    )
    onb = np.zeros((len(users), n_cat + 1))
    for i, cats in enumerate(ds.users["onboarding_categories"]):
        onb[i, cats] = 1.0
    prof = _unit(onb @ basis + 0.8 * rng.normal(size=(len(users), TEXT_EMBEDDING_DIM)))
    users["profile_embedding"] = list(prof)
    users["onboarding_categories"] = [",".join(map(str, c)) for c in users["onboarding_categories"]]

    p = ev.groupby("post_id").agg(n_impressions=("imp", "sum"), n_positives=("pos", "sum"))
    posts = ds.posts.merge(p, left_on="post_id", right_index=True, how="left")
    posts[["n_impressions", "n_positives"]] = posts[["n_impressions", "n_positives"]].fillna(0)
    posts = posts.astype({"n_impressions": "int64", "n_positives": "int64"})
    posts["positive_rate"] = (posts["n_positives"] / posts["n_impressions"].clip(lower=1)).astype(
        "float32"
    )
    posts["created_at_ts"] = posts["created_at"].astype("int64") // 10**9
    for days in (1, 7):  # the trailing windows, before the last event
        recent = ev[ev["ts"] > ev["ts"].max() - pd.Timedelta(days=days)]
        w = recent.groupby("post_id").agg(n=("pos", "size"), p=("pos", "sum"))
        w = w.reindex(posts["post_id"], fill_value=0)
        posts[f"n_events_{days}d"] = w["n"].to_numpy(dtype="int64")
        posts[f"n_positives_{days}d"] = w["p"].to_numpy(dtype="int64")
        posts[f"positive_rate_{days}d"] = (w["p"] / w["n"].clip(lower=1)).to_numpy("float32")
    desc = _unit(
        basis[posts["category_id"].to_numpy()]
        + 0.8 * rng.normal(size=(len(posts), TEXT_EMBEDDING_DIM))
    )
    posts["description_embedding"] = list(desc)
    # user_history (category / creator counts, liked-posts embedding): each user's latest row
    hist = build_user_history(
        ev.assign(is_positive=ev["pos"].astype(int)),
        posts,
        pd.DataFrame({"post_id": posts["post_id"], "embedding": list(desc)}),
    )
    users = users.merge(
        hist.drop_duplicates("user_id", keep="last").drop(columns=[TIMESTAMP]),
        on="user_id",
        how="left",
    )
    posts = posts.drop(columns=["description", "created_at"])

    first_pos = (ev[ev["pos"]].sort_values("ts").drop_duplicates(["user_id", "post_id"]))[
        ["user_id", "post_id", "ts"]
    ]
    positives = first_pos.assign(split=_split(first_pos["ts"])).reset_index(drop=True)

    pairs = (
        ev.groupby(["user_id", "post_id"])
        .agg(ts=("ts", "min"), pos=("pos", "any"), neg=("neg", "any"))
        .reset_index()
    )
    pairs["label"] = (pairs["pos"] & ~pairs["neg"]).astype("int32")
    samples = pairs.drop(columns=["pos", "neg"]).assign(split=_split(pairs["ts"]))
    return SimpleNamespace(users=users, posts=posts, positives=positives, samples=samples)


@pytest.fixture(scope="module")
def frames():
    return tiny_frames()


@pytest.fixture(scope="module")
def trained(frames):
    from socialrec.models.two_tower import TwoTowerModel

    train = frames.positives[frames.positives["split"] == "train"]
    model = TwoTowerModel(16, id_dim=16, text_dim=32, hidden_dim=64)
    return model.fit(train, frames.users, frames.posts, epochs=3, batch_size=256, seed=1)


def test_embeddings_are_normalised_and_beat_random_recall(frames, trained):
    from socialrec.models.metrics import evaluate_retrieval

    users = trained.user_embeddings(frames.users)
    assert users.shape == (len(frames.users), 16) and users.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(users, axis=1), 1.0, rtol=1e-4)
    train = frames.positives[frames.positives["split"] == "train"]
    heldout = frames.positives[frames.positives["split"] != "train"]
    res = evaluate_retrieval(trained, frames.users, frames.posts, train, heldout, ks=(10, 50))
    assert res["n_users"] > 20
    assert res["recall@50"] > 2 * res["random_recall@50"], res
    assert res["recall@10"] > res["random_recall@10"], res


def test_save_and_load_give_identical_embeddings(frames, trained, tmp_path):
    from socialrec.models.two_tower import TwoTowerModel

    path = trained.save(tmp_path / "tt")
    assert (path / "user_tower" / "saved_model.pb").exists()
    assert (path / "post_tower" / "saved_model.pb").exists()
    loaded = TwoTowerModel.load(path)
    assert loaded.meta["category_slots"] == trained.meta["category_slots"]
    np.testing.assert_array_equal(
        loaded.user_embeddings(frames.users), trained.user_embeddings(frames.users)
    )
    np.testing.assert_array_equal(
        loaded.post_embeddings(frames.posts), trained.post_embeddings(frames.posts)
    )
    # a loaded model pickles as its directory (the ranker's replay processes load it again);
    # one that lives only in memory does not pickle
    again = pickle.loads(pickle.dumps(loaded))
    np.testing.assert_array_equal(
        again.user_embeddings(frames.users), loaded.user_embeddings(frames.users)
    )
    with pytest.raises(TypeError, match="loaded from a directory"):
        pickle.dumps(trained)


def test_unknown_ids_are_embedded_from_content(frames, trained):
    users = frames.users.head(3).copy()
    users["user_id"] = [10_000_001, 10_000_002, 10_000_003]
    users.loc[users.index[2], "profile_embedding"] = None  # no profile text at all
    posts = frames.posts.head(3).copy()
    posts["post_id"] = [20_000_001, 20_000_002, 20_000_003]
    u, p = trained.user_embeddings(users), trained.post_embeddings(posts)
    assert np.isfinite(u).all() and np.isfinite(p).all()
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-4)
    # content still matters for unknown ids: different onboarding -> different embedding
    assert not np.allclose(u[0], u[1])
    # an unknown post sits closer to known posts of its own category than to others
    known = trained.post_embeddings(frames.posts)
    cats = frames.posts["category_id"].to_numpy()
    cat = posts["category_id"].iloc[0]
    sims = known @ p[0]
    assert sims[cats == cat].mean() > sims[cats != cat].mean()


def test_training_is_deterministic_with_a_seed(frames):
    from socialrec.models.two_tower import TwoTowerModel

    train = frames.positives[frames.positives["split"] == "train"].head(2000)
    a, b = (
        TwoTowerModel(8, id_dim=8, text_dim=16, hidden_dim=16).fit(
            train, frames.users, frames.posts, epochs=1, batch_size=256, seed=3
        )
        for _ in range(2)
    )
    np.testing.assert_allclose(
        a.post_embeddings(frames.posts), b.post_embeddings(frames.posts), atol=1e-6
    )


def test_early_stopping_keeps_the_best_validation_epoch(frames):
    from socialrec.models.metrics import evaluate_retrieval
    from socialrec.models.two_tower import TwoTowerModel

    train = frames.positives[frames.positives["split"] == "train"]
    valid = frames.positives[frames.positives["split"] == "validation"]
    model = TwoTowerModel(16, id_dim=16, text_dim=32, hidden_dim=64, learning_rate=0.02)
    model.fit(
        train,
        frames.users,
        frames.posts,
        epochs=6,
        batch_size=256,
        seed=2,
        validation_df=valid,
        patience=1,
        eval_k=50,
    )
    curve = model.history["val_recall@50"]
    info = model.meta["train"]
    assert len(curve) == info["epochs_run"] <= 6 and len(model.history["loss"]) == len(curve)
    assert info["best_val_recall"] == max(curve) and curve[info["best_epoch"] - 1] == max(curve)
    if info["epochs_run"] < 6:  # stopped early: no improvement after the best epoch
        assert max(curve[info["best_epoch"] :]) <= max(curve)
    # the weights of the best epoch are the ones kept
    now = evaluate_retrieval(model, frames.users, frames.posts, train, valid, ks=(50,))
    assert now["recall@50"] == pytest.approx(max(curve))


def test_logq_correction_uses_the_positive_frequencies(frames):
    from socialrec.models.two_tower import TwoTowerModel

    train = frames.positives[frames.positives["split"] == "train"].head(3000)
    kw = dict(epochs=1, batch_size=256, seed=5)
    plain = TwoTowerModel(8, id_dim=8, text_dim=16, hidden_dim=16, logq_correction=False)
    corrected = TwoTowerModel(8, id_dim=8, text_dim=16, hidden_dim=16)
    plain.fit(train, frames.users, frames.posts, **kw)
    corrected.fit(train, frames.users, frames.posts, **kw)
    assert corrected.meta["hparams"]["logq_correction"] is True
    # same seed and data: only the logit correction differs, and it changes what is learned
    assert not np.allclose(
        plain.post_embeddings(frames.posts), corrected.post_embeddings(frames.posts), atol=1e-4
    )


def test_a_tower_gets_only_the_inputs_its_signature_takes(frames, trained, tmp_path):
    """A model saved before a tower gained inputs still embeds (the quality gate loads the
    previous champion with today's encoders)."""
    from socialrec.models.tower_inputs import encode_posts
    from socialrec.models.two_tower import TwoTowerModel

    loaded = TwoTowerModel.load(trained.save(tmp_path / "tt"))
    inputs = encode_posts(frames.posts.head(4))
    inputs["a_future_input"] = np.zeros((4, 3), dtype=np.float32)
    np.testing.assert_array_equal(
        loaded._embed(loaded._post_fn, inputs), trained.post_embeddings(frames.posts.head(4))
    )


def test_mixed_random_negatives_and_point_in_time_users_train(frames):
    """Uniform extra negatives per batch and one user row per positive (the user's features
    at the positive's time) both train a model that beats random."""
    from socialrec.models.metrics import evaluate_retrieval
    from socialrec.models.two_tower import TwoTowerModel

    train = frames.positives[frames.positives["split"] == "train"].reset_index(drop=True)
    # a point-in-time stand-in: every positive's user row without its history
    aligned = (
        frames.users.set_index("user_id")
        .loc[train["user_id"]]
        .reset_index()
        .assign(category_counts=None, history_embedding=None)
    )
    model = TwoTowerModel(16, id_dim=16, text_dim=32, hidden_dim=64, random_negatives=128)
    model.fit(
        train, frames.users, frames.posts, epochs=2, batch_size=256, seed=2, aligned_users=aligned
    )
    assert model.hparams["random_negatives"] == 128
    heldout = frames.positives[frames.positives["split"] != "train"]
    res = evaluate_retrieval(model, frames.users, frames.posts, train, heldout, ks=(50,))
    assert res["recall@50"] > 2 * res["random_recall@50"], res
    with pytest.raises(ValueError, match="one row per positive"):
        model.fit(train, frames.users, frames.posts, epochs=1, aligned_users=aligned.head(3))


def test_age_buckets():
    from socialrec.models.tower_inputs import AGE_BUCKET_HOURS, age_buckets, encode_posts

    assert age_buckets([0, 5.9, 6, 30, 200, 10_000, np.nan, -3]).tolist() == [
        0,
        0,
        1,
        2,
        4,
        5,
        -1,
        0,
    ]
    assert len(AGE_BUCKET_HOURS) == 5
    posts = pd.DataFrame(
        {
            "post_id": [1, 2],
            "category_id": [0, 1],
            "created_at_ts": [0, 3600 * 100],
            "description_embedding": [None, None],
        }
    )
    now = pd.Timestamp(3600 * 101, unit="s", tz="UTC")
    assert encode_posts(posts, now)["age_bucket"].tolist() == [3, 0]  # 101 h and 1 h
    assert encode_posts(posts)["age_bucket"].tolist() == [-1, -1]  # no moment: unknown


def test_progress_hears_every_epoch_and_changes_nothing(frames):
    from socialrec.models.two_tower import TwoTowerModel

    train = frames.positives[frames.positives["split"] == "train"].head(2000)
    valid = frames.positives[frames.positives["split"] == "validation"].head(300)
    lines: list[str] = []
    kw = dict(epochs=2, batch_size=256, seed=3, validation_df=valid, patience=5)
    heard = TwoTowerModel(8, id_dim=8, text_dim=16, hidden_dim=16).fit(
        train, frames.users, frames.posts, progress=lines.append, **kw
    )
    quiet = TwoTowerModel(8, id_dim=8, text_dim=16, hidden_dim=16).fit(
        train, frames.users, frames.posts, **kw
    )
    np.testing.assert_allclose(
        heard.post_embeddings(frames.posts), quiet.post_embeddings(frames.posts), atol=1e-6
    )
    assert [line.split(":")[0] for line in lines] == [
        "two-tower epoch 1/2", "two-tower epoch 1/2", "two-tower epoch 2/2", "two-tower epoch 2/2"
    ]  # fmt: skip
    assert "loss" in lines[0] and "validation recall@100" in lines[1]
