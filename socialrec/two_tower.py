"""The two-tower retrieval model (TensorFlow Recommenders).

* User tower: user id embedding (unknown ids share one OOV row), onboarding categories
  (multi-hot over the category slots), profile text embedding (MiniLM 384 -> dense).
* Post tower: post id embedding (OOV row), category embedding, description text embedding.
* Both end in an L2-normalised vector of ``embedding_dim``: the dot product is a cosine.

Training uses in-batch negatives (``tfrs.tasks.Retrieval``). Ids are only in the vocabulary if
they have training positives; during training a share of the ids is replaced by the OOV id
(``id_dropout``), so the OOV rows learn a content-only embedding: new users and new posts are
embedded from their onboarding categories / category and text.

Input columns are turned into tensors by ONE function per tower (:func:`encode_users`,
:func:`encode_posts`), used in training, after :meth:`TwoTowerModel.load` and at serving time.
Each tower is exported as a SavedModel whose ``serving_default`` signature takes the named
tensors of that function and returns ``{"embedding": float32[n, d]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from socialrec.ranking_features import parse_categories
from socialrec.settings import TEXT_EMBEDDING_DIM
from socialrec.text import embedding_matrix

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf-keras)

import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

USER_TOWER_INPUTS = ("user_id", "onboarding", "profile_embedding")
POST_TOWER_INPUTS = ("post_id", "category_id", "description_embedding")
_PREDICT_BATCH = 4096
_META_VERSION = 1


# ---- encoding: columns -> named arrays (the one place, training and serving) ---------------


def encode_users(users_df: pd.DataFrame, category_slots: list[int]) -> dict[str, np.ndarray]:
    """User tower inputs: ``user_id`` int64, ``onboarding`` multi-hot float32 over the
    category slots (unknown categories ignored), ``profile_embedding`` float32[384]."""
    slot = {c: i for i, c in enumerate(category_slots)}
    n = len(users_df)
    multi_hot = np.zeros((n, len(category_slots)), dtype=np.float32)
    rows, cols = [], []
    for i, value in enumerate(users_df["onboarding_categories"].tolist()):
        for c in parse_categories(value):
            if c in slot:
                rows.append(i)
                cols.append(slot[c])
    multi_hot[rows, cols] = 1.0
    return {
        "user_id": users_df["user_id"].to_numpy(dtype=np.int64),
        "onboarding": multi_hot,
        "profile_embedding": embedding_matrix(users_df["profile_embedding"]),
    }


def encode_posts(posts_df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Post tower inputs: ``post_id`` int64, ``category_id`` int64 (-1 when missing),
    ``description_embedding`` float32[384]."""
    return {
        "post_id": posts_df["post_id"].to_numpy(dtype=np.int64),
        "category_id": pd.to_numeric(posts_df["category_id"]).fillna(-1).to_numpy(dtype=np.int64),
        "description_embedding": embedding_matrix(posts_df["description_embedding"]),
    }


def _input_specs(n_slots: int) -> dict[str, dict[str, tf.TensorSpec]]:
    return {
        "user": {
            "user_id": tf.TensorSpec([None], tf.int64, name="user_id"),
            "onboarding": tf.TensorSpec([None, n_slots], tf.float32, name="onboarding"),
            "profile_embedding": tf.TensorSpec(
                [None, TEXT_EMBEDDING_DIM], tf.float32, name="profile_embedding"
            ),
        },
        "post": {
            "post_id": tf.TensorSpec([None], tf.int64, name="post_id"),
            "category_id": tf.TensorSpec([None], tf.int64, name="category_id"),
            "description_embedding": tf.TensorSpec(
                [None, TEXT_EMBEDDING_DIM], tf.float32, name="description_embedding"
            ),
        },
    }


# ---- the Keras towers -----------------------------------------------------------------------


class _IdEmbedding(tf.keras.layers.Layer):
    """Id -> vocabulary index (0 = OOV) -> embedding; in training some ids become OOV."""

    def __init__(self, vocabulary: np.ndarray, dim: int, dropout: float, seed: int, **kw):
        super().__init__(**kw)
        self.lookup = tf.keras.layers.IntegerLookup(
            vocabulary=np.asarray(vocabulary, dtype=np.int64),
            mask_token=None,
            num_oov_indices=1,
            dtype="int64",
        )
        self.embedding = tf.keras.layers.Embedding(len(vocabulary) + 1, dim)
        self.dropout = dropout
        self.seed = seed

    def call(self, ids, training=False):
        idx = self.lookup(ids)
        if training and self.dropout > 0:
            drop = tf.random.uniform(tf.shape(idx), seed=self.seed) < self.dropout
            idx = tf.where(drop, tf.zeros_like(idx), idx)
        return self.embedding(idx)


class _Tower(tf.keras.Model):
    """Concatenate the parts, one hidden layer, project, L2-normalise."""

    def __init__(self, parts: dict[str, tf.keras.layers.Layer], hidden: int, out_dim: int, **kw):
        super().__init__(**kw)
        self.parts = parts
        self.hidden = tf.keras.layers.Dense(hidden, activation="relu")
        self.out = tf.keras.layers.Dense(out_dim)

    def call(self, inputs, training=False):
        pieces = []
        for name in sorted(self.parts):
            layer = self.parts[name]
            if isinstance(layer, _IdEmbedding):
                pieces.append(layer(inputs[name], training=training))
            else:
                pieces.append(layer(inputs[name]))
        x = self.out(self.hidden(tf.concat(pieces, axis=1)))
        return tf.math.l2_normalize(x, axis=1)


class _Retrieval(tfrs.Model):
    def __init__(self, user_tower: _Tower, post_tower: _Tower, temperature: float):
        super().__init__()
        self.user_tower = user_tower
        self.post_tower = post_tower
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)

    def compute_loss(self, features, training=False):
        users = self.user_tower({k: features[k] for k in USER_TOWER_INPUTS}, training=training)
        posts = self.post_tower({k: features[k] for k in POST_TOWER_INPUTS}, training=training)
        return self.task(
            users,
            posts,
            candidate_ids=features["post_id"],
            compute_metrics=False,
            compute_batch_metrics=False,
        )


class _Export(tf.Module):
    """What is saved per tower: the tower plus a ``serving_default`` over named tensors."""

    def __init__(self, tower: _Tower, spec: dict[str, tf.TensorSpec]):
        super().__init__()
        self.tower = tower
        names = list(spec)

        def serve(**inputs):
            return {"embedding": self.tower({k: inputs[k] for k in names}, training=False)}

        self.serve = tf.function(serve, input_signature=None).get_concrete_function(**spec)


# ---- the public model -----------------------------------------------------------------------


class TwoTowerModel:
    """Train with :meth:`fit`, embed with :meth:`user_embeddings` / :meth:`post_embeddings`,
    export with :meth:`save`; :meth:`load` needs only TensorFlow (no Keras classes)."""

    def __init__(
        self,
        embedding_dim: int = 32,
        *,
        id_dim: int = 32,
        category_dim: int = 16,
        text_dim: int = 64,
        hidden_dim: int = 128,
        learning_rate: float = 0.005,
        temperature: float = 0.1,
        id_dropout: float = 0.2,
    ):
        self.embedding_dim = embedding_dim
        self.hparams = {
            "embedding_dim": embedding_dim,
            "id_dim": id_dim,
            "category_dim": category_dim,
            "text_dim": text_dim,
            "hidden_dim": hidden_dim,
            "learning_rate": learning_rate,
            "temperature": temperature,
            "id_dropout": id_dropout,
        }
        self.meta: dict = {}
        self.history: dict[str, list[float]] = {}
        self._user_fn: Callable | None = None
        self._post_fn: Callable | None = None
        self._exports: dict[str, _Export] = {}

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        positives_df: pd.DataFrame,
        users_df: pd.DataFrame,
        posts_df: pd.DataFrame,
        epochs: int = 5,
        batch_size: int = 512,
        seed: int = 42,
    ) -> TwoTowerModel:
        """Train on (user_id, post_id) positives; features come from users_df / posts_df
        (positives whose user or post has no feature row are dropped)."""
        tf.keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        hp = self.hparams
        users_df = users_df.drop_duplicates("user_id", keep="last").reset_index(drop=True)
        posts_df = posts_df.drop_duplicates("post_id", keep="last").reset_index(drop=True)
        pos = positives_df[["user_id", "post_id"]].astype("int64")
        pos = pos[
            pos["user_id"].isin(users_df["user_id"]) & pos["post_id"].isin(posts_df["post_id"])
        ]
        if pos.empty:
            raise ValueError("no positives with both a user and a post feature row")

        slots = sorted(
            {c for v in users_df["onboarding_categories"] for c in parse_categories(v)}
            | set(pd.to_numeric(posts_df["category_id"]).dropna().astype("int64").tolist())
        )
        user_vocab = np.sort(pos["user_id"].unique())
        post_vocab = np.sort(pos["post_id"].unique())
        self.meta = {
            "version": _META_VERSION,
            "embedding_dim": self.embedding_dim,
            "text_embedding_dim": TEXT_EMBEDDING_DIM,
            "category_slots": [int(c) for c in slots],
            "user_vocab_size": len(user_vocab),
            "post_vocab_size": len(post_vocab),
            "hparams": hp,
            "train": {
                "positives": len(pos),
                "epochs": epochs,
                "batch_size": batch_size,
                "seed": seed,
            },
        }

        dropout = hp["id_dropout"]
        user_tower = _Tower(
            {
                "user_id": _IdEmbedding(user_vocab, hp["id_dim"], dropout, seed),
                "onboarding": tf.keras.layers.Dense(hp["category_dim"], use_bias=False),
                "profile_embedding": tf.keras.layers.Dense(hp["text_dim"], activation="relu"),
            },
            hp["hidden_dim"],
            self.embedding_dim,
        )
        post_tower = _Tower(
            {
                "post_id": _IdEmbedding(post_vocab, hp["id_dim"], dropout, seed + 1),
                "category_id": tf.keras.Sequential(
                    [
                        tf.keras.layers.IntegerLookup(
                            vocabulary=np.asarray(slots, dtype=np.int64),
                            mask_token=None,
                            dtype="int64",
                        ),
                        tf.keras.layers.Embedding(len(slots) + 1, hp["category_dim"]),
                    ]
                ),
                "description_embedding": tf.keras.layers.Dense(hp["text_dim"], activation="relu"),
            },
            hp["hidden_dim"],
            self.embedding_dim,
        )

        u_enc = encode_users(users_df, slots)
        p_enc = encode_posts(posts_df)
        u_row = pd.Index(users_df["user_id"]).get_indexer(pos["user_id"])
        p_row = pd.Index(posts_df["post_id"]).get_indexer(pos["post_id"])
        tensors = {k: v[u_row] for k, v in u_enc.items()} | {k: v[p_row] for k, v in p_enc.items()}
        ds = (
            tf.data.Dataset.from_tensor_slices(tensors)
            .shuffle(len(pos), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .prefetch(2)
        )
        model = _Retrieval(user_tower, post_tower, hp["temperature"])
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=hp["learning_rate"]))
        hist = model.fit(ds, epochs=epochs, verbose=0)
        self.history = {k: [float(x) for x in v] for k, v in hist.history.items()}
        self.meta["train"]["final_loss"] = self.history.get("loss", [None])[-1]

        specs = _input_specs(len(slots))
        self._exports = {
            "user": _Export(user_tower, specs["user"]),
            "post": _Export(post_tower, specs["post"]),
        }
        self._user_fn = self._exports["user"].serve
        self._post_fn = self._exports["post"].serve
        return self

    # -- inference --------------------------------------------------------------------------
    def _embed(self, fn: Callable | None, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if fn is None:
            raise RuntimeError("the model is neither trained nor loaded")
        n = len(next(iter(inputs.values())))
        out = np.zeros((n, self.embedding_dim), dtype=np.float32)
        for start in range(0, n, _PREDICT_BATCH):
            batch = {k: tf.constant(v[start : start + _PREDICT_BATCH]) for k, v in inputs.items()}
            out[start : start + _PREDICT_BATCH] = fn(**batch)["embedding"].numpy()
        return out

    def user_embeddings(self, users_df: pd.DataFrame) -> np.ndarray:
        """float32 ``[n, d]``, L2-normalised; columns user_id, onboarding_categories,
        profile_embedding (unknown ids are embedded from the content features)."""
        return self._embed(self._user_fn, encode_users(users_df, self.meta["category_slots"]))

    def post_embeddings(self, posts_df: pd.DataFrame) -> np.ndarray:
        """float32 ``[n, d]``, L2-normalised; columns post_id, category_id,
        description_embedding."""
        return self._embed(self._post_fn, encode_posts(posts_df))

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """``path/user_tower``, ``path/post_tower`` (SavedModels) and ``path/meta.json``."""
        if not self._exports:
            raise RuntimeError("only a trained model can be saved (a loaded one is on disk)")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, export in self._exports.items():
            tf.saved_model.save(
                export, str(path / f"{name}_tower"), signatures={"serving_default": export.serve}
            )
        (path / "meta.json").write_text(json.dumps(self.meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> TwoTowerModel:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        model = cls(
            meta["embedding_dim"],
            **{k: v for k, v in meta.get("hparams", {}).items() if k != "embedding_dim"},
        )
        model.meta = meta
        model._loaded = {
            name: tf.saved_model.load(str(path / f"{name}_tower")) for name in ("user", "post")
        }
        model._user_fn = model._loaded["user"].signatures["serving_default"]
        model._post_fn = model._loaded["post"].signatures["serving_default"]
        return model
