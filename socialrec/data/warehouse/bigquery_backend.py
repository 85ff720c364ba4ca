"""The BigQuery warehouse (the gcp profile): raw tables in the dataset ``<bigquery_dataset>_raw``.

Loads parse the landing files with the same parsers as DuckDB (``socialrec.data.raw_records``),
stage the good rows and the quarantined lines with Parquet load jobs (never row inserts) into
two staging tables, then replace what they load in ONE transaction (a multi-statement query):
an event load deletes its ``dt`` partitions of ``raw.events`` and their quarantine rows and
inserts the staged rows, so loading a partition again gives the same rows (idempotent); a
dimension load replaces the whole table. The staging tables are dropped after (and expire by
themselves within a day should the process die first).

``raw.events`` is partitioned by ``dt`` and clustered by ``user_id``; the columns of every raw
table are those of the DuckDB backend (``RAW_COLUMNS``), TIMESTAMPs in UTC. Reads go through
the Storage Read API (``socialrec.data.bigquery.read_arrow``) and come back as the DuckDB
backend's frames: naive UTC timestamps, ``datetime64`` dates, nullable integers as ``Int64``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa

from socialrec.data import bigquery as bq
from socialrec.data.landing import LandingBucket, dataset_prefix, partition_prefix
from socialrec.data.raw_records import PARSERS, EventWindow, parse_file
from socialrec.data.warehouse.base import (
    DIMENSIONS,
    RAW_COLUMNS,
    LoadReport,
    Warehouse,
    check_dimension,
    check_partitions,
    check_raw_dataset,
    check_table_name,
    rate,
    register,
)
from socialrec.settings import Settings
from socialrec.timeutil import utc_now

_TYPES = {"string": "STRING", "int64": "INT64", "timestamp": "TIMESTAMP", "date": "DATE"}
_TYPES["bool"] = "BOOL"
_ARROW = {
    "string": pa.string(),
    "int64": pa.int64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "bool": pa.bool_(),
}
# DuckDB gives nullable integer / boolean columns with nulls these dtypes
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
STAGE_ROWS = 500_000  # staged rows kept in memory before a load job takes them
STAGE_EXPIRY = dt.timedelta(days=1)


def raw_schema(name: str) -> list:
    """The BigQuery schema of ``raw.<name>`` (all columns nullable, like the DuckDB DDL)."""
    from google.cloud import bigquery

    return [bigquery.SchemaField(col, _TYPES[kind]) for col, kind in RAW_COLUMNS[name]]


def conform(data: pa.Table, name: str, constants: dict | None = None) -> pa.Table:
    """``data`` as the rows of ``raw.<name>``: its columns in order, typed, the missing ones
    from ``constants`` (lineage, ``dt``) or null. Naive times are UTC."""
    constants = constants or {}
    cols = []
    for col, kind in RAW_COLUMNS[name]:
        if col in data.column_names:
            values = data.column(col)
            if kind == "timestamp" and getattr(values.type, "tz", None) is None:
                values = values.cast(pa.timestamp("us")).cast(_ARROW[kind])
        else:
            values = pa.array([constants.get(col)] * data.num_rows)
        cols.append(values.cast(_ARROW[kind]))
    return pa.table(cols, names=[col for col, _ in RAW_COLUMNS[name]])


def to_frame(data: pa.Table) -> pd.DataFrame:
    """Arrow from BigQuery -> the frame DuckDB's ``.df()`` gives for the same rows."""
    out = {}
    for name, col in zip(data.column_names, data.columns, strict=True):
        t = col.type
        if pa.types.is_timestamp(t):
            col = col.cast(pa.timestamp("us", tz=t.tz)).cast(pa.timestamp("us"))
        elif pa.types.is_date(t):
            col = col.cast(pa.timestamp("us"))
        out[name] = col.to_pandas(types_mapper=_NULLABLE.get) if col.null_count else col.to_pandas()
    return pd.DataFrame(out, columns=data.column_names)


@register("bigquery")
class BigQueryWarehouse(Warehouse):
    """The gcp profile's warehouse, through ``client`` (a ``google.cloud.bigquery.Client``,
    e.g. dagster-gcp's ``BigQueryResource``'s) and ``read_client`` (the Storage Read API);
    both default to clients of the settings (Application Default Credentials)."""

    kind = "bigquery"

    def __init__(self, settings: Settings, client=None, read_client=None):
        super().__init__(settings)
        self._client, self._read_client = client, read_client
        self._owned: list = []  # the clients made here (closed by close())

    @property
    def client(self):
        if self._client is None:
            self._client = bq.client(self.settings)
            self._owned.append(self._client)
        return self._client

    @property
    def read_client(self):
        if self._read_client is None:
            self._read_client = bq.read_client(self.settings)
            self._owned.append(self._read_client.transport)
        return self._read_client

    def close(self) -> None:
        for c in self._owned:
            c.close()
        self._owned.clear()

    def raw_table(self, name: str) -> str:
        return bq.table_id(self.settings, f"raw.{name}")

    # --- schema ----------------------------------------------------------------------------
    def ensure_raw_schema(self) -> None:
        """Create the raw dataset and tables if missing. A dimension table of an older layout
        is re-created (dimension loads are full reloads); other tables get the columns they
        lack added (nullable), never dropped."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        raw = bigquery.Dataset(
            f"{self.settings.bigquery_project}.{bq.dataset_name(self.settings, 'raw')}"
        )
        raw.location = self.settings.bigquery_location
        self.client.create_dataset(raw, exists_ok=True)
        for name, cols in RAW_COLUMNS.items():
            try:
                table = self.client.get_table(self.raw_table(name))
            except NotFound:
                self._create(name)
                continue
            existing = [f.name for f in table.schema]
            if existing != [c for c, _ in cols] and name in DIMENSIONS:
                self.client.delete_table(table)
                self._create(name)
                continue
            missing = [f for f in raw_schema(name) if f.name not in existing]
            if missing:
                table.schema = [*table.schema, *missing]
                self.client.update_table(table, ["schema"])

    def _create(self, name: str, table_id: str | None = None, expires=None) -> str:
        from google.cloud import bigquery

        table = bigquery.Table(table_id or self.raw_table(name), schema=raw_schema(name))
        if name == "events":
            table.time_partitioning = bigquery.TimePartitioning(field="dt")
            table.clustering_fields = ["user_id"]
        elif name == "quarantine":
            table.clustering_fields = ["dataset", "source_file"]
        table.expires = expires
        self.client.create_table(table, exists_ok=table_id is None)
        return table.table_id

    # --- loads -----------------------------------------------------------------------------
    def load_event_partitions(self, bucket: LandingBucket, partitions: list[str]) -> LoadReport:
        """Replace the ``dt`` partitions of ``raw.events`` (and their quarantine rows) with
        what ``events/dt=<p>/`` holds now, in one transaction."""
        partitions = check_partitions(partitions)
        report = LoadReport("events", partitions=partitions)
        if not partitions:
            return report
        days = ", ".join(f"DATE '{p}'" for p in partitions)  # checked YYYY-MM-DD
        files = " OR ".join(
            f"STARTS_WITH(source_file, '{partition_prefix('events', p)}')" for p in partitions
        )
        keys = {p: [b.key for b in bucket.list(partition_prefix("events", p))] for p in partitions}
        self._load(
            bucket,
            "events",
            [(key, {"dt": dt.date.fromisoformat(p)}) for p, ks in keys.items() for key in ks],
            report,
            rows_where=f"dt IN ({days})",
            bad_where=f"dataset = 'events' AND ({files})",
        )
        return report

    def load_dimension(self, bucket: LandingBucket, dataset: str) -> LoadReport:
        """Full reload of ``raw.<dataset>`` (posts, users or categories) from all its files."""
        check_dimension(dataset)
        report = LoadReport(dataset)
        keys = [b.key for b in bucket.list(dataset_prefix(dataset))]
        self._load(
            bucket,
            dataset,
            [(key, {}) for key in keys],
            report,
            rows_where="TRUE",
            bad_where=f"dataset = '{dataset}'",
        )
        return report

    def _load(self, bucket, dataset: str, files, report: LoadReport, rows_where, bad_where):
        """Parse ``files`` ((key, constant columns)), stage them, then delete ``rows_where`` /
        ``bad_where`` and insert the staged rows in one transaction."""
        loaded_at = utc_now().replace(tzinfo=None)  # naive UTC, what the parsers compare with
        window = EventWindow.of(self.settings)
        self.ensure_raw_schema()
        stage = _Stage(self, dataset)
        try:
            for key, constants in files:
                rows, bad = parse_file(bucket, key, dataset, PARSERS[dataset], loaded_at, window)
                lineage = {"_source_file": key, "_loaded_at": loaded_at, **constants}
                stage.add(dataset, conform(rows, dataset, lineage))
                meta = {"dataset": dataset, "source_file": key, "_loaded_at": loaded_at}
                stage.add("quarantine", conform(bad, "quarantine", meta))
                report.add_file(rows, bad)
            stage.flush()
            script = ["BEGIN TRANSACTION;"]
            for name, where in ((dataset, rows_where), ("quarantine", bad_where)):
                script.append(f"DELETE FROM `{self.raw_table(name)}` WHERE {where};")
                if name in stage.tables:
                    cols = ", ".join(c for c, _ in RAW_COLUMNS[name])
                    script.append(
                        f"INSERT INTO `{self.raw_table(name)}` ({cols}) "
                        f"SELECT {cols} FROM `{stage.tables[name]}`;"
                    )
            script.append("COMMIT TRANSACTION;")
            # a failing statement ends the script and BigQuery rolls the transaction back
            self.client.query("\n".join(script)).result()
        finally:
            stage.drop()

    # --- reads -----------------------------------------------------------------------------
    def read_table(self, name: str, columns: Iterable[str] | None = None) -> pd.DataFrame:
        """A whole table through the Storage Read API (a view through a query)."""
        table = bq.table_id(self.settings, check_table_name(name))
        cols = None if columns is None else list(columns)
        return to_frame(bq.read_arrow(self.client, table, cols, self.read_client))

    def quarantine_rate(self, dataset: str = "events") -> dict[str, float]:
        """Loaded rows, quarantined lines and their share for one raw dataset (one query)."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        check_raw_dataset(dataset)
        try:
            for name in (dataset, "quarantine"):
                self.client.get_table(self.raw_table(name))
        except NotFound:
            return rate(0, 0)
        sql = (
            f"SELECT (SELECT count(*) FROM `{self.raw_table(dataset)}`) AS n_rows, "
            f"(SELECT count(*) FROM `{self.raw_table('quarantine')}` WHERE dataset = @dataset) "
            "AS n_bad"
        )
        config = bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("dataset", "STRING", dataset)]
        )
        row = next(iter(self.client.query(sql, job_config=config).result()))
        return rate(int(row["n_rows"]), int(row["n_bad"]))


class _Stage:
    """The staging tables of one load (``raw.<name>`` layout, one per name that gets rows),
    filled by Parquet load jobs of at most ``STAGE_ROWS`` buffered rows."""

    def __init__(self, wh: BigQueryWarehouse, dataset: str):
        self.wh = wh
        self.prefix = f"_stage_{dataset}_{uuid.uuid4().hex[:12]}"
        self.tables: dict[str, str] = {}
        self.pending: dict[str, list[pa.Table]] = {}

    def add(self, name: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        self.pending.setdefault(name, []).append(data)
        if sum(t.num_rows for t in self.pending[name]) >= STAGE_ROWS:
            self._flush(name)

    def flush(self) -> None:
        for name in list(self.pending):
            self._flush(name)

    def _flush(self, name: str) -> None:
        data = pa.concat_tables(self.pending.pop(name))
        if name not in self.tables:
            table = f"{self.wh.raw_table(self.prefix)}_{name}"
            self.wh._create(name, table, expires=utc_now() + STAGE_EXPIRY)
            self.tables[name] = table
        bq.load_arrow(
            self.wh.client, self.tables[name], data, "WRITE_APPEND", schema=raw_schema(name)
        )

    def drop(self) -> None:
        for table in self.tables.values():
            self.wh.client.delete_table(table, not_found_ok=True)
