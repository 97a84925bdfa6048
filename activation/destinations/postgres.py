"""PostgreSQL destination: a table kept equal to the audience by upserts and deletes keyed by the primary key.

Per batch, in one transaction: COPY the rows into a temporary table, then
`INSERT ... SELECT ... ON CONFLICT (key) DO UPDATE`; the commit is the acknowledgement. If PostgreSQL refuses
the batch because of the data (a constraint or type the table enforces), the batch is retried row by row
under savepoints so only the offending rows are refused, each with PostgreSQL's message. A server that cannot be
reached, or is lost mid-batch, is DestinationUnavailableError (transient: the sync is retried and resumes).

The table is created if absent (primary key column as `text`, plus `_synced_at` and `_sync_run_id`);
columns the sync gained since are added. Options (sync YAML `destination:`): `table`, `schema` (public).
Connection: a `postgresql://user:password@host:port/database` URI or an Airflow Postgres connection.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.csv as pacsv

from touchpoint.activation.connections import ConnectionInfo
from touchpoint.activation.destinations import BatchResult, DestinationError, DestinationUnavailableError
from touchpoint.sql_text import quote_ident

_DATA_ERRORS = (psycopg2.DataError, psycopg2.IntegrityError)
# the server is down or restarting, the network dropped, the connection was closed under us: a later run resumes
_UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


def postgres_type(arrow_type: pa.DataType) -> str:
    """The PostgreSQL column type for an Arrow type of the published warehouse."""
    t = arrow_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "bigint"
    if pa.types.is_floating(t):
        return "double precision"
    if pa.types.is_decimal(t):
        return f"numeric({t.precision}, {t.scale})"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    raise DestinationError(f"no PostgreSQL column type for Arrow type {t}; cast it in the sync's source SQL")


def dsn_from_connection(conn: ConnectionInfo) -> dict[str, Any]:
    params: dict[str, Any] = {
        "host": conn.host or "localhost",
        "port": conn.port or 5432,
        "dbname": conn.schema or "postgres",
        "connect_timeout": int(conn.extra.get("connect_timeout", 10)),
    }
    if conn.login:
        params["user"] = conn.login
    if conn.password:
        params["password"] = conn.password
    if conn.extra.get("sslmode"):
        params["sslmode"] = conn.extra["sslmode"]
    return params


class PostgresDestination:
    def __init__(
        self, connection: ConnectionInfo, *, table: str, schema: str = "public", primary_key: str, run_id: str
    ) -> None:
        self.connection = connection
        self.table = table
        self.schema = schema
        self.primary_key = primary_key
        self.run_id = run_id
        self.target = f"{quote_ident(schema)}.{quote_ident(table)}"
        self._con: psycopg2.extensions.connection | None = None
        self._columns: list[str] = []

    @contextmanager
    def _reachable(self, failure: str) -> Iterator[None]:
        """Losing the server inside the block is DestinationUnavailableError (`failure: error`): retryable."""
        try:
            yield
        except _UNAVAILABLE_ERRORS as error:
            raise DestinationUnavailableError(f"{failure}: {error}") from error

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self, schema: pa.Schema) -> None:
        with self._reachable(f"cannot connect to PostgreSQL {self.connection}"):
            self._con = psycopg2.connect(**dsn_from_connection(self.connection))
        self._columns = list(schema.names)
        column_defs = [
            f"{quote_ident(f.name)} {'text' if f.name == self.primary_key else postgres_type(f.type)}"
            for f in schema
        ]
        failure = f"PostgreSQL {self.connection} failed while preparing {self.target}"
        with self._reachable(failure), self._con, self._con.cursor() as cur:
            cur.execute(f"create schema if not exists {quote_ident(self.schema)}")
            cur.execute(
                f"create table if not exists {self.target} ("
                + ", ".join(column_defs)
                + f", _synced_at timestamptz not null default now(), _sync_run_id text,"
                f" primary key ({quote_ident(self.primary_key)}))"
            )
            for definition in column_defs:
                cur.execute(f"alter table {self.target} add column if not exists {definition}")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    @property
    def con(self) -> psycopg2.extensions.connection:
        if self._con is None:
            raise DestinationError("PostgreSQL destination used before open()")
        return self._con

    # -- writes ----------------------------------------------------------------------------------------
    def _upsert_sql(self, select_from: str) -> str:
        cols = ", ".join(quote_ident(c) for c in self._columns)
        updates = ", ".join(
            f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in self._columns if c != self.primary_key
        )
        return (
            f"insert into {self.target} ({cols}, _synced_at, _sync_run_id) "
            f"select {cols}, now(), %(run_id)s from {select_from} "
            f"on conflict ({quote_ident(self.primary_key)}) do update set {updates}"
            + (", " if updates else "")
            + "_synced_at = excluded._synced_at, _sync_run_id = excluded._sync_run_id"
        )

    def upsert(self, rows: pa.Table) -> BatchResult:
        rows = rows.select(self._columns)
        key_index = self._columns.index(self.primary_key)
        rows = rows.set_column(key_index, self.primary_key, rows.column(key_index).cast(pa.string()))
        buffer = io.BytesIO()
        pacsv.write_csv(
            rows, buffer, write_options=pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
        )
        buffer.seek(0)
        cols = ", ".join(quote_ident(c) for c in self._columns)
        with self._reachable(f"PostgreSQL {self.connection} failed during a batch"):
            try:
                with self.con, self.con.cursor() as cur:
                    cur.execute(
                        f"create temp table _touchpoint_stage on commit drop as "
                        f"select {cols} from {self.target} with no data"
                    )
                    cur.copy_expert(f"copy _touchpoint_stage ({cols}) from stdin with (format csv)", buffer)
                    cur.execute(self._upsert_sql("_touchpoint_stage"), {"run_id": self.run_id})
                return BatchResult()
            except _DATA_ERRORS:
                return self._upsert_row_by_row(rows)

    def _upsert_row_by_row(self, rows: pa.Table) -> BatchResult:
        refused: dict[str, str] = {}
        placeholders = ", ".join(f"%({i})s" for i in range(len(self._columns)))
        sql = self._upsert_sql(
            f"(values ({placeholders})) as incoming ({', '.join(map(quote_ident, self._columns))})"
        )
        sql = self._typed(sql)
        with self.con, self.con.cursor() as cur:
            for record in rows.to_pylist():
                params = {str(i): record[c] for i, c in enumerate(self._columns)}
                params["run_id"] = self.run_id
                cur.execute("savepoint touchpoint_row")
                try:
                    cur.execute(sql, params)
                except _DATA_ERRORS as error:
                    cur.execute("rollback to savepoint touchpoint_row")
                    refused[str(record[self.primary_key])] = (
                        (error.pgerror or str(error)).strip().splitlines()[0]
                    )
                else:
                    cur.execute("release savepoint touchpoint_row")
        return BatchResult(refused=refused)

    def _typed(self, sql: str) -> str:
        # a VALUES list has no column types; cast each parameter to the target column's type
        with self.con.cursor() as cur:
            cur.execute(
                "select attname, format_type(atttypid, atttypmod) from pg_attribute "
                "where attrelid = %s::regclass and attnum > 0 and not attisdropped",
                [self.target],
            )
            types = dict(cur.fetchall())
        for i, column in enumerate(self._columns):
            sql = sql.replace(f"%({i})s", f"%({i})s::{types[column]}", 1)
        return sql

    def delete(self, keys: list[str]) -> BatchResult:
        failure = f"PostgreSQL {self.connection} failed during a delete"
        with self._reachable(failure), self.con, self.con.cursor() as cur:
            cur.execute(f"delete from {self.target} where {quote_ident(self.primary_key)} = any(%s)", [list(keys)])
        return BatchResult()
