"""Feast's BigQuery offline store, with the two bulk paths of the rest of the gcp profile.

:class:`BigQueryOfflineStore` is Feast's own (same SQL: its point-in-time join, its
materialization query), changed in how data goes in and out of BigQuery:

* **entity sets in**: a pandas ``entity_df`` is loaded with one Parquet load job into a table
  of the offline store's dataset (``socialrec.features.gcp.upload_entities``), and Feast is
  given ``SELECT * FROM`` it, instead of Feast's ``load_table_from_dataframe``;
* **results out**: a query's result is written to a table of that dataset (Feast's final
  ``SELECT`` becomes ``CREATE TABLE ... AS``: :func:`into_table`), read whole through the
  Storage Read API (``storage_endpoint``: Google's when unset) and dropped, instead of reading
  the query's anonymous result table with a Storage Read client the Google library makes for
  Google's endpoint itself. The temporary tables of Feast's point-in-time script are dropped
  at its end (BigQuery would drop them with the script's session anyway).

Both are how large entity sets and training sets move in bulk anyway; they also make
materialization and training reads run against the BigQuery emulator of the tests (no
multipart uploads, no reads of anonymous result tables, see docs/feast-gcp.md).

Configured as ``offline_store: {type: socialrec.features.bigquery_store.BigQueryOfflineStore,
project_id, dataset, location, storage_endpoint}`` (``socialrec.features.store.repo_config``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import uuid
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
from feast.infra.offline_stores import bigquery as feast_bq
from pydantic import StrictStr

from socialrec.data import bigquery
from socialrec.features import gcp

RESULT_TABLE_TTL = dt.timedelta(hours=1)  # a result table left behind by a crash expires


class BigQueryOfflineStoreConfig(feast_bq.BigQueryOfflineStoreConfig):
    type: StrictStr = "socialrec.features.bigquery_store.BigQueryOfflineStore"
    storage_endpoint: StrictStr | None = None
    """host:port of a Storage Read API that is not Google's (reached without TLS)."""


def _read_client(endpoint: str | None):
    """A Storage Read client of ``endpoint`` (``socialrec.data.bigquery.read_client``)."""
    return bigquery.read_client_at(endpoint)


_TEMP_TABLE = re.compile(r"CREATE\s+TEMP(?:ORARY)?\s+TABLE\s+`?(\w+)`?", re.IGNORECASE)


def into_table(sql: str, table: str) -> str:
    """Feast's query (one statement, or a script of ``CREATE TEMP TABLE ...;`` statements and a
    final ``SELECT``: its point-in-time join) with the final ``SELECT`` written to ``table``
    (``CREATE TABLE ... AS``) and the script's temporary tables dropped at its end."""
    head, _, last = sql.rpartition(";")
    statements = [head] if head.strip() else []
    statements.append(f"CREATE TABLE `{table}` AS {last.strip()}")
    statements += [f"DROP TABLE IF EXISTS {name}" for name in _TEMP_TABLE.findall(head)]
    return ";\n".join(statements)


class TableRetrievalJob(feast_bq.BigQueryRetrievalJob):
    """A Feast BigQuery retrieval job whose result is read as a table (module docstring)."""

    @classmethod
    def of(cls, job: feast_bq.BigQueryRetrievalJob, cleanup=None) -> TableRetrievalJob:
        """The same job (query, client, config, metadata), read as a table; ``cleanup()`` runs
        once the query has been run (or failed)."""
        generator = job._query_generator

        @contextlib.contextmanager
        def query() -> Iterator[str]:
            try:
                with generator() as sql:
                    yield sql
            finally:
                if cleanup is not None:
                    cleanup()

        return cls(
            query=query,
            client=job.client,
            config=job.config,
            full_feature_names=job.full_feature_names,
            on_demand_feature_views=job.on_demand_feature_views,
            metadata=job.metadata,
        )

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        cfg = self.config.offline_store
        table = f"{self.client.project}.{cfg.dataset}.socialrec_result_{uuid.uuid4().hex}"
        gcp.ensure_dataset(self.client, f"{self.client.project}.{cfg.dataset}", cfg.location)
        with self._query_generator() as sql:
            self._execute_query(into_table(sql, table), timeout=timeout)
        try:
            meta = self.client.get_table(table)
            meta.expires = dt.datetime.now(dt.UTC) + RESULT_TABLE_TTL
            self.client.update_table(meta, ["expires"])
            return bigquery.read_arrow(
                self.client, table, bqstorage=_read_client(cfg.storage_endpoint)
            )
        finally:
            gcp.drop_table(self.client, table)

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout=timeout).to_pandas()


class BigQueryOfflineStore(feast_bq.BigQueryOfflineStore):
    """Feast's BigQuery offline store; entity sets and results move as tables (module doc)."""

    @staticmethod
    def pull_latest_from_table_or_query(*args, **kwargs) -> TableRetrievalJob:
        job = feast_bq.BigQueryOfflineStore.pull_latest_from_table_or_query(*args, **kwargs)
        return TableRetrievalJob.of(job)

    @staticmethod
    def pull_all_from_table_or_query(*args, **kwargs) -> TableRetrievalJob:
        job = feast_bq.BigQueryOfflineStore.pull_all_from_table_or_query(*args, **kwargs)
        return TableRetrievalJob.of(job)

    @staticmethod
    def get_historical_features(config, feature_views, feature_refs, entity_df, *args, **kwargs):
        cleanup = None
        if isinstance(entity_df, pd.DataFrame):
            cfg = config.offline_store
            bq = feast_bq._get_bigquery_client(project=cfg.project_id, location=cfg.location)
            table = gcp.upload_entities(bq, bq.project, cfg.dataset, cfg.location, entity_df)
            entity_df = f"SELECT * FROM `{table}`"

            def cleanup() -> None:
                gcp.drop_table(bq, table)

        job = feast_bq.BigQueryOfflineStore.get_historical_features(
            config, feature_views, feature_refs, entity_df, *args, **kwargs
        )
        return TableRetrievalJob.of(job, cleanup)
