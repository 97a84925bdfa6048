"""Load landed batches into `raw`, bad rows into `audit.quarantine`, counts into `audit.load_batches`.

The single writer of the ingest stage (docs/contracts.md §4, §5). Every landed batch not yet in
`audit.load_batches` is loaded, all in one transaction (a failure leaves the warehouse as it was);
reloading a batch replaces its rows. The loader asserts, per batch, rows_read = rows_loaded +
rows_quarantined (and = the rows extraction counted) and raises RowAccountingError if not.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import duckdb
import pyarrow.parquet as pq

from touchpoint.config import Paths, RunContext
from touchpoint.ingest.contract import ENTITY_SPECS, LOAD_METADATA, EntitySpec
from touchpoint.ingest.landing import LANDING_METADATA, BatchManifest, read_manifests
from touchpoint.ingest.plausibility import Plausibility, latest_plausible, plausibility_from_env
from touchpoint.ingest.quarantine import (
    LATEST_PLAUSIBLE,
    checked_query,
    clean_row_condition,
    clean_row_values,
    raw_record,
)
from touchpoint.ingest.results import BatchLoad, ExtractError, LoadResult
from touchpoint.sql_text import quote_ident, sql_literal, sql_literal_list

_BATCH = "_batch_rows"
_CHECKED = "_batch_checked"
_FILES = "_batch_files"
# Columns of the `_BATCH` view that are not the file's own (landed names never start with "_" but "_extra.").
_STAGED_METADATA = (*LANDING_METADATA, "_batch_id", "_batch_extracted_at", "_batch_extract_date", LATEST_PLAUSIBLE)

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

    Two paths, one verdict. Every row the quarantine conditions themselves find nothing wrong with
    (`quarantine.clean_row_condition`) is inserted in one pass; a batch all of whose rows went in and whose
    primary keys do not repeat is done. Only the other batches (rare) are taken out again and go the careful
    way, which builds a reason for every bad row (`quarantine.checked_query`). At 4.1M web events the careful
    way over everything took 9 s to judge and 10 s to insert, mostly materialising and sorting good rows.
    """
    limits = limits or plausibility_from_env()
    spec = ENTITY_SPECS[manifests[0].entity]
    # Staged in batch-id order, so rows reach raw in (batch, row) order (landing files are in row order).
    staged = sorted(manifests, key=lambda m: m.batch_id)
    try:
        data_columns = _stage_batch_files(con, staged, paths, limits)
        if replace:
            _remove_earlier_loads(con, spec)
        inserted = _insert_good_rows(con, paths, spec, staged, data_columns, limits)
        landed, kept, repeated = _batch_counts(con, spec)
        if inserted != sum(kept.values()):
            raise RowAccountingError(f"{spec.name}: inserted {inserted} raw rows, found {sum(kept.values())}")
        dirty = [m for m in staged if kept.get(m.batch_id, 0) != landed.get(m.batch_id, 0) or m.batch_id in repeated]
        loads = _clean_loads([m for m in staged if m not in dirty], landed)
        if dirty:
            con.execute(f"delete from raw.{spec.name} where list_contains(?, _batch_id)", [[m.batch_id for m in dirty]])
            _stage_batch_files(con, dirty, paths, limits)
            data_columns = _stage_checked_rows(con, spec, limits)
            written = _write_rows(con, spec, data_columns)
            loads |= {load.batch_id: load for load in _account_rows(con, spec, dirty, *written)}
        ordered = [loads[m.batch_id] for m in manifests]
        _record_batches(con, manifests, ordered)
    finally:
        con.execute(f"drop view if exists {_BATCH}")
        con.execute(f"drop table if exists {_CHECKED}")
        con.execute(f"drop table if exists {_FILES}")
    return ordered


def _stage_batch_files(
    con: duckdb.DuckDBPyConnection, manifests: list[BatchManifest], paths: Paths, limits: Plausibility
) -> list[str]:
    """The temp table of the batches' landing files with what the loader adds to their rows, and the view of
    all their landed rows with those values (`_BATCH`). Returns the landed data columns (the file's columns, without
    the landing and loader metadata)."""
    files = [str(manifest.landing_path(paths)) for manifest in manifests]
    con.execute(
        f"create or replace temp table {_FILES} (_landing_file varchar, _batch_id varchar, _at timestamp, "
        f"_extract_date date, _source varchar, {LATEST_PLAUSIBLE} timestamp)"
    )
    # The broken-clock bound is per batch: when its file was read (quarantine.checked_query reads it per row).
    # One statement of lists, not executemany: a first load of two years of daily files is thousands of rows,
    # and executemany cost about 1 ms a row.
    columns = [
        files,
        [m.batch_id for m in manifests],
        [m.extracted_at for m in manifests],
        [m.extract_date for m in manifests],
        [m.source for m in manifests],
        [latest_plausible(m.pulled_at, m.extracted_at, limits) for m in manifests],
    ]
    con.execute(
        f"insert into {_FILES} select unnest(?::varchar[]), unnest(?::varchar[]), unnest(?::timestamp[]), "
        "unnest(?::date[]), unnest(?::varchar[]), unnest(?::timestamp[])",
        columns,
    )
    con.execute(f"create or replace temp view {_BATCH} as {_landed_rows(files, manifests, columns[5])}")
    landed = [row[0] for row in con.execute(f"describe {_BATCH}").fetchall()]
    return [c for c in landed if c not in _STAGED_METADATA]


def _landed_rows(files: list[str], manifests: list[BatchManifest], latest: list[datetime]) -> str:
    """SELECT of every landed row of `files` with its batch's values (`_STAGED_METADATA`), in file order.

    The values are looked up by the position of the row's file (`file_index`), not joined: DuckDB keeps the
    files' row order through a projection but not through a join, and a sorted insert of 4.1M web events cost
    a fifth more. A landed column named `file_index` hides DuckDB's; such files are joined by name instead, and
    the clean insert then sorts (`_in_file_order`).
    """
    source = f"read_parquet({sql_literal_list(files)}, hive_partitioning = false"
    if not _in_file_order(files):
        return (
            f"select landed.* exclude (_landing_file), files._batch_id, files._at as _batch_extracted_at, "
            f"files._extract_date as _batch_extract_date, files.{LATEST_PLAUSIBLE} "
            f"from {source}, filename = '_landing_file') as landed join {_FILES} as files using (_landing_file)"
        )

    def at_file(values: list[str], sql_type: str) -> str:
        return f"cast({sql_literal_list(values)}[cast(file_index as bigint) + 1] as {sql_type})"

    return (
        f"select landed.*, {at_file([m.batch_id for m in manifests], 'varchar')} as _batch_id, "
        f"{at_file([m.extracted_at for m in manifests], 'timestamp')} as _batch_extracted_at, "
        f"{at_file([m.extract_date for m in manifests], 'date')} as _batch_extract_date, "
        f"{at_file([str(t) for t in latest], 'timestamp')} as {LATEST_PLAUSIBLE} from {source}) as landed"
    )


def _in_file_order(files: list[str]) -> bool:
    """Whether `_landed_rows` gives the rows of `files` (one layout) in file order, unsorted."""
    return not files or all(name.lower() != "file_index" for name in pq.read_schema(files[0]).names)


def _insert_good_rows(
    con: duckdb.DuckDBPyConnection,
    paths: Paths,
    spec: EntitySpec,
    manifests: list[BatchManifest],
    data_columns: list[str],
    limits: Plausibility,
) -> int:
    """Insert every staged row with nothing wrong with it into raw.<entity>, typed; returns how many."""
    contract = ", ".join(quote_ident(c) for c in spec.column_names)
    metadata = ", ".join(name for name, _ in LOAD_METADATA)
    in_order = _in_file_order([str(m.landing_path(paths)) for m in manifests])
    return con.execute(
        f"insert into raw.{spec.name} ({contract}, {metadata}) "
        f"select {clean_row_values(spec, data_columns)}, _batch_id, _source_file, _row_number, "
        f"_batch_extracted_at, _batch_extract_date from {_BATCH} "
        f"where {clean_row_condition(spec, data_columns, limits)}"
        + ("" if in_order else " order by _batch_id, _row_number")
    ).fetchone()[0]


def _batch_counts(
    con: duckdb.DuckDBPyConnection, spec: EntitySpec
) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """Per staged batch: rows landed, rows now in raw, and the batches whose raw rows repeat a primary key.

    Keys are compared typed, as checked_query compares them; a key with a NULL part is grouped with its like
    here though checked_query never calls it a duplicate, which only sends its batch the careful way.
    """
    landed = dict(con.execute(f"select _batch_id, count(*) from {_BATCH} group by 1").fetchall())
    ours = f"raw.{spec.name} where _batch_id in (select _batch_id from {_FILES})"
    kept = dict(con.execute(f"select _batch_id, count(*) from {ours} group by 1").fetchall())
    key = ", ".join(quote_ident(k) for k in spec.primary_key)
    repeated = {
        row[0]
        for row in con.execute(
            f"select distinct _batch_id from (select _batch_id from {ours} group by _batch_id, {key} "
            "having count(*) > 1)"
        ).fetchall()
    }
    return landed, kept, repeated


def _clean_loads(manifests: list[BatchManifest], landed: dict[str, int]) -> dict[str, BatchLoad]:
    """Batches whose every landed row is in raw: nothing lost, and per batch what the manifest (the extraction)
    counted. Raises RowAccountingError otherwise."""
    loads = {}
    for manifest in manifests:
        rows = landed.get(manifest.batch_id, 0)
        if rows != manifest.rows:
            raise RowAccountingError(
                f"batch {manifest.batch_id} ({manifest.source_file}): manifest says {manifest.rows} rows, "
                f"landed {rows}, loaded {rows}, quarantined 0"
            )
        loads[manifest.batch_id] = BatchLoad(manifest.batch_id, manifest.entity, manifest.source_file, rows, rows, 0)
    return loads


def _stage_checked_rows(con: duckdb.DuckDBPyConnection, spec: EntitySpec, limits: Plausibility) -> list[str]:
    """Judge every landed row into the temp table `_CHECKED` (typed, with its problem if any); returns the landed
    data columns (the file's columns, without the landing and loader metadata)."""
    landed = [row[0] for row in con.execute(f"describe {_BATCH}").fetchall()]
    data_columns = [c for c in landed if c not in _STAGED_METADATA]
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
    # One statement of lists, not executemany (about 1 ms a row: 2 s for two years of daily CRM files).
    con.execute(
        "insert into audit.load_batches (batch_id, source, entity, source_file, extract_date, as_of, rows_read, "
        "rows_loaded, rows_quarantined, status) select unnest(?::varchar[]), unnest(?::varchar[]), "
        "unnest(?::varchar[]), unnest(?::varchar[]), unnest(?::date[]), unnest(?::date[]), unnest(?::bigint[]), "
        "unnest(?::bigint[]), unnest(?::bigint[]), 'loaded'",
        [
            [m.batch_id for m in manifests],
            [m.source for m in manifests],
            [m.entity for m in manifests],
            [m.source_file for m in manifests],
            [m.extract_date for m in manifests],
            [m.as_of for m in manifests],
            [b.rows_read for b in loads],
            [b.rows_loaded for b in loads],
            [b.rows_quarantined for b in loads],
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
