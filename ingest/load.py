"""Load landed batches into `raw`, bad rows into `audit.quarantine`, counts into `audit.load_batches`.

The single writer of the ingest stage (docs/contracts.md §4, §5). Every landed batch not yet in
`audit.load_batches` is loaded, all in one transaction (a failure leaves the warehouse as it was);
reloading a batch replaces its rows. The loader asserts, per batch, rows_read = rows_loaded +
rows_quarantined (and = the rows extraction counted) and raises RowAccountingError if not.
"""

from __future__ import annotations

import json
import time

import duckdb
import pyarrow.parquet as pq

from touchpoint.config import Paths, RunContext
from touchpoint.ingest.contract import ENTITY_SPECS, LOAD_METADATA, EntitySpec
from touchpoint.ingest.landing import LANDING_METADATA, BatchManifest, read_manifests
from touchpoint.ingest.plausibility import Plausibility, latest_plausible, plausibility_from_env
from touchpoint.ingest.quarantine import LATEST_PLAUSIBLE, checked_query, raw_record
from touchpoint.ingest.results import BatchLoad, ExtractError, LoadResult
from touchpoint.sql_text import quote_ident, sql_literal, sql_literal_list

_BATCH = "_batch_rows"
_CHECKED = "_batch_checked"
_FILES = "_batch_files"

AUDIT_DDL = (
    "create schema if not exists raw",
    "create schema if not exists audit",
    """create table if not exists audit.quarantine (
        batch_id varchar, source varchar, entity varchar, source_file varchar, row_number bigint,
        column_name varchar, reason varchar, raw_record varchar, quarantined_at timestamp)""",
    """create table if not exists audit.load_batches (
        batch_id varchar primary key, source varchar, entity varchar, source_file varchar, extract_date date,
        as_of date, rows_read bigint, rows_loaded bigint, rows_quarantined bigint, status varchar,
        held_reason varchar, held_at timestamp, held_report varchar)""",
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
    add_missing_load_metadata(con, "raw")


def add_missing_load_metadata(con: duckdb.DuckDBPyConnection, schema: str) -> None:
    """Bring the entity tables of `schema` (raw, held) written before a load-metadata column existed up to date.

    The column is appended (positional copies between raw and held keep lining up) and, for `_extract_date`,
    filled from the batch's row in audit.load_batches, so old rows carry the same value a reload would give.
    """
    rows = con.execute(
        "select table_name, list(column_name) from information_schema.columns where table_schema = ? "
        "group by table_name",
        [schema],
    ).fetchall()
    for table, present in rows:
        if table not in ENTITY_SPECS:
            continue
        for name, sql_type in LOAD_METADATA:
            if name in present:
                continue
            con.execute(f"alter table {schema}.{table} add column {name} {sql_type}")
            if name == "_extract_date":
                con.execute(
                    f"update {schema}.{table} as loaded set _extract_date = batches.extract_date "
                    "from audit.load_batches as batches where batches.batch_id = loaded._batch_id"
                )


def loaded_batch_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("select batch_id from audit.load_batches").fetchall()}


def kept_out_batch_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("select batch_id from audit.load_batches where status in ('held', 'dropped')").fetchall()
    return {row[0] for row in rows}


def load_pending(ctx: RunContext, con: duckdb.DuckDBPyConnection, reload: bool = False) -> LoadResult:
    """Load every landed-but-unloaded batch (all of them with `reload=True`) and this run's extract errors."""
    started = time.perf_counter()
    con.execute("set timezone = 'UTC'")
    ensure_tables(con)
    result = LoadResult()
    # A reload rebuilds raw from landing, except batches an operator must decide on (held) or has dropped.
    done = kept_out_batch_ids(con) if reload else loaded_batch_ids(con)
    pending = [manifest for manifest in read_manifests(ctx.paths) if manifest.batch_id not in done]
    # One transaction for the whole load: a failure leaves the warehouse exactly as it was.
    con.execute("begin transaction")
    try:
        for group in _same_layout_groups(pending, ctx.paths):
            for batch in load_batches(con, group, ctx.paths, replace=reload):
                result.batches.append(batch)
                result.counts(batch.entity).add(batch.rows_read, batch.rows_loaded, batch.rows_quarantined)
        result.errors = record_extract_errors(ctx, con)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    result.seconds = time.perf_counter() - started
    return result


def _same_layout_groups(manifests: list[BatchManifest], paths: Paths) -> list[list[BatchManifest]]:
    """Batches of one entity whose landed files have the same columns, in manifest order.

    They are loaded with one set of statements: the first load of two years of daily files is thousands of
    batches, and statement overhead per batch, not rows, dominated a batch-at-a-time load.
    """
    groups: dict[tuple[str, tuple[str, ...]], list[BatchManifest]] = {}
    for manifest in manifests:
        landing = manifest.landing_path(paths)
        if not landing.exists():
            raise FileNotFoundError(f"landing file of batch {manifest.batch_id} is missing: {landing}")
        columns = tuple(pq.read_schema(landing).names)
        groups.setdefault((manifest.entity, columns), []).append(manifest)
    return list(groups.values())


def load_batches(
    con: duckdb.DuckDBPyConnection,
    manifests: list[BatchManifest],
    paths: Paths,
    replace: bool = True,
    limits: Plausibility | None = None,
) -> list[BatchLoad]:
    """Load landed batches of one entity and one file layout (the caller holds the transaction).

    `replace=True` first removes any earlier load of these batches (a reload); a batch never loaded before
    needs no delete, which would scan the whole raw table. `limits` default to `plausibility_from_env()`.
    """
    limits = limits or plausibility_from_env()
    spec = ENTITY_SPECS[manifests[0].entity]
    try:
        _stage_batch_files(con, manifests, paths, limits)
        data_columns = _stage_checked_rows(con, spec, limits)
        if replace:
            _remove_earlier_loads(con, spec)
        written = _write_rows(con, spec, data_columns)
        loads = _account_rows(con, spec, manifests, *written)
        _record_batches(con, manifests, loads)
    finally:
        con.execute(f"drop view if exists {_BATCH}")
        con.execute(f"drop table if exists {_CHECKED}")
        con.execute(f"drop table if exists {_FILES}")
    return loads


def _stage_batch_files(
    con: duckdb.DuckDBPyConnection, manifests: list[BatchManifest], paths: Paths, limits: Plausibility
) -> None:
    """The temp table of the batches' landing files with what the loader adds to their rows, and the view of
    all their landed rows joined to it (`_BATCH`)."""
    files = [str(manifest.landing_path(paths)) for manifest in manifests]
    con.execute(
        f"create or replace temp table {_FILES} (_landing_file varchar, _batch_id varchar, _at timestamp, "
        f"_extract_date date, _source varchar, {LATEST_PLAUSIBLE} timestamp)"
    )
    # The broken-clock bound is per batch: when its file was read (quarantine.checked_query reads it per row).
    con.executemany(
        f"insert into {_FILES} values (?, ?, ?::timestamp, ?::date, ?, ?)",
        [
            [
                file,
                manifest.batch_id,
                manifest.extracted_at,
                manifest.extract_date,
                manifest.source,
                latest_plausible(manifest.pulled_at, manifest.extracted_at, limits),
            ]
            for file, manifest in zip(files, manifests, strict=True)
        ],
    )
    source = f"read_parquet({sql_literal_list(files)}, hive_partitioning = false, filename = '_landing_file')"
    con.execute(
        f"create or replace temp view {_BATCH} as select landed.* exclude (_landing_file), files._batch_id, "
        f"files._at as _batch_extracted_at, files.{LATEST_PLAUSIBLE} "
        f"from {source} as landed join {_FILES} as files using (_landing_file)"
    )


def _stage_checked_rows(con: duckdb.DuckDBPyConnection, spec: EntitySpec, limits: Plausibility) -> list[str]:
    """Judge every landed row into the temp table `_CHECKED` (typed, with its problem if any); returns the landed
    data columns (the file's columns, without the landing and loader metadata)."""
    landed = [row[0] for row in con.execute(f"describe {_BATCH}").fetchall()]
    metadata = (*LANDING_METADATA, "_batch_id", "_batch_extracted_at", LATEST_PLAUSIBLE)
    data_columns = [c for c in landed if c not in metadata]
    checked = checked_query(spec, data_columns, _BATCH, batch_column="_batch_id", limits=limits)
    con.execute(
        f"create or replace temp table {_CHECKED} as select checked.*, files._at as _batch_extracted_at, "
        f"files._extract_date as _batch_extract_date "
        f"from ({checked}) as checked join {_FILES} as files using (_batch_id)"
    )
    return data_columns


def _remove_earlier_loads(con: duckdb.DuckDBPyConnection, spec: EntitySpec) -> None:
    """A reload replaces: the batches' raw rows, quarantine rows and accounting go first."""
    con.execute(f"delete from raw.{spec.name} where _batch_id in (select _batch_id from {_FILES})")
    con.execute(f"delete from audit.quarantine where batch_id in (select _batch_id from {_FILES})")
    con.execute(f"delete from audit.load_batches where batch_id in (select _batch_id from {_FILES})")


def _write_rows(con: duckdb.DuckDBPyConnection, spec: EntitySpec, data_columns: list[str]) -> tuple[int, int]:
    """Good rows into raw.<entity>, bad ones into audit.quarantine; returns (rows loaded, rows quarantined)."""
    contract = ", ".join(quote_ident(c) for c in spec.column_names)
    metadata = ", ".join(name for name, _ in LOAD_METADATA)
    loaded_total = con.execute(
        f"insert into raw.{spec.name} ({contract}, {metadata}) "
        f"select {contract}, _extra, _batch_id, _source_file, _row_number, _batch_extracted_at, _batch_extract_date "
        f"from {_CHECKED} where _problem_reason is null order by _batch_id, _row_number"
    ).fetchone()[0]
    # The raw record is built only for bad rows, from the landed text (joined back by batch and row).
    quarantined_total = con.execute(
        f"""insert into audit.quarantine
        select checked._batch_id, files._source, {sql_literal(spec.name)},
            checked._source_file, checked._row_number, checked._problem_column, checked._problem_reason,
            {raw_record(data_columns, "landed")},
            checked._batch_extracted_at
        from {_CHECKED} as checked join {_BATCH} as landed using (_batch_id, _row_number)
        join {_FILES} as files using (_batch_id)
        where checked._problem_reason is not null
        order by checked._batch_id, checked._row_number"""
    ).fetchone()[0]
    return loaded_total, quarantined_total


def _account_rows(
    con: duckdb.DuckDBPyConnection,
    spec: EntitySpec,
    manifests: list[BatchManifest],
    loaded_total: int,
    quarantined_total: int,
) -> list[BatchLoad]:
    """Nothing lost: what was written adds up to what was checked, and per batch, to what landed and what the
    manifest (the extraction) counted. Raises RowAccountingError otherwise."""
    counts = {
        batch: (read, good, bad)
        for batch, read, good, bad in con.execute(
            f"select _batch_id, count(*), count(*) filter (where _problem_reason is null), "
            f"count(*) filter (where _problem_reason is not null) from {_CHECKED} group by 1"
        ).fetchall()
    }
    landed_rows = dict(con.execute(f"select _batch_id, count(*) from {_BATCH} group by 1").fetchall())
    good, bad = sum(c[1] for c in counts.values()), sum(c[2] for c in counts.values())
    if loaded_total != good or quarantined_total != bad:
        raise RowAccountingError(
            f"{spec.name}: wrote {loaded_total} raw and {quarantined_total} quarantine rows, "
            f"checked {good} good and {bad} bad"
        )
    loads = []
    for manifest in manifests:
        read, loaded, quarantined = counts.get(manifest.batch_id, (0, 0, 0))
        landed_count = landed_rows.get(manifest.batch_id, 0)
        if landed_count != read or read != loaded + quarantined or read != manifest.rows:
            raise RowAccountingError(
                f"batch {manifest.batch_id} ({manifest.source_file}): manifest says {manifest.rows} rows, "
                f"landed {landed_count}, read {read}, loaded {loaded}, quarantined {quarantined}"
            )
        loads.append(BatchLoad(manifest.batch_id, manifest.entity, manifest.source_file, read, loaded, quarantined))
    return loads


def _record_batches(con: duckdb.DuckDBPyConnection, manifests: list[BatchManifest], loads: list[BatchLoad]) -> None:
    con.executemany(
        "insert into audit.load_batches (batch_id, source, entity, source_file, extract_date, as_of, rows_read, "
        "rows_loaded, rows_quarantined, status) values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'loaded')",
        [
            [
                m.batch_id,
                m.source,
                m.entity,
                m.source_file,
                m.extract_date,
                m.as_of,
                b.rows_read,
                b.rows_loaded,
                b.rows_quarantined,
            ]
            for m, b in zip(manifests, loads, strict=True)
        ],
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
