"""BigQuery, the gcp profile's warehouse: the clients and the two bulk paths every user of it
shares (the raw loads, the Python assets' reads, the Feast feature tables).

* Clients use Application Default Credentials (a pod's Workload Identity; the metadata server
  stand-in in tests) and the Google client's own ``BIGQUERY_EMULATOR_HOST``, so that dbt, Feast
  and dagster-gcp, which build their own clients, reach the same BigQuery.
* Reads go through the Storage Read API (``list_rows(...).to_arrow(bqstorage_client=...)``);
  a view, which that API cannot read, is read with a query.
* Writes are load jobs of Parquet (never row-by-row inserts): :func:`load_arrow`.
"""

from __future__ import annotations

import io
import re

import pyarrow as pa
import pyarrow.parquet as pq

from socialrec.settings import Settings

_UNLIMITED_MESSAGES = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def client(settings: Settings, credentials=None):
    """A ``google.cloud.bigquery.Client`` of the settings' project and location."""
    from google.cloud import bigquery

    return bigquery.Client(
        project=settings.bigquery_project,
        location=settings.bigquery_location,
        credentials=credentials,
    )


def read_client(settings: Settings, credentials=None):
    """A Storage Read API client: Google's, or ``settings.bigquery_storage_endpoint`` (an
    emulator, reached without TLS)."""
    return read_client_at(settings.bigquery_storage_endpoint, credentials)


def read_client_at(endpoint: str | None, credentials=None):
    """A Storage Read API client of ``endpoint`` (``host:port``, no TLS: an emulator), or of
    Google's endpoint when it is None."""
    from google.cloud.bigquery_storage import BigQueryReadClient

    if not endpoint:
        return BigQueryReadClient(credentials=credentials)
    import grpc
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    # no message size limit, as on the client's own channel to Google's endpoint
    channel = grpc.insecure_channel(endpoint, options=_UNLIMITED_MESSAGES)
    return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))


def dataset_name(settings: Settings, schema: str | None = None) -> str:
    """The dataset of a warehouse schema: ``<bigquery_dataset>`` (dbt's models), or
    ``<bigquery_dataset>_<schema>`` (``raw``: the raw tables, dbt's var ``raw_schema``)."""
    if schema is not None and not _NAME_RE.match(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    base = settings.bigquery_dataset
    return base if schema is None else f"{base}_{schema}"


def table_id(settings: Settings, name: str, dataset: str | None = None) -> str:
    """``project.dataset.table`` of ``name`` (``dim_posts``, or ``raw.events``: the dataset
    ``<bigquery_dataset>_raw``, as dbt's schemas name it)."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_NAME_RE.match(p) for p in parts):
        raise ValueError(f"not a table name: {name!r}")
    if len(parts) == 2:
        dataset, parts = dataset_name(settings, parts[0]), parts[1:]
    return f"{settings.bigquery_project}.{dataset or dataset_name(settings)}.{parts[0]}"


def read_arrow(bq, table: str, columns=None, bqstorage=None) -> pa.Table:
    """A whole table (or some of its columns) as Arrow, through the Storage Read API; a view
    through a query."""
    meta = bq.get_table(table)
    if meta.table_type == "VIEW":
        cols = "*" if columns is None else ", ".join(f"`{c}`" for c in columns)
        return bq.query(f"SELECT {cols} FROM `{table}`").to_arrow(create_bqstorage_client=False)
    fields = None
    if columns is not None:
        by_name = {f.name: f for f in meta.schema}
        missing = [c for c in columns if c not in by_name]
        if missing:
            raise KeyError(f"{table} has no column(s) {missing}")
        fields = [by_name[c] for c in columns]
    rows = bq.list_rows(meta, selected_fields=fields)
    out = rows.to_arrow(bqstorage_client=bqstorage, create_bqstorage_client=False)
    return out if columns is None else out.select(list(columns))


def load_arrow(bq, table: str, data: pa.Table, write_disposition: str = "WRITE_TRUNCATE", **job):
    """Load ``data`` into ``table`` with one Parquet load job (``WRITE_TRUNCATE``: replace the
    table; ``WRITE_APPEND``); extra ``job`` fields go to ``LoadJobConfig`` (``schema``,
    ``time_partitioning``, ``clustering_fields``, ...). Returns the finished job."""
    from google.cloud import bigquery

    buf = io.BytesIO()
    pq.write_table(data, buf)
    buf.seek(0)
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=write_disposition,
        **job,
    )
    parquet = bigquery.ParquetOptions()
    parquet.enable_list_inference = True
    config.parquet_options = parquet
    return bq.load_table_from_file(buf, table, job_config=config).result()
