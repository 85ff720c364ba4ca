"""A recording fake of the part of the driver's ``Session`` the ScyllaDB seen store uses, with
tables parsed from the migration's DDL, and cqlsh's CQL grammar: the contract tests' tools
(``tests/test_seen_scylla*.py``; see ``tests/test_seen_scylla.py`` for what they check)."""

from __future__ import annotations

import re
import uuid

from cassandra import InvalidRequest
from cassandra.cqltypes import DateType, Int32Type, LongType, UTF8Type
from cassandra.protocol import ColumnMetadata
from cassandra.query import UNSET_VALUE, BoundStatement, PreparedStatement

from socialrec.stores.seen.scylla.schema import migrate, schema_statements
from socialrec.stores.seen.scylla.store import ScyllaSeenStore

DAY = 86_400
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
KS = "socialrec_test"

# --- the fake driver session ----------------------------------------------------------------
CQL_TYPES = {"bigint": LongType, "text": UTF8Type, "timestamp": DateType}
USING_TYPES = {"TTL": ("[ttl]", Int32Type), "TIMESTAMP": ("[timestamp]", LongType)}
PROTOCOL = 4

INSERT_RE = re.compile(
    r"INSERT INTO (\w+)\.(\w+) \(([^)]*)\) VALUES \(([^)]*)\)(?: USING (.+))?", re.I | re.S
)
SELECT_RE = re.compile(r"SELECT (.+?) FROM (\w+)\.(\w+) WHERE (.+)", re.I | re.S)
DELETE_RE = re.compile(r"DELETE FROM (\w+)\.(\w+) WHERE (.+)", re.I | re.S)
CREATE_TABLE_RE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) \((.*), PRIMARY KEY \((.*)\)\) "
    r"WITH default_time_to_live = (\d+)",
    re.I | re.S,
)


class FakeFuture:
    """What ``execute_concurrent`` needs of a ResponseFuture: callbacks, run at once."""

    _col_names = None
    _col_types = None
    has_more_pages = False

    def __init__(self, rows=None, error=None):
        self.rows, self.error = rows, error

    def add_callbacks(
        self, callback, errback, callback_args=(), callback_kwargs=None, errback_args=(), **_
    ):
        if self.error is not None:
            errback(self.error, *errback_args)
        else:
            callback(self.rows, *callback_args, **(callback_kwargs or {}))

    def clear_callbacks(self):
        pass

    def result(self):
        if self.error is not None:
            raise self.error
        return self.rows


class FakeCluster:
    def __init__(self):
        self.shutdowns = 0

    def shutdown(self):
        self.shutdowns += 1


class FakeTable:
    """A table as the migration's DDL defines it, with its rows and row tombstones."""

    def __init__(self, ddl: str):
        m = CREATE_TABLE_RE.fullmatch(ddl)
        assert m, f"unexpected CREATE TABLE: {ddl}"
        self.keyspace, self.name, columns, key, ttl = m.groups()
        self.columns = {}
        for column in columns.split(","):
            name, typ = column.split()
            self.columns[name] = CQL_TYPES[typ]
        if key.startswith("("):  # ((partition, key), clustering...)
            partition, clustering = key[1:].split(")", 1)
        else:  # (partition, clustering...)
            partition, _, clustering = key.partition(",")
        self.partition_key = tuple(c.strip() for c in partition.split(",") if c.strip())
        self.primary_key = self.partition_key + tuple(
            c.strip() for c in clustering.split(",") if c.strip()
        )
        assert set(self.primary_key) <= set(self.columns), ddl
        self.default_ttl = int(ttl)
        self.rows: dict[tuple, dict] = {}
        self.tombstones: dict[tuple, int] = {}
        self.partition_tombstones: dict[tuple, int] = {}  # partition key -> delete timestamp

    def type_of(self, column: str):
        if column not in self.columns:
            raise InvalidRequest(f"Undefined column name {column}")
        return self.columns[column]


class FakeSession:
    """Records everything; keeps rows like one replica would (last write wins, TTL expiry,
    row deletes). Its tables come from the CREATE TABLE statements it executes (the
    migration's DDL), so statements are checked against the schema the migration makes."""

    def __init__(self, clock=lambda: NOW):
        self.clock = clock
        self.cluster = FakeCluster()
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.ddl: list[str] = []
        self.prepared: list[PreparedStatement] = []
        self.calls: list[tuple[str, BoundStatement]] = []  # (execute | execute_async, bound)
        self._last_client_ts = 0

    def table(self, name: str) -> FakeTable:
        (found,) = [t for (_, n), t in self.tables.items() if n == name]
        return found

    @property
    def rows(self) -> dict[tuple, dict]:
        return self.table("seen").rows

    def _table(self, ks: str, name: str) -> FakeTable:
        if (ks, name) not in self.tables:
            raise InvalidRequest(f"unconfigured table {name}")
        return self.tables[(ks, name)]

    @staticmethod
    def _where(table: FakeTable, where: str, query: str) -> list[tuple[str, object]]:
        markers = []
        for relation in re.split(r"\s+AND\s+", where, flags=re.I):
            col, op, value = relation.split()
            assert value == "?", f"a literal value in prepared DML: {query}"
            assert op == "="
            markers.append((col, table.type_of(col)))
        return markers

    # prepare: what a server would say about our statements, plus the no-literal rule
    def prepare(self, query: str) -> PreparedStatement:
        query = " ".join(query.split())
        result = None
        if m := INSERT_RE.fullmatch(query):
            ks, name, cols, vals, using = m.groups()
            table = self._table(ks, name)
            cols = [c.strip() for c in cols.split(",")]
            vals = [v.strip() for v in vals.split(",")]
            assert all(v == "?" for v in vals), f"a literal value in prepared DML: {query}"
            if len(cols) != len(vals):
                raise InvalidRequest("Unmatched column names/values")
            markers = [(c, table.type_of(c)) for c in cols]
            if missing := set(table.primary_key) - set(cols):
                raise InvalidRequest(f"Some partition/clustering key parts are missing: {missing}")
            for option in re.split(r"\s+AND\s+", using or "", flags=re.I):
                if option:
                    word, value = option.split()
                    assert value == "?", f"a literal USING value in prepared DML: {query}"
                    markers.append(USING_TYPES[word.upper()])
        elif m := SELECT_RE.fullmatch(query):
            selected, ks, name, where = m.groups()
            table = self._table(ks, name)
            result = [(c.strip(), table.type_of(c.strip())) for c in selected.split(",")]
            markers = self._where(table, where, query)
            if set(table.partition_key) - {c for c, _ in markers}:
                raise InvalidRequest("Cannot execute this query as it might involve filtering")
        elif m := DELETE_RE.fullmatch(query):
            ks, name, where = m.groups()
            table = self._table(ks, name)
            assert " USING " not in query.upper(), f"unexpected USING in {query}"
            markers = self._where(table, where, query)
            # the store deletes single rows or whole partitions (no range deletes)
            assert sorted(c for c, _ in markers) in (
                sorted(table.primary_key),
                sorted(table.partition_key),
            ), query
        else:
            raise AssertionError(f"unexpected statement prepared: {query}")
        meta = [ColumnMetadata(ks, name, col, typ) for col, typ in markers]
        names = [col for col, _ in markers]
        routing = (
            [names.index(c) for c in table.partition_key]
            if set(table.partition_key) <= set(names)
            else None
        )
        prepared = PreparedStatement.from_message(
            uuid.uuid4().bytes,
            meta,
            routing,
            None,
            query,
            ks,
            PROTOCOL,
            [ColumnMetadata(ks, name, n, t) for n, t in result] if result else None,
            None,
            False,
        )
        self.prepared.append(prepared)
        return prepared

    def execute(self, query, parameters=None, timeout=None, execution_profile=None, **_):
        return self._run("execute", query, parameters)

    def execute_async(self, query, parameters=None, timeout=None, execution_profile=None, **_):
        try:
            return FakeFuture(rows=self._run("execute_async", query, parameters))
        except Exception as exc:  # delivered through the errback, as the driver does
            return FakeFuture(error=exc)

    def _client_timestamp(self) -> int:
        """The driver's default write timestamp: client-side, microseconds, monotonic."""
        self._last_client_ts = max(int(self.clock() * 1_000_000), self._last_client_ts + 1)
        return self._last_client_ts

    def _run(self, how: str, query, parameters):
        if isinstance(query, str):
            assert parameters is None, f"values formatted into a simple statement: {query}"
            assert re.match(r"(CREATE|DROP|ALTER) ", query), f"unprepared DML: {query}"
            self.ddl.append(query)
            if query.startswith("CREATE TABLE"):
                table = FakeTable(query)
                self.tables.setdefault((table.keyspace, table.name), table)  # IF NOT EXISTS
            return []
        bound = query.bind(parameters) if isinstance(query, PreparedStatement) else query
        assert isinstance(bound, BoundStatement), f"not a prepared statement: {query!r}"
        meta = bound.prepared_statement.column_metadata
        assert len(bound.raw_values) == len(meta), "a bind marker left unbound"
        assert all(v is not None and v is not UNSET_VALUE for v in bound.values), bound
        self.calls.append((how, bound))
        values = {
            col.name: col.type.deserialize(raw, PROTOCOL)
            for col, raw in zip(meta, bound.values, strict=True)
        }
        table = self._table(meta[0].keyspace_name, meta[0].table_name)
        text = bound.prepared_statement.query_string
        now = self.clock()
        if text.startswith("INSERT"):
            key = tuple(values[c] for c in table.primary_key)
            write_ts = values.get("[timestamp]", None)
            if write_ts is None:
                write_ts = self._client_timestamp()
            part = key[: len(table.partition_key)]
            if max(table.tombstones.get(key, -1), table.partition_tombstones.get(part, -1)) >= (
                write_ts
            ):
                return []  # shadowed by a newer (or same-time) delete
            old = table.rows.get(key)
            if old is None or old["[write_ts]"] <= write_ts:
                ttl = values.get("[ttl]", table.default_ttl)
                table.rows[key] = {
                    **{c: v for c, v in values.items() if c in table.columns},
                    "[write_ts]": write_ts,
                    "[expires]": now + ttl if ttl else None,
                }
            return []
        if text.startswith("DELETE") and len(values) == len(table.partition_key) < len(
            table.primary_key
        ):  # a partition delete
            part = tuple(values[c] for c in table.partition_key)
            delete_ts = self._client_timestamp()
            table.partition_tombstones[part] = max(
                table.partition_tombstones.get(part, -1), delete_ts
            )
            for key in [k for k in table.rows if k[: len(part)] == part]:
                if table.rows[key]["[write_ts]"] <= delete_ts:
                    del table.rows[key]
            return []
        if text.startswith("DELETE"):
            key = tuple(values[c] for c in table.primary_key)
            delete_ts = self._client_timestamp()
            table.tombstones[key] = max(table.tombstones.get(key, -1), delete_ts)
            if key in table.rows and table.rows[key]["[write_ts]"] <= delete_ts:
                del table.rows[key]
            return []
        selected = [c.name for c in bound.prepared_statement.result_metadata]
        return [
            tuple(row[c] for c in selected)
            for _, row in sorted(table.rows.items())
            if all(row[c] == v for c, v in values.items())
            and (row["[expires]"] is None or row["[expires]"] > now)
        ]

    def bound(self, kind: str) -> list[BoundStatement]:
        return [b for _, b in self.calls if b.prepared_statement.query_string.startswith(kind)]


def make_store(clock=lambda: NOW, **kwargs) -> tuple[ScyllaSeenStore, FakeSession]:
    session = FakeSession(clock)
    migrate(session, schema_statements(KS, ttl_seconds=kwargs.get("ttl_seconds", 90 * DAY)))
    kwargs.setdefault("clock", clock)
    return ScyllaSeenStore(session, KS, **kwargs), session


# --- the CQL grammar (cqlsh's) --------------------------------------------------------------
def _load_grammar():
    """A ``parses(text) -> bool`` over cqlsh's CQL grammar, or the reason it is unavailable."""
    try:
        from cqlshlib.cql3handling import CqlRuleSet
    except ImportError as exc:
        return None, (
            f"cqlshlib is not installed ({exc}): the CQL grammar check is skipped; install it "
            "with `uv pip install --no-deps cqlsh` (its cassandra-driver requirement would "
            "clash with scylla-driver)"
        )

    def parses(text: str) -> bool:
        # the grammar knows no bind markers: a literal for each ? outside string literals
        parts = re.split(r"('(?:[^']|'')*')", text)
        literal = "".join(p if i % 2 else p.replace("?", "0") for i, p in enumerate(parts))
        literal = literal.strip().removesuffix(";") + ";"
        try:
            tokens = CqlRuleSet.cql_massage_tokens(CqlRuleSet.lex(literal))
        except Exception:
            return False
        return CqlRuleSet.cql_whole_parse_tokens(tokens, srcstr=literal) is not None

    return parses, None


CQL_PARSES, NO_GRAMMAR = _load_grammar()
