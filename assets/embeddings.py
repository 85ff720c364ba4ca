"""Text embeddings (all-MiniLM-L6-v2) of post descriptions and user profiles.

Thin wrappers of ``socialrec.features.text``: read the dbt marts, re-embed only the rows whose text is
new or changed since the last run, write the parquet tables of docs/contracts.md. A blank text
gets the zero vector ("no text").
"""

import dagster as dg

from assets.common import DERIVED_FRESHNESS, EAGER
from assets.resources import SettingsResource
from socialrec.data import warehouse
from socialrec.data.deletion import live
from socialrec.features import text
from socialrec.settings import Settings


def _embed(
    context: dg.AssetExecutionContext,
    settings: Settings,
    mart: str,
    id_col: str,
    texts_of,
    file_name: str,
) -> dg.MaterializeResult:
    df = live(warehouse.read_table(settings, mart))  # forgotten users, deleted posts: dropped
    path = settings.features_dir / file_name
    table = text.embed_incremental(
        text.TextEncoder(),
        df[id_col].to_numpy(),
        texts_of(df),
        text.read_embeddings(path),
        id_col,
        progress=context.log.info,
    )
    text.write_embeddings(table, path, id_col)
    embedded, reused = table.attrs["n_embedded"], table.attrs["n_reused"]
    empty = table.attrs["n_empty"]
    context.log.info(
        f"{file_name}: {embedded} rows embedded, {reused} reused, {empty} without text (zeros)"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "rows_embedded": embedded,
            "rows_reused": reused,
            "rows_without_text": empty,  # blank text: the zero vector, not MiniLM("")
            "model": text.MODEL_NAME,
            "dim": text.TextEncoder.dim,
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    deps=[dg.AssetKey("dim_posts")],
    group_name="embeddings",
    freshness_policy=DERIVED_FRESHNESS,
    automation_condition=EAGER,
    kinds={"pytorch", "parquet"},
    description="MiniLM (384-d, L2-normalised) embedding of every post description; only new "
    "or edited descriptions are re-embedded.",
)
def post_text_embeddings(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    return _embed(
        context, settings.get(), "dim_posts", "post_id", text.post_text, text.POST_EMBEDDINGS_FILE
    )


@dg.asset(
    deps=[dg.AssetKey("dim_users")],
    group_name="embeddings",
    freshness_policy=DERIVED_FRESHNESS,
    automation_condition=EAGER,
    kinds={"pytorch", "parquet"},
    description="MiniLM embedding of every user profile (headline + about); only new or "
    "edited profiles are re-embedded.",
)
def user_text_embeddings(
    context: dg.AssetExecutionContext, settings: SettingsResource
) -> dg.MaterializeResult:
    return _embed(
        context, settings.get(), "dim_users", "user_id", text.user_text, text.USER_EMBEDDINGS_FILE
    )
