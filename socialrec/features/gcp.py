"""The gcp profile's Feast data in BigQuery: the feature tables and the training entity sets.

* The feature tables (Feast's offline sources) live in the dataset ``<bigquery_dataset>_features``
  (``socialrec_features.user_features``, ...: one table per feature view, same name), next to
  the warehouse's own datasets; :func:`write_feature_table` replaces one with a single Parquet
  load job (``WRITE_TRUNCATE``), so Feast never reads half a table.
* Feast's own scratch (its temporary entity tables) and the entity sets of the point-in-time
  reads go to ``<bigquery_dataset>_feast`` (:data:`SCRATCH_SUFFIX`); an entity set is loaded
  with one Parquet load job (:func:`upload_entities`), and Feast is given ``SELECT * FROM`` it:
  Feast's own upload of a pandas frame (``load_table_from_dataframe``) is a streaming-sized
  path, a load job suits training's large entity sets (and the BigQuery emulator of the tests,
  which has no multipart upload).

This module does not import Feast.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pandas as pd
import pyarrow as pa

from socialrec.data import bigquery
from socialrec.settings import Settings
from socialrec.timeutil import timestamp

FEATURES_SUFFIX = "features"  # the feature tables' dataset: <bigquery_dataset>_features
SCRATCH_SUFFIX = "feast"  # Feast's temporary tables and the entity sets
ENTITY_TABLE_TTL = dt.timedelta(hours=1)  # an entity set left behind by a crash expires


def feature_table_id(settings: Settings, name: str) -> str:
    """``project.<bigquery_dataset>_features.<name>``: the BigQuery table of a feature view."""
    return bigquery.table_id(settings, f"{FEATURES_SUFFIX}.{name}")


def scratch_dataset(settings: Settings) -> str:
    """The dataset (name only) of Feast's temporary tables and the entity sets."""
    return f"{settings.bigquery_dataset}_{SCRATCH_SUFFIX}"


def bq_schema(schema: pa.Schema) -> list:
    """The BigQuery columns of an Arrow schema (integers INT64, floats FLOAT64, strings STRING,
    timestamps TIMESTAMP, lists of them REPEATED): loads say their schema, so every load gets
    the same types whatever the Parquet writer chose."""
    from google.cloud.bigquery import SchemaField

    def kind(t: pa.DataType) -> str:
        for test, name in (
            (pa.types.is_integer, "INT64"),
            (pa.types.is_floating, "FLOAT64"),
            (pa.types.is_string, "STRING"),
            (pa.types.is_large_string, "STRING"),
            (pa.types.is_timestamp, "TIMESTAMP"),
            (pa.types.is_boolean, "BOOL"),
        ):
            if test(t):
                return name
        raise TypeError(f"no BigQuery type for {t}")

    return [
        SchemaField(f.name, kind(f.type.value_type), mode="REPEATED")
        if pa.types.is_list(f.type)
        else SchemaField(f.name, kind(f.type))
        for f in schema
    ]


def ensure_dataset(bq, dataset_id: str, location: str | None) -> None:
    """Create ``project.dataset`` unless it exists."""
    from google.cloud import bigquery as bq_api

    dataset = bq_api.Dataset(dataset_id)
    dataset.location = location or "US"
    bq.create_dataset(dataset, exists_ok=True)


def write_feature_table(settings: Settings, name: str, table: pa.Table, bq=None) -> str:
    """Replace the BigQuery feature table ``name`` with ``table`` (one Parquet load job);
    returns its table id."""
    bq = bq or bigquery.client(settings)
    target = feature_table_id(settings, name)
    ensure_dataset(bq, target.rsplit(".", 1)[0], settings.bigquery_location)
    bigquery.load_arrow(bq, target, table, schema=bq_schema(table.schema))
    return target


def read_feature_table(settings: Settings, name: str) -> pa.Table | None:
    """A whole BigQuery feature table (Storage Read API), or None when it was never written."""
    from google.api_core.exceptions import NotFound

    bq = bigquery.client(settings)
    try:
        return bigquery.read_arrow(
            bq, feature_table_id(settings, name), bqstorage=bigquery.read_client(settings)
        )
    except NotFound:
        return None


def offline_client(offline_store_config):
    """A BigQuery client of a Feast BigQuery offline store config (its project and location),
    made as Feast makes its own."""
    from google.cloud import bigquery as bq_api

    return bq_api.Client(
        project=offline_store_config.project_id, location=offline_store_config.location
    )


def window_rows(bq, table: str, id_column: str, ts_column: str, start, end) -> int:
    """How many entities of ``table`` have a row with ``start < ts <= end`` (``start`` None:
    no lower bound); one ``COUNT(DISTINCT)`` query."""
    where = [f"`{ts_column}` <= TIMESTAMP('{timestamp(end).isoformat()}')"]
    if start is not None:
        where.append(f"`{ts_column}` > TIMESTAMP('{timestamp(start).isoformat()}')")
    sql = f"SELECT COUNT(DISTINCT `{id_column}`) AS n FROM `{table}` WHERE {' AND '.join(where)}"
    (row,) = list(bq.query(sql).result())
    return int(row["n"])


def upload_entities(bq, project: str, dataset: str, location: str, entity_df: pd.DataFrame) -> str:
    """Load an entity set (the id column(s), ``event_timestamp``, ...) into a new table of
    ``project.dataset`` with one Parquet load job; returns its id. The table expires after
    :data:`ENTITY_TABLE_TTL`; :func:`drop_table` it when done."""
    ensure_dataset(bq, f"{project}.{dataset}", location)
    target = f"{project}.{dataset}.socialrec_entities_{uuid.uuid4().hex}"
    data = pa.Table.from_pandas(entity_df, preserve_index=False)
    bigquery.load_arrow(
        bq, target, data, write_disposition="WRITE_EMPTY", schema=bq_schema(data.schema)
    )
    table = bq.get_table(target)
    table.expires = dt.datetime.now(dt.UTC) + ENTITY_TABLE_TTL
    bq.update_table(table, ["expires"])
    return target


def drop_table(bq, table: str) -> None:
    bq.delete_table(table, not_found_ok=True)
