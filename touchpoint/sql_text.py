"""Quoting for text pasted into SQL: the one place identifiers and literals are escaped.

DuckDB, PostgreSQL and SQLite all quote identifiers with double quotes and literals with single quotes,
doubling the quote character inside; every stage builds its SQL text with these helpers.
"""

from __future__ import annotations

from collections.abc import Iterable


def quote_ident(name: str) -> str:
    """`name` as a quoted SQL identifier: safe for any column or table name, even one holding quotes."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: str) -> str:
    """`value` as a single-quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_literal_list(values: Iterable[str]) -> str:
    """`values` as a DuckDB list literal of strings: `['a', 'b']`."""
    return "[" + ", ".join(sql_literal(value) for value in values) + "]"
