"""socialrec.training.retrieval: the two fits of the two-tower model (train early-stopped on validation,
then train + validation for the chosen epochs) and the neighbours' choice on validation.

The Feast reads (``training_frames``, ``point_in_time``) are replaced by the frames of
``tests.test_two_tower.tiny_frames`` (tests/test_features.py runs them for real)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.data.eventlog import SplitBounds
from socialrec.models.neighbours import EASE_MAX_POSTS, NeighbourParams
from socialrec.settings import Settings
from socialrec.training import retrieval as training
from tests.conftest import at, event_log
from tests.test_two_tower import tiny_frames


@pytest.fixture(scope="module")
def two_tower(tmp_path_factory):
    f = tiny_frames()
    reads = []

    def frames(store, rows, as_of=None):
        reads.append(("frames", as_of))
        return f.users, f.posts

    def point_in_time(store, entity, rows):
        reads.append((entity, len(rows)))
        return f.users.set_index("user_id").loc[rows["user_id"]].reset_index()

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("tt"),
        two_tower_embedding_dim=8,
        two_tower_id_dim=8,
        two_tower_text_dim=16,
        two_tower_hidden_dim=16,
        two_tower_epochs=3,
        two_tower_batch_size=256,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "training_frames", frames)
        mp.setattr(training, "point_in_time", point_in_time)
        result = training.train_two_tower(settings, f.positives, None, "V", "T")
        path = training.save_two_tower(result, settings.models_dir / "tt")
        recall = training.two_tower_test_recall(path, f.positives, None, "T")
    return result, reads, f, path, recall


def test_the_two_tower_is_selected_on_train_then_refitted_on_train_and_validation(two_tower):
    result, reads, f, _, _ = two_tower
    n = f.positives["split"].value_counts()
    # features as of the validation start for the first fit, as of the test start for the refit
    assert reads[:2] == [("frames", "V"), ("user", n["train"])]
    assert reads[2:4] == [("frames", "T"), ("user", n["train"] + n["validation"])]
    selection = result.data[training.AS_OF_VALIDATION]
    assert selection is not result.model
    assert selection.meta["train"]["positives"] == n["train"]  # never saw validation
    assert result.model.meta["train"]["positives"] == n["train"] + n["validation"]
    # the refit runs the epochs the early-stopped first fit chose, without validation
    chosen = selection.meta["train"]["best_epoch"]
    assert chosen is not None and 1 <= chosen <= 3
    assert result.params["epochs"] == chosen == result.metrics["epochs"]
    assert result.model.meta["train"]["epochs_run"] == chosen
    assert result.model.history["val_recall@100"] == []
    assert result.metrics["validation_recall@100"] == selection.meta["train"]["best_val_recall"]
    for k in training.RETRIEVAL_KS:
        assert 0 <= result.metrics[f"recall@{k}"] <= 1
    assert result.metrics["recall@100"] > result.metrics["random_recall@100"]


def test_both_fits_are_saved_and_the_test_recall_reads_the_serving_one(two_tower):
    from socialrec.models.two_tower import TwoTowerModel

    result, _, f, path, recall = two_tower
    assert (path / "user_tower" / "saved_model.pb").exists()
    inner = path / training.AS_OF_VALIDATION
    assert (inner / "user_tower" / "saved_model.pb").exists()
    users = f.users.head(5)
    np.testing.assert_allclose(
        TwoTowerModel.load(inner).user_embeddings(users),
        result.data[training.AS_OF_VALIDATION].user_embeddings(users),
        atol=1e-6,
    )
    # train and validation positives excluded, the test split scored: the training's number
    assert recall == pytest.approx(result.metrics["recall@100"], abs=1e-6)


# --- the neighbours ---------------------------------------------------------------------------
A, B, C, D = 1, 2, 3, 4
V, T = at(2), at(3)
ROWS = (
    # many users were shown A and B together; few liked A and C together
    [(u, p, "IMPRESSION", at(0, u)) for u in range(1, 7) for p in (A, B)]
    + [(u, p, "LIKE", at(0, u)) for u in (7, 8) for p in (A, C)]
    # two users like A before the validation and C during it
    + [(u, A, "LIKE", at(1, u)) for u in (20, 21)]
    + [(u, C, "LIKE", V + 3600 * (u - 19)) for u in (20, 21)]
    + [(30, D, "LIKE", at(2, 20))]
)
POSTS = pd.DataFrame(
    {
        "post_id": [A, B, C, D],
        "category_id": [0, 0, 0, 0],
        "creator_id": [9, 9, 9, 9],
        "created_at": pd.Timestamp(at(0), unit="s", tz="UTC"),
    }
)


def test_neighbour_params_take_the_settings_and_the_chosen_values(tmp_path):
    s = Settings(data_dir=tmp_path, neighbours_k=7, neighbours_alpha=0.6)
    p = training.neighbour_params(s)
    assert p == NeighbourParams(k=7, alpha=0.6, shrink=10.0, l2=500.0, method="cosine",
                                signal="positive")  # fmt: skip
    chosen = training.neighbour_params(s, method="ease", signal="exposure", l2=50.0)
    assert (chosen.method, chosen.signal, chosen.l2, chosen.k) == ("ease", "exposure", 50.0, 7)


def test_neighbour_grid_covers_the_auto_choices(tmp_path):
    auto = training.neighbour_grid(Settings(data_dir=tmp_path), n_posts=100)
    assert len(auto) == 2 + 2 * 3  # cosine x 2 signals, EASE x 2 signals x 3 L2
    assert {(g["method"], g["signal"]) for g in auto} == {
        (m, s) for m in ("cosine", "ease") for s in ("positive", "exposure")
    }
    big = training.neighbour_grid(Settings(data_dir=tmp_path), n_posts=EASE_MAX_POSTS + 1)
    assert {g["method"] for g in big} == {"cosine"}
    fixed = Settings(data_dir=tmp_path, neighbours_method="ease", neighbours_signal="positive")
    assert training.neighbour_grid(fixed, 100) == [
        {"method": "ease", "signal": "positive", "l2": 500.0}
    ]


def test_choose_neighbours_keeps_what_ranks_the_validation_requests_best(tmp_path):
    settings = Settings(data_dir=tmp_path)
    bounds = SplitBounds(V, T, at(0), at(3))
    got = training.choose_neighbours(settings, event_log(ROWS), POSTS, bounds)
    assert len(got["tried"]) == 8
    top = max(got["tried"], key=lambda t: t["ndcg@10"])  # the first of the best
    best = top["ndcg@10"]
    assert got["chosen"] == {k: top[k] for k in ("method", "signal", "l2")}
    # the co-likes lead from A to C; the co-impressions to B: the positive signal wins
    assert got["chosen"]["signal"] == "positive" and best == pytest.approx(1.0)
    by_point = {(t["method"], t["signal"]): t["ndcg@10"] for t in got["tried"]}
    assert by_point[("cosine", "exposure")] == pytest.approx(1 / np.log2(3))
    # nothing to choose: the one grid point, nothing replayed
    fixed = Settings(data_dir=tmp_path, neighbours_method="cosine", neighbours_signal="exposure")
    assert training.choose_neighbours(fixed, event_log(ROWS), POSTS, bounds) == {
        "chosen": {"method": "cosine", "signal": "exposure", "l2": 500.0},
        "tried": [],
    }
