"""Checks on the SQL a sync definition carries (its source query and its filter): untrusted input, rule 9.

The real barrier is the sandboxed connection the source runs on (`touchpoint.shell.open_analyst_connection`:
read-only, no file or network access, settings locked). These parser checks (sqlglot, DuckDB dialect) come
first so a definition that reaches outside the published analyst schemas is refused with a clear reason
before anything runs, and so a filter stays one boolean expression that cannot reshape the query around it.
Library code: functions return the checked SQL or raise `SqlRefused` (a one-line reason).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

# The schemas analysts (and therefore syncs) may read in the published warehouse; raw, staging, audit, pii...
# hold unpseudonymised or unchecked data (rule 8).
READABLE_SCHEMAS = ("marts", "ml", "identity")

# Functions a filter may call: pure, row-local, no I/O and no name resolution at run time. Anything else
# (including every function sqlglot does not know, which it parses as `Anonymous`) is refused.
FILTER_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    exp.Connector,  # and / or: sqlglot models them as functions
    exp.Cast,
    exp.TryCast,
    exp.Case,
    exp.If,
    exp.Coalesce,
    exp.Lower,
    exp.Upper,
    exp.Trim,
    exp.Length,
    exp.Abs,
    exp.Round,
    exp.CurrentDate,
    exp.CurrentTimestamp,
    exp.DateTrunc,
    exp.TimestampTrunc,
    exp.DateAdd,
    exp.DateSub,
    exp.DateDiff,
    exp.Extract,
    exp.Year,
    exp.Month,
    exp.Day,
)


class SqlRefused(ValueError):
    """The SQL is not allowed in a sync definition; the message is one line saying why."""


def _parse(sql: str, what: str) -> list[exp.Expression]:
    try:
        statements = sqlglot.parse(sql, read="duckdb")
    except SqlglotError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SqlRefused(f"{what} does not parse: {first_line}") from error
    return [s for s in statements if s is not None]


def check_source_sql(sql: str) -> str:
    """Return `sql` if it is exactly one query reading only schema-qualified published tables."""
    statements = _parse(sql, "source.sql")
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise SqlRefused("source.sql must be exactly one SELECT query")
    query = statements[0]
    ctes = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    for table in query.find_all(exp.Table):
        _check_table(table, ctes)
    return sql


def source_tables(sql: str) -> set[str]:
    """The published tables (`schema.table`) a checked source query reads; its own CTEs left out.

    What a sync depends on: the dbt exposures of the syncs list the same tables (tests/test_exposures.py).
    """
    query = _parse(sql, "source.sql")[0]
    ctes = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    return {
        f"{table.db}.{table.name}"
        for table in query.find_all(exp.Table)
        if table.db or table.name not in ctes
    }


def _check_table(table: exp.Table, ctes: set[str]) -> None:
    if not isinstance(table.this, exp.Identifier):
        # read_csv(...), glob(...), query_table('raw.x'): table functions read files or resolve names at run time
        raise SqlRefused(f"source.sql may not read from table functions ({table.this.sql('duckdb')})")
    if not table.db and not table.catalog and table.name in ctes:
        return
    if table.catalog or table.db not in READABLE_SCHEMAS:
        raise SqlRefused(
            f"source.sql may only read the published schemas {list(READABLE_SCHEMAS)}, "
            f"got {table.sql('duckdb')!r}"
        )


def check_filter(text: str) -> str:
    """The filter as one boolean expression over unqualified columns, re-rendered by the parser.

    The returned SQL is what runs: it is sqlglot's rendering of the checked tree, never the original text.
    """
    statements = _parse(text, "filter")
    if len(statements) != 1:
        raise SqlRefused("filter must be a single expression (no ';')")
    tree = statements[0]
    if not isinstance(tree, exp.Condition) or tree.find(exp.Query, exp.Subquery) is not None:
        raise SqlRefused("filter must be one boolean expression, without subqueries or set operations")
    for node in tree.walk():
        _check_filter_node(node)
    return tree.sql(dialect="duckdb", comments=False)  # a comment could close a /* */ it is rendered into


def _check_filter_node(node: exp.Expression) -> None:
    if isinstance(node, exp.Placeholder | exp.Parameter | exp.Star):
        raise SqlRefused(f"filter may not contain {node.sql('duckdb')!r}")
    if isinstance(node, exp.Column) and (node.table or node.args.get("db") or node.args.get("catalog")):
        raise SqlRefused(f"filter columns must be unqualified source columns, got {node.sql('duckdb')!r}")
    if isinstance(node, exp.Func) and not isinstance(node, FILTER_FUNCTIONS):
        name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
        raise SqlRefused(f"filter may not call {name.lower()}()")


def filter_columns(text: str) -> set[str]:
    """The column names a (checked) filter references."""
    return {column.name for column in sqlglot.parse_one(text, read="duckdb").find_all(exp.Column)}
