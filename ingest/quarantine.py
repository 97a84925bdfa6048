"""Row validation in SQL: which landed rows are bad, why, and in which column.

Everything is one vectorised DuckDB query per batch (TRY_CAST and friends), never a Python loop
over rows. A row is bad when the reader could not parse its line, a required value is empty, a value
does not parse as its contract type, or it repeats the primary key of an earlier good row of the same
extract (the first occurrence is kept; later ones are quarantined naming the first row).
Reasons are only built for bad rows, so a clean batch costs little more than its casts.
"""

from __future__ import annotations

from touchpoint.ingest.contract import Column, EntitySpec, Kind
from touchpoint.ingest.readers import quote_ident, sql_literal

BOOLEAN_TRUE = ("true", "1", "yes")
BOOLEAN_FALSE = ("false", "0", "no")

_KIND_WORD = {
    Kind.TIMESTAMP: "timestamp",
    Kind.DATE: "date (YYYY-MM-DD)",
    Kind.AMOUNT: "decimal amount",
    Kind.INTEGER: "integer",
    Kind.BOOLEAN: "boolean (true/false/1/0/yes/no)",
}


def typed_expression(column: Column, text: str) -> str:
    """SQL turning the text value `text` into the column's raw type; NULL when empty or unparseable.

    DuckDB's casts ignore surrounding spaces, so values are not trimmed first (trim is slow on
    millions of rows).
    """
    if column.kind is Kind.TEXT:
        return text
    if column.kind is Kind.TIMESTAMP:
        # Offsets and 'Z' are honoured; a naive value means UTC (the session time zone is UTC).
        # epoch_us -> make_timestamp is the UTC wall time, and much faster than AT TIME ZONE.
        return f"make_timestamp(epoch_us(try_cast({text} as timestamptz)))"
    if column.kind is Kind.DATE:
        return f"try_cast({text} as date)"
    if column.kind is Kind.AMOUNT:
        return f"try_cast({text} as decimal(18,2))"
    if column.kind is Kind.INTEGER:
        return f"case when regexp_full_match({text}, '\\s*[+-]?[0-9]+\\s*') then try_cast({text} as integer) end"
    if column.kind is Kind.BOOLEAN:
        true_words = "|".join(BOOLEAN_TRUE)
        false_words = "|".join(BOOLEAN_FALSE)
        return (
            f"case when regexp_full_match({text}, '(?i)\\s*({true_words})\\s*') then true "
            f"when regexp_full_match({text}, '(?i)\\s*({false_words})\\s*') then false end"
        )
    raise ValueError(f"no typing rule for {column.kind}")


def _empty(text: str) -> str:
    return f"({text} is null or not regexp_matches({text}, '\\S'))"


def _bad_condition(column: Column, text: str, typed: str) -> str | None:
    """SQL true when the value is bad (None when no value can be bad)."""
    unparseable = f"({typed} is null and {text} is not null and regexp_matches({text}, '\\S'))"
    if column.kind is Kind.TEXT:
        return _empty(text) if column.required else None
    return f"({_empty(text)} or {unparseable})" if column.required else unparseable


def _reason(column: Column, text: str) -> str:
    """SQL for the problem text of a bad value (only evaluated for bad values)."""
    empty = sql_literal(f"{column.name}: empty required value")
    if column.kind is Kind.TEXT:
        return empty
    unparseable = f"'{column.name}: cannot read ' || to_json({text}) || ' as {_KIND_WORD[column.kind]}'"
    if column.required:
        return f"case when {_empty(text)} then {empty} else {unparseable} end"
    return unparseable


def _text_alias(name: str) -> str:
    return quote_ident(f"_text_{name}")


def checked_query(spec: EntitySpec, landed_columns: list[str], landing: str, batch_column: str | None = None) -> str:
    """SELECT over the landing relation `landing`: typed contract columns (contract order), `_extra`,
    `_source_file`, `_row_number`, and `_problem_column` / `_problem_reason` (both NULL for a good row).

    With `batch_column`, `landing` holds several batches: that column is carried through, and a primary key
    is a duplicate only when it repeats inside one batch (row numbers are per batch)."""
    present = set(landed_columns)
    source_text = {c.name: quote_ident(c.name) if c.name in present else "null::varchar" for c in spec.columns}
    typed = {c.name: typed_expression(c, source_text[c.name]) for c in spec.columns}

    checks = []  # (column, condition on the first CTE's names, condition and reason on the second's)
    for column in spec.columns:
        first = _bad_condition(column, source_text[column.name], typed[column.name])
        if first is None:
            continue
        text, value = f"typed.{_text_alias(column.name)}", f"typed.{quote_ident(column.name)}"
        checks.append((column.name, first, _bad_condition(column, text, value), _reason(column, text)))

    extras = [c for c in landed_columns if c not in set(spec.column_names)]
    extra_json = (
        "json_object(" + ", ".join(f"{sql_literal(c)}, {quote_ident(c)}" for c in extras) + ")"
        if extras
        else "null::json"
    )
    typed_select = ",\n".join(f"{typed[c.name]} as {quote_ident(c.name)}" for c in spec.columns)
    text_select = "".join(f"{source_text[name]} as {_text_alias(name)},\n" for name, *_ in checks)
    any_bad = " or ".join(first for _, first, _, _ in checks) or "false"
    names = ", ".join(f"case when {cond} then {sql_literal(name)} end" for name, _, cond, _ in checks)
    reasons = ", ".join(f"case when {cond} then {reason} end" for _, _, cond, reason in checks)
    partition = [batch_column] if batch_column else []
    key = ", ".join(quote_ident(k) for k in [*partition, *spec.primary_key])
    key_text = " || ', ' || ".join(
        f"{sql_literal(k + '=')} || cast(typed.{quote_ident(k)} as varchar)" for k in spec.primary_key
    )
    key_match = " and ".join(
        f"typed.{quote_ident(k)} = duplicates.{quote_ident(k)}" for k in [*partition, *spec.primary_key]
    )
    carried = "".join(f"{quote_ident(c)},\n" for c in partition)
    carried_out = "".join(f"typed.{quote_ident(c)},\n" for c in partition)
    contract = ", ".join(f"typed.{quote_ident(c)}" for c in spec.column_names)
    return f"""
        with typed as (
            select
                {typed_select},
                {text_select}
                {extra_json} as _extra,
                {carried}_source_file,
                _row_number,
                _reject_reason,
                _reject_reason is null and not ({any_bad}) as _is_good
            from {landing}
        ),
        duplicates as (
            select {key}, min(_row_number) as _first_row
            from typed
            where _is_good
            group by {key}
            having count(*) > 1
        )
        select
            {contract},
            typed._extra,
            {carried_out}typed._source_file,
            typed._row_number,
            case
                when typed._reject_reason is not null then null
                when not typed._is_good then list_filter([{names or "null"}], lambda x: x is not null)[1]
                when typed._row_number > duplicates._first_row then {sql_literal(spec.primary_key[0])}
            end as _problem_column,
            case
                when typed._reject_reason is not null then typed._reject_reason
                when not typed._is_good then
                    array_to_string(list_filter([{reasons or "null"}], lambda x: x is not null), '; ')
                when typed._row_number > duplicates._first_row then
                    'duplicate primary key (' || {key_text}
                    || ') in this extract; first seen at row ' || duplicates._first_row
            end as _problem_reason
        from typed
        left join duplicates on {key_match} and typed._is_good
    """
