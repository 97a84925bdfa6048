"""Incremental extraction of one source into immutable landing files.

`extract_source(ctx, source)` never touches the warehouse, so the five sources can run in parallel
processes. Demo mode reads the demo source systems (docs/contracts.md §2); bring-your-own mode reads
`ctx.extracts_dir` (§1). Nothing dated after the run's as-of day is pulled from the demo systems:
shop cursors are bounded above by `ctx.as_of_end`, daily files dated after `ctx.as_of` are left alone.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import stat
import time
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa

from touchpoint.config import RunContext
from touchpoint.ingest.bulk import BulkFile, FileScan, csv_layout, jsonl_layout, land_files, parquet_layout, scan_file
from touchpoint.ingest.contract import ENTITY_SPECS, EntitySpec, entities_of, landed_name
from touchpoint.ingest.landing import (
    BatchManifest,
    file_sha256,
    landing_file,
    logical_extraction_time,
    make_batch_id,
    record_manifest,
    wall_clock_time,
    write_json_atomic,
    write_landing,
)
from touchpoint.ingest.readers import SUPPORTED_SUFFIXES, LayoutError, clipped, read_source_file
from touchpoint.ingest.results import ExtractError, ExtractResult
from touchpoint.ingest.state import (
    EntityWatermark,
    SourceWatermarks,
    file_stamp,
    load_watermarks,
    save_watermarks,
)
from touchpoint.sql_text import quote_ident

# Demo daily files: entity -> (folder, file prefix, suffix) under the systems dir.
DAILY_FILES: dict[str, tuple[str, str, str]] = {
    "crm_contacts": ("crm", "contacts_", ".csv"),
    "consent_events": ("crm", "consents_", ".csv"),
    "web_events": ("web", "events_", ".jsonl"),
    "email_events": ("email", "events_", ".csv"),
    "pos_transactions": ("pos", "transactions_", ".csv"),
}
# Demo shop database: table -> entity.
SHOP_TABLES: dict[str, str] = {
    "customers": "shop_customers",
    "orders": "shop_orders",
    "order_items": "shop_order_items",
    "products": "shop_products",
}
_LANDED = "_landed"
_FETCH_ROWS = 200_000
# SQLite normalises ISO 8601 text (with 'T', 'Z' or an offset) to UTC with this format.
_SQLITE_TS = "strftime('%Y-%m-%d %H:%M:%f', {column})"


def extract_source(ctx: RunContext, source: str) -> ExtractResult:
    """Pull one source incrementally into landing Parquet and record pending-batch manifests."""
    entities = entities_of(source)  # raises on an unknown source
    started = time.perf_counter()
    result = ExtractResult(source)
    marks = load_watermarks(ctx.paths, source)
    con = duckdb.connect()
    try:
        con.execute("set threads = 2")
        con.execute("set preserve_insertion_order = true")  # landing rows stay in source order
        if ctx.extracts_dir is not None:
            extracts = Path(ctx.extracts_dir)
            for entity in entities:
                files = [
                    (path, path.relative_to(extracts).as_posix(), ctx.as_of)
                    for path in _byo_files(extracts, entity, source, result)
                ]
                _extract_files(con, ctx, ENTITY_SPECS[entity], files, marks.entity(entity), result)
        elif source == "shop":
            _extract_shop(con, ctx, marks, result)
        else:
            for entity in entities:
                files = [
                    (path, path.relative_to(ctx.source_systems).as_posix(), day)
                    for path, day in _daily_files(ctx.source_systems, entity, ctx.as_of, result)
                ]
                _extract_files(con, ctx, ENTITY_SPECS[entity], files, marks.entity(entity), result)
    finally:
        con.close()
    save_watermarks(ctx.paths, marks)
    _record_errors(ctx, result)
    result.seconds = time.perf_counter() - started
    return result


def errors_file(ctx: RunContext, source: str) -> Path:
    return ctx.paths.state / "ingest" / "errors" / ctx.run_id / f"{source}.json"


def _record_errors(ctx: RunContext, result: ExtractResult) -> None:
    """Leave this run's extract errors for the loader (which writes them to audit.extract_errors)."""
    payload = [
        {"source": e.source, "entity": e.entity, "source_file": e.source_file, "error": e.error}
        for e in result.errors
    ]
    write_json_atomic(errors_file(ctx, result.source), payload)


# --- discovery ---------------------------------------------------------------------------------


def _daily_files(systems: Path, entity: str, as_of: date, result: ExtractResult) -> list[tuple[Path, date]]:
    """Daily export files of one entity dated on or before the as-of day, oldest first."""
    folder, prefix, suffix = DAILY_FILES[entity]
    directory = systems / folder
    if not directory.is_dir():
        return []
    pattern = re.compile(re.escape(prefix) + r"(\d{4}-\d{2}-\d{2})" + re.escape(suffix) + "$")
    found = []
    for path in sorted(directory.glob(f"{prefix}*")):
        match = pattern.match(path.name)
        try:
            day = date.fromisoformat(match.group(1)) if match else None
        except ValueError:
            day = None
        if day is None:
            result.errors.append(
                ExtractError(
                    result.source,
                    entity,
                    path.relative_to(systems).as_posix(),
                    f"{path.name}: unknown layout; expected {prefix}YYYY-MM-DD{suffix}",
                )
            )
            continue
        if day <= as_of:
            found.append((path, day))
    return sorted(found, key=lambda item: (item[1], item[0].name))


def _byo_files(extracts: Path, entity: str, source: str, result: ExtractResult) -> list[Path]:
    """`<entity>.csv|.jsonl|.parquet` and/or a folder `<entity>/` of such files; absent is fine.

    Only regular files are read. A symbolic link (to a file or a folder, pointing inside the extracts folder
    or not), a FIFO, a socket or a device is never opened: it is an error naming it, and the entity's other
    files and the other entities go on. Links are refused outright rather than resolved and checked, so a
    file outside the extracts folder can never be pulled in, whatever the link points at when it is read.
    """
    folder = extracts / entity
    candidates = [p for p in extracts.glob(f"{entity}.*") if not _is_real_folder(p)]
    if folder.is_symlink():
        candidates.append(folder)
    elif folder.is_dir():
        candidates += [p for p in _folder_entries(folder) if not p.name.startswith(".")]
    files = []
    for path in sorted(candidates):
        rel = path.relative_to(extracts).as_posix()
        problem = not_a_regular_file(path)
        if problem is not None:
            result.errors.append(ExtractError(source, entity, rel, f"{rel}: {problem}"))
        elif path.suffix.lower() in SUPPORTED_SUFFIXES:
            files.append(path)
        else:
            result.errors.append(
                ExtractError(
                    source,
                    entity,
                    rel,
                    f"{path.name}: unknown layout {path.suffix or '(no extension)'}; expected one of "
                    f"{', '.join(SUPPORTED_SUFFIXES)}",
                )
            )
    return files


def _is_real_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _folder_entries(folder: Path) -> list[Path]:
    """Every file-like entry under `folder`, without following symbolic links (a linked folder is one entry)."""
    entries: list[Path] = []
    for entry in folder.iterdir():
        entries += _folder_entries(entry) if _is_real_folder(entry) else [entry]
    return entries


def not_a_regular_file(path: Path) -> str | None:
    """Why `path` must not be read as an extract (it is not a regular file), or None when it may be."""
    try:
        mode = path.lstat().st_mode
    except OSError as error:  # gone since the folder was listed
        return f"cannot be examined ({error.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        kind = "a symbolic link"
    elif stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "not a regular file"
    return f"{kind}, not read: extracts must be regular files inside the extracts folder"


# --- files ---------------------------------------------------------------------------------------


def conform_columns(
    spec: EntitySpec, columns: list[str], file_name: str, check_required: bool
) -> list[tuple[str, str]]:
    """Map a file's columns to the contract's spelling (case and surrounding spaces ignored).

    Raises LayoutError naming the file and every missing required column.
    """
    contract = {name.lower(): name for name in spec.column_names}
    pairs: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for column in columns:
        key = column.strip().lower()
        landed = contract.get(key, column)
        if landed in seen:
            first, second = clipped(repr(seen[landed])), clipped(repr(column))
            raise LayoutError(f"{file_name}: columns {first} and {second} both mean {landed!r}")
        seen[landed] = column
        pairs.append((column, landed))
    missing = [name for name in spec.required if name not in seen]
    if missing and check_required:
        listed = ", ".join(repr(m) for m in missing)
        raise LayoutError(f"{file_name}: missing required column {listed} for {spec.name}")
    return pairs


def _extract_files(
    con: duckdb.DuckDBPyConnection,
    ctx: RunContext,
    spec: EntitySpec,
    files: list[tuple[Path, str, date]],
    mark: EntityWatermark,
    result: ExtractResult,
) -> None:
    """Land the new files of one entity ((path, name in source_file, extract date), in order): those that read
    cleanly in bulk (bulk.py), the others one by one with the careful reader."""
    pulled_at = wall_clock_time()
    pending: list[tuple[Path, str, date, str, list[int], BulkFile | None]] = []
    for path, rel, day in files:
        # Checked at discovery too; again here, just before opening, so a file swapped for a link is not read.
        problem = not_a_regular_file(path)
        if problem is not None:
            result.errors.append(ExtractError(spec.source, spec.name, rel, f"{rel}: {problem}"))
            continue
        stamp = file_stamp(path)
        if mark.landed_unchanged(rel, stamp):
            continue
        scan = scan_file(path, csv_checks=path.suffix.lower() == ".csv")
        if mark.files.get(rel) == scan.sha256:
            mark.remember(rel, scan.sha256, stamp)  # this exact file has landed before
            continue
        pending.append((path, rel, day, scan.sha256, stamp, _bulk_file(ctx, spec, path, rel, day, scan)))
    land_files(con, [item for *_, item in pending if item is not None])
    for path, rel, day, sha, stamp, item in pending:
        if item is None or item.failed:
            _extract_file(con, ctx, spec, path, rel, day, mark, result)
            continue
        batch_id = make_batch_id(spec.name, day, f"{rel}\n{sha}")
        _record_batch(ctx, spec, rel, day, batch_id, item.target, (item.rows, 0), pulled_at, result)
        mark.remember(rel, sha, stamp)


def _bulk_file(
    ctx: RunContext, spec: EntitySpec, path: Path, rel: str, day: date, scan: FileScan
) -> BulkFile | None:
    """The file as bulk.py reads it, or None when only the careful reader may (and says what is wrong)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        layout = csv_layout(scan)
    elif suffix == ".jsonl":
        layout = jsonl_layout(scan)
    elif suffix == ".parquet":
        layout = parquet_layout(path)
    else:
        layout = None
    if layout is None:
        return None
    try:
        pairs = conform_columns(spec, list(layout.columns), rel, check_required=True)
    except LayoutError:
        return None
    batch_id = make_batch_id(spec.name, day, f"{rel}\n{scan.sha256}")
    target = landing_file(ctx.paths, spec.source, spec.name, day, batch_id)
    return BulkFile(path, rel, layout, tuple(landed for _, landed in pairs), target)


def _extract_file(
    con: duckdb.DuckDBPyConnection,
    ctx: RunContext,
    spec: EntitySpec,
    path: Path,
    rel: str,
    extract_date: date,
    mark: EntityWatermark,
    result: ExtractResult,
) -> None:
    """The careful reader: one file, every unreadable line kept with its reason (readers.py)."""
    # Checked at discovery too; again here, just before opening, so a file swapped for a link meanwhile is not read.
    problem = not_a_regular_file(path)
    if problem is not None:
        result.errors.append(ExtractError(spec.source, spec.name, rel, f"{rel}: {problem}"))
        return
    stamp = file_stamp(path)
    sha = file_sha256(path)
    if mark.files.get(rel) == sha:
        mark.remember(rel, sha, stamp)  # this exact file has landed before
        return
    pulled_at = wall_clock_time()
    try:
        columns = read_source_file(con, path, _LANDED)
        parsed = con.execute(f"select count(*) from {_LANDED} where _reject_reason is null").fetchone()[0]
        # A JSONL file with no parseable line has no keys at all: its lines are quarantined one by one.
        check = path.suffix.lower() != ".jsonl" or parsed > 0
        pairs = conform_columns(spec, columns, rel, check_required=check)
    except LayoutError as exc:
        message = str(exc).replace(path.name, rel, 1) if not str(exc).startswith(rel) else str(exc)
        result.errors.append(ExtractError(spec.source, spec.name, rel, message))
        return
    _land(con, ctx, spec, pairs, rel, extract_date, f"{rel}\n{sha}", pulled_at, result)
    mark.remember(rel, sha, stamp)


def _land(
    con: duckdb.DuckDBPyConnection,
    ctx: RunContext,
    spec: EntitySpec,
    pairs: list[tuple[str, str]],
    source_file: str,
    extract_date: date,
    content_key: str,
    pulled_at: str,
    result: ExtractResult,
) -> BatchManifest:
    rows, rejected = con.execute(f"select count(*), count(_reject_reason) from {_LANDED}").fetchone()
    batch_id = make_batch_id(spec.name, extract_date, content_key)
    target = landing_file(ctx.paths, spec.source, spec.name, extract_date, batch_id)
    write_landing(con, _LANDED, pairs, target, source_file)
    counts = (int(rows), int(rejected))
    return _record_batch(ctx, spec, source_file, extract_date, batch_id, target, counts, pulled_at, result)


def _record_batch(
    ctx: RunContext,
    spec: EntitySpec,
    source_file: str,
    extract_date: date,
    batch_id: str,
    target: Path,
    counts: tuple[int, int],
    pulled_at: str,
    result: ExtractResult,
) -> BatchManifest:
    """The manifest of a landed batch (`counts`: rows landed, of which rejected by the reader), and its counts."""
    rows, rejected = counts
    manifest = BatchManifest(
        batch_id=batch_id,
        source=spec.source,
        entity=spec.name,
        source_file=source_file,
        extract_date=extract_date.isoformat(),
        as_of=ctx.as_of.isoformat(),
        extracted_at=logical_extraction_time(ctx.as_of_end),
        landing_file=target.relative_to(ctx.paths.home).as_posix(),
        rows=rows,
        rows_rejected_by_reader=rejected,
        pulled_at=pulled_at,
    )
    record_manifest(ctx.paths, manifest)
    result.batches.append(manifest)
    entity_counts = result.counts(spec.name)
    entity_counts.batches += 1
    entity_counts.rows_read += manifest.rows
    entity_counts.rows_quarantined += manifest.rows_rejected_by_reader
    return manifest


# --- shop (SQLite, updated_at cursors) -----------------------------------------------------------


def _extract_shop(
    con: duckdb.DuckDBPyConnection, ctx: RunContext, marks: SourceWatermarks, result: ExtractResult
) -> None:
    database = ctx.source_systems / "shop.sqlite"
    if not database.exists():
        return  # an absent source system: its entities stay empty downstream
    upper = ctx.as_of_end.strftime("%Y-%m-%d %H:%M:%S.000")
    shop = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = {row[0] for row in shop.execute("select name from sqlite_master where type = 'table'")}
        # order_items follow their orders, so read the orders window before the orders cursor moves.
        orders_window = _cursor_window("o.updated_at", marks.entity("shop_orders").cursor, upper)
        for table, entity in SHOP_TABLES.items():
            if table not in tables:
                continue
            source_file = f"shop.sqlite:{table}"
            try:
                _extract_table(
                    con,
                    shop,
                    ctx,
                    table,
                    ENTITY_SPECS[entity],
                    marks.entity(entity),
                    upper,
                    orders_window if "orders" in tables else None,
                    source_file,
                    result,
                )
            except (LayoutError, sqlite3.Error) as exc:
                result.errors.append(ExtractError("shop", entity, source_file, f"{source_file}: {exc}"))
    finally:
        shop.close()


def _cursor_window(column: str, lower: str | None, upper: str) -> tuple[str, list[str]]:
    """SQL condition (and parameters) for rows changed after the cursor and before the as-of end.

    Rows whose updated_at SQLite cannot read are taken once, on the first extract, so the loader
    can quarantine them instead of their being skipped forever.
    """
    ts = _SQLITE_TS.format(column=column)
    if lower is None:
        return f"({ts} < ? or {ts} is null)", [upper]
    return f"({ts} > ? and {ts} < ?)", [lower, upper]


def _extract_table(
    con: duckdb.DuckDBPyConnection,
    shop: sqlite3.Connection,
    ctx: RunContext,
    table: str,
    spec: EntitySpec,
    mark: EntityWatermark,
    upper: str,
    orders_window: tuple[str, list[str]] | None,
    source_file: str,
    result: ExtractResult,
) -> None:
    columns = [row[1] for row in shop.execute(f'pragma table_info("{table}")')]
    # Landed names in the fetched table (a "_" column lands as "_extra._..."), as for files.
    pairs = conform_columns(spec, [landed_name(c) for c in columns], source_file, check_required=True)
    key_order = ", ".join(f'"{c}"' for c, landed in pairs if landed in spec.primary_key) or "rowid"
    selected = ", ".join(f'cast("{c}" as text)' for c in columns)
    is_snapshot = "updated_at" not in columns and table != "order_items"
    pulled_at = wall_clock_time()
    if is_snapshot:
        # A small table read whole: its content hash says whether it changed since the last snapshot.
        arrow, digest = _fetch_text_table(shop, f'select {selected} from "{table}" order by {key_order}', [], pairs)
        if arrow.num_rows == 0 or mark.snapshot_sha256 == digest:
            return  # empty, or the full snapshot is unchanged since the last extract
        con.register("_shop_rows", arrow)
        try:
            con.execute(
                f"create or replace temp table {_LANDED} as select * exclude (_row_number), _row_number, "
                "null::varchar as _reject_reason, null::varchar as _raw_line from _shop_rows"
            )
        finally:
            con.unregister("_shop_rows")
        _land(con, ctx, spec, pairs, source_file, ctx.as_of, f"{source_file}\n{digest}", pulled_at, result)
        mark.snapshot_sha256 = digest
        return
    cursor_column = "updated_at" in columns
    if cursor_column:
        condition, params = _cursor_window('"updated_at"', mark.cursor, upper)
        where = f"where {condition}"
    elif orders_window is not None:
        condition, params = orders_window
        where = f"where order_id in (select o.order_id from orders as o where {condition})"
    else:
        where, params = "", []
    cursor_ts = _SQLITE_TS.format(column='"updated_at"') if cursor_column else "null"
    query = f'select json_array({selected}), {cursor_ts} from "{table}" {where} order by {key_order}'
    rows, digest, new_cursor = _fetch_json_rows(shop, query, params)
    if rows.num_rows == 0:
        return
    _land_json_rows(con, rows, pairs)
    _land(con, ctx, spec, pairs, source_file, ctx.as_of, f"{source_file}\n{digest}", pulled_at, result)
    if new_cursor is not None:
        mark.cursor = max(new_cursor, mark.cursor or "")


def _fetch_json_rows(shop: sqlite3.Connection, query: str, params: list[str]) -> tuple[pa.Table, str, str | None]:
    """Run `query` (each row as a JSON array of its text values, and its cursor value) and return the arrays with
    `_row_number`, a content hash and the highest cursor value.

    One Python string per row instead of one per value: building and transposing per-value objects was most of
    the 4.9 s that 638k shop rows took; DuckDB splits the arrays again (`_land_json_rows`).
    """
    cursor = shop.execute(query, params)
    digest = hashlib.sha256()
    chunks: list[pa.RecordBatch] = []
    schema = pa.schema([("_json", pa.string()), ("_row_number", pa.int64())])
    first, highest = 1, None
    while rows := cursor.fetchmany(_FETCH_ROWS):
        arrays, stamps = zip(*rows, strict=True)
        # JSON text holds no raw newline, so the joined arrays are an unambiguous record of the rows.
        digest.update("\n".join(arrays).encode("utf-8", "surrogatepass") + b"\n")
        present = [stamp for stamp in stamps if stamp is not None]
        if present:
            highest = max(highest or "", max(present))
        numbers = pa.array(range(first, first + len(rows)), type=pa.int64())
        chunks.append(pa.RecordBatch.from_arrays([pa.array(arrays, type=pa.string()), numbers], schema=schema))
        first += len(rows)
    return pa.Table.from_batches(chunks, schema=schema), digest.hexdigest(), highest


def _land_json_rows(con: duckdb.DuckDBPyConnection, rows: pa.Table, pairs: list[tuple[str, str]]) -> None:
    """The landing-shape temp table `_LANDED` from rows fetched as JSON arrays of text."""
    paths = "[" + ", ".join(f"'$[{i}]'" for i in range(len(pairs))) + "]"
    values = "".join(f"_values[{i + 1}] as {quote_ident(landed)}, " for i, (landed, _) in enumerate(pairs))
    con.register("_shop_rows", rows)
    try:
        con.execute(
            f"create or replace temp table {_LANDED} as select {values}_row_number, "
            "null::varchar as _reject_reason, null::varchar as _raw_line "
            f"from (select json_extract_string(_json, {paths}) as _values, _row_number from _shop_rows)"
        )
    finally:
        con.unregister("_shop_rows")


def _fetch_text_table(
    shop: sqlite3.Connection, query: str, params: list[str], pairs: list[tuple[str, str]]
) -> tuple[pa.Table, str]:
    """Run `query` and return its rows as an all-text Arrow table with `_row_number`, and a content hash (the hash
    snapshot watermarks hold, so it stays what it was)."""
    columns = [c for c, _ in pairs]
    cursor = shop.execute(query, params)
    digest = hashlib.sha256()
    chunks: list[pa.RecordBatch] = []
    schema = pa.schema([(c, pa.string()) for c in columns] + [("_row_number", pa.int64())])
    first = 1
    while rows := cursor.fetchmany(_FETCH_ROWS):
        digest.update(repr(rows).encode("utf-8", "surrogatepass"))
        values = list(zip(*rows, strict=True))
        arrays = [pa.array(values[i], type=pa.string()) for i in range(len(columns))]
        arrays.append(pa.array(range(first, first + len(rows)), type=pa.int64()))
        chunks.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
        first += len(rows)
    return pa.Table.from_batches(chunks, schema=schema), digest.hexdigest()
