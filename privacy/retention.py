"""Retention: personal data is kept only as long as the policy says, layer by layer.

- landing: the Parquet file of a batch extracted more than N days before the as-of, once it is loaded
  (`TOUCHPOINT_RETENTION_LANDING_DAYS`, default 400);
- quarantine: `audit.quarantine.raw_record`, and the values its `reason` names, N days after the row was
  quarantined (`TOUCHPOINT_RETENTION_QUARANTINE_DAYS`, default 90);
- score history: the per-person partitions of the score tables (SCORE_HISTORIES, one partition per run's as-of)
  older than N days are thinned to one per calendar month, the month's last
  (`TOUCHPOINT_RETENTION_SCORE_HISTORY_DAYS`, default 35). Scores profile people, so kept daily forever they would
  breach storage limitation. They would also make every day dearer: at 1M customers a run adds 3.2M rows to them,
  and publish writes every row again each day.

`never` (or an empty value) keeps a layer forever. Days count back from the run's as-of, not the wall clock, so a
rerun or backfill decides the same way. A pending or held batch never expires: it still waits for a load or a
decision. An expired batch's manifest moves to `state/ingest/expired/`, so the loader no longer looks for its
file; the rows it loaded stay in `raw`, but a warehouse rebuilt from landing alone no longer has them.
Everything expired is recorded in `audit.retention_log` (counts and batch ids, never values), one row per layer
and run that expired something, so a rerun that finds nothing new leaves the log as it was.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb

from touchpoint.config import Paths
from touchpoint.ingest.landing import BatchManifest, manifests_dir, read_manifests
from touchpoint.privacy.pii_columns import reason_values
from touchpoint.sql_text import sql_literal_list
from touchpoint.warehouse import relation_exists

DEFAULT_DAYS = {"landing": 400, "quarantine": 90, "score_history": 35}
_SETTING = {
    "landing": "TOUCHPOINT_RETENTION_LANDING_DAYS",
    "quarantine": "TOUCHPOINT_RETENTION_QUARANTINE_DAYS",
    "score_history": "TOUCHPOINT_RETENTION_SCORE_HISTORY_DAYS",
}
# Tables holding a partition of every person's scores per as-of (ml/README.md, marts.customer_rfm_history).
# ml.segment_membership_changes is not one: it holds the changes only, and thinning would lose some.
# The ML stage compares a run's segments with the previous run's: score history keeps at least that day.
_MIN_DAYS = {"score_history": 1}
SCORE_HISTORIES = ("marts.customer_rfm_history", "ml.customer_segments", "ml.customer_propensity", "ml.customer_clv")
# Batches in these states are done with: loaded, or released or dropped by a person (ingest/batches.py).
_FINAL_STATES = ("loaded", "released", "dropped")
# The values a reason names (pii_columns.reason_values: quoted, or in an implausibility) become this on expiry.
_EXPIRED_VALUE = '"[expired]"'

RETENTION_DDL = """create table if not exists audit.retention_log (
    run_id varchar, as_of date, layer varchar, cutoff date, items bigint, detail varchar, applied_at timestamp)"""


class RetentionSettingError(ValueError):
    """A retention setting is not a whole number of days (or `never`)."""


@dataclass(frozen=True)
class RetentionPolicy:
    landing_days: int | None = DEFAULT_DAYS["landing"]  # None: kept forever
    quarantine_days: int | None = DEFAULT_DAYS["quarantine"]
    score_history_days: int | None = DEFAULT_DAYS["score_history"]

    @classmethod
    def from_env(cls) -> RetentionPolicy:
        return cls(
            landing_days=_days_setting("landing"),
            quarantine_days=_days_setting("quarantine"),
            score_history_days=_days_setting("score_history"),
        )


@dataclass(frozen=True)
class RetentionOutcome:
    layer: str
    cutoff: date | None  # None: the layer is kept forever
    items: int  # landing files deleted, or quarantine rows whose raw record expired
    detail: str


def _days_setting(layer: str) -> int | None:
    name = _SETTING[layer]
    text = os.environ.get(name)
    if text is None:
        return DEFAULT_DAYS[layer]
    if text.strip().lower() in ("", "never"):
        return None
    if not text.strip().isdigit():
        raise RetentionSettingError(f"{name} must be a whole number of days or 'never', not {text!r}")
    if int(text) < _MIN_DAYS.get(layer, 0):
        raise RetentionSettingError(f"{name} must be at least {_MIN_DAYS[layer]} day (or 'never'), not {text!r}")
    return int(text)


def apply_retention(
    paths: Paths, con: duckdb.DuckDBPyConnection, as_of: date, run_id: str, policy: RetentionPolicy
) -> list[RetentionOutcome]:
    """Expire what the policy says is past its time, record it in audit.retention_log, return what was done."""
    con.execute("create schema if not exists audit")
    con.execute(RETENTION_DDL)
    outcomes = [
        expire_landing(paths, con, as_of, policy.landing_days),
        expire_quarantine(con, as_of, policy),
        thin_score_history(con, as_of, policy.score_history_days),
    ]
    for outcome in (o for o in outcomes if o.items):  # only what expired: a rerun that expires nothing adds nothing
        con.execute(
            "insert into audit.retention_log values (?, ?, ?, ?, ?, ?, now()::timestamp)",
            [run_id, as_of, outcome.layer, outcome.cutoff, outcome.items, outcome.detail],
        )
    return outcomes


def _cutoff(as_of: date, days: int | None) -> date | None:
    return None if days is None else as_of - timedelta(days=days)


def expire_landing(paths: Paths, con: duckdb.DuckDBPyConnection, as_of: date, days: int | None) -> RetentionOutcome:
    """Delete the landing files of finished batches extracted before the cutoff; park their manifests."""
    cutoff = _cutoff(as_of, days)
    if cutoff is None:
        return RetentionOutcome("landing", None, 0, "kept forever")
    old = [m for m in read_manifests(paths) if date.fromisoformat(m.extract_date) < cutoff]
    finished = _finished_batches(con, [m.batch_id for m in old])
    expired = [m for m in old if m.batch_id in finished]
    for manifest in expired:
        _expire_batch(paths, manifest)
    waiting = len(old) - len(expired)
    detail = json.dumps({"batches": [m.batch_id for m in expired], "kept_unfinished": waiting})
    return RetentionOutcome("landing", cutoff, len(expired), detail)


def _finished_batches(con: duckdb.DuckDBPyConnection, batch_ids: list[str]) -> set[str]:
    if not batch_ids:
        return set()
    exists = con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'audit' and table_name = 'load_batches'"
    ).fetchone()[0]
    if not exists:
        return set()
    rows = con.execute(
        f"select batch_id from audit.load_batches where batch_id in (select unnest({sql_literal_list(batch_ids)})) "
        f"and status in (select unnest({sql_literal_list(list(_FINAL_STATES))}))"
    ).fetchall()
    return {row[0] for row in rows}


def _expire_batch(paths: Paths, manifest: BatchManifest) -> None:
    # The manifest moves first: a crash between the two steps leaves a parked manifest and a file the next
    # run's retention no longer sees, never a manifest whose file is gone (which the loader would trip on).
    parked = paths.state / "ingest" / "expired"
    parked.mkdir(parents=True, exist_ok=True)
    source = manifests_dir(paths) / f"{manifest.batch_id}.json"
    if source.exists():
        os.replace(source, parked / source.name)
    manifest.landing_path(paths).unlink(missing_ok=True)


def expire_quarantine(con: duckdb.DuckDBPyConnection, as_of: date, policy: RetentionPolicy) -> RetentionOutcome:
    """Null the raw records of quarantine rows older than the cutoff, and blank the values their reasons quote."""
    cutoff = _cutoff(as_of, policy.quarantine_days)
    if cutoff is None:
        return RetentionOutcome("quarantine", None, 0, "kept forever")
    exists = con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'audit' and table_name = 'quarantine'"
    ).fetchone()[0]
    if not exists:
        return RetentionOutcome("quarantine", cutoff, 0, "{}")
    reason, values = "reason", []
    for pattern, replacement in reason_values(_EXPIRED_VALUE):
        reason, values = f"regexp_replace({reason}, ?, ?, 'g')", [*values, pattern, replacement]
    expired = con.execute(
        f"""update audit.quarantine
        set raw_record = null, reason = {reason}
        where quarantined_at < ? and raw_record is not null""",
        [*values, datetime.combine(cutoff, datetime.min.time())],
    ).fetchone()[0]
    return RetentionOutcome("quarantine", cutoff, int(expired), "{}")


def thin_score_history(con: duckdb.DuckDBPyConnection, as_of: date, days: int | None) -> RetentionOutcome:
    """Delete the partitions of SCORE_HISTORIES dated before the cutoff, except each calendar month's last one
    (the latest as-of of that month in the table, so a month still running keeps its days until they age)."""
    cutoff = _cutoff(as_of, days)
    if cutoff is None:
        return RetentionOutcome("score_history", None, 0, "kept forever")
    removed: dict[str, int] = {}
    for table in (t for t in SCORE_HISTORIES if relation_exists(con, *t.split("."))):
        rows = con.execute(
            f"""delete from {table}
            where as_of < ?
                and as_of not in (select max(as_of) from {table} group by date_trunc('month', as_of))""",
            [cutoff],
        ).fetchone()[0]
        if rows:
            removed[table] = int(rows)
    return RetentionOutcome("score_history", cutoff, sum(removed.values()), json.dumps({"rows": removed}))
