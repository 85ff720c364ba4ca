"""Posts whose creator is unknown (landing ``creator_id: null``) through every layer.

Representation: null in the landing lines, ``raw.posts`` and the dbt models; the sentinel
``UNKNOWN_CREATOR_ID`` (-1) in the int64 layers (feature tables, catalog, two-tower input);
never capped together as one creator by the re-ranking, never a creator affinity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from socialrec.data import warehouse
from socialrec.data.landing import LocalLandingBucket, encode_jsonl
from socialrec.features.build import build_post_features, build_user_history
from socialrec.recommender import filter_candidates, rerank
from socialrec.settings import UNKNOWN_CREATOR_ID, Settings
from socialrec.stores.catalog import Catalog, creator_id_array

T = pd.Timestamp("2026-01-01T00:00:00Z")


def _dim_posts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4],
            "creator_id": pd.array([7, None, None, 2**60], dtype="Int64"),
            "category_id": [1, 1, 2, 2],
            "media_type": ["video"] * 4,
            "description": ["a", "b", "c", "d"],
            "created_at": [T] * 4,
            "n_impressions": [0] * 4,
            "n_positives": [0] * 4,
            "n_negatives": [0] * 4,
        }
    )


def test_the_raw_loader_accepts_a_null_or_absent_creator(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    bucket = LocalLandingBucket(settings.landing_uri)
    post = {
        "post_id": 1,
        "creator_id": None,
        "category_id": 3,
        "media_type": "video",
        "description": "",
        "created_at": "2026-01-01T00:00:00Z",
    }
    absent = {k: v for k, v in post.items() if k != "creator_id"} | {"post_id": 2}
    bad = post | {"post_id": 3, "creator_id": "someone"}
    bucket.write_bytes("posts/dt=2026-01-01/p.jsonl", encode_jsonl([post, absent, bad], False))
    report = warehouse.load_dimension(settings, bucket, "posts")
    assert (report.rows_loaded, report.rows_quarantined) == (2, 1)
    raw = warehouse.read_table(settings, "raw.posts")
    assert raw["creator_id"].isna().all()


def test_feature_tables_and_catalog_use_the_sentinel():
    assert creator_id_array(pd.Series([5, None], dtype=object)).tolist() == [5, -1]
    posts = build_post_features(_dim_posts())
    assert posts["creator_id"].dtype == np.int64
    assert posts.set_index("post_id")["creator_id"].to_dict() == {1: 7, 2: -1, 3: -1, 4: 2**60}

    catalog = Catalog.from_dim_posts(_dim_posts())
    creators = catalog.creators([1, 2, 3, 4, 5])
    assert creators == {1: 7, 2: UNKNOWN_CREATOR_ID, 3: UNKNOWN_CREATOR_ID, 4: 2**60}
    # a post of an unknown creator is live (not "deleted"), never "own" nor "blocked"
    kept, dropped = filter_candidates(
        [(2, 0.9), (5, 0.8)], user_id=0, seen=set(), negatives=set(), creator_of=creators
    )
    assert kept == [(2, 0.9)] and dropped["deleted"] == 1


def test_user_history_has_no_affinity_to_unknown_creators():
    events = pd.DataFrame(
        {
            "user_id": [9, 9, 9],
            "post_id": [1, 2, 3],
            "ts": [T, T + pd.Timedelta(hours=1), T + pd.Timedelta(hours=2)],
            "is_positive": [1, 1, 1],
        }
    )
    history = build_user_history(events, _dim_posts(), None)
    assert history["creator_positives"].tolist() == ["7:1"]
    assert history["category_counts"].tolist() == ["1:2:2,2:1:1"]


def test_rerank_never_caps_unknown_creators_together():
    scored = pd.DataFrame(
        {
            "post_id": [1, 2, 3, 4, 5],
            "ranker_score": [0.9, 0.8, 0.7, 0.6, 0.5],
            "category_id": [1, 2, 3, 4, 5],
            "creator_id": [UNKNOWN_CREATOR_ID] * 3 + [8, 8],
        }
    )
    items = rerank(scored, 4, max_per_creator=1)
    assert [i["post_id"] for i in items] == [1, 2, 3, 4]
    assert not any(i["cap_relaxed"] for i in items)
    assert [i["creator_id"] for i in items] == [-1, -1, -1, 8]


def test_two_tower_embeds_unknown_creators_as_out_of_vocabulary():
    from socialrec.models.two_tower import TwoTowerModel
    from tests.test_two_tower import tiny_frames

    f = tiny_frames(n_users=60, n_posts=80, n_events=3000, seed=3)
    posts = f.posts.copy()
    posts["creator_id"] = np.where(
        posts["post_id"] % 2 == 0, UNKNOWN_CREATOR_ID, posts["creator_id"]
    )
    train = f.positives[f.positives["split"] == "train"]
    model = TwoTowerModel(8, id_dim=8, text_dim=8, hidden_dim=16)
    model.fit(train, f.users, posts, epochs=1, batch_size=256, seed=1)
    known = posts.loc[posts["creator_id"] >= 0, "creator_id"].nunique()
    assert model.meta["creator_vocab_size"] == known  # -1 is not a creator
    # an unknown creator embeds like a creator the model never saw
    row = posts.iloc[[0, 0]].assign(creator_id=[UNKNOWN_CREATOR_ID, 987_654_321])
    a, b = model.post_embeddings(row)
    np.testing.assert_allclose(a, b, atol=1e-6)

    # a log without any known creator trains too (the lookup needs a placeholder vocabulary)
    nobody = posts.assign(creator_id=UNKNOWN_CREATOR_ID)
    model = TwoTowerModel(8, id_dim=8, text_dim=8, hidden_dim=16)
    model.fit(train, f.users, nobody, epochs=1, batch_size=256, seed=1)
    assert np.isfinite(model.post_embeddings(nobody.head(3))).all()


@pytest.mark.integration
def test_dbt_builds_and_tests_pass_with_unknown_creators(tmp_path):
    from socialrec.data.generator import generate_dataset, write_landing
    from tests.test_dbt_layer import Warehouse, _failed

    wh = Warehouse(tmp_path)
    days = ("2026-01-01", "2026-01-02")
    ds = generate_dataset(n_users=30, n_posts=40, n_events=600, days=2, start_date=days[0], seed=5)
    write_landing(ds, wh.bucket)
    unknown = ds.posts.iloc[::2]  # every other post: a newer version without a creator
    wh.land(
        "posts/dt=2026-01-03/no-creator.jsonl.gz",
        [
            {
                "post_id": int(p.post_id),
                "creator_id": None,
                "category_id": int(p.category_id),
                "media_type": p.media_type,
                "description": p.description,
                "created_at": p.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "updated_at": "2026-01-03T00:00:00Z",
            }
            for p in unknown.itertuples()
        ],
    )
    wh.load_events(*days)
    for name in ("posts", "users", "categories"):
        wh.load_dimension(name)
    results = wh.dbt("build")
    assert results and not _failed(results), _failed(results)
    posts = wh.table("dim_posts").set_index("post_id")
    assert posts.loc[unknown["post_id"], "creator_id"].isna().all()
    assert posts["creator_id"].notna().any()
    assert wh.table("user_creator_affinity")["creator_id"].notna().all()
    assert wh.table("creator_engagement_windows")["creator_id"].notna().all()
