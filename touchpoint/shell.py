"""The analyst shell behind `touchpoint sql`: read-only SQL on the published warehouse, sandboxed.

SQL typed by an analyst is untrusted input (ARCHITECTURE.md, rule 9). Two barriers, the first one the real one:

1. DuckDB's own configuration, fixed before the first statement runs: the file is opened read-only,
   `enable_external_access=false` (no file reader, `glob`, `COPY ... TO`, `EXPORT`, `ATTACH` or `INSTALL` reaches
   the filesystem or the network), extensions are neither installed nor loaded on demand, nothing spills to a
   temp folder, and `lock_configuration=true` is set last, so no `SET`, `RESET` or `PRAGMA` can undo any of it.
   With `--pii` the pii file is attached read-only as catalog `pii` first, and external access is switched off
   right after (DuckDB lets a connection turn it off, never back on; the attached file stays readable).
2. A statement check with DuckDB's own parser (`extract_statements`, `tokenize`): only queries run (`SELECT` and
   its DuckDB forms `FROM ...`, `DESCRIBE`, `SHOW`, `SUMMARIZE`, `PIVOT`; `EXPLAIN` of a query; a few
   introspection `PRAGMA`s). It refuses with one clear line instead of whatever DuckDB happens to say, and it
   also refuses session state that a read-only file still allows (temp tables, macros, secrets, variables).
   DuckDB's parser rather than sqlglot's: it is the parser that runs the statement, so the two cannot disagree
   (sqlglot 30 cannot parse `IMPORT DATABASE` or `CREATE SECRET`, for one).

Library code: it returns rows or raises `ShellRefused` / `duckdb.Error`; the CLI prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from touchpoint.sql_text import sql_literal

# Set when the database opens (`duckdb.connect(config=...)`); external access, the time zone and the lock follow
# as statements (SANDBOX), because the pii file is attached in between, ICU's `TimeZone` option is not known to
# `connect`, and nothing can be set once the lock is on.
ANALYST_CONFIG: dict[str, str | bool] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "temp_directory": "",  # no spilling: a read-only shell writes no file, not even a temp one
}
SANDBOX = ("set enable_external_access = false", "set timezone = 'UTC'", "set lock_configuration = true")
# The catalog `touchpoint sql --pii` attaches the pii file as: analysts write pii.persons, pii.source_records, ...
PII_CATALOG = "pii"
# Read-only introspection pragmas an analyst may use; every other PRAGMA (settings, IMPORT DATABASE) is refused.
INTROSPECTION_PRAGMAS = frozenset(
    {"show_tables", "show_tables_expanded", "table_info", "show", "database_list", "database_size", "version",
     "platform", "functions", "collations"}
)
# schema.table in the published warehouse; catalog.table in an attached file (its tables are all in `main`)
TABLES_QUERY = (
    "select case when table_catalog = current_database() then table_schema else table_catalog end "
    "|| '.' || table_name as name from information_schema.tables order by 1"
)

FILE_ACCESS = "file access is disabled in the analyst shell"
SETTINGS_LOCKED = "settings are locked in the analyst shell"
EXTENSIONS = "extensions cannot be installed or loaded in the analyst shell"
ATTACH = ("ATTACH and DETACH are disabled in the analyst shell: it reads the published warehouse only "
          "(and the pii file, with --pii)")
READ_ONLY = "the analyst shell is read-only"

# Statement kinds refused with a specific reason; any other kind but the allowed ones is refused as a write.
_REFUSALS: dict[duckdb.StatementType, str] = {
    duckdb.StatementType.ATTACH: ATTACH,
    duckdb.StatementType.DETACH: ATTACH,
    duckdb.StatementType.COPY: FILE_ACCESS,
    duckdb.StatementType.COPY_DATABASE: FILE_ACCESS,
    duckdb.StatementType.EXPORT: FILE_ACCESS,
    duckdb.StatementType.LOAD: EXTENSIONS,
    duckdb.StatementType.EXTENSION: EXTENSIONS,
    duckdb.StatementType.SET: SETTINGS_LOCKED,
    duckdb.StatementType.VARIABLE_SET: SETTINGS_LOCKED,
}
_WORD = re.compile(r"[A-Za-z_]+")


class ShellRefused(Exception):
    """A statement the analyst shell does not run; the message is one line, for the analyst."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple]
    truncated: bool  # more rows than were fetched


def open_analyst_connection(path: Path, pii: Path | None = None) -> duckdb.DuckDBPyConnection:
    """Open the published (analytics) warehouse at `path` read-only, with no file or network access and settings
    locked. With `pii`, the pii file is attached read-only as catalog `pii` before the sandbox closes."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no published warehouse at {path}: run `touchpoint run` first")
    if pii is not None and not Path(pii).is_file():
        raise FileNotFoundError(f"no pii file at {pii}: run `touchpoint run` to publish it")
    con = duckdb.connect(str(path), read_only=True, config=dict(ANALYST_CONFIG))
    try:
        if pii is not None:
            con.execute(f"attach {sql_literal(str(pii))} as {PII_CATALOG} (read_only)")
        for statement in SANDBOX:
            con.execute(statement)
    except BaseException:
        con.close()
        raise
    return con


def check_statements(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise ShellRefused unless every statement in `sql` is a read-only query (see the module docstring)."""
    for statement in con.extract_statements(sql):  # a syntax error raises duckdb.ParserException
        _check_one(con, statement)


def _check_one(con: duckdb.DuckDBPyConnection, statement: duckdb.Statement) -> None:
    text = statement.query
    try:
        kind = statement.type
    except ValueError as unknown:  # a kind the duckdb module has no name for (e.g. UPDATE EXTENSIONS)
        raise ShellRefused(f"{READ_ONLY}: {' '.join(_keywords(text, 2)).upper()} is not a query") from unknown
    words = _keywords(text, 2)
    first = words[0].upper() if words else kind.name
    if kind == duckdb.StatementType.SELECT:
        return
    if kind == duckdb.StatementType.EXPLAIN:  # EXPLAIN ANALYZE runs its statement: it must pass on its own
        explained = _after_keywords(text, 2 if words[1:2] and words[1].lower() == "analyze" else 1)
        try:
            check_statements(con, explained)
        except duckdb.ParserException as unclear:  # e.g. EXPLAIN (FORMAT json) ...: not worth a second parser
            raise ShellRefused("only EXPLAIN [ANALYZE] <query> runs in the analyst shell") from unclear
        return
    if kind == duckdb.StatementType.MULTI and first == "PIVOT":  # a PIVOT without IN (...) runs as two queries
        return
    if kind == duckdb.StatementType.PRAGMA:
        name = words[1].lower() if first == "PRAGMA" and len(words) > 1 else None
        if name in INTROSPECTION_PRAGMAS:
            return
        if first == "IMPORT":
            raise ShellRefused(FILE_ACCESS)
        raise ShellRefused(f"PRAGMA {name} is not allowed: {SETTINGS_LOCKED}" if name else SETTINGS_LOCKED)
    if kind in _REFUSALS:
        raise ShellRefused(_REFUSALS[kind])
    raise ShellRefused(f"{READ_ONLY}: {first} statements are not allowed")


def _keyword_tokens(text: str) -> list[int]:
    """Start offsets of the tokens of `text` that are not comments."""
    return [start for start, kind in duckdb.tokenize(text) if kind != duckdb.token_type.comment]


def _keywords(text: str, count: int) -> list[str]:
    """The first `count` words of `text`, comments skipped (by DuckDB's own tokenizer)."""
    words = []
    for start in _keyword_tokens(text)[:count]:
        match = _WORD.match(text, start)
        words.append(match.group(0) if match else text[start])
    return words


def _after_keywords(text: str, count: int) -> str:
    """`text` from its `count`-th non-comment token on (empty when there is no such token)."""
    starts = _keyword_tokens(text)
    return text[starts[count]:] if len(starts) > count else ""


def run_query(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int = 100) -> QueryResult:
    """Check and run `sql` (one or more statements; the last one's rows are returned, at most `max_rows`).

    Raises ShellRefused for anything but a read-only query, also when DuckDB's sandbox is what refused it,
    and duckdb.Error for an ordinary SQL error.
    """
    check_statements(con, sql)
    try:
        cursor = con.execute(sql)  # None when `sql` holds no statement (only a comment)
        if cursor is None or cursor.description is None:
            return QueryResult([], [], truncated=False)
        rows = cursor.fetchmany(max_rows + 1)
    except duckdb.Error as error:
        refusal = sandbox_refusal(error)
        if refusal is not None:
            raise ShellRefused(refusal) from error
        raise
    return QueryResult([d[0] for d in cursor.description], rows[:max_rows], truncated=len(rows) > max_rows)


def sandbox_refusal(error: duckdb.Error) -> str | None:
    """The one-line reason when `error` is DuckDB's sandbox refusing something, else None."""
    text = str(error)
    if isinstance(error, duckdb.PermissionException):
        return EXTENSIONS if "extensions" in text else FILE_ACCESS
    if "configuration has been locked" in text:
        return SETTINGS_LOCKED
    if "read-only mode" in text:
        return READ_ONLY
    return None


def format_table(result: QueryResult) -> str:
    """Rows as an aligned text table, like the DuckDB CLI's."""
    shown = [["NULL" if v is None else str(v) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(r[i]) for r in shown]) for i, c in enumerate(result.columns)]
    line = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    out = [line, "| " + " | ".join(c.ljust(w) for c, w in zip(result.columns, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |" for r in shown]
    out.append(line)
    count = len(result.rows)
    if result.truncated:
        out.append(f"more than {count} rows, showing the first {count}")
    else:
        out.append(f"{count} row{'s' if count != 1 else ''}")
    return "\n".join(out)
