"""Checks whose metrics DuckDB computes: the building blocks of the suites.

A check is two SQL statements over the warehouse: `metrics_sql` returns one row
`(element_count, unexpected_count)` and `sample_sql` returns up to a few offending values (run only
when something is unexpected). Great Expectations then judges the compact metrics (see `gate.py`),
so a 1M-row table never leaves DuckDB: only two numbers and five sample values per check do.

The constructors below cover the suites' needs; `Check(...)` with hand-written SQL covers the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from touchpoint.sql_text import sql_literal

SAMPLE_SIZE = 5
CRITICAL = "critical"  # a failure stops the run
WARNING = "warning"  # a failure is reported, the run goes on

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _ident(name: str) -> str:
    """Guard identifiers that are pasted into SQL (suites are code, but typos should fail loudly)."""
    if not _IDENT.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


@dataclass(frozen=True)
class Check:
    """One expectation: how to measure it in DuckDB and how much is tolerated.

    `mostly` is the share of elements that must be as expected (1.0: none may fail), as in GX.
    """

    name: str  # what it asserts, e.g. "not_null"
    table: str  # schema.table
    column: str | None
    metrics_sql: str  # one row: element_count, unexpected_count
    sample_sql: str  # offending values, at most SAMPLE_SIZE rows, first column is shown
    mostly: float = 1.0
    severity: str = CRITICAL
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def check_id(self) -> str:
        return ".".join(part for part in (self.table, self.column, self.name) if part)


@dataclass(frozen=True)
class Measurement:
    """What DuckDB found for one check (error set when the SQL could not run, e.g. a missing table)."""

    element_count: int
    unexpected_count: int
    sample: list[Any]
    error: str | None = None

    @property
    def unexpected_share(self) -> float:
        if self.error is not None:
            return 1.0
        return self.unexpected_count / self.element_count if self.element_count else 0.0


def measure(con: duckdb.DuckDBPyConnection, check: Check) -> Measurement:
    """Run a check's metrics (and, if anything is unexpected, its sample) inside DuckDB."""
    try:
        rows = con.execute(check.metrics_sql).fetchall()
        element_count, unexpected_count = (int(v or 0) for v in rows[0][:2])
        sample: list[Any] = []
        if unexpected_count:
            sample = [_jsonable(r[0]) for r in con.execute(check.sample_sql).fetchall()[:SAMPLE_SIZE]]
        return Measurement(element_count, unexpected_count, sample)
    except duckdb.Error as exc:
        return Measurement(0, 0, [], error=f"{type(exc).__name__}: {exc}".splitlines()[0])


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _rows_where(table: str, column: str | None, bad: str, scope: str = "true", value: str | None = None,
                ) -> tuple[str, str]:
    table = _ident(table)
    shown = value or (column if column else "*")
    metrics = (
        f"select count(*) filter (where {scope}), count(*) filter (where ({scope}) and ({bad})) from {table}"
    )
    sample = f"select {shown} from {table} where ({scope}) and ({bad}) limit {SAMPLE_SIZE}"
    return metrics, sample


def not_null(table: str, column: str, label: str = "rowid", **kw: Any) -> Check:
    """`column` is never null; the sample shows `label` (an expression naming the row) of offending rows."""
    metrics, sample = _rows_where(table, _ident(column), f"{column} is null", value=label)
    return Check("not_null", table, column, metrics, sample,
                 description=kw.pop("description", f"{column} is never null"), **kw)


def unique(table: str, columns: list[str] | str, **kw: Any) -> Check:
    cols = [columns] if isinstance(columns, str) else list(columns)
    key = ", ".join(_ident(c) for c in cols)
    shown = cols[0] if len(cols) == 1 else "concat_ws('|', " + ", ".join(f"{c}::varchar" for c in cols) + ")"
    table = _ident(table)
    metrics = (
        f"select (select count(*) from {table}), coalesce(sum(n), 0) from "
        f"(select count(*) as n from {table} group by {key} having count(*) > 1)"
    )
    sample = f"select {shown} from {table} group by {key} having count(*) > 1 order by count(*) desc " \
             f"limit {SAMPLE_SIZE}"
    return Check("unique", table, "+".join(cols), metrics, sample,
                 description=kw.pop("description", f"({key}) identifies one row"), **kw)


def between(table: str, column: str, min_value: Any = None, max_value: Any = None, scope: str = "true",
            name: str = "between", label: str | None = None, **kw: Any) -> Check:
    """Non-null `column` in [min_value, max_value] among the rows in `scope` (NaN is above any maximum);
    the sample shows `label` (default: the value) of offending rows."""
    conditions = []
    if min_value is not None:
        conditions.append(f"{_ident(column)} < {min_value!r}")
    if max_value is not None:
        conditions.append(f"{_ident(column)} > {max_value!r}")
    metrics, sample = _rows_where(table, column, " or ".join(conditions), scope=f"({scope}) and {column} is not null",
                                  value=label)
    return Check(name, table, column, metrics, sample,
                 description=kw.pop("description", f"{column} in [{min_value}, {max_value}]"),
                 details={"min_value": min_value, "max_value": max_value}, **kw)


def in_set(table: str, column: str, values: list[Any], **kw: Any) -> Check:
    listed = ", ".join(sql_literal(v) if isinstance(v, str) else repr(v) for v in values)
    metrics, sample = _rows_where(table, _ident(column), f"{column} not in ({listed})",
                                  scope=f"{column} is not null")
    return Check("in_set", table, column, metrics, sample,
                 description=kw.pop("description", f"{column} one of {values}"),
                 details={"value_set": values}, **kw)


def matches(table: str, column: str, regex: str, **kw: Any) -> Check:
    metrics, sample = _rows_where(table, _ident(column), f"not regexp_matches({column}, {sql_literal(regex)})",
                                  scope=f"{column} is not null")
    return Check("matches_regex", table, column, metrics, sample,
                 description=kw.pop("description", f"{column} matches {regex}"), details={"regex": regex},
                 **kw)


def not_after(table: str, column: str, limit: datetime, scope: str = "true", name: str = "not_in_future",
              **kw: Any) -> Check:
    """No value after `limit` (a timestamp), among the rows in `scope`."""
    stamp = sql_literal(limit.isoformat(sep=" "))
    metrics, sample = _rows_where(table, _ident(column), f"{column} >= {stamp}::timestamp",
                                  scope=f"({scope}) and {column} is not null")
    return Check(name, table, column, metrics, sample,
                 description=kw.pop("description", f"{column} before {limit.isoformat()}"),
                 details={"limit": limit.isoformat()}, **kw)


def references(table: str, column: str, parent: str, parent_column: str, **kw: Any) -> Check:
    """Referential integrity: every non-null `column` exists in `parent.parent_column`."""
    _ident(column), _ident(parent), _ident(parent_column)
    orphan = f"not exists (select 1 from {parent} as parent where parent.{parent_column} = child.{column})"
    table = _ident(table)
    metrics = (
        f"select count(*) filter (where {column} is not null), "
        f"count(*) filter (where {column} is not null and {orphan}) from {table} as child"
    )
    sample = f"select {column} from {table} as child where {column} is not null and {orphan} " \
             f"limit {SAMPLE_SIZE}"
    return Check("references", table, column, metrics, sample,
                 description=kw.pop("description", f"{column} exists in {parent}.{parent_column}"),
                 details={"parent": f"{parent}.{parent_column}"}, **kw)


def has_columns(table: str, columns: list[str], **kw: Any) -> Check:
    """The table exists with every one of `columns` (a missing table misses them all); the sample names the
    missing ones."""
    schema, _, name = _ident(table).rpartition(".")
    listed = ", ".join(f"({sql_literal(c)})" for c in columns)
    missing = (f"from (values {listed}) as expected(column_name) where not exists (select 1 from "
               f"information_schema.columns as present where present.table_schema = {sql_literal(schema or 'main')} "
               f"and present.table_name = {sql_literal(name)} and present.column_name = expected.column_name)")
    return Check("columns_exist", table, None, f"select {len(columns)}, count(*) {missing}",
                 f"select column_name {missing} limit {SAMPLE_SIZE}",
                 description=kw.pop("description", f"{table} has its {len(columns)} columns"),
                 details={"columns": list(columns)}, **kw)


def same_row_count(table: str, other: str, **kw: Any) -> Check:
    table, other = _ident(table), _ident(other)
    metrics = (
        f"select (select count(*) from {other}), "
        f"abs((select count(*) from {table}) - (select count(*) from {other}))"
    )
    sample = f"select 'rows: ' || (select count(*) from {table}) || ' vs {other}: ' || " \
             f"(select count(*) from {other})"
    return Check("row_count_equals", table, None, metrics, sample,
                 description=kw.pop("description", f"one row per row of {other}"), details={"other": other},
                 **kw)


# The day a raw row's batch was extracted for: the loader's `_extract_date` column (contracts §4).
EXTRACT_DAY = "_extract_date"


def volume_vs_previous_batch(table: str, tolerance: float, batch_key: str = EXTRACT_DAY,
                             until: datetime | None = None, skip_first: bool = True, min_rows: int = 0,
                             **kw: Any) -> Check:
    """The latest batch's row count is within a factor of what the same weekday usually brings.

    Sources are weekly-seasonal (an email campaign goes out on one weekday, opens trickle in on the
    others), so the reference is the median of the up to four previous batches on the latest batch's
    weekday; with no such batch yet (or batches that are not dates), the median of the four previous
    ones. `tolerance` t allows between (1 - t) and 1 / (1 - t) times the reference (symmetric on a log
    scale: t = 0.5 allows half to double). Batches are the distinct values of the SQL expression
    `batch_key` (by default the extract day) among rows extracted by `until`. With `skip_first`, an
    entity's first batch is never a reference: a first load is a backlog (a whole shop history), not a
    day's volume. With no reference, or a reference under `min_rows` (a handful of rows more or less is
    noise, not an outage), the check is vacuous.
    """
    if not 0 <= tolerance < 1:
        raise ValueError("tolerance must be in [0, 1)")
    table = _ident(table)
    scope = f"where _extracted_at <= {sql_literal(until.isoformat(sep=' '))}::timestamp" if until else ""
    low, high = 1 - tolerance, 1 / (1 - tolerance)
    not_first = "and ranked.k < ranked.b" if skip_first else ""
    batches = (
        f"with batches as (select {batch_key} as batch, count(*) as n from {table} {scope} group by 1), "
        f"ranked as (select batch, n, row_number() over (order by batch desc) as k, count(*) over () as b "
        f"from batches), "
        f"latest as (select batch as cur_batch, n as cur from ranked where k = 1), "
        f"earlier as (select ranked.batch, ranked.n, dayofweek(try_cast(ranked.batch::varchar as date)) "
        f"= dayofweek(try_cast(latest.cur_batch::varchar as date)) as same_weekday "
        f"from ranked, latest where ranked.k > 1 {not_first}), "
        f"history as (select batch, n from earlier where same_weekday or not exists "
        f"(select 1 from earlier where same_weekday) order by batch desc limit 4), "
        f"pair as (select latest.cur, latest.cur_batch, (select median(n) from history) as prev, "
        f"(select min(batch) || '..' || max(batch) from history) as prev_batch from latest) "
    )
    bad = f"prev >= {int(min_rows)} and (cur < prev * {low} or cur > prev * {high})"
    metrics = batches + (
        f"select count(prev) filter (where prev >= {int(min_rows)}), count(*) filter (where {bad}) from pair"
    )
    sample = batches + ("select 'batch ' || cur_batch || ': ' || cur || ' rows, reference ' || prev_batch "
                        "|| ': ' || prev from pair")
    return Check("volume_vs_previous_batch", table, None, metrics, sample,
                 description=kw.pop("description",
                                    f"latest batch within x{low:.2f}..x{high:.2f} of the same weekday's median"),
                 details={"tolerance": tolerance}, **kw)


def custom(name: str, table: str, column: str | None, metrics_sql: str, sample_sql: str, **kw: Any) -> Check:
    """A check with hand-written SQL (metrics: one row `element_count, unexpected_count`)."""
    return Check(name, table, column, metrics_sql, sample_sql, **kw)
