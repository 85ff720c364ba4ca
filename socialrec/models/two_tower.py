"""The two-tower retrieval model (TensorFlow Recommenders).

* User tower: user id embedding (unknown ids share one OOV row), onboarding categories
  (multi-hot over the category slots), category affinity (the user's share of positives per
  category slot, from ``user_history``), profile text embedding (MiniLM 384 -> dense), the mean
  embedding of the latest liked posts (``history_embedding``), activity (log counts of events
  and positives, positive rate).
* Post tower: post id embedding (OOV row), category embedding, media type embedding, creator
  embedding (OOV row, shared by new and unknown creators), age bucket (hours since creation at
  the moment of the interaction in training, at ``now`` when embedding; unknown when no moment
  is given), description text embedding.
* Both end in an L2-normalised vector of ``embedding_dim``: the dot product is a cosine.

Training uses in-batch softmax (``tfrs.tasks.Retrieval``) with a temperature and the
sampling-bias correction of Yi et al. (RecSys 2019): in-batch negatives are drawn in
proportion to how often a post is a positive, so each logit is corrected by ``-log q`` with
``q`` the post's frequency among the training positives (``logq_correction``). With a
validation set, :meth:`TwoTowerModel.fit` keeps the epoch with the best validation recall@K
and stops after ``patience`` epochs without improvement.

Ids are only in the vocabulary if they have training positives; during training a share of the
ids is replaced by the OOV id (``id_dropout``), so the OOV rows learn a content-only embedding:
new users and new posts are embedded from their onboarding categories / category, media type,
creator and text.

Input columns are turned into tensors by ONE function per tower (:func:`encode_users`,
:func:`encode_posts`, in :mod:`socialrec.models.tower_inputs`), used in training, after
:meth:`TwoTowerModel.load` and at serving time; the Keras parts are in
:mod:`socialrec.models.towers`. Each tower is exported as a SavedModel whose
``serving_default`` signature takes the named tensors of that function and returns
``{"embedding": float32[n, d]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from socialrec.features.ranking import parse_categories
from socialrec.models.tower_inputs import (
    AGE_BUCKET_HOURS,
    age_buckets,
    encode_posts,
    encode_users,
)
from socialrec.models.towers import Export, IdEmbedding, Retrieval, Tower, input_specs
from socialrec.settings import MEDIA_TYPES, TEXT_EMBEDDING_DIM
from socialrec.timeutil import epoch_seconds

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2 (tf-keras)

import tensorflow as tf  # noqa: E402

_PREDICT_BATCH = 4096
# the vocabulary of a model trained without any known creator: a value no id takes (a
# vocabulary of [-1] is Keras's own OOV token, which leaves IntegerLookup empty: an error)
_NO_CREATOR = np.iinfo(np.int64).min
_META_VERSION = 3


class _EpochLine(tf.keras.callbacks.Callback):
    """Tells ``progress`` an epoch's loss and time when Keras ends it."""

    def __init__(self, progress: Callable[[str], None], said: str):
        super().__init__()
        self.progress, self.said = progress, said

    def on_epoch_begin(self, epoch, logs=None):
        import time

        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        import time

        loss = (logs or {}).get("loss", float("nan"))
        self.progress(f"{self.said}: loss {loss:.4f} in {time.perf_counter() - self.t0:.0f}s")


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
        logq_correction: bool = True,
        random_negatives: int = 0,
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
            "logq_correction": logq_correction,
            "random_negatives": random_negatives,
        }
        self.meta: dict = {}
        self.history: dict[str, list[float]] = {}
        self._user_fn: Callable | None = None
        self._post_fn: Callable | None = None
        self._exports: dict[str, Export] = {}

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        positives_df: pd.DataFrame,
        users_df: pd.DataFrame,
        posts_df: pd.DataFrame,
        epochs: int = 5,
        batch_size: int = 512,
        seed: int = 42,
        validation_df: pd.DataFrame | None = None,
        patience: int = 2,
        eval_k: int = 100,
        aligned_users: pd.DataFrame | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> TwoTowerModel:
        """Train on (user_id, post_id) positives; features come from users_df / posts_df
        (positives whose user or post has no feature row are dropped).

        ``aligned_users``: one user feature row per positive (same order), e.g. each user's
        features just before the positive (a point-in-time join): the tower then learns from
        the history the user had at that moment, not one that already contains the positive.
        ``users_df`` still gives the vocabulary and the validation users. With a ``ts`` column
        in the positives and ``created_at_ts`` in ``posts_df``, the post's age bucket is its
        age at the positive's time.

        With ``validation_df`` (later positives), recall@``eval_k`` over all posts of
        ``posts_df`` (the user's training positives excluded) is measured after every epoch;
        the best epoch's weights are kept and training stops after ``patience`` epochs
        without improvement. ``progress`` hears a line per epoch (a Keras callback)."""
        tf.keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        hp = self.hparams
        users_df = users_df.drop_duplicates("user_id", keep="last").reset_index(drop=True)
        posts_df = posts_df.drop_duplicates("post_id", keep="last").reset_index(drop=True)
        if aligned_users is not None and len(aligned_users) != len(positives_df):
            raise ValueError("aligned_users needs one row per positive")
        pos = positives_df[["user_id", "post_id"]].astype("int64").reset_index(drop=True)
        if "ts" in positives_df.columns:
            pos["ts_s"] = epoch_seconds(positives_df["ts"], dtype=np.float64)
        keep = (
            pos["user_id"].isin(users_df["user_id"]) & pos["post_id"].isin(posts_df["post_id"])
        ).to_numpy()
        pos = pos[keep]
        if pos.empty:
            raise ValueError("no positives with both a user and a post feature row")

        slots = sorted(
            {c for v in users_df["onboarding_categories"] for c in parse_categories(v)}
            | set(pd.to_numeric(posts_df["category_id"]).dropna().astype("int64").tolist())
        )
        user_vocab = np.sort(pos["user_id"].unique())
        post_vocab = np.sort(pos["post_id"].unique())
        creator_vocab = (
            np.sort(pd.to_numeric(posts_df["creator_id"]).dropna().astype("int64").unique())
            if "creator_id" in posts_df.columns
            else np.zeros(0, dtype=np.int64)
        )
        # an unknown creator (UNKNOWN_CREATOR_ID, or missing: -1) is OOV like a new creator
        creator_vocab = creator_vocab[creator_vocab >= 0]
        if not len(creator_vocab):  # IntegerLookup needs a vocabulary: everyone is OOV
            creator_vocab = np.asarray([_NO_CREATOR], dtype=np.int64)
        self.meta = {
            "version": _META_VERSION,
            "embedding_dim": self.embedding_dim,
            "text_embedding_dim": TEXT_EMBEDDING_DIM,
            "category_slots": [int(c) for c in slots],
            "user_vocab_size": len(user_vocab),
            "post_vocab_size": len(post_vocab),
            "creator_vocab_size": len(creator_vocab),
            "hparams": hp,
            "train": {
                "positives": len(pos),
                "epochs": epochs,
                "batch_size": batch_size,
                "seed": seed,
            },
        }

        dropout = hp["id_dropout"]
        user_tower = Tower(
            {
                "user_id": IdEmbedding(user_vocab, hp["id_dim"], dropout, seed),
                "onboarding": tf.keras.layers.Dense(hp["category_dim"], use_bias=False),
                "category_affinity": tf.keras.layers.Dense(hp["category_dim"], use_bias=False),
                "profile_embedding": tf.keras.layers.Dense(hp["text_dim"], activation="relu"),
                "history_embedding": tf.keras.layers.Dense(hp["text_dim"], activation="relu"),
                "activity": tf.keras.layers.Dense(8, activation="relu"),
            },
            hp["hidden_dim"],
            self.embedding_dim,
        )
        post_tower = Tower(
            {
                "post_id": IdEmbedding(post_vocab, hp["id_dim"], dropout, seed + 1),
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
                "media_type": tf.keras.Sequential(
                    [
                        tf.keras.layers.IntegerLookup(
                            vocabulary=np.arange(len(MEDIA_TYPES), dtype=np.int64),
                            mask_token=None,
                            dtype="int64",
                        ),
                        tf.keras.layers.Embedding(len(MEDIA_TYPES) + 1, 4),
                    ]
                ),
                # creators are content too: a new post of a known creator lands near its siblings
                "creator_id": IdEmbedding(creator_vocab, hp["category_dim"], 0.0, seed + 2),
                # age: dropped to "unknown" as often as ids, so an unknown age embeds sensibly
                "age_bucket": IdEmbedding(
                    np.arange(len(AGE_BUCKET_HOURS) + 1), 4, dropout, seed + 3
                ),
                "description_embedding": tf.keras.layers.Dense(hp["text_dim"], activation="relu"),
            },
            hp["hidden_dim"],
            self.embedding_dim,
        )

        p_enc = encode_posts(posts_df)
        p_row = pd.Index(posts_df["post_id"]).get_indexer(pos["post_id"])
        tensors = {k: v[p_row] for k, v in p_enc.items()}
        if aligned_users is not None:
            rows = aligned_users.reset_index(drop=True)[keep].assign(
                user_id=pos["user_id"].to_numpy()
            )
            tensors |= encode_users(rows, slots)
        else:
            u_row = pd.Index(users_df["user_id"]).get_indexer(pos["user_id"])
            tensors |= {k: v[u_row] for k, v in encode_users(users_df, slots).items()}
        if "ts_s" in pos.columns and "created_at_ts" in posts_df.columns:
            created = pd.to_numeric(posts_df["created_at_ts"], errors="coerce").to_numpy(float)
            tensors["age_bucket"] = age_buckets((pos["ts_s"].to_numpy() - created[p_row]) / 3600)
        if hp["logq_correction"]:
            # q(post): its share of the training positives (how often in-batch sampling picks it)
            freq = pos["post_id"].map(pos["post_id"].value_counts(normalize=True))
            tensors["sampling_probability"] = freq.to_numpy(dtype=np.float32)
        ds = (
            tf.data.Dataset.from_tensor_slices(tensors)
            .shuffle(len(pos), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .prefetch(2)
        )
        model = Retrieval(
            user_tower, post_tower, hp["temperature"], p_enc, hp["random_negatives"], seed
        )
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=hp["learning_rate"]))
        specs = input_specs(len(slots))
        self._exports = {
            "user": Export(user_tower, specs["user"]),
            "post": Export(post_tower, specs["post"]),
        }
        self._user_fn = self._exports["user"].serve
        self._post_fn = self._exports["post"].serve

        self.history = {"loss": [], f"val_recall@{eval_k}": []}
        best, best_epoch, best_weights = -1.0, 0, None
        for epoch in range(epochs):
            said = f"two-tower epoch {epoch + 1}/{epochs}"
            callbacks = [] if progress is None else [_EpochLine(progress, said)]
            hist = model.fit(ds, epochs=1, verbose=0, callbacks=callbacks)
            self.history["loss"].append(float(hist.history["loss"][-1]))
            if validation_df is None or validation_df.empty:
                continue
            from socialrec.models.metrics import evaluate_retrieval

            score = evaluate_retrieval(self, users_df, posts_df, pos, validation_df, ks=(eval_k,))[
                f"recall@{eval_k}"
            ]
            self.history[f"val_recall@{eval_k}"].append(float(score))
            if progress is not None:
                progress(f"{said}: validation recall@{eval_k} {score:.4f}")
            if score > best:
                best, best_epoch, best_weights = score, epoch, model.get_weights()
            elif epoch - best_epoch >= patience:
                break
        if best_weights is not None:
            model.set_weights(best_weights)
        self.meta["train"].update(
            final_loss=self.history["loss"][-1] if self.history["loss"] else None,
            epochs_run=len(self.history["loss"]),
            best_epoch=best_epoch + 1 if best_weights is not None else None,
            best_val_recall=best if best_weights is not None else None,
        )
        return self

    # -- inference --------------------------------------------------------------------------
    def _embed(self, fn: Callable | None, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if fn is None:
            raise RuntimeError("the model is neither trained nor loaded")
        n = len(next(iter(inputs.values())))
        # feed only what the tower's signature takes: a model saved by an older version (fewer
        # inputs) still loads and embeds, e.g. the champion a new challenger is gated against
        accepted = set(fn.structured_input_signature[1])
        inputs = {k: v for k, v in inputs.items() if k in accepted}
        out = np.zeros((n, self.embedding_dim), dtype=np.float32)
        for start in range(0, n, _PREDICT_BATCH):
            batch = {k: tf.constant(v[start : start + _PREDICT_BATCH]) for k, v in inputs.items()}
            out[start : start + _PREDICT_BATCH] = fn(**batch)["embedding"].numpy()
        return out

    def user_embeddings(self, users_df: pd.DataFrame) -> np.ndarray:
        """float32 ``[n, d]``, L2-normalised; columns user_id, onboarding_categories,
        profile_embedding (unknown ids are embedded from the content features)."""
        return self._embed(self._user_fn, encode_users(users_df, self.meta["category_slots"]))

    def post_embeddings(self, posts_df: pd.DataFrame, now=None) -> np.ndarray:
        """float32 ``[n, d]``, L2-normalised; columns post_id, category_id, media_type,
        creator_id, description_embedding, and ``created_at_ts`` with ``now`` (or
        ``age_hours``) for the age bucket (unknown age otherwise)."""
        return self._embed(self._post_fn, encode_posts(posts_df, now))

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

    def __reduce__(self):
        """A model loaded from a directory pickles as that directory (another process loads
        it again: the replay's side processes); a model only in memory does not pickle."""
        if getattr(self, "_path", None) is None:
            raise TypeError("only a TwoTowerModel loaded from a directory can be pickled")
        return (TwoTowerModel.load, (self._path,))

    @classmethod
    def load(cls, path: str | os.PathLike) -> TwoTowerModel:
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        model = cls(
            meta["embedding_dim"],
            **{k: v for k, v in meta.get("hparams", {}).items() if k != "embedding_dim"},
        )
        model.meta = meta
        model._path = path
        model._loaded = {
            name: tf.saved_model.load(str(path / f"{name}_tower")) for name in ("user", "post")
        }
        model._user_fn = model._loaded["user"].signatures["serving_default"]
        model._post_fn = model._loaded["post"].signatures["serving_default"]
        return model
