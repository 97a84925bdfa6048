"""Read one source file into a DuckDB table of text columns, keeping every line.

Every reader produces the same shape, the landing shape of docs/contracts.md §3: the file's columns as
VARCHAR, `_row_number` (1-based data row), and for lines the reader could not parse (invalid UTF-8,
wrong number of fields, malformed JSON, a line over MAX_LINE_BYTES) `_reject_reason` and `_raw_line`, with
the data columns null. A file column whose name starts with "_" is named by `contract.landed_name`
(`_batch_id` -> `_extra._batch_id`), so no file can collide with the pipeline's own columns.
Nothing is dropped here: the loader quarantines rejected lines with their reason.
All work is vectorised in DuckDB so multi-million-row files stay fast.
"""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb

from touchpoint.ingest.contract import landed_name
from touchpoint.sql_text import quote_ident, sql_literal

SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".parquet")
# A byte that cannot occur in valid JSON text (raw control characters must be escaped inside strings),
# used as the "delimiter" to read JSONL as whole lines.
LINE_DELIMITER = "\x01"
# DuckDB's default (2 MB) failed a whole file on one long field. 64 MiB reads any line a real export has, so an
# oversize value is quarantined per row by the loader (plausibility.max_text_chars), and a longer line is a
# per-row reject. Speed and memory do not depend on it (1.5M rows: 0.7 s and 288 MB with either setting).
MAX_LINE_BYTES = 64 * 1024 * 1024
# A header longer than this is no header (`_header_dialect` reads at most this much).
_MAX_HEADER_BYTES = 1024 * 1024
_CSV_DELIMITERS = (",", ";", "\t", "|")
# DuckDB's messages can quote the offending line (personal data, megabytes of it): reasons and errors keep
# at most this much of one message, and never its "Original Line".
_MESSAGE_CHARS = 200


class LayoutError(ValueError):
    """A file as a whole cannot be read as its entity: unknown format, empty, or a missing required column."""


def clipped(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def duckdb_error_text(exc: duckdb.Error) -> str:
    """A DuckDB error without the source line it may quote, short enough for a log or an audit row.

    DuckDB's CSV errors are paragraphs: the error, "Original Line: ..." (up to the next blank line), the
    problem, "Possible Solution: ...", the reader options (indented) and the query ("LINE 1: ...").
    """
    kept, quoting = [], False
    for line in str(exc).splitlines():
        if line.startswith("Original Line"):
            quoting = True
        elif not line.strip():
            quoting = False
        elif not quoting and not line.startswith((" ", "LINE ", "Possible Solution")):
            kept.append(line.strip())
    return clipped(" ".join(kept))


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"describe {table}").fetchall()]


def _unshadow_rowid(con: duckdb.DuckDBPyConnection, table: str, columns: list[str]) -> list[tuple[str, str]]:
    """(name in `table`, file column) pairs, after renaming a file column called `rowid` in `table`.

    Rows are numbered by DuckDB's `rowid` pseudo-column, which a real column of that name hides.
    """
    taken = {c.lower() for c in columns}
    pairs = []
    for column in columns:
        name = column
        if column.lower() == "rowid":
            name = "_file_rowid"
            while name.lower() in taken:
                name += "_"
            con.execute(f"alter table {table} rename column {quote_ident(column)} to {quote_ident(name)}")
        pairs.append((name, column))
    return pairs


def _attach_row_numbers(
    con: duckdb.DuckDBPyConnection,
    accepted: str,
    rejects: str,
    table: str,
    columns: list[tuple[str, str]],
    offset: int,
) -> None:
    """Give accepted rows their data-row numbers, around the numbers of the rejected lines.

    `columns` are (name in `accepted`, file column) pairs; `table` gets each under its landed name.
    The table is written in row-number order, so later steps can rely on insertion order.

    DuckDB keeps the accepted rows in file order (their rowid) and reports rejected lines by number;
    accepted row k takes the k-th row number not used by a rejected line.
    """
    n_rejected = con.execute(f"select count(distinct line) from {rejects}").fetchone()[0]
    names = [quote_ident(landed_name(name)) for _, name in columns]
    selected = ", ".join(f"cast({quote_ident(c)} as varchar) as {n}" for (c, _), n in zip(columns, names, strict=True))
    if n_rejected == 0:
        con.execute(
            f"create or replace temp table {table} as select {selected}{', ' if selected else ''}"
            "rowid + 1 as _row_number, null::varchar as _reject_reason, null::varchar as _raw_line "
            f"from {accepted}"
        )
        return
    # landed names never start with "_" unless with "_extra.", so `_idx` cannot be a file column
    accepted_out = "".join(f"accepted_rows.{n}, " for n in names)
    nulls = "".join(f"null::varchar as {n}, " for n in names)
    con.execute(
        f"""
        create or replace temp table {table} as
        with rejected as (
            select
                cast(line as bigint) - {offset} as row_no,
                -- ordered: DuckDB reports a line's errors in scan order, which varies between runs
                string_agg(distinct reason_part, '; ' order by reason_part) as reason,
                min(csv_line) as raw_line
            from (
                select *, cast(error_type as varchar) || coalesce(' in column ' || left(column_name, 100), '')
                    || ': ' || left(error_message, {_MESSAGE_CHARS}) as reason_part
                from {rejects}
            )
            group by line
        ),
        slots as (
            select range as row_no from range(1, (select count(*) from {accepted}) + {n_rejected} + 1)
        ),
        free as (
            select row_no, row_number() over (order by row_no) - 1 as idx
            from slots anti join rejected using (row_no)
        ),
        accepted_rows as (select {selected}{", " if selected else ""}rowid as _idx from {accepted})
        select
            {accepted_out}
            free.row_no as _row_number,
            null::varchar as _reject_reason,
            null::varchar as _raw_line
        from accepted_rows join free on accepted_rows._idx = free.idx
        union all
        select {nulls}row_no, 'unreadable line (' || reason || ')', raw_line from rejected
        order by _row_number
        """
    )


def _drop(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    for name in tables:
        con.execute(f"drop table if exists {name}")


def _header_dialect(path: Path) -> str:
    """read_csv options naming the dialect and columns, taken from the header line, so DuckDB does not sniff.

    DuckDB's sniffer fails the whole file when a line of its sample is over the maximum line size; with the
    dialect given, that line is one reject like any other. Delimiter: the most frequent of , ; tab | in the
    header (',' on a tie); quotes and escapes are '"' (RFC 4180).
    """
    with open(path, "rb") as handle:
        head = handle.read(_MAX_HEADER_BYTES)
    header = head.replace(b"\r", b"\n").split(b"\n", 1)[0]  # any of the line ends DuckDB reads
    if len(header) == _MAX_HEADER_BYTES:
        raise LayoutError(f"{path.name}: header line longer than {_MAX_HEADER_BYTES:,} bytes")
    try:
        text = header.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LayoutError(f"{path.name}: header line is not UTF-8 text") from exc
    delimiter = max(_CSV_DELIMITERS, key=text.count)
    names = next(csv.reader([text], delimiter=delimiter), [])
    columns = ", ".join(f"{sql_literal(name or f'column{i}')}: 'VARCHAR'" for i, name in enumerate(names))
    return (
        f"auto_detect = false, delim = {sql_literal(delimiter)}, quote = '\"', escape = '\"', columns = {{{columns}}}"
    )


def _read_csv_rows(con: duckdb.DuckDBPyConnection, path: Path, dialect: str) -> None:
    """`_csv_rows` (the parsed rows, in file order) and `_csv_rejects` (the lines that were not)."""
    _drop(con, "_csv_rows", "_csv_rejects", "_csv_scans")
    con.execute(
        f"create temp table _csv_rows as select * from read_csv({sql_literal(str(path))}, {dialect}"
        f"all_varchar = true, header = true, max_line_size = {MAX_LINE_BYTES}, store_rejects = true, "
        "rejects_table = '_csv_rejects', rejects_scan = '_csv_scans')"
    )


def _parse_csv(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """`_read_csv_rows` with DuckDB's dialect sniffer, or, when the sniffer met a line over the maximum, with
    the dialect of the header line."""
    try:
        _read_csv_rows(con, path, dialect="")
    except duckdb.Error as exc:
        if "maximum line size" not in str(exc).lower():
            raise
        _read_csv_rows(con, path, dialect=_header_dialect(path) + ", ")


def read_csv(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> list[str]:
    """CSV with a header row; every value read as text. Returns the landed column names."""
    try:
        _parse_csv(con, path)
    except duckdb.Error as exc:
        raise LayoutError(f"{path.name}: not a readable CSV file ({duckdb_error_text(exc)})") from exc
    columns = _unshadow_rowid(con, "_csv_rows", _table_columns(con, "_csv_rows"))
    # The header is line 1, so data row = line - 1.
    _attach_row_numbers(con, "_csv_rows", "_csv_rejects", table, columns, offset=1)
    _drop(con, "_csv_rows", "_csv_rejects", "_csv_scans")
    return [landed_name(name) for _, name in columns]


def read_jsonl(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> list[str]:
    """One JSON object per line. Read as text lines first, so a malformed line is kept, not fatal.

    Blank (empty or whitespace-only) lines are not records and are not counted. Keys become columns
    (values as text; nested values as JSON text) under their landed names, which are returned.
    """
    _drop(con, "_jsonl_lines", "_jsonl_rejects", "_jsonl_scans", "_jsonl_numbered")
    # The dialect is given in full (auto_detect off), so no sniffer can fail the file on one long line;
    # \n, \r\n and \r line ends and a byte-order mark are still recognised.
    try:
        con.execute(
            f"create temp table _jsonl_lines as select * from read_csv({sql_literal(str(path))}, "
            f"columns = {{'line': 'VARCHAR'}}, delim = {sql_literal(LINE_DELIMITER)}, quote = '', "
            f"escape = '', header = false, auto_detect = false, max_line_size = {MAX_LINE_BYTES}, "
            "store_rejects = true, rejects_table = '_jsonl_rejects', rejects_scan = '_jsonl_scans')"
        )
    except duckdb.Error as exc:
        raise LayoutError(f"{path.name}: not a readable JSON-lines file ({duckdb_error_text(exc)})") from exc
    _attach_row_numbers(con, "_jsonl_lines", "_jsonl_rejects", "_jsonl_numbered", [("line", "line")], offset=0)
    # ltrim(line) starting with '{' tells a valid JSON object from other valid JSON without parsing again.
    con.execute(
        """
        create or replace temp table _jsonl_numbered as
        select
            line,
            _row_number,
            reason as _reject_reason,
            case when reason is not null then coalesce(_raw_line, line) end as _raw_line
        from (
            select
                *,
                case
                    when _reject_reason is not null then _reject_reason
                    when not json_valid(line) then 'malformed JSON line'
                    when not starts_with(ltrim(line), '{') then 'JSON line is not an object'
                end as reason
            from _jsonl_numbered
            where _reject_reason is not null or regexp_matches(line, '\\S')
        )
        """
    )
    keys = [
        row[0]
        for row in con.execute(
            """
            select key from (
                select unnest(json_keys(line)) as key, _row_number from _jsonl_numbered
                where _reject_reason is null
            ) group by key order by min(_row_number), key
            """
        ).fetchall()
    ]
    if keys:
        paths = "[" + ", ".join(sql_literal("$." + quote_ident(k)) for k in keys) + "]"
        values = ", ".join(f"_values[{i + 1}] as {quote_ident(landed_name(k))}" for i, k in enumerate(keys))
        con.execute(
            f"""
            create or replace temp table {table} as
            select {values}, _row_number, _reject_reason, _raw_line
            from (
                select
                    case when _reject_reason is null then json_extract_string(line, {paths}) end as _values,
                    _row_number, _reject_reason, _raw_line
                from _jsonl_numbered
            )
            """
        )
    else:
        con.execute(
            f"create or replace temp table {table} as "
            "select _row_number, _reject_reason, _raw_line from _jsonl_numbered"
        )
    _drop(con, "_jsonl_lines", "_jsonl_rejects", "_jsonl_scans", "_jsonl_numbered")
    return [landed_name(k) for k in keys]


def _parquet_numbering(
    con: duckdb.DuckDBPyConnection, source: str, columns: list[str]
) -> tuple[list[tuple[str, str]], str, str]:
    """How to number a Parquet file's rows: (name in the relation, file column) pairs, the row-number
    expression (0-based) and the relation to select from.

    read_parquet's `file_row_number` fails on a file with a column of that name; such a file is copied into a
    temp table first and numbered by its order there (taking 40% longer, so only then).
    """
    if not any(c.lower() == "file_row_number" for c in columns):
        return [(c, c) for c in columns], "file_row_number", f"{source}, file_row_number = true)"
    con.execute(f"create temp table _parquet_rows as select * from {source})")
    return _unshadow_rowid(con, "_parquet_rows", columns), "rowid", "_parquet_rows"


def read_parquet(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> list[str]:
    """Parquet: typed columns are turned back into text so every input lands the same way."""
    source = f"read_parquet({sql_literal(str(path))}, hive_partitioning = false"
    _drop(con, "_parquet_rows")
    try:
        columns = [row[0] for row in con.execute(f"describe select * from {source})").fetchall()]
        pairs, numbered, relation = _parquet_numbering(con, source, columns)
        selected = "".join(f"cast({quote_ident(c)} as varchar) as {quote_ident(landed_name(n))}, " for c, n in pairs)
        con.execute(
            f"create or replace temp table {table} as select {selected}{numbered} + 1 as _row_number, "
            f"null::varchar as _reject_reason, null::varchar as _raw_line from {relation}"
        )
    except duckdb.Error as exc:
        raise LayoutError(f"{path.name}: not a readable Parquet file ({duckdb_error_text(exc)})") from exc
    finally:
        _drop(con, "_parquet_rows")
    return [landed_name(name) for _, name in pairs]


def _is_blank(path: Path, longest: int = 4096) -> bool:
    """True for a file of no bytes or only whitespace (e.g. one newline), which DuckDB would read as a column."""
    size = path.stat().st_size
    if size > longest:
        return False
    return size == 0 or not path.read_bytes().strip()


def read_source_file(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> list[str]:
    """Read a CSV, JSONL or Parquet file into `table` (landing shape); return its landed data column names.

    An empty JSON-lines file is an extract of no records (a day without events); an empty CSV has not even
    its header and an empty Parquet file is no Parquet file, so those are a LayoutError saying so. So is any
    other DuckDB failure on the file (two JSON keys differing only in case, say): it stops this file, never
    the extraction of the other files.
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet") and _is_blank(path):
        expected = "a header row" if suffix == ".csv" else "Parquet data"
        raise LayoutError(f"{path.name}: empty file ({path.stat().st_size} bytes), expected {expected}")
    readers = {".csv": read_csv, ".jsonl": read_jsonl, ".parquet": read_parquet}
    if suffix not in readers:
        raise LayoutError(
            f"{path.name}: unknown layout {suffix or '(no extension)'}; expected one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        return readers[suffix](con, path, table)
    except duckdb.Error as exc:
        raise LayoutError(f"{path.name}: cannot be read ({duckdb_error_text(exc)})") from exc
