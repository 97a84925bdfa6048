"""The audit log of syncs: one record per sync run and one per record held back or refused.

Why Parquet files under `<home>/state/syncs/<sync>/` and not tables in the warehouse: syncs read the
published warehouse read-only (it is replaced atomically by publish and may be open by analysts), and the
working warehouse has a single writer (the pipeline). So each run writes its own small files, atomically:
- `runs/<attempt_id>.parquet`: one row (schema `SYNC_RUNS_SCHEMA`),
- `rejections/<attempt_id>.parquet`: the rejected records of that attempt (`SYNC_REJECTIONS_SCHEMA`),
- `assignments/<attempt_id>.parquet`: the experiment assignments that attempt made, for a sync with a holdout
  (`EXPERIMENT_ASSIGNMENTS_SCHEMA`, see `experiments.py`).
The next pipeline run loads `sync_audit_tables(home)` into `audit.sync_runs` / `audit.sync_rejections`, and the
assignments into `audit.experiment_assignments` (replace the tables whole: these files are the system of record,
so reloading is idempotent).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from touchpoint.config import Paths

SYNC_RUNS_SCHEMA = pa.schema(
    [
        ("sync_name", pa.string()),
        ("run_id", pa.string()),
        ("attempt_id", pa.string()),
        ("as_of", pa.date32()),
        ("destination_type", pa.string()),
        ("status", pa.string()),  # success | failed | skipped | dry_run
        ("started_at", pa.timestamp("us")),
        ("finished_at", pa.timestamp("us")),
        ("duration_s", pa.float64()),
        ("eligible", pa.int64()),
        ("planned_inserts", pa.int64()),
        ("planned_updates", pa.int64()),
        ("planned_deletes", pa.int64()),
        ("sent", pa.int64()),  # records the destination acknowledged (upserts + deletes)
        ("failed", pa.int64()),  # records the destination refused
        ("skipped", pa.int64()),  # records held back: no consent, invalid email, no key
        ("message", pa.string()),
        # eligible records not sent because they are in the control arm of the sync's experiment (null in the
        # files of runs from before holdouts existed)
        ("held_out", pa.int64()),
    ]
)

SYNC_REJECTIONS_SCHEMA = pa.schema(
    [
        ("sync_name", pa.string()),
        ("run_id", pa.string()),
        ("attempt_id", pa.string()),
        ("record_key", pa.string()),
        # missing_consent | invalid_email | missing_key | destination_refused | text_cleaned (sent, cleaned)
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("rejected_at", pa.timestamp("us")),
    ]
)


EXPERIMENT_ASSIGNMENTS_SCHEMA = pa.schema(
    [
        ("experiment", pa.string()),
        ("person_id", pa.string()),
        ("arm", pa.string()),  # treatment | control
        ("holdout_share", pa.float64()),  # the declared control share when this person was assigned
        ("first_assigned_date", pa.date32()),  # the as-of of the run that assigned them
        ("was_sent_before_assignment", pa.bool_()),  # in the destination before the sync had this holdout
        ("sync_name", pa.string()),
        ("run_id", pa.string()),
        ("attempt_id", pa.string()),
        ("assigned_at", pa.timestamp("us")),  # wall clock of the run (for the audit only)
    ]
)


def new_attempt_id(started_at: datetime) -> str:
    return f"{started_at:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def _write_atomically(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def write_run_record(folder: Path, record: dict[str, object]) -> Path:
    path = folder / "runs" / f"{record['attempt_id']}.parquet"
    _write_atomically(pa.Table.from_pylist([record], schema=SYNC_RUNS_SCHEMA), path)
    return path


def write_rejections(folder: Path, attempt_id: str, rejections: pa.Table) -> Path | None:
    if rejections.num_rows == 0:
        return None
    path = folder / "rejections" / f"{attempt_id}.parquet"
    _write_atomically(rejections.select(SYNC_REJECTIONS_SCHEMA.names).cast(SYNC_REJECTIONS_SCHEMA), path)
    return path


def write_assignments(folder: Path, attempt_id: str, assignments: pa.Table) -> Path | None:
    if assignments.num_rows == 0:
        return None
    path = folder / "assignments" / f"{attempt_id}.parquet"
    schema = EXPERIMENT_ASSIGNMENTS_SCHEMA
    _write_atomically(assignments.select(schema.names).cast(schema), path)
    return path


def _conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` in `schema`: a column added since the file was written (e.g. `held_out`) reads as null."""
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _read_all(files: list[Path], schema: pa.Schema) -> pa.Table:
    tables = [_conformed(pq.read_table(f), schema) for f in sorted(files)]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def read_assignment_files(files: list[Path]) -> pa.Table:
    return _read_all(files, EXPERIMENT_ASSIGNMENTS_SCHEMA)


def assignment_files(home: Path) -> list[Path]:
    """Every sync's assignment files under `home`, in name order."""
    return sorted((Paths(Path(home)).state / "syncs").glob("*/assignments/*.parquet"))


def experiment_assignment_table(home: Path) -> pa.Table:
    """Every sync's assignment files under `home`: one row per person and attempt that assigned them (a
    backfill may add an earlier one); `marts.experiment_assignments` keeps each person's first."""
    return read_assignment_files(assignment_files(home))


def sync_audit_tables(home: Path) -> dict[str, pa.Table]:
    """Every sync's audit log under `home`: {'sync_runs': ..., 'sync_rejections': ...} for `audit.*`."""
    root = Paths(Path(home)).state / "syncs"
    return {
        "sync_runs": _read_all(list(root.glob("*/runs/*.parquet")), SYNC_RUNS_SCHEMA),
        "sync_rejections": _read_all(list(root.glob("*/rejections/*.parquet")), SYNC_REJECTIONS_SCHEMA),
    }


def _replace_table(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    con.register("sync_audit_rows", table)
    try:
        con.execute(f"create or replace table audit.{name} as select * from sync_audit_rows")
    finally:
        con.unregister("sync_audit_rows")


def load_sync_audit(con: duckdb.DuckDBPyConnection, home: Path) -> dict[str, int]:
    """Replace `audit.sync_runs` and `audit.sync_rejections` in a warehouse being built (the caller holds
    the writer); returns their row counts and the assignments'. Idempotent: the tables are rebuilt from the
    files every time.

    `audit.experiment_assignments` is replaced too (`load_experiment_assignments`), empty before any experiment
    ran, so `marts.experiment_assignments` builds on a first run."""
    counts: dict[str, int] = {}
    con.execute("create schema if not exists audit")
    for name, table in sync_audit_tables(home).items():
        _replace_table(con, name, table)
        counts[name] = table.num_rows
    counts["experiment_assignments"] = load_experiment_assignments(con, home)
    return counts


def load_experiment_assignments(con: duckdb.DuckDBPyConnection, home: Path) -> int:
    """Replace `audit.experiment_assignments` from the assignment files (also done by `load_sync_audit`);
    returns its row count."""
    con.execute("create schema if not exists audit")
    table = experiment_assignment_table(home)
    _replace_table(con, "experiment_assignments", table)
    return table.num_rows
