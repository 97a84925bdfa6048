"""Holdout experiments on sync audiences: who is held out, and the record of every assignment.

A sync that declares `holdout: 10%` (or `0.1`) runs an experiment, named by `experiment:` (default: the sync's
name). Every eligible person of its audience (consenting, valid email, a key) is assigned to an arm:
- `control` when `assignment_unit(person_id, experiment) < holdout`, else `treatment`;
- the unit is the first 15 hex digits of md5('<experiment>|<person_id>') read as a fraction of 16^15, uniform
  on [0, 1): the same person lands in the same arm in every run, backfill and plan, and two experiments split
  people independently. person_id is already a keyed pseudonym-derived id, so hashing it reveals nothing.
- once recorded, a person's arm never changes: a later change of `holdout` applies to people assigned from
  then on (otherwise raising 10% to 20% would move a tenth of the treated into the control).
Control rows are never sent. They are not rejections: a plan counts them as `held_out`, apart from
`ineligible`. A person already sent before the sync had a holdout (the holdout was added later) and now in the
control is deleted from the destination by the next run, like anyone who leaves the audience, and recorded with
`was_sent_before_assignment` so that the readouts can leave such people out of both arms (they were treated
before the experiment began; excluding them by a pre-assignment fact keeps the arms comparable).

The record: a successful run writes the assignments it made (people not recorded before, or recorded only
with a later as-of, as a backfill finds them) as `<home>/state/syncs/<sync>/assignments/<attempt>.parquet`
(`audit.EXPERIMENT_ASSIGNMENTS_SCHEMA`). The sync reads the published warehouse read-only, so, like the sync
audit log (`audit.py`), the files are the system of record and the next pipeline run's load stage replaces
`audit.experiment_assignments` from them (`audit.load_sync_audit`); dbt's `marts.experiment_assignments` keeps
each person's first assignment. An erasure rewrites these files like the
other files under `state/syncs` (privacy/erasure_files.py).
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from touchpoint.activation import audit
from touchpoint.sql_text import sql_literal

ARMS = ("treatment", "control")
HASH_DIGITS = 15  # 60 bits: exact in a DuckDB bigint and a Python float's 53-bit mantissa is ample for a split
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def parse_holdout(value: Any) -> float:
    """The control share of `holdout:` as a fraction: '10%' or 0.1 -> 0.1. ValueError otherwise.

    A bare number of 1 or more is refused rather than guessed at (is `10` ten percent or a mistake?), and so
    are 0% and 100%: an experiment needs both arms (to stop one, remove the key).
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a percentage like 10% or a fraction like 0.1, got {value!r}")
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if not match:
            raise ValueError(f"must be a percentage like 10% or a fraction like 0.1, got {value!r}")
        share = float(match.group(1)) / 100
    elif isinstance(value, int | float):
        share = float(value)
        if share >= 1:
            raise ValueError(f"a number must be a fraction below 1 (write {value}% for a percentage), got {value!r}")
    else:
        raise ValueError(f"must be a percentage like 10% or a fraction like 0.1, got {value!r}")
    if not 0 < share < 1:
        raise ValueError(f"must be above 0% and below 100%, got {value!r}")
    return share


def assignment_unit(person_id: str, experiment: str) -> float:
    """The person's uniform draw in [0, 1) for `experiment` (the Python twin of `assignment_unit_sql`)."""
    digest = hashlib.md5(f"{experiment}|{person_id}".encode()).hexdigest()
    return int(digest[:HASH_DIGITS], 16) / 16**HASH_DIGITS


def arm_of(person_id: str, experiment: str, holdout: float) -> str:
    """The arm a person not recorded before gets: control below the holdout share."""
    return "control" if assignment_unit(person_id, experiment) < holdout else "treatment"


def assignment_unit_sql(person_id: str, experiment: str) -> str:
    """SQL of `assignment_unit` over the column expression `person_id` (md5 is stable across DuckDB versions;
    DuckDB's `hash()` is not promised to be)."""
    digest = f"md5({sql_literal(experiment + '|')} || cast({person_id} as varchar))"
    return f"cast(('0x' || substr({digest}, 1, {HASH_DIGITS})) as bigint) / {float(16**HASH_DIGITS)!r}"


def assignment_files(folder: Path) -> list[Path]:
    """The assignment files of one sync (its state folder)."""
    return sorted((folder / "assignments").glob("*.parquet"))


def _recorded(con: duckdb.DuckDBPyConnection, folder: Path, experiment: str) -> None:
    """Temp table `recorded_assignments`: each person's first recorded arm and date in `experiment`."""
    con.register("assignment_rows", audit.read_assignment_files(assignment_files(folder)))
    try:
        con.execute(
            """
            create or replace temp table recorded_assignments as
            select person_id, arg_min(arm, first_assigned_date) as arm, min(first_assigned_date) as first_assigned_date
            from assignment_rows
            where experiment = ?
            group by person_id
            """,
            [experiment],
        )
    finally:
        con.unregister("assignment_rows")


def apply_holdout(
    con: duckdb.DuckDBPyConnection, experiment: str | None, holdout: float | None, folder: Path, as_of: date
) -> None:
    """Give temp table `candidates` (diff.load_candidates) the column `_held_out`, and when the sync runs an
    experiment, build temp table `new_assignments` (what a successful run records, `record_assignments`).

    Only eligible rows (no `_reject_reason`) are assigned: a person the sync may not send is in neither arm.
    """
    if holdout is None or experiment is None:
        con.execute("create or replace temp table candidates as select *, false as _held_out from candidates")
        return
    _recorded(con, folder, experiment)
    unit = assignment_unit_sql("eligible.person_id", experiment)
    con.execute(
        f"""
        create or replace temp table assignments as
        with eligible as (
            select distinct person_id from candidates where _reject_reason is null and person_id is not null
        ),
        sent_before as (
            select distinct candidates.person_id
            from candidates
            inner join synced on synced.key = candidates._key and synced.status = 'synced'
        )
        select
            eligible.person_id,
            coalesce(recorded.arm, case when {unit} < ? then 'control' else 'treatment' end) as arm,
            recorded.first_assigned_date as recorded_date,
            recorded.person_id is null and sent_before.person_id is not null as was_sent_before_assignment
        from eligible
        left join recorded_assignments as recorded on recorded.person_id = eligible.person_id
        left join sent_before on sent_before.person_id = eligible.person_id
        """,
        [holdout],
    )
    con.execute(
        """
        create or replace temp table candidates as
        select candidates.*, coalesce(assignments.arm = 'control', false) as _held_out
        from candidates
        left join assignments on assignments.person_id = candidates.person_id and candidates._reject_reason is null
        """
    )
    # a backfill (an earlier as-of than the one recorded) moves the first assignment date back; the arm stays
    con.execute(
        """
        create or replace temp table new_assignments as
        select person_id, arm, was_sent_before_assignment
        from assignments
        where recorded_date is null or recorded_date > ?
        order by person_id
        """,
        [as_of],
    )


def record_assignments(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    *,
    experiment: str,
    holdout: float,
    sync_name: str,
    run_id: str,
    attempt_id: str,
    as_of: date,
    assigned_at: datetime,
) -> Path | None:
    """Write `new_assignments` (see `apply_holdout`) as this attempt's assignment file; None when empty."""
    rows = con.sql("select person_id, arm, was_sent_before_assignment from new_assignments").to_arrow_table()
    n = rows.num_rows
    if n == 0:
        return None
    table = pa.table(
        {
            "experiment": [experiment] * n,
            "person_id": rows.column("person_id").cast(pa.string()),
            "arm": rows.column("arm"),
            "holdout_share": [holdout] * n,
            "first_assigned_date": pa.array([as_of] * n, pa.date32()),
            "was_sent_before_assignment": rows.column("was_sent_before_assignment"),
            "sync_name": [sync_name] * n,
            "run_id": [run_id] * n,
            "attempt_id": [attempt_id] * n,
            "assigned_at": pa.array([assigned_at] * n, pa.timestamp("us")),
        },
        schema=audit.EXPERIMENT_ASSIGNMENTS_SCHEMA,
    )
    return audit.write_assignments(folder, attempt_id, table)
