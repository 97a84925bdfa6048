"""Row validation in SQL: which landed rows are bad, why, and in which column.

Everything is one vectorised DuckDB query per group of batches (TRY_CAST and friends), never a Python loop
over rows. A row is bad when the reader could not parse its line, a value is longer than the text bound, a
required value is empty, a value does not parse as its contract type, a parsed value is implausible (a
timestamp before 1900 or after its file was read, a birth date before 1800 or in the future, an amount
beyond a billion: bounds in `plausibility.py`), or it repeats the primary key of an earlier good row of the
same extract (the first occurrence is kept; later ones are quarantined naming the first row).
Reasons are only built for bad rows, so a clean batch costs little more than its casts. A reason quotes at
most SHOWN_CHARS of a value and never an oversize one; a quarantined record keeps RAW_VALUE_CHARS per value.
"""

from __future__ import annotations

from datetime import datetime, time

from touchpoint.ingest.contract import Column, EntitySpec, Kind, original_name
from touchpoint.ingest.plausibility import Plausibility
from touchpoint.ingest.readers import clipped
from touchpoint.sql_text import quote_ident, sql_literal

BOOLEAN_TRUE = ("true", "1", "yes")
BOOLEAN_FALSE = ("false", "0", "no")
# The landing relation's column with the latest believable time of each row's batch (load.py sets it).
LATEST_PLAUSIBLE = "_latest_plausible"
# How much of a value a reason quotes: enough to recognise it, never a record's worth of personal data.
SHOWN_CHARS = 100
# How much of each value audit.quarantine.raw_record keeps: enough to fix the row at its source, while a
# 10 MB field or a whole file swallowed by an open quote stays out of the audit tables.
RAW_VALUE_CHARS = 1_000
# A reader's reason quotes no value (readers.py keeps 200 characters of each DuckDB message); this bound is for
# the few messages of one line together, and for landing files written before messages were cut.
REJECT_REASON_CHARS = 500

# (condition, reason) SQL pairs for one value, in the order a reason names them
_Checks = list[tuple[str, str]]

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


def _longer_than(text: str, limit: int) -> str:
    # strlen (bytes) is stored with the string, length (characters) scans it; characters <= bytes, so only
    # values over the limit in bytes are counted in characters.
    return f"(strlen({text}) > {limit} and length({text}) > {limit})"


def truncated(text: str, limit: int = RAW_VALUE_CHARS) -> str:
    """SQL: the text value `text`, cut to `limit` characters with a marker saying how long it was."""
    return (
        f"case when {_longer_than(text, limit)} then left({text}, {limit}) || '… [truncated: ' "
        f"|| length({text}) || ' characters]' else {text} end"
    )


def _shown(text: str) -> str:
    """SQL: a value as a reason quotes it (JSON string, at most SHOWN_CHARS characters)."""
    return f"to_json({truncated(text, SHOWN_CHARS)})"


def _moment(value: datetime) -> str:
    return value.date().isoformat() if value.time() == time.min else value.isoformat(sep=" ")


def _implausible(column: Column, value: str, latest: str, limits: Plausibility) -> _Checks:
    """(condition, reason) pairs for a parsed value outside the plausibility bounds."""
    said = f"{sql_literal(column.name + ': ')} || cast({value} as varchar) || "
    after = f"' is after ' || cast({latest} as varchar) || " + sql_literal(
        f", the extraction time plus {limits.describe_slack()} (implausible)"
    )
    if column.kind is Kind.TIMESTAMP:
        earliest = _moment(limits.earliest_timestamp)
        return [
            (
                f"{value} < timestamp '{limits.earliest_timestamp.isoformat(sep=' ')}'",
                said + sql_literal(f" is before {earliest} (implausible)"),
            ),
            (f"{value} > {latest}", said + after),
        ]
    if column.kind is Kind.DATE:
        # The one DATE column is birth_date: births have their own lower bound (see plausibility.py).
        earliest = limits.earliest_birth_date.isoformat()
        return [
            (f"{value} < date '{earliest}'", said + sql_literal(f" is before {earliest} (implausible)")),
            (
                f"{value} > cast({latest} as date)",
                f"{said}' is after ' || cast(cast({latest} as date) as varchar) || ' (implausible)'",
            ),
        ]
    if column.kind is Kind.AMOUNT:
        bound = f"{limits.max_abs_amount:f}"
        return [(f"abs({value}) > {bound}", said + sql_literal(f" is beyond ±{bound} (implausible)"))]
    return []


def _checks(column: Column, text: str, value: str, latest: str, limits: Plausibility) -> _Checks:
    """(condition, reason) pairs for what can be wrong with one value, in the order a reason names them.

    Each reason is read only when no earlier condition holds: a value too long to show is reported by its
    length alone, never parsed or quoted.
    """
    limit = limits.max_text_chars
    checks = [
        (
            _longer_than(text, limit),
            f"{sql_literal(column.name + ': text of ')} || length({text}) || "
            f"{sql_literal(f' characters, more than the {limit} allowed (implausible; not shown)')}",
        )
    ]
    if column.required:
        checks.append(
            (
                f"({text} is null or not regexp_matches({text}, '\\S'))",
                sql_literal(f"{column.name}: empty required value"),
            )
        )
    if column.kind is not Kind.TEXT:
        checks.append(
            (
                f"({value} is null and regexp_matches({text}, '\\S'))",
                f"{sql_literal(column.name + ': cannot read ')} || {_shown(text)} || "
                f"{sql_literal(' as ' + _KIND_WORD[column.kind])}",
            )
        )
        checks += _implausible(column, value, latest, limits)
    return checks


def _any(checks: _Checks) -> str:
    # coalesce: a comparison with a NULL value is NULL, and NULL must mean "not bad"
    return "coalesce(" + " or ".join(condition for condition, _ in checks) + ", false)"


def _first_reason(checks: _Checks) -> str:
    return "case " + " ".join(f"when {condition} then {reason}" for condition, reason in checks) + " end"


def _text_alias(name: str) -> str:
    return quote_ident(f"_text_{name}")


def _value_checks(
    spec: EntitySpec, landed_columns: list[str], extras: list[str], limits: Plausibility
) -> list[tuple[str, str, _Checks, _Checks]]:
    """Per checked column: (name a reason uses, landed name, checks on the landing relation's columns, the
    same checks on the `typed` CTE's columns)."""
    present = set(landed_columns)
    latest, typed_latest = quote_ident(LATEST_PLAUSIBLE), f"typed.{quote_ident(LATEST_PLAUSIBLE)}"
    checked = []
    for column in spec.columns:
        if column.name not in present and not column.required:
            continue  # an absent optional column has no value that could be bad
        text = quote_ident(column.name) if column.name in present else "null::varchar"
        first = _checks(column, text, typed_expression(column, text), latest, limits)
        text, value = f"typed.{_text_alias(column.name)}", f"typed.{quote_ident(column.name)}"
        checked.append((column.name, column.name, first, _checks(column, text, value, typed_latest, limits)))
    for landed in extras:
        extra = Column(clipped(original_name(landed), SHOWN_CHARS))  # a file's name for a column can be long too
        first = _checks(extra, quote_ident(landed), "null", latest, limits)
        second = _checks(extra, f"typed.{_text_alias(landed)}", "null", typed_latest, limits)
        checked.append((extra.name, landed, first, second))
    return checked


def checked_query(
    spec: EntitySpec,
    landed_columns: list[str],
    landing: str,
    batch_column: str | None = None,
    limits: Plausibility | None = None,
) -> str:
    """SELECT over the landing relation `landing`: typed contract columns (contract order), `_extra`,
    `_source_file`, `_row_number`, and `_problem_column` / `_problem_reason` (both NULL for a good row).

    `landing` also has LATEST_PLAUSIBLE, the latest believable time of the row's batch. With `batch_column`,
    `landing` holds several batches: that column is carried through, and a primary key is a duplicate only
    when it repeats inside one batch (row numbers are per batch). Columns of `landed_columns` that are not in
    the contract go to `_extra`, keyed by their file's own name (`contract.original_name`)."""
    limits = limits or Plausibility()
    extras = extra_columns(spec, landed_columns)
    checked = _value_checks(spec, landed_columns, extras, limits)
    partition = [batch_column] if batch_column else []
    return f"""
        with typed as (
            {_typed_rows(spec, landed_columns, extras, checked, partition, landing)}
        ),
        duplicates as (
            {_repeated_keys(spec, partition)}
        )
        {_judged_rows(spec, checked, partition)}
    """


def _typed_rows(
    spec: EntitySpec,
    landed_columns: list[str],
    extras: list[str],
    checked: list[tuple[str, str, _Checks, _Checks]],
    partition: list[str],
    landing: str,
) -> str:
    """The `typed` CTE: each landed row with its contract columns typed, the text of every checked value
    (for the reasons), extras as JSON, and `_is_good` (read by the reader, nothing wrong with any value)."""
    source_text = _source_text(spec, landed_columns)
    text_select = "".join(
        f"{source_text.get(landed, quote_ident(landed))} as {_text_alias(landed)},\n" for _, landed, _, _ in checked
    )
    carried = "".join(f"{quote_ident(c)},\n" for c in partition)
    return f"""select
                {typed_contract_columns(spec, landed_columns)},
                {text_select}
                {_extra_json(extras)} as _extra,
                {carried}_source_file,
                _row_number,
                _reject_reason,
                {quote_ident(LATEST_PLAUSIBLE)},
                {_good_condition(checked)} as _is_good
            from {landing}"""


def _source_text(spec: EntitySpec, landed_columns: list[str]) -> dict[str, str]:
    present = set(landed_columns)
    return {c.name: quote_ident(c.name) if c.name in present else "null::varchar" for c in spec.columns}


def typed_contract_columns(spec: EntitySpec, landed_columns: list[str]) -> str:
    """SQL select list over a landing relation: every contract column typed, in contract order."""
    source_text = _source_text(spec, landed_columns)
    return ",\n".join(f"{typed_expression(c, source_text[c.name])} as {quote_ident(c.name)}" for c in spec.columns)


def _extra_json(extras: list[str]) -> str:
    if not extras:
        return "null::json"
    return "json_object(" + ", ".join(f"{sql_literal(original_name(c))}, {quote_ident(c)}" for c in extras) + ")"


def _good_condition(checked: list[tuple[str, str, _Checks, _Checks]]) -> str:
    any_bad = " or ".join(_any(first) for _, _, first, _ in checked) or "false"
    return f"_reject_reason is null and not ({any_bad})"


def extra_columns(spec: EntitySpec, landed_columns: list[str]) -> list[str]:
    """The landed columns that are not in the contract (they go to `_extra`)."""
    return [c for c in landed_columns if c not in set(spec.column_names)]


def clean_row_condition(spec: EntitySpec, landed_columns: list[str], limits: Plausibility | None = None) -> str:
    """SQL over a landing relation, true exactly when `checked_query` finds nothing wrong with the row itself (its
    `_is_good`: the same conditions, built by the same code). A repeated primary key is judged apart."""
    limits = limits or Plausibility()
    return _good_condition(_value_checks(spec, landed_columns, extra_columns(spec, landed_columns), limits))


def clean_row_values(spec: EntitySpec, landed_columns: list[str]) -> str:
    """SQL select list over a landing relation: the typed contract columns and `_extra`, as `checked_query` gives
    them for a good row."""
    extras = extra_columns(spec, landed_columns)
    return f"{typed_contract_columns(spec, landed_columns)},\n{_extra_json(extras)} as _extra"


def _repeated_keys(spec: EntitySpec, partition: list[str]) -> str:
    """The `duplicates` CTE: primary keys (per batch, with a partition) that more than one good row carries,
    with the first row that carries each."""
    key = ", ".join(quote_ident(k) for k in [*partition, *spec.primary_key])
    return f"""select {key}, min(_row_number) as _first_row
            from typed
            where _is_good
            group by {key}
            having count(*) > 1"""


def _judged_rows(spec: EntitySpec, checked: list[tuple[str, str, _Checks, _Checks]], partition: list[str]) -> str:
    """The final SELECT: contract columns, load columns, and the first bad column and every reason of a bad row
    (a reader's reject, bad values, or a repeated primary key naming the row that first had it)."""
    names = ", ".join(f"case when {_any(second)} then {sql_literal(name)} end" for name, _, _, second in checked)
    reasons = ", ".join(_first_reason(second) for _, _, _, second in checked)
    key_text = " || ', ' || ".join(
        f"{sql_literal(k + '=')} || {truncated(f'cast(typed.{quote_ident(k)} as varchar)', SHOWN_CHARS)}"
        for k in spec.primary_key
    )
    key_match = " and ".join(
        f"typed.{quote_ident(k)} = duplicates.{quote_ident(k)}" for k in [*partition, *spec.primary_key]
    )
    carried_out = "".join(f"typed.{quote_ident(c)},\n" for c in partition)
    contract = ", ".join(f"typed.{quote_ident(c)}" for c in spec.column_names)
    return f"""select
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
                when typed._reject_reason is not null then {truncated("typed._reject_reason", REJECT_REASON_CHARS)}
                when not typed._is_good then
                    array_to_string(list_filter([{reasons or "null"}], lambda x: x is not null), '; ')
                when typed._row_number > duplicates._first_row then
                    'duplicate primary key (' || {key_text}
                    || ') in this extract; first seen at row ' || duplicates._first_row
            end as _problem_reason
        from typed
        left join duplicates on {key_match} and typed._is_good"""


def raw_record(landed_columns: list[str], landed: str) -> str:
    """SQL: a quarantined row as JSON text, from the landing relation aliased `landed`.

    The row's values keyed by their file's own names, or `{"line": ...}` for a line the reader could not
    parse; every value truncated to RAW_VALUE_CHARS.
    """
    values = ", ".join(
        f"{sql_literal(original_name(c))}, {truncated(f'{landed}.{quote_ident(c)}')}" for c in landed_columns
    )
    line = truncated(f"{landed}._raw_line")
    return (
        f"cast(case when {landed}._reject_reason is not null then json_object('line', {line}) "
        f"else json_object({values}) end as varchar)"
    )
