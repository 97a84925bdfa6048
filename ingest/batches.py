"""Batches a gate failed on: held out of `raw` with their report until someone releases or drops them.

Why: a bad batch left in `raw` fails the raw gate again on every later run (one order dated wrongly, a flood
of duplicate events), so one bad export would stop the warehouse for good. When the raw gate fails, the
batches this run loaded for the failing tables are moved to `held.<entity>` *if* the gate passes without them;
later runs then go on without them. Nothing is lost: `release` moves the rows back into `raw` (the operator
says the data is right, e.g. a real sales spike), `drop` moves them into `audit.quarantine` with the reason.
`audit.load_batches.status` tells where every batch is: loaded, held, released or dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from touchpoint.config import RunContext
from touchpoint.ingest.contract import ENTITY_SPECS
from touchpoint.ingest.load import add_missing_load_metadata, ensure_tables
from touchpoint.ingest.quarantine import truncated
from touchpoint.sql_text import quote_ident, sql_literal

HELD_SCHEMA = "held"
COMMANDS = "touchpoint batches list | touchpoint batches release <batch_id> | touchpoint batches drop <batch_id>"
_STATUS_COLUMNS = (("held_reason", "varchar"), ("held_at", "timestamp"), ("held_report", "varchar"))


class BatchStateError(ValueError):
    """A batch id that does not exist, or is not in a state the command applies to."""


@dataclass(frozen=True)
class BatchStatus:
    batch_id: str
    entity: str
    source_file: str
    status: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    held_reason: str | None
    held_at: datetime | None
    held_report: str | None


@dataclass(frozen=True)
class HoldOutcome:
    """What happened to this run's batches after a failed raw gate."""

    held: list[BatchStatus]
    # False when the gate still fails without this run's batches: the fault is in data accepted earlier
    # (or in the gate's settings), so nothing was held and the run stops as it is.
    attributable: bool

    def message(self) -> str:
        if self.held:
            listed = "\n".join(
                f"  held {b.batch_id} ({b.entity}, {b.source_file}, {b.rows_loaded:,} rows)" for b in self.held
            )
            return (
                f"{len(self.held)} batch(es) of this run are held out of raw; later runs go on without them:\n"
                f"{listed}\n  review the report, then: {COMMANDS}"
            )
        return "the gate also fails without this run's batches: the problem is in data loaded earlier"


def ensure_batch_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_tables(con)
    con.execute(f"create schema if not exists {HELD_SCHEMA}")
    for name, sql_type in _STATUS_COLUMNS:
        con.execute(f"alter table audit.load_batches add column if not exists {name} {sql_type}")
    add_missing_load_metadata(con, HELD_SCHEMA)  # held rows move back into raw column by column


def list_batches(con: duckdb.DuckDBPyConnection, status: str | None = None) -> list[BatchStatus]:
    """Batches recorded by the loader, newest extract first; only those in `status` when given."""
    ensure_batch_tables(con)
    where, params = ("where status = ?", [status]) if status else ("", [])
    rows = con.execute(
        "select batch_id, entity, source_file, status, rows_read, rows_loaded, rows_quarantined, held_reason, "
        f"held_at, held_report from audit.load_batches {where} order by extract_date desc, entity, batch_id",
        params,
    ).fetchall()
    return [BatchStatus(*row) for row in rows]


def hold_failing_batches(
    ctx: RunContext,
    con: duckdb.DuckDBPyConnection,
    failing_tables: set[str],
    reason: str,
    report: str | None,
    passes_without: Callable[[], bool],
) -> HoldOutcome:
    """Hold the batches this run loaded into `failing_tables` (raw.<entity>) when the gate passes without them.

    `passes_without` judges the gate on the warehouse as it is inside the open transaction; when it still fails,
    the move is rolled back and nothing is held.
    """
    ensure_batch_tables(con)
    entities = sorted(t.removeprefix("raw.") for t in failing_tables if t.startswith("raw."))
    candidates = [
        row[0]
        for row in con.execute(
            "select batch_id from audit.load_batches "
            "where status = 'loaded' and as_of = ? and list_contains(?, entity)",
            [ctx.as_of, entities],
        ).fetchall()
    ]
    if not candidates:
        return HoldOutcome([], attributable=False)
    con.execute("begin transaction")
    try:
        _move(con, candidates, source="raw", target=HELD_SCHEMA)
        con.execute(
            "update audit.load_batches set status = 'held', held_reason = ?, held_at = ?, held_report = ? "
            "where list_contains(?, batch_id)",
            [reason, _now(), report, candidates],
        )
        if not passes_without():
            con.execute("rollback")
            return HoldOutcome([], attributable=False)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return HoldOutcome([b for b in list_batches(con, "held") if b.batch_id in candidates], attributable=True)


def release_batches(con: duckdb.DuckDBPyConnection, batch_ids: list[str]) -> list[BatchStatus]:
    """Move held batches back into raw: the next run builds on them and its gate judges them again."""
    _require_held(con, batch_ids)
    con.execute("begin transaction")
    try:
        _move(con, batch_ids, source=HELD_SCHEMA, target="raw")
        con.execute("update audit.load_batches set status = 'released' where list_contains(?, batch_id)", [batch_ids])
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return [b for b in list_batches(con) if b.batch_id in batch_ids]


def drop_batches(con: duckdb.DuckDBPyConnection, batch_ids: list[str]) -> list[BatchStatus]:
    """Quarantine every row of held batches (reason: dropped, and why it was held); row accounting still adds up."""
    held = {b.batch_id: b for b in _require_held(con, batch_ids)}
    con.execute("begin transaction")
    try:
        for entity in sorted({b.entity for b in held.values()}):
            ids = [i for i in batch_ids if held[i].entity == entity]
            _quarantine_held_rows(con, entity, ids)
            con.execute(f"delete from {HELD_SCHEMA}.{entity} where list_contains(?, _batch_id)", [ids])
        con.execute(
            "update audit.load_batches set status = 'dropped', rows_quarantined = rows_quarantined + rows_loaded, "
            "rows_loaded = 0 where list_contains(?, batch_id)",
            [batch_ids],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return [b for b in list_batches(con) if b.batch_id in batch_ids]


def _quarantine_held_rows(con: duckdb.DuckDBPyConnection, entity: str, batch_ids: list[str]) -> None:
    # The same record shape as the loader's quarantine rows: contract values (and extras) as text, each cut short.
    values = ", ".join(
        f"{sql_literal(c)}, {truncated(f'cast(held.{quote_ident(c)} as varchar)')}"
        for c in ENTITY_SPECS[entity].column_names
    )
    con.execute(
        f"""insert into audit.quarantine
        select held._batch_id, batches.source, batches.entity, held._source_file, held._row_number, null,
            'batch dropped after it was held: ' || coalesce(batches.held_reason, 'no reason recorded'),
            cast(json_object({values}, '_extra', {truncated('cast(held._extra as varchar)')}) as varchar), ?
        from (select * from {HELD_SCHEMA}.{entity} where list_contains(?, _batch_id)) as held
        join audit.load_batches as batches on batches.batch_id = held._batch_id
        order by held._batch_id, held._row_number""",
        [_now(), batch_ids],
    )


def _move(con: duckdb.DuckDBPyConnection, batch_ids: list[str], source: str, target: str) -> None:
    entities = [
        row[0]
        for row in con.execute(
            "select distinct entity from audit.load_batches where list_contains(?, batch_id) order by 1", [batch_ids]
        ).fetchall()
    ]
    for entity in entities:
        con.execute(f"create table if not exists {HELD_SCHEMA}.{entity} as select * from raw.{entity} limit 0")
        con.execute(
            f"insert into {target}.{entity} select * from {source}.{entity} where list_contains(?, _batch_id)",
            [batch_ids],
        )
        con.execute(f"delete from {source}.{entity} where list_contains(?, _batch_id)", [batch_ids])


def _require_held(con: duckdb.DuckDBPyConnection, batch_ids: list[str]) -> list[BatchStatus]:
    if not batch_ids:
        raise BatchStateError("name at least one batch id (see `touchpoint batches list`)")
    known = {b.batch_id: b for b in list_batches(con)}
    for batch_id in batch_ids:
        if batch_id not in known:
            raise BatchStateError(f"no batch {batch_id!r} in audit.load_batches (see `touchpoint batches list`)")
        if known[batch_id].status != "held":
            raise BatchStateError(f"batch {batch_id} is {known[batch_id].status}, not held")
    return [known[i] for i in batch_ids]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
