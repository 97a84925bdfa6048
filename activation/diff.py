"""Which rows a sync should hold now, and how that differs from what the destination holds.

The source query runs on the published analytics warehouse (read-only, pseudonymised): it gives the sync's own
fields and whether each person's consent for the sync's purpose is granted, and never sees a clear identifier.
Its rows stream into the sync's own connection, where the declared personal fields are joined in by person_id
from the pii file's `persons` (attached read-only for that one statement), clear or as SHA-256. Each row gets
- `_key`: the primary key as text,
- `_row_hash`: md5 of the JSON of the fields as sent (a changed value means an update),
- `_reject_reason`: why it may not be sent (`missing_key`, `missing_consent`, `invalid_email`, judged on the
  clear email before any hashing) or null.
A sync with a holdout then marks the eligible rows of its control arm `_held_out` (`experiments.py`): they are
not sent, and not rejections either (counted as `held_out`).
Eligible rows not held out are compared with the sync state (`synced`): new keys are inserts, changed hashes
updates, keys no longer eligible (left the audience, consent withdrawn, email became invalid, now in the
control arm of a holdout added after they were sent) deletes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from touchpoint.activation.definitions import SyncDefinition
from touchpoint.activation.sql_guard import SqlRefused, check_filter, check_source_sql, filter_columns
from touchpoint.shell import sandbox_refusal
from touchpoint.sql_text import quote_ident, sql_literal

# Deliberately simple: one @, no spaces, a dot in the domain. Staging already validates emails; this is
# the last line of defence before an address reaches a marketing tool.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
REJECT_REASONS = ("missing_key", "missing_consent", "invalid_email")
PII_CATALOG = "sync_pii"  # the pii file, attached to the sync's own connection while candidates are built


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
    held_out: int = 0  # eligible, but in the control arm of the sync's experiment: never sent, not a rejection

    @property
    def changes(self) -> int:
        return self.inserts + self.updates + self.deletes


def source_query(sync: SyncDefinition) -> str:
    """The SQL run on the published analytics warehouse: the sync's fields but its personal ones, and whether
    the person's consent for the sync's purpose is granted (`_consent_granted`)."""
    own = [f for f in sync.fields if f not in sync.personal_fields]
    columns = ", ".join(quote_ident(f) for f in own)
    # re-checked here too: a definition may be built without `parse_sync_definition` (tests, `replace`)
    where = f"where ({check_filter(sync.filter)})" if sync.filter else ""
    _require_purpose(sync)
    # one row per person and purpose in marts.dim_consents; a person without one is not sent
    return f"""
with audience as (
    select {columns}
    from ({sync.source_sql}) as source_query
    {where}
),
consent as (
    select person_id, is_granted
    from marts.dim_consents
    where purpose = {sql_literal(sync.consent_purpose)}
)
select
    audience.*,
    consent.is_granted is true as _consent_granted
from audience
left join consent on consent.person_id = audience.person_id
"""


def sent_values(sync: SyncDefinition) -> dict[str, str]:
    """field -> SQL of the value sent, over `audience` (the source query's rows) and `persons` (the pii file's)."""
    values = {f: f"audience.{quote_ident(f)}" for f in sync.fields if f not in sync.personal_fields}
    for name, form in sync.personal_fields.items():
        clear = f"persons.{quote_ident(name)}"
        # normalised as staged (email lower-cased and trimmed, phone E.164); the trim and lower make other text
        # (names) match the way ad platforms normalise before hashing
        values[name] = clear if form == "clear" else f"sha256(lower(trim(cast({clear} as varchar))))"
    return values


def candidates_query(sync: SyncDefinition, persons: str | None) -> str:
    """SQL over `source_stream` (the source query's rows) joined with `persons` (the pii file's table, needed
    when the sync has personal fields): the rows as sent, with `_key`, `_row_hash` and `_reject_reason`."""
    values = sent_values(sync)
    select = ", ".join(f"{values[f]} as {quote_ident(f)}" for f in sync.fields)
    hash_struct = ", ".join(f"{sql_literal(f)}: {values[f]}" for f in sync.fields)
    key = values[sync.primary_key]
    reasons = [f"when {key} is null then 'missing_key'", "when not audience._consent_granted then 'missing_consent'"]
    if sync.email_field:
        # the clear address, before any hashing: a hashed invalid address would match nobody
        email = f"persons.{quote_ident(sync.email_field)}" if sync.email_field in sync.personal_fields \
            else values[sync.email_field]
        reasons.append(
            f"when {email} is null or length({email}) > 254 "
            f"or not regexp_full_match({email}, {sql_literal(EMAIL_PATTERN)}) then 'invalid_email'"
        )
    join = ""
    if sync.personal_fields:
        if persons is None:
            raise SyncSourceError(f"sync {sync.name!r} has personal fields but no pii persons to read them from")
        join = f"left join {persons} as persons on persons.person_id = audience.person_id"
    return f"""
select
    {select},
    cast({key} as varchar) as _key,
    md5(to_json({{{hash_struct}}})) as _row_hash,
    case {" ".join(reasons)} end as _reject_reason
from source_stream as audience
{join}
"""


@contextmanager
def pii_persons(con: duckdb.DuckDBPyConnection, sync: SyncDefinition, pii_db: Path | None) -> Iterator[str | None]:
    """The pii file's persons attached read-only to `con` (the sync's own connection, never the analyst one),
    as a table name for `candidates_query`; None when the sync sends no personal field."""
    if not sync.personal_fields:
        yield None
        return
    if pii_db is None or not Path(pii_db).is_file():
        raise SyncSourceError(
            f"sync {sync.name!r} sends personal fields {sorted(sync.personal_fields)} but there is no pii file at "
            f"{pii_db}: run the pipeline to publish it"
        )
    con.execute(f"attach {sql_literal(str(pii_db))} as {PII_CATALOG} (read_only)")
    try:
        present = {row[0] for row in con.execute(
            "select column_name from information_schema.columns where table_catalog = ? and table_name = 'persons'",
            [PII_CATALOG],
        ).fetchall()}
        missing = sorted(set(sync.personal_fields) - present)
        if missing or "person_id" not in present:
            raise SyncSourceError(
                f"sync {sync.name!r}: personal field(s) {missing} are not columns of the pii file's persons "
                f"({', '.join(sorted(present - {'person_id'})) or 'no such table'})"
            )
        yield f"{PII_CATALOG}.main.persons"
    finally:
        con.execute(f"detach {PII_CATALOG}")


def load_candidates(
    con: duckdb.DuckDBPyConnection,
    published: duckdb.DuckDBPyConnection,
    sync: SyncDefinition,
    pii_db: Path | None = None,
) -> None:
    """Stream the sync's source rows from the published warehouse into temp table `candidates` of `con`, with
    its personal fields from the pii file `pii_db`.

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
        with pii_persons(con, sync, pii_db) as persons:
            con.execute(f"create or replace temp table candidates as {candidates_query(sync, persons)}")
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
    """Diff `candidates` against `synced` into temp tables `desired` and `changes`; return the counts.

    Rows marked `_held_out` (a holdout's control arm, `experiments.apply_holdout`) are left out of `desired`."""
    has_holdout = "_held_out" in con.sql("select * from candidates limit 0").columns
    sent = "* exclude (_held_out)" if has_holdout else "*"
    held = "and not _held_out" if has_holdout else ""
    con.execute(
        f"create or replace temp table desired as select {sent} from candidates where _reject_reason is null {held}"
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
    held_out = (
        con.execute("select count(*) from candidates where _reject_reason is null and _held_out").fetchall()[0][0]
        if has_holdout
        else 0
    )
    return SyncPlan(
        sync_name=sync.name,
        destination_type=sync.destination.type,
        eligible=int(eligible),
        inserts=int(counts.get("insert", 0)),
        updates=int(counts.get("update", 0)),
        deletes=int(counts.get("delete", 0)),
        ineligible={str(k): int(v) for k, v in ineligible.items()},
        sample_keys=samples,
        held_out=int(held_out),
    )
