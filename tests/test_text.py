"""MiniLM text embeddings (socialrec.features.text) with the real, offline all-MiniLM-L6-v2 model."""

import numpy as np
import pandas as pd
import pytest

from socialrec.features import text
from socialrec.settings import TEXT_EMBEDDING_DIM


class CountingEncoder(text.TextEncoder):
    """The real encoder, recording which texts went through the model."""

    def __init__(self):
        super().__init__("cpu")
        self.seen: list[str] = []

    def encode(self, texts, batch_size=256):
        self.seen.extend(texts)
        return super().encode(texts, batch_size)


@pytest.fixture(scope="module")
def encoder():
    return text.TextEncoder()


def test_encode_shape_dtype_and_norm(encoder):
    emb = encoder.encode(["Quick tips on pasta and sauce", "Watch: football match", "x"])
    assert emb.shape == (3, TEXT_EMBEDDING_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, TEXT_EMBEDDING_DIM)
    # deterministic and loaded once per process
    np.testing.assert_allclose(encoder.encode(["Watch: football match"])[0], emb[1], atol=1e-6)
    assert text.TextEncoder().model is encoder.model


def test_semantically_closer_sentences_score_higher(encoder):
    anchor, near, far = encoder.encode(
        [
            "My puppy loves playing fetch at the dog park",
            "Our dog runs after the ball every morning",
            "How to rebalance a retirement portfolio with dividend stocks",
        ]
    )
    assert anchor @ near > anchor @ far + 0.2
    cooking = encoder.encode(["Beginner guide to baking bread in the oven"])[0]
    recipe = encoder.encode(["Today I tried a new pasta recipe with spices"])[0]
    gaming = encoder.encode(["Top five esports multiplayer boss fights"])[0]
    assert cooking @ recipe > cooking @ gaming


def test_post_and_user_text():
    posts = pd.DataFrame({"description": ["  Photo: sunset on the beach ", None]})
    assert text.post_text(posts) == ["Photo: sunset on the beach", ""]
    users = pd.DataFrame(
        {
            "headline": ["Chef into pasta", "Student", None],
            "about": ["I cook every day.", None, "Only about"],
        }
    )
    assert text.user_text(users) == ["Chef into pasta. I cook every day.", "Student", "Only about"]


def test_incremental_reembeds_only_new_or_changed_rows(tmp_path):
    enc = CountingEncoder()
    texts = {1: "Quick tips on yoga and cardio", 2: "Vintage denim jacket style", 3: "Galaxy"}
    first = text.embed_incremental(enc, list(texts), list(texts.values()), None, "post_id")
    assert first.attrs == {"n_embedded": 3, "n_reused": 0, "n_empty": 0}
    assert list(first.columns) == ["post_id", "embedding", "text_hash"]

    # round trip through parquet, as the asset does between runs
    path = tmp_path / text.POST_EMBEDDINGS_FILE
    text.write_embeddings(first, path, "post_id")
    existing = text.read_embeddings(path)
    assert existing["embedding"].iloc[0].dtype == np.float32

    enc.seen.clear()
    texts[2] = "A telescope view of a distant galaxy"  # edited
    texts[4] = "New post about chess openings"  # new; and post 3 is deleted below
    del texts[3]
    second = text.embed_incremental(enc, list(texts), list(texts.values()), existing, "post_id")
    assert sorted(enc.seen) == sorted([texts[2], texts[4]])
    assert second.attrs == {"n_embedded": 2, "n_reused": 1, "n_empty": 0}
    assert list(second["post_id"]) == [1, 2, 4]
    by_id = dict(zip(second["post_id"], second["embedding"], strict=True))
    np.testing.assert_array_equal(by_id[1], first["embedding"].iloc[0])  # reused as is
    np.testing.assert_allclose(by_id[2], enc.encode([texts[2]])[0], atol=1e-6)
    assert not np.allclose(by_id[2], first["embedding"].iloc[1])

    enc.seen.clear()
    third = text.embed_incremental(enc, list(texts), list(texts.values()), second, "post_id")
    assert enc.seen == [] and third.attrs["n_reused"] == 3


def test_blank_texts_get_the_zero_vector_without_the_model():
    enc = CountingEncoder()
    emb = enc.encode(["", "   ", None, "A red bicycle"])
    assert not emb[:3].any()  # zeros, not MiniLM("")
    np.testing.assert_allclose(np.linalg.norm(emb[3]), 1.0, atol=1e-5)

    posts = pd.DataFrame({"post_id": [1, 2, 3], "description": ["", "  ", "A red bicycle"]})
    enc.seen.clear()
    table = text.embed_incremental(enc, [1, 2, 3], text.post_text(posts), None, "post_id")
    assert enc.seen == ["A red bicycle"]  # blank texts never reach the model
    assert table.attrs == {"n_embedded": 1, "n_reused": 0, "n_empty": 2}
    assert not np.stack(table["embedding"].iloc[:2]).any()
    # a table written before this rule held MiniLM("") for blank texts (same text hash): it
    # is not reused, the blank text gets zeros
    stale = table.assign(embedding=[np.ones(TEXT_EMBEDDING_DIM, np.float32)] * 3)
    again = text.embed_incremental(enc, [1, 2, 3], text.post_text(posts), stale, "post_id")
    assert again.attrs == {"n_embedded": 0, "n_reused": 1, "n_empty": 2}
    assert not np.stack(again["embedding"].iloc[:2]).any() and again["embedding"].iloc[2].all()
    users = pd.DataFrame({"headline": [" ", "Chef"], "about": [None, ""]})
    assert text.user_text(users) == ["", "Chef"]


def test_embedding_parquet_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = pd.DataFrame(
        {
            "user_id": [5, 6],
            "embedding": [np.ones(TEXT_EMBEDDING_DIM, np.float32), np.zeros(TEXT_EMBEDDING_DIM)],
            "text_hash": ["a", "b"],
        }
    )
    path = tmp_path / text.USER_EMBEDDINGS_FILE
    text.write_embeddings(df, path, "user_id")
    schema = pq.read_schema(path)
    assert schema.field("user_id").type == pa.int64()
    assert schema.field("embedding").type == pa.list_(pa.float32())
    back = text.read_embeddings(path)
    assert back["embedding"].iloc[0].shape == (TEXT_EMBEDDING_DIM,)
    assert text.read_embeddings(tmp_path / "missing.parquet") is None
