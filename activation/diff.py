"""Which rows a sync should hold now, and how that differs from what the destination holds.

The source query runs on the published warehouse (read-only). Each row gets
- `_key`: the primary key as text,
- `_row_hash`: md5 of the JSON of the sent fields (a changed value means an update),
- `_reject_reason`: why it may not be sent (`missing_key`, `missing_consent`, `invalid_email`) or null.
Eligible rows are compared with the sync state (`synced`): new keys are inserts, changed hashes updates,
keys no longer eligible (left the audience, consent withdrawn, email became invalid) deletes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from touchpoint.activation.definitions import SyncDefinition
from touchpoint.activation.sql_guard import SqlRefused, check_filter, check_source_sql, filter_columns
from touchpoint.shell import sandbox_refusal
from touchpoint.sql_text import quote_ident, sql_literal

# Deliberately simple: one @, no spaces, a dot in the domain. Staging already validates emails; this is
# the last line of defence before an address reaches a marketing tool.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
REJECT_REASONS = ("missing_key", "missing_consent", "invalid_email")


class SyncSourceError(ValueError):
    """The sync's source query returned something unusable (e.g. a duplicated primary key)."""


@dataclass(frozen=True)
class SyncPlan:
    """What a run would send: counts, a few sample keys per kind of change, and what it holds back."""

    sync_name: str
    destination_type: str
    eligible: int
    inserts: int
    updates: int
    deletes: int
    ineligible: dict[str, int] = field(default_factory=dict)
    sample_keys: dict[str, list[str]] = field(default_factory=dict)
    skipped_reason: str | None = None

    @property
    def changes(self) -> int:
        return self.inserts + self.updates + self.deletes


def source_query(sync: SyncDefinition) -> str:
    """The SQL run on the published warehouse: the sync's rows with key, hash and reject reason."""
    columns = ", ".join(quote_ident(f) for f in sync.fields)
    # re-checked here too: a definition may be built without `parse_sync_definition` (tests, `replace`)
    where = f"where ({check_filter(sync.filter)})" if sync.filter else ""
    hash_struct = ", ".join(f"{sql_literal(f)}: audience.{quote_ident(f)}" for f in sync.fields)
    key = f"audience.{quote_ident(sync.primary_key)}"
    reasons = [f"when {key} is null then 'missing_key'"]
    _require_purpose(sync)
    # one row per person and purpose in marts.dim_consents; a person without one is not sent
    consent_cte = f""",
consent as (
    select person_id, is_granted
    from marts.dim_consents
    where purpose = {sql_literal(sync.consent_purpose)}
)"""
    consent_join = "left join consent on consent.person_id = audience.person_id"
    reasons.append("when consent.is_granted is not true then 'missing_consent'")
    if sync.email_field:
        email = f"audience.{quote_ident(sync.email_field)}"
        reasons.append(
            f"when {email} is null or length({email}) > 254 "
            f"or not regexp_full_match({email}, {sql_literal(EMAIL_PATTERN)}) then 'invalid_email'"
        )
    return f"""
with audience as (
    select {columns}
    from ({sync.source_sql}) as source_query
    {where}
){consent_cte}
select
    audience.*,
    cast({key} as varchar) as _key,
    md5(to_json({{{hash_struct}}})) as _row_hash,
    case {" ".join(reasons)} end as _reject_reason
from audience
{consent_join}
"""


def load_candidates(
    con: duckdb.DuckDBPyConnection, published: duckdb.DuckDBPyConnection, sync: SyncDefinition
) -> None:
    """Stream the sync's source rows from the published warehouse into temp table `candidates` of `con`.

    `published` should be the sandboxed analyst connection (`touchpoint.shell.open_analyst_connection`).
    """
    check_sync_sql(published, sync)
    check_purpose(published, sync)
    try:
        reader = published.sql(source_query(sync)).to_arrow_reader(100_000)
    except duckdb.Error as error:
        raise _source_failed(sync, error) from error
    con.register("source_stream", reader)
    try:
        con.execute("create or replace temp table candidates as select * from source_stream")
    finally:
        con.unregister("source_stream")
    duplicates = con.execute(
        "select _key, count(*) from candidates where _key is not null group by _key having count(*) > 1 "
        "order by _key limit 5"
    ).fetchall()
    if duplicates:
        raise SyncSourceError(
            f"sync {sync.name!r}: primary key {sync.primary_key!r} is not unique in the source, "
            f"e.g. {duplicates}"
        )


def _require_purpose(sync: SyncDefinition) -> None:
    if not sync.consent_purpose:  # a definition built without parse_sync_definition (tests, `replace`)
        raise SyncSourceError(f"sync {sync.name!r} declares no purpose: a sync without a purpose is refused")


def check_purpose(published: duckdb.DuckDBPyConnection, sync: SyncDefinition) -> None:
    """Refuse a purpose the warehouse has no consents for: nobody could ever be sent, so it is a mistake."""
    _require_purpose(sync)
    try:
        known = [row[0] for row in published.execute("select purpose from marts.consent_purposes").fetchall()]
    except duckdb.Error as error:
        raise SyncSourceError(
            f"sync {sync.name!r}: the published warehouse has no marts.consent_purposes, so consent for "
            f"{sync.consent_purpose!r} cannot be checked (run the pipeline to publish it)"
        ) from error
    if sync.consent_purpose not in known:
        raise SyncSourceError(
            f"sync {sync.name!r}: purpose {sync.consent_purpose!r} is not one of marts.consent_purposes "
            f"({', '.join(sorted(known))})"
        )


def _source_failed(sync: SyncDefinition, error: duckdb.Error) -> SyncSourceError:
    refusal = sandbox_refusal(error)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if refusal is not None:  # one line naming the sync and the reason, not DuckDB's whole message
        return SyncSourceError(f"sync {sync.name!r}: source query refused: {refusal} ({first_line})")
    return SyncSourceError(f"sync {sync.name!r}: its source query failed on the published warehouse: {first_line}")


def check_sync_sql(published: duckdb.DuckDBPyConnection, sync: SyncDefinition) -> None:
    """SyncSourceError unless the source is one SELECT over published schemas and the filter only names its
    columns. DuckDB's own parser is asked too: it is the one that runs the query, so the two cannot disagree
    on how many statements there are."""
    try:
        check_source_sql(sync.source_sql)
        if sync.filter:
            check_filter(sync.filter)
        statements = published.extract_statements(sync.source_sql)
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise SqlRefused("source.sql must be exactly one SELECT query")
    except (SqlRefused, duckdb.ParserException) as error:
        raise SyncSourceError(f"sync {sync.name!r}: {str(error).splitlines()[0]}") from error
    if not sync.filter:
        return
    try:
        source = published.sql(f"select * from ({sync.source_sql}) as source_query limit 0").columns
    except duckdb.Error as error:
        raise _source_failed(sync, error) from error
    unknown = sorted(filter_columns(check_filter(sync.filter)) - set(source))
    if unknown:
        raise SyncSourceError(f"sync {sync.name!r}: filter references columns not in its source: {unknown}")


def build_plan(con: duckdb.DuckDBPyConnection, sync: SyncDefinition, sample_size: int = 5) -> SyncPlan:
    """Diff `candidates` against `synced` into temp tables `desired` and `changes`; return the counts."""
    con.execute(
        "create or replace temp table desired as select * from candidates where _reject_reason is null"
    )
    con.execute(
        """
        create or replace temp table changes as
        select
            case when synced.key is null then 'insert' else 'update' end as _change,
            desired.*
        from desired
        left join synced on synced.key = desired._key
        where synced.key is null or synced.row_hash <> desired._row_hash
        """
    )
    pk = quote_ident(sync.primary_key)
    con.execute(
        f"insert into changes (_change, _key, {pk}) select 'delete', synced.key, synced.key from synced "
        "anti join desired on desired._key = synced.key"
    )
    counts = dict(con.execute("select _change, count(*) from changes group by _change").fetchall())
    samples: dict[str, list[str]] = {}
    for change in ("insert", "update", "delete"):
        rows = con.execute(
            "select _key from changes where _change = ? order by _key limit ?", [change, sample_size]
        ).fetchall()
        samples[change] = [r[0] for r in rows]
    ineligible = dict(
        con.execute(
            "select _reject_reason, count(*) from candidates "
            "where _reject_reason is not null group by 1 order by 1"
        ).fetchall()
    )
    eligible = con.execute("select count(*) from desired").fetchall()[0][0]
    return SyncPlan(
        sync_name=sync.name,
        destination_type=sync.destination.type,
        eligible=int(eligible),
        inserts=int(counts.get("insert", 0)),
        updates=int(counts.get("update", 0)),
        deletes=int(counts.get("delete", 0)),
        ineligible={str(k): int(v) for k, v in ineligible.items()},
        sample_keys=samples,
    )
