"""Load landed batches into `raw`, bad rows into `audit.quarantine`, counts into `audit.load_batches`.

The single writer of the ingest stage (docs/contracts.md §4, §5). Every landed batch not yet in
`audit.load_batches` is loaded, all in one transaction (a failure leaves the warehouse as it was);
reloading a batch replaces its rows. The loader asserts, per batch, rows_read = rows_loaded +
rows_quarantined (and = the rows extraction counted) and raises RowAccountingError if not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb

from touchpoint.config import RunContext
from touchpoint.ingest.contract import ENTITY_SPECS, LOAD_METADATA, EntitySpec
from touchpoint.ingest.landing import BatchManifest, read_manifests
from touchpoint.ingest.quarantine import checked_query
from touchpoint.ingest.readers import quote_ident, sql_literal
from touchpoint.ingest.results import BatchLoad, ExtractError, LoadResult

_BATCH = "_batch_rows"
_CHECKED = "_batch_checked"

AUDIT_DDL = (
    "create schema if not exists raw",
    "create schema if not exists audit",
    """create table if not exists audit.quarantine (
        batch_id varchar, source varchar, entity varchar, source_file varchar, row_number bigint,
        column_name varchar, reason varchar, raw_record varchar, quarantined_at timestamp)""",
    """create table if not exists audit.load_batches (
        batch_id varchar primary key, source varchar, entity varchar, source_file varchar, extract_date date,
        as_of date, rows_read bigint, rows_loaded bigint, rows_quarantined bigint, status varchar)""",
    """create table if not exists audit.extract_errors (
        run_id varchar, source varchar, entity varchar, source_file varchar, error varchar)""",
)


class RowAccountingError(AssertionError):
    """A batch's rows do not add up: something would have been lost silently."""


def raw_table_ddl(spec: EntitySpec) -> str:
    columns = [f"{quote_ident(c.name)} {c.kind.sql_type}" for c in spec.columns]
    columns += [f"{name} {sql_type}" for name, sql_type in LOAD_METADATA]
    return f"create table if not exists raw.{spec.name} ({', '.join(columns)})"


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw and audit tables (raw tables exist for every entity, even when empty)."""
    for statement in AUDIT_DDL:
        con.execute(statement)
    for spec in ENTITY_SPECS.values():
        con.execute(raw_table_ddl(spec))


def loaded_batch_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("select batch_id from audit.load_batches").fetchall()}


def load_pending(ctx: RunContext, con: duckdb.DuckDBPyConnection, reload: bool = False) -> LoadResult:
    """Load every landed-but-unloaded batch (all of them with `reload=True`) and this run's extract errors."""
    started = time.perf_counter()
    con.execute("set timezone = 'UTC'")
    ensure_tables(con)
    result = LoadResult()
    done = set() if reload else loaded_batch_ids(con)
    # One transaction for the whole load: a failure leaves the warehouse exactly as it was.
    con.execute("begin transaction")
    try:
        for manifest in read_manifests(ctx.paths):
            if manifest.batch_id in done:
                continue
            batch = load_batch(con, manifest, manifest.landing_path(ctx.paths))
            result.batches.append(batch)
            result.counts(batch.entity).add(batch.rows_read, batch.rows_loaded, batch.rows_quarantined)
        result.errors = record_extract_errors(ctx, con)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    result.seconds = time.perf_counter() - started
    return result


def load_batch(con: duckdb.DuckDBPyConnection, manifest: BatchManifest, landing: Path) -> BatchLoad:
    """Load one landed batch, replacing any earlier load of it (the caller holds the transaction)."""
    spec = ENTITY_SPECS[manifest.entity]
    if not landing.exists():
        raise FileNotFoundError(f"landing file of batch {manifest.batch_id} is missing: {landing}")
    source = f"read_parquet({sql_literal(str(landing))}, hive_partitioning = false)"
    con.execute(f"create or replace temp view {_BATCH} as select * from {source}")
    landed = [row[0] for row in con.execute(f"describe {_BATCH}").fetchall()]
    data_columns = [
        c for c in landed if c not in ("_source_file", "_row_number", "_reject_reason", "_raw_line")
    ]
    con.execute(f"create or replace temp table {_CHECKED} as {checked_query(spec, data_columns, _BATCH)}")

    batch_id = sql_literal(manifest.batch_id)
    contract = ", ".join(quote_ident(c) for c in spec.column_names)
    try:
        con.execute(f"delete from raw.{spec.name} where _batch_id = {batch_id}")
        con.execute(
            f"insert into raw.{spec.name} select {contract}, _extra, {batch_id}, _source_file, _row_number, "
            f"{sql_literal(manifest.extracted_at)}::timestamp from {_CHECKED} where _problem_reason is null "
            "order by _row_number"
        )
        con.execute(f"delete from audit.quarantine where batch_id = {batch_id}")
        has_bad = con.execute(
            f"select count(*) from {_CHECKED} where _problem_reason is not null"
        ).fetchone()[0]
        # The raw record is built only for bad rows, from the landed text (joined back by row number).
        record = (
            "json_object("
            + ", ".join(f"{sql_literal(c)}, landed.{quote_ident(c)}" for c in data_columns)
            + ")"
            if data_columns
            else "json_object()"
        )
        if has_bad:
            con.execute(
                f"""insert into audit.quarantine
            select {batch_id}, {sql_literal(manifest.source)}, {sql_literal(manifest.entity)},
                checked._source_file, checked._row_number, checked._problem_column, checked._problem_reason,
                cast(case when landed._reject_reason is not null then json_object('line', landed._raw_line)
                          else {record} end as varchar),
                {sql_literal(manifest.extracted_at)}::timestamp
            from {_CHECKED} as checked join {_BATCH} as landed using (_row_number)
            where checked._problem_reason is not null
            order by checked._row_number"""
            )
        rows_read = con.execute(f"select count(*) from {_BATCH}").fetchone()[0]
        rows_loaded = con.execute(
            f"select count(*) from raw.{spec.name} where _batch_id = {batch_id}"
        ).fetchone()[0]
        rows_quarantined = con.execute(
            f"select count(*) from audit.quarantine where batch_id = {batch_id}"
        ).fetchone()[0]
        if rows_read != rows_loaded + rows_quarantined or rows_read != manifest.rows:
            raise RowAccountingError(
                f"batch {manifest.batch_id} ({manifest.source_file}): manifest says {manifest.rows} rows, "
                f"read {rows_read}, loaded {rows_loaded}, quarantined {rows_quarantined}"
            )
        con.execute(f"delete from audit.load_batches where batch_id = {batch_id}")
        con.execute(
            "insert into audit.load_batches values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'loaded')",
            [
                manifest.batch_id,
                manifest.source,
                manifest.entity,
                manifest.source_file,
                manifest.extract_date,
                manifest.as_of,
                rows_read,
                rows_loaded,
                rows_quarantined,
            ],
        )
    finally:
        con.execute(f"drop view if exists {_BATCH}")
        con.execute(f"drop table if exists {_CHECKED}")
    return BatchLoad(
        manifest.batch_id, manifest.entity, manifest.source_file, rows_read, rows_loaded, rows_quarantined
    )


def record_extract_errors(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> list[ExtractError]:
    """Replace this run's rows in audit.extract_errors with what its extracts reported."""
    folder = ctx.paths.state / "ingest" / "errors" / ctx.run_id
    errors: list[ExtractError] = []
    if folder.exists():
        for path in sorted(folder.glob("*.json")):
            errors += [ExtractError(**item) for item in json.loads(path.read_text(encoding="utf-8"))]
    con.execute("delete from audit.extract_errors where run_id = ?", [ctx.run_id])
    for error in errors:
        con.execute(
            "insert into audit.extract_errors values (?, ?, ?, ?, ?)",
            [ctx.run_id, error.source, error.entity, error.source_file, error.error],
        )
    return errors
