"""Stage 3, ranking: one online fetch of all candidates' post features, ``ranking_features``
(the same function as at training time), ranker probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from socialrec.recommender.parts import FeatureBuilder, Scorer


# --- stage 3: ranking -----------------------------------------------------------------------
def candidate_features(
    user_row: pd.DataFrame,
    post_features: pd.DataFrame,
    candidates: pd.DataFrame,
    feature_builder: FeatureBuilder,
    now_ts: Any,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(candidates with online post features, their post rows, their ranker features): the
    ranking stage's input, also the ranker's training rows (socialrec.training.ranker)."""
    known = (
        post_features[post_features["found"].astype(bool)] if len(post_features) else post_features
    )
    cands = candidates[candidates["post_id"].isin(known.index)].reset_index(drop=True)
    posts = known.loc[cands["post_id"].astype("int64").tolist()].reset_index()
    if cands.empty:
        return cands, posts, pd.DataFrame()
    users = user_row.reset_index(drop=True)
    pairs = cands.assign(user_id=np.full(len(cands), int(users["user_id"].iloc[0]), np.int64))
    return cands, posts, feature_builder(users, posts, pairs, now_ts)


def rank_candidates(
    user_row: pd.DataFrame,
    post_features: pd.DataFrame,
    candidates: pd.DataFrame,
    ranker: Scorer | None,
    feature_builder: FeatureBuilder,
    now_ts: Any,
) -> pd.DataFrame:
    """Ranker scores for the candidates that have online features.

    ``user_row``: the user's online features (one row, ``user_id`` column);
    ``post_features``: online post features indexed by post_id with a ``found`` column;
    ``candidates``: ``post_id`` plus the merged sources' columns (``merged_score``, each
    source's score and rank: ranker features). Without a ``ranker`` the merged score orders
    them (retrieval alone). Returns post_id, ranker_score, category_id, creator_id, created_at
    (epoch seconds from the ``created_at_ts`` feature; NaN when unknown) and, when the ranker
    predicts several outcomes, one ``p_<outcome>`` column each; candidate order kept.
    """
    if ranker is None:
        known = (
            post_features[post_features["found"].astype(bool)]
            if len(post_features)
            else (post_features)
        )
        cands = candidates[candidates["post_id"].isin(known.index)].reset_index(drop=True)
        posts = known.loc[cands["post_id"].astype("int64").tolist()].reset_index()
        feats = None
    else:
        cands, posts, feats = candidate_features(
            user_row, post_features, candidates, feature_builder, now_ts
        )
    ids = cands["post_id"].astype("int64").tolist()
    out = pd.DataFrame({"post_id": pd.Series(ids, dtype="int64")})
    if not ids:
        return out.assign(ranker_score=[], category_id=[], creator_id=[], created_at=[])
    if ranker is None:
        out["ranker_score"] = cands["merged_score"].to_numpy(dtype=float)
    else:
        outcomes = getattr(ranker, "predict_outcomes", None)
        if outcomes is not None:
            probs = outcomes(feats)
            scores = ranker.combine(probs)
            for col in probs.columns:
                out[f"p_{col}"] = probs[col].to_numpy()
        else:
            scores = ranker.predict(feats)
        scores = np.asarray(scores, dtype=float).reshape(-1)
        if len(scores) != len(ids):
            raise RuntimeError(f"ranker returned {len(scores)} scores for {len(ids)} candidates")
        out["ranker_score"] = scores
    out["category_id"] = posts["category_id"].astype("int64").to_numpy()
    out["creator_id"] = posts["creator_id"].astype("int64").to_numpy()
    created = (
        pd.to_numeric(posts["created_at_ts"], errors="coerce").astype("float64")
        if "created_at_ts" in posts.columns
        else pd.Series(np.nan, index=posts.index)
    )
    out["created_at"] = created.where(created > 0).to_numpy()  # 0: a filled-in unknown
    return out
