"""Honour erasure requests, and keep erased people out: the run stage between dbt's staging and identity layers.

Each run, when there is a pending request or a suppression list (privacy/erasure_requests.py):
1. Hash every identifier of every raw row in scope (`staging.stg_privacy__record_identifiers`, normalised as
   staging normalises it) with the suppression key. In scope: every raw row when a request is pending, else
   only the batches no earlier run checked (a later extract holding an erased email).
2. Follow the identity graph: the rows whose identifier is suppressed name records; `identity.person_map` (the
   last run's graph) names their persons and every other record of those persons. Each identifier found on
   those records joins the suppression list unless a person who is not erased also carries it (a shared
   household phone stays theirs). Repeat until nothing new is found.
3. Delete those rows from raw (and held), their records from the staging tables dbt built before this stage
   (`STAGED_TABLES`), their landing rows (the Parquet files are rewritten, audited in the request and the batch
   manifest), their quarantined rows, their identity.person_map rows, every row of an erased person in the
   tables dbt does not rebuild (ML history, person_id history, the incremental person_map and web sessions,
   sync rejections), and their values in files under `<home>/activation` and the syncs' rejection files; the
   identity match model's kept estimates are dropped, so it estimates again without them.
4. Mark the working warehouse for compaction: publish rewrites the file once dbt rebuilt every table, so no
   deleted row survives in a free block (`compact_database`).

Syncs then see the person gone from every audience and send a delete through each destination that holds them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from touchpoint.config import RunContext
from touchpoint.incremental import STAGED_BY_IDENTIFIER, STAGED_TABLES, STATE_TABLE, models_recording
from touchpoint.kept_state import PAIR_SCORES_MODEL, PAIR_SCORES_STATE, kept_table
from touchpoint.sql_text import sql_literal
from touchpoint.warehouse import relation_exists

from .erasure_files import rewrite_landing, scrub_activation_files, scrub_text_files
from .erasure_requests import (
    ErasureRequest,
    identifier_text,
    load_requests,
    privacy_state,
    read_suppression,
    save_request,
    write_suppression,
)
from .keys import suppression_key
from .pseudonyms import SUPPRESSION_PADS, connection_setup, hmac_sql

IDENTIFIERS_VIEW = "staging.stg_privacy__record_identifiers"
CHECKED_DDL = "create table if not exists audit.suppression_checked_batches (batch_id varchar, checked_at timestamp)"
_MAX_ROUNDS = 10  # the graph is followed until nothing new; a person's records link within a few rounds


@dataclass
class ErasureOutcome:
    requests_honoured: int = 0
    persons_erased: int = 0
    identifiers_suppressed: int = 0  # the list's size after this run
    removed: dict[str, int] = field(default_factory=dict)

    @property
    def erased_anything(self) -> bool:
        return any(self.removed.values())


def compaction_marker(ctx: RunContext):
    return privacy_state(ctx.paths) / "compact_pending"


def honour_erasures(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> ErasureOutcome:
    """Apply the suppression list and every pending request to the working warehouse, landing and files.

    The plan (rows, records and persons to remove, identifiers to suppress) is worked out first and the grown
    suppression list saved before anything is deleted; the file rewrites can be repeated, and the warehouse
    deletes are one transaction, so a failed run leaves the requests pending and the next run redoes it all.
    """
    pending = load_requests(ctx.paths, "pending")
    suppression = read_suppression(ctx.paths)
    if not pending and suppression.num_rows == 0:
        return ErasureOutcome()
    for statement in connection_setup(suppression_key(), SUPPRESSION_PADS):
        con.execute(statement)
    con.execute(CHECKED_DDL)
    _load_suppressed(con, suppression, pending)
    _hash_rows_in_scope(con, full=bool(pending))
    if pending:
        _follow_graph(con)
    else:
        _suppressed_rows_only(con)
    _erased_values(con)
    _doom_quarantined_rows(con)
    outcome = ErasureOutcome(
        requests_honoured=len(pending),
        persons_erased=con.execute("select count(*) from _erased_persons").fetchall()[0][0],
    )
    outcome.identifiers_suppressed = _save_suppression(ctx, con)
    outcome.removed = _delete_everywhere(ctx, con)
    if outcome.erased_anything:
        marker = compaction_marker(ctx)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(ctx.run_id + "\n", encoding="utf-8")
    _close_requests(ctx, pending, outcome.removed)
    return outcome


def _load_suppressed(con: duckdb.DuckDBPyConnection, suppression: pa.Table, pending: list[ErasureRequest]) -> None:
    requested = pa.table({
        "identifier_kind": [i["kind"] for r in pending for i in r.identifiers],
        "hash": [i["hash"] for r in pending for i in r.identifiers],
        "request_id": [r.request_id for r in pending for _ in r.identifiers],
    })
    con.register("_listed", suppression.select(["identifier_kind", "hash", "request_id"]))
    con.register("_requested", requested.cast(pa.schema([(n, pa.string()) for n in requested.column_names])))
    try:
        con.execute(
            "create or replace temp table _suppressed as select identifier_kind, hash, min(request_id) as request_id, "
            "bool_or(is_requested) as is_requested from (select *, false as is_requested from _listed "
            "union all select *, true from _requested) group by identifier_kind, hash"
        )
    finally:
        con.unregister("_listed")
        con.unregister("_requested")


def _hash_rows_in_scope(con: duckdb.DuckDBPyConnection, *, full: bool) -> None:
    """`_ids`: the identifiers of the raw rows in scope, each with its suppression hash (one HMAC per distinct
    identifier, not per row). Without a pending request only the batches no run checked yet are in scope, named
    as a literal list so DuckDB filters each raw table before normalising anything."""
    scope = ""
    if not full:
        unchecked = [row[0] for row in con.execute(
            "select batch_id from audit.load_batches where batch_id not in "
            "(select batch_id from audit.suppression_checked_batches)").fetchall()]
        scope = f"where batch_id in ({', '.join(sql_literal(b) for b in unchecked)})" if unchecked else "where false"
    con.execute(f"create or replace temp table _rows as select * from {IDENTIFIERS_VIEW} {scope}")
    digest = hmac_sql(identifier_text("identifier_kind", "identifier"), SUPPRESSION_PADS)
    con.execute(
        f"create or replace temp table _ids as select rows.*, hashes.hash from _rows as rows join ("
        f"select identifier_kind, identifier, {digest} as hash from (select distinct identifier_kind, identifier "
        "from _rows)) as hashes using (identifier_kind, identifier)"
    )


def _suppressed_rows_only(con: duckdb.DuckDBPyConnection) -> None:
    """A run with no request: drop each new row that carries a suppressed identifier and is not already a record
    of a known person (a household phone an erased person had stays with the household's rows). No person is
    erased and the list does not grow: only a request can do that."""
    con.execute("create or replace temp table _erased_persons (person_id varchar)")
    con.execute("create or replace temp table _erased_records (source_entity varchar, record_id varchar)")
    known = ("(source_entity, record_id) in (select (source_entity, source_record_id) from identity.person_map)"
             if relation_exists(con, "identity", "person_map") else "false")
    con.execute(
        "create or replace temp table _doomed as select distinct source_entity, batch_id, row_number from _ids "
        f"where hash in (select hash from _suppressed) and not coalesce({known}, false)"
    )


def _follow_graph(con: duckdb.DuckDBPyConnection) -> None:
    """`_erased_persons`, `_erased_records` and `_doomed` (the raw rows to delete), from this run's requests only
    (the list's older entries never pull a person in), growing `_suppressed` with each identifier only the erased
    people carry."""
    has_map = relation_exists(con, "identity", "person_map")
    person_map = "identity.person_map" if has_map else (
        "(select null::varchar as source_entity, null::varchar as source_record_id, null::varchar as person_id "
        "where false)")
    con.execute("create or replace temp table _seeds as select hash from _suppressed where is_requested")
    con.execute("create or replace temp table _erased_records (source_entity varchar, record_id varchar)")
    # a request by person id names the person's hash (`person_id:<id>`); the graph brings their records
    digest = hmac_sql(identifier_text("'person_id'", "person_id"), SUPPRESSION_PADS)
    con.execute(
        f"create or replace temp table _erased_persons as select distinct person_id from {person_map} "
        f"where {digest} in (select hash from _seeds)"
    )
    for _ in range(_MAX_ROUNDS):
        con.execute(
            "insert into _erased_records select distinct source_entity, record_id from _ids "
            "where record_id is not null and hash in (select hash from _seeds) "
            "except select * from _erased_records"
        )
        con.execute(
            f"insert into _erased_persons select distinct person_id from {person_map} as map "
            "where (source_entity, source_record_id) in (select (source_entity, record_id) from _erased_records) "
            "except select * from _erased_persons"
        )
        con.execute(
            f"insert into _erased_records select source_entity, source_record_id from {person_map} "
            "where person_id in (select person_id from _erased_persons) except select * from _erased_records"
        )
        if not _suppress_exclusive_identifiers(con, person_map):
            break
    con.execute(
        "create or replace temp table _doomed as select distinct source_entity, batch_id, row_number from _ids "
        "where hash in (select hash from _seeds) "
        "or (source_entity, record_id) in (select (source_entity, record_id) from _erased_records)"
    )


def _suppress_exclusive_identifiers(con: duckdb.DuckDBPyConnection, person_map: str) -> int:
    """Add to `_suppressed` and `_seeds` the identifiers of erased records that no person outside the erasure
    carries (a household phone stays the household's; the erased person's rows carrying it go all the same)."""
    con.execute(
        "create or replace temp table _candidates as select distinct identifier_kind, identifier, hash from _ids "
        "where (source_entity, record_id) in (select (source_entity, record_id) from _erased_records) "
        "except select identifier_kind, identifier, hash from _ids where hash in (select hash from _seeds)"
    )
    con.execute(
        f"delete from _candidates where (identifier_kind, identifier) in ("
        f"select (ids.identifier_kind, ids.identifier) from _ids as ids "
        f"join {person_map} as map on map.source_entity = ids.source_entity and map.source_record_id = ids.record_id "
        "where map.person_id not in (select person_id from _erased_persons))"
    )
    added = con.execute("select count(*) from _candidates").fetchall()[0][0]
    con.execute("insert into _suppressed select identifier_kind, hash, 'graph', true from _candidates "
                "where hash not in (select hash from _suppressed)")
    con.execute("insert into _seeds select hash from _candidates")
    return added


def forget_staged_batches(
    con: duckdb.DuckDBPyConnection, table: str, entity: str, column: str, record_ids_sql: str
) -> None:
    """Make the next incremental build of staging `table`, and of every model recording `entity`'s batches
    (identity.person_map, fct_web_sessions), re-derive the records `record_ids_sql` names: their rows were
    deleted whole, and a version in raw that survived must come back, as a rebuild would bring it. Forgetting
    the batches that still hold a version of them (audit.staged_batches, dbt_project/macros/incremental.sql)
    makes those batches new to the next build."""
    if not relation_exists(con, *STATE_TABLE.split(".")):
        return
    models = sorted({table, *models_recording(entity)})
    con.execute(
        f"delete from {STATE_TABLE} where model in ({', '.join('?' for _ in models)}) and batch_id in ("
        f'select distinct _batch_id from raw.{entity} where trim("{column}") in ({record_ids_sql}))',
        models,
    )


def _doomed_staged_keys(table: str, entity: str) -> str:
    """SQL naming the values of staging `table`'s key column (STAGED_TABLES) that a doomed raw row holds: the
    record ids of doomed `entity` rows and, for a table of STAGED_BY_IDENTIFIER, the identifier of its own doomed
    raw rows (an order line's order id, when the line came without its order)."""
    doomed = "from _ids as ids join _doomed using (source_entity, batch_id, row_number)"
    keys = f"select ids.record_id {doomed} where ids.source_entity = {sql_literal(entity)}"
    if table in STAGED_BY_IDENTIFIER:
        own_entity, kind = STAGED_BY_IDENTIFIER[table]
        keys += (f" union select ids.identifier {doomed} where ids.source_entity = {sql_literal(own_entity)} "
                 f"and ids.identifier_kind = {sql_literal(kind)}")
    return keys


def _delete_everywhere(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    removed: dict[str, int] = {}
    removed["landing_files_rewritten"], removed["landing_rows"] = rewrite_landing(ctx, con)
    removed["activation_files_rewritten"] = scrub_activation_files(ctx, con)
    removed["log_files_rewritten"] = scrub_text_files(ctx, con)
    con.execute("begin transaction")
    try:
        for (table,) in con.execute(
            "select table_name from duckdb_tables() where schema_name = 'raw' order by 1"
        ).fetchall():
            removed[f"raw.{table}"] = _delete_rows(
                con, f"raw.{table}", "(_batch_id, _row_number) in (select (batch_id, row_number) from _doomed "
                f"where source_entity = '{table}')")
        for table, (entity, column) in _staging_tables(con).items():
            # a record with a doomed version goes whole; the next run's staging re-derives it from whatever
            # version survived in raw (forget_staged_batches)
            doomed_ids = _doomed_staged_keys(table, entity)
            removed[f"staging.{table}"] = _delete_rows(con, f"staging.{table}", f'"{column}" in ({doomed_ids})')
            forget_staged_batches(con, table, entity, column, doomed_ids)
        if relation_exists(con, "identity", "person_map"):
            # by record too: a daily person_map build rewrites only changed records, and a record whose rows all
            # left raw names no batch, so its row would outlive it when its person is not erased
            removed["identity.person_map"] = _delete_rows(
                con, "identity.person_map", "(source_entity, source_record_id) in (select (ids.source_entity, "
                "ids.record_id) from _ids as ids join _doomed using (source_entity, batch_id, row_number))")
        removed["audit.quarantine"] = _delete_rows(
            con, "audit.quarantine",
            "(batch_id, row_number) in (select (batch_id, row_number) from _doomed_quarantine)")
        for schema, table, column in _person_columns(con):
            removed[f"{schema}.{table}"] = removed.get(f"{schema}.{table}", 0) + _delete_rows(
                con, f"{schema}.{table}", f'"{column}" in (select person_id from _erased_persons)')
        removed["audit_values_redacted"] = _redact_audit_text(con)
        removed["identity_estimates_dropped"] = _drop_kept_match_estimates(con)
        if relation_exists(con, "audit", "sync_rejections"):
            removed["audit.sync_rejections"] = _delete_rows(
                con, "audit.sync_rejections", "record_key in (select person_id from _erased_persons)")
        _mark_checked(con)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return {location: count for location, count in removed.items() if count}


def _erased_values(con: duckdb.DuckDBPyConnection) -> None:
    """`_erased_values`: the clear values to remove from free text and files (emails, phones, ids, person ids).
    A temp table: it lives in this connection's memory and never reaches the warehouse file."""
    con.execute(
        "create or replace temp table _erased_values as "
        "select distinct identifier_kind, identifier as value from _ids where hash in (select hash from _suppressed) "
        "and ((source_entity, batch_id, row_number) in (select (source_entity, batch_id, row_number) from _doomed)) "
        "union select 'person_id', person_id from _erased_persons"
    )


def _redact_audit_text(con: duckdb.DuckDBPyConnection) -> int:
    """Replace the erased emails and phones by `[erased]` in the audit tables' text (a gate result quoting an
    unexpected value, an extract error naming a row). Returns the values changed."""
    values = [row[0] for row in con.execute(
        "select value from _erased_values where identifier_kind in ('email', 'phone') order by length(value) desc"
    ).fetchall()]
    if not values:
        return 0
    pattern = "(?i)(" + "|".join(re.escape(value) for value in values) + ")"
    changed = 0
    for table, column in con.execute(
        "select table_name, column_name from information_schema.columns where table_schema = 'audit' "
        "and data_type = 'VARCHAR' and table_name not in ('quarantine') order by all"
    ).fetchall():
        changed += con.execute(
            f'update audit."{table}" set "{column}" = regexp_replace("{column}", ?, \'[erased]\', \'g\') '
            f'where regexp_matches("{column}", ?)', [pattern, pattern]).fetchall()[0][0]
    return changed


# Field names of a quarantined record (its file's own column names) -> the identifier kind they carry.
_QUARANTINE_FIELD_KINDS = {
    "contact_id": "crm_contact", "customer_id": "shop_customer", "order_id": "shop_order",
    "loyalty_id": "loyalty_card", "anonymous_id": "web_visitor",
}


def _doom_quarantined_rows(con: duckdb.DuckDBPyConnection) -> None:
    """`_doomed_quarantine`: quarantined rows carrying a suppressed identifier. Each field of the JSON record is
    normalised by its name (an email field as staging cleans emails, a phone in E.164 with the default country,
    an id trimmed), hashed, and matched by equality; an unparsed line is matched on the emails it contains."""
    from .erasure_requests import _normalise_macros

    macros = _normalise_macros()
    kinds = " ".join(f"when field = {sql_literal(name)} then {sql_literal(kind)}"
                     for name, kind in _QUARANTINE_FIELD_KINDS.items())
    kind = f"case {kinds} when field like '%email%' then 'email' when field like '%phone%' then 'phone' end"
    value = (f"case when kind = 'email' then {macros.clean_email('raw_value')} "
             f"when kind = 'phone' then {macros.phone_e164('raw_value', 'null')} else nullif(trim(raw_value), '') end")
    line_emails = "regexp_extract_all(lower(json_extract_string(raw_record, '$.line')), '[^\\s,;\"<>]+@[^\\s,;\"<>]+')"
    con.execute(f"""
        create or replace temp table _doomed_quarantine as
        with fields as (
            select batch_id, row_number, entity, unnest(json_keys(raw_record)) as field, raw_record
            from audit.quarantine where raw_record is not null and json_valid(raw_record)
        ), typed as (
            select batch_id, row_number, entity, {kind} as kind, json_extract_string(raw_record, '$."' || field || '"')
                as raw_value
            from fields
        ), line_values as (
            select batch_id, row_number, entity, 'email' as kind, unnest({line_emails}) as raw_value
            from audit.quarantine where raw_record is not null and json_valid(raw_record)
            and json_exists(raw_record, '$.line')
        ), identified as (
            select batch_id, row_number, entity, kind, {value} as identifier
            from (select * from typed where kind is not null union all select * from line_values)
        )
        select distinct batch_id, row_number, entity as source_entity from identified
        where identifier is not null
          and {hmac_sql(identifier_text("kind", "identifier"), SUPPRESSION_PADS)} in (select hash from _suppressed)
    """)


def _staging_tables(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
    """The staging tables in the warehouse (views read raw, already without the rows) with their entity and
    record-id column; raises if one is not in STAGED_TABLES, rather than leave an erased person's rows in it."""
    tables = [row[0] for row in con.execute(
        "select table_name from duckdb_tables() where schema_name = 'staging' order by 1").fetchall()]
    unknown = [table for table in tables if table not in STAGED_TABLES]
    if unknown:
        raise RuntimeError(
            f"staging tables erasure cannot reach: {', '.join(unknown)}; name their raw entity and record-id "
            "column in touchpoint/incremental.py STAGED_TABLES (or materialise them as views)")
    return {table: STAGED_TABLES[table] for table in tables}


def _person_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    """Person-id columns of the tables dbt does not rebuild from raw every run (histories, incremental models,
    the state they keep in `intermediate`); deleting from the others costs little and leaves no gap."""
    return con.execute(
        "select c.table_schema, c.table_name, c.column_name from information_schema.columns as c "
        "join duckdb_tables() as t on t.schema_name = c.table_schema and t.table_name = c.table_name "
        "where c.table_schema in ('identity', 'intermediate', 'marts', 'ml', 'audit') "
        "and (c.column_name = 'person_id' or c.column_name like '%\\_person\\_id' escape '\\') order by all"
    ).fetchall()


def _drop_kept_match_estimates(con: duckdb.DuckDBPyConnection) -> int:
    """Drop what the identity match model keeps between its full builds (int_person_pairs_scored's estimates, name
    frequencies keyed by pseudonym and record-state hashes): they were counted over the erased people's records.
    The identity build of this same run then estimates again and scores every pair, without them."""
    kept = [kept_table(PAIR_SCORES_MODEL, name) for name in PAIR_SCORES_STATE]
    tables = [row[0] for row in con.execute(
        "select table_name from duckdb_tables() where schema_name = 'intermediate' "
        "and list_contains(?, table_name) order by 1", [kept]).fetchall()]
    for table in tables:
        con.execute(f'drop table intermediate."{table}"')
    return len(tables)


def _delete_rows(con: duckdb.DuckDBPyConnection, table: str, predicate: str) -> int:
    return con.execute(f"delete from {table} where {predicate}").fetchall()[0][0]


def _save_suppression(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> int:
    now = datetime.now(UTC).replace(tzinfo=None)
    table = con.sql(
        f"select identifier_kind, hash, request_id, '{now.isoformat()}'::timestamp as added_at from _suppressed "
        "order by identifier_kind, hash"
    ).to_arrow_table()
    previous = {(k, h): at for k, h, at in zip(*(read_suppression(ctx.paths).column(c).to_pylist()
                                                for c in ("identifier_kind", "hash", "added_at")), strict=True)}
    added_at = [previous.get((k, h), now) for k, h in zip(table.column("identifier_kind").to_pylist(),
                                                          table.column("hash").to_pylist(), strict=True)]
    table = table.set_column(3, "added_at", pa.array(added_at, pa.timestamp("us")))
    write_suppression(ctx.paths, table)
    return table.num_rows


def _mark_checked(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "insert into audit.suppression_checked_batches select distinct batch_id, now()::timestamp from _rows "
        "where batch_id not in (select batch_id from audit.suppression_checked_batches)"
    )


def _close_requests(ctx: RunContext, pending: list[ErasureRequest], removed: dict[str, int]) -> None:
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    for request in pending:
        request.status, request.honoured_at, request.honoured_by_run = "honoured", now, ctx.run_id
        request.removed = dict(removed)  # one run honours all pending requests together: the run's totals
        save_request(ctx.paths, request)
