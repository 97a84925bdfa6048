"""Read one source file into a DuckDB table of text columns, keeping every line.

Every reader produces the same shape, the landing shape of docs/contracts.md §3: the file's columns as
VARCHAR, `_row_number` (1-based data row), and for lines the reader could not parse (invalid UTF-8,
wrong number of fields, malformed JSON) `_reject_reason` and `_raw_line`, with the data columns null.
Nothing is dropped here: the loader quarantines rejected lines with their reason.
All work is vectorised in DuckDB so multi-million-row files stay fast.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

READER_COLUMNS = ("_row_number", "_reject_reason", "_raw_line")
SUPPORTED_SUFFIXES = (".csv", ".jsonl", ".parquet")
# A byte that cannot occur in valid JSON text (raw control characters must be escaped inside strings),
# used as the "delimiter" to read JSONL as whole lines.
_LINE_DELIMITER = "\x01"


class LayoutError(ValueError):
    """A file as a whole cannot be read as its entity: unknown format, empty, or a missing required column."""


def sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [row[0] for row in con.execute(f"describe {table}").fetchall()]


def _attach_row_numbers(
    con: duckdb.DuckDBPyConnection, accepted: str, rejects: str, table: str, columns: list[str], offset: int
) -> None:
    """Give accepted rows their data-row numbers, around the numbers of the rejected lines.

    The table is written in row-number order, so later steps can rely on insertion order.

    DuckDB keeps the accepted rows in file order (their rowid) and reports rejected lines by number;
    accepted row k takes the k-th row number not used by a rejected line.
    """
    n_rejected = con.execute(f"select count(distinct line) from {rejects}").fetchone()[0]
    selected = ", ".join(f"cast({quote_ident(c)} as varchar) as {quote_ident(c)}" for c in columns)
    nulls = ", ".join(f"null::varchar as {quote_ident(c)}" for c in columns)
    if n_rejected == 0:
        con.execute(
            f"create or replace temp table {table} as select {selected}, rowid + 1 as _row_number, "
            f"null::varchar as _reject_reason, null::varchar as _raw_line from {accepted}"
        )
        return
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
                select *, cast(error_type as varchar) || coalesce(' in column ' || column_name, '')
                    || ': ' || error_message as reason_part
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
        accepted_rows as (select *, rowid as _idx from {accepted})
        select
            {selected},
            free.row_no as _row_number,
            null::varchar as _reject_reason,
            null::varchar as _raw_line
        from accepted_rows join free on accepted_rows._idx = free.idx
        union all
        select {nulls}, row_no, 'unreadable line (' || reason || ')', raw_line from rejected
        order by _row_number
        """
    )


def _drop(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    for name in tables:
        con.execute(f"drop table if exists {name}")


def read_csv(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> list[str]:
    """CSV with a header row; every value read as text. Returns the file's column names."""
    _drop(con, "_csv_rows", "_csv_rejects", "_csv_scans")
    try:
        con.execute(
            f"create temp table _csv_rows as select * from read_csv({sql_literal(str(path))}, "
            "all_varchar = true, header = true, store_rejects = true, "
            "rejects_table = '_csv_rejects', rejects_scan = '_csv_scans')"
        )
    except duckdb.Error as exc:
        raise LayoutError(f"{path.name}: not a readable CSV file ({exc})") from exc
    columns = _table_columns(con, "_csv_rows")
    # The header is line 1, so data row = line - 1.
    _attach_row_numbers(con, "_csv_rows", "_csv_rejects", table, columns, offset=1)
    _drop(con, "_csv_rows", "_csv_rejects", "_csv_scans")
    return columns


def read_jsonl(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> list[str]:
    """One JSON object per line. Read as text lines first, so a malformed line is kept, not fatal.

    Blank (empty or whitespace-only) lines are not records and are not counted. Keys become columns
    (values as text; nested values as JSON text).
    """
    _drop(con, "_jsonl_lines", "_jsonl_rejects", "_jsonl_scans", "_jsonl_numbered")
    try:
        con.execute(
            f"create temp table _jsonl_lines as select * from read_csv({sql_literal(str(path))}, "
            f"columns = {{'line': 'VARCHAR'}}, delim = {sql_literal(_LINE_DELIMITER)}, quote = '', "
            "escape = '', header = false, store_rejects = true, "
            "rejects_table = '_jsonl_rejects', rejects_scan = '_jsonl_scans')"
        )
    except duckdb.Error as exc:
        raise LayoutError(f"{path.name}: not a readable JSON-lines file ({exc})") from exc
    _attach_row_numbers(con, "_jsonl_lines", "_jsonl_rejects", "_jsonl_numbered", ["line"], offset=0)
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
            where _reject_reason is not null or regexp_matches(line, '\S')
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
        values = ", ".join(f"_values[{i + 1}] as {quote_ident(k)}" for i, k in enumerate(keys))
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
    return keys


def read_parquet(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> list[str]:
    """Parquet: typed columns are turned back into text so every input lands the same way."""
    try:
        columns = [
            row[0]
            for row in con.execute(
                f"describe select * from read_parquet({sql_literal(str(path))}, hive_partitioning = false)"
            ).fetchall()
        ]
        selected = ", ".join(f"cast({quote_ident(c)} as varchar) as {quote_ident(c)}" for c in columns)
        con.execute(
            f"create or replace temp table {table} as select {selected}, "
            "file_row_number + 1 as _row_number, null::varchar as _reject_reason, null::varchar as _raw_line "
            f"from read_parquet({sql_literal(str(path))}, file_row_number = true, hive_partitioning = false)"
        )
    except duckdb.Error as exc:
        raise LayoutError(f"{path.name}: not a readable Parquet file ({exc})") from exc
    return columns


def _is_blank(path: Path, longest: int = 4096) -> bool:
    """True for a file of no bytes or only whitespace (e.g. one newline), which DuckDB would read as a column."""
    size = path.stat().st_size
    if size > longest:
        return False
    return size == 0 or not path.read_bytes().strip()


def read_source_file(con: duckdb.DuckDBPyConnection, path: Path, table: str) -> list[str]:
    """Read a CSV, JSONL or Parquet file into `table` (landing shape); return its data column names.

    An empty JSON-lines file is an extract of no records (a day without events); an empty CSV has not even
    its header and an empty Parquet file is no Parquet file, so those are a LayoutError saying so.
    """
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet") and _is_blank(path):
        expected = "a header row" if suffix == ".csv" else "Parquet data"
        raise LayoutError(f"{path.name}: empty file ({path.stat().st_size} bytes), expected {expected}")
    if suffix == ".csv":
        columns = read_csv(con, path, table)
    elif suffix == ".jsonl":
        columns = read_jsonl(con, path, table)
    elif suffix == ".parquet":
        columns = read_parquet(con, path, table)
    else:
        raise LayoutError(
            f"{path.name}: unknown layout {suffix or '(no extension)'}; expected one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    clashes = sorted(set(columns) & set(READER_COLUMNS) | {c for c in columns if c == "_source_file"})
    if clashes:
        raise LayoutError(f"{path.name}: column names reserved for load metadata: {', '.join(clashes)}")
    return columns
