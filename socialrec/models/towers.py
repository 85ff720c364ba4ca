"""The two-tower model's Keras parts (TensorFlow Recommenders): the towers, the retrieval
task with mixed negatives, and the per-tower export (:class:`Export`).

Each tower concatenates its parts, has one hidden layer, projects and L2-normalises (the dot
product is a cosine). Training uses in-batch softmax (``tfrs.tasks.Retrieval``) with a
temperature and, when given, the sampling-bias correction (``sampling_probability``).
"""

from __future__ import annotations

import os

import numpy as np

from socialrec.models.tower_inputs import ACTIVITY_FEATURES, POST_TOWER_INPUTS, USER_TOWER_INPUTS
from socialrec.quiet import native_stderr_silenced
from socialrec.settings import TEXT_EMBEDDING_DIM

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf-keras)

with native_stderr_silenced():  # TF's C++ start-up lines (socialrec.quiet)
    import tensorflow as tf
    import tensorflow_recommenders as tfrs


def input_specs(n_slots: int) -> dict[str, dict[str, tf.TensorSpec]]:
    return {
        "user": {
            "user_id": tf.TensorSpec([None], tf.int64, name="user_id"),
            "onboarding": tf.TensorSpec([None, n_slots], tf.float32, name="onboarding"),
            "category_affinity": tf.TensorSpec(
                [None, n_slots], tf.float32, name="category_affinity"
            ),
            "profile_embedding": tf.TensorSpec(
                [None, TEXT_EMBEDDING_DIM], tf.float32, name="profile_embedding"
            ),
            "history_embedding": tf.TensorSpec(
                [None, TEXT_EMBEDDING_DIM], tf.float32, name="history_embedding"
            ),
            "activity": tf.TensorSpec([None, ACTIVITY_FEATURES], tf.float32, name="activity"),
        },
        "post": {
            "post_id": tf.TensorSpec([None], tf.int64, name="post_id"),
            "category_id": tf.TensorSpec([None], tf.int64, name="category_id"),
            "media_type": tf.TensorSpec([None], tf.int64, name="media_type"),
            "creator_id": tf.TensorSpec([None], tf.int64, name="creator_id"),
            "age_bucket": tf.TensorSpec([None], tf.int64, name="age_bucket"),
            "description_embedding": tf.TensorSpec(
                [None, TEXT_EMBEDDING_DIM], tf.float32, name="description_embedding"
            ),
        },
    }


# ---- the Keras towers -----------------------------------------------------------------------


class IdEmbedding(tf.keras.layers.Layer):
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


class Tower(tf.keras.Model):
    """Concatenate the parts, one hidden layer, project, L2-normalise."""

    def __init__(self, parts: dict[str, tf.keras.layers.Layer], hidden: int, out_dim: int, **kw):
        super().__init__(**kw)
        self.parts = parts
        self.hidden = tf.keras.layers.Dense(hidden, activation="relu")
        self.out = tf.keras.layers.Dense(out_dim)

    def get_config(self) -> dict:
        """The sizes only: a tower is saved as a SavedModel and loaded without Keras
        (``TwoTowerModel.load``), never rebuilt from its config (Keras' default would warn,
        on every save, that the parts are not serializable)."""
        return {"name": self.name, "hidden": self.hidden.units, "out_dim": self.out.units}

    def call(self, inputs, training=False):
        pieces = []
        for name in sorted(self.parts):
            layer = self.parts[name]
            if isinstance(layer, IdEmbedding):
                pieces.append(layer(inputs[name], training=training))
            else:
                pieces.append(layer(inputs[name]))
        x = self.out(self.hidden(tf.concat(pieces, axis=1)))
        return tf.math.l2_normalize(x, axis=1)


class Retrieval(tfrs.Model):
    """In-batch softmax; with ``corpus`` (the encoded posts) and ``random_negatives`` > 0,
    also ``random_negatives`` posts drawn uniformly from the corpus per batch (mixed negative
    sampling, Yang et al. 2020): the batch's positives are the diagonal of the score matrix,
    the extra columns are negatives only, with sampling probability 1 / corpus size."""

    def __init__(
        self,
        user_tower: Tower,
        post_tower: Tower,
        temperature: float,
        corpus: dict[str, np.ndarray] | None = None,
        random_negatives: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.user_tower = user_tower
        self.post_tower = post_tower
        self.task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=True)
        self.random_negatives = random_negatives if corpus is not None else 0
        self.seed = seed
        if self.random_negatives:
            self.corpus = {k: tf.constant(corpus[k]) for k in POST_TOWER_INPUTS}
            self.corpus_size = len(corpus["post_id"])

    def compute_loss(self, features, training=False):
        users = self.user_tower({k: features[k] for k in USER_TOWER_INPUTS}, training=training)
        post_inputs = {k: features[k] for k in POST_TOWER_INPUTS}
        ids = features["post_id"]
        q = features.get("sampling_probability")  # logQ correction; None: plain softmax
        if self.random_negatives:
            pick = tf.random.uniform([self.random_negatives], 0, self.corpus_size, dtype=tf.int64)
            post_inputs = {
                k: tf.concat([v, tf.gather(self.corpus[k], pick)], axis=0)
                for k, v in post_inputs.items()
            }
            ids = post_inputs["post_id"]
            if q is not None:
                uniform = tf.fill([self.random_negatives], 1.0 / self.corpus_size)
                q = tf.concat([q, uniform], axis=0)
        posts = self.post_tower(post_inputs, training=training)
        return self.task(
            users,
            posts,
            candidate_ids=ids,
            candidate_sampling_probability=q,
            compute_metrics=False,
            compute_batch_metrics=False,
        )


class Export(tf.Module):
    """What is saved per tower: the tower plus a ``serving_default`` over named tensors."""

    def __init__(self, tower: Tower, spec: dict[str, tf.TensorSpec]):
        super().__init__()
        self.tower = tower
        names = list(spec)

        def serve(**inputs):
            return {"embedding": self.tower({k: inputs[k] for k in names}, training=False)}

        self.serve = tf.function(serve, input_signature=None).get_concrete_function(**spec)
