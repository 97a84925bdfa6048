"""The ML stage: read the marts, fit/score segments, propensity and CLV, write the `ml` schema.

`run_ml(ctx, con)` is what the DAG and the CLI call. Every `ml` table keeps one partition per as_of date;
a rerun deletes and rewrites that partition in one transaction, so the same marts and as_of give identical
tables (trained_at is the end of the as-of day, not the wall clock). Models that cannot be fitted on the
data at hand are recorded in `ml.model_runs` with status 'skipped' and a reason; their output tables are
still created (empty, or with null scores, as documented per module).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import pandas as pd

from touchpoint.config import RunContext
from touchpoint.ml.clv_scoring import CLV_COLUMNS, fit_and_score_clv
from touchpoint.ml.features import SEGMENT_SOURCE, day_end, load_purchases, segment_features, table_exists
from touchpoint.ml.model_runs import ModelRun, save_model, skipped, write_model_runs
from touchpoint.ml.propensity import score_all
from touchpoint.ml.segments import FEATURES as SEGMENT_FEATURES
from touchpoint.ml.segments import NotEnoughCustomers, fit_segments

TABLES_DDL = {
    "customer_segments": """
        create table if not exists ml.customer_segments (
            person_id varchar not null, segment_id integer not null, segment_name varchar not null,
            as_of date not null, primary key (person_id, as_of))""",
    "segment_profiles": """
        create table if not exists ml.segment_profiles (
            segment_id integer not null, segment_name varchar not null, size bigint not null, share double,
            centroid json, top_features json, as_of date not null, primary key (segment_id, as_of))""",
    "segment_membership_changes": """
        create table if not exists ml.segment_membership_changes (
            person_id varchar not null, as_of date not null, previous_as_of date, previous_segment_id integer,
            segment_id integer, change_type varchar not null, primary key (person_id, as_of))""",
    "customer_propensity": """
        create table if not exists ml.customer_propensity (
            person_id varchar not null, as_of date not null,
            purchase_30d_probability double, purchase_30d_decile integer,
            churn_90d_probability double, churn_90d_decile integer, primary key (person_id, as_of))""",
    "customer_clv": """
        create table if not exists ml.customer_clv (
            person_id varchar not null, as_of date not null, frequency double, recency double, "T" double,
            monetary_value double, expected_purchases_90d double, expected_purchases_365d double,
            probability_alive double, expected_avg_spend double, clv double, clv_horizon_days integer,
            discount_rate double, primary key (person_id, as_of))""",
}
SEGMENT_TABLES = ("customer_segments", "segment_profiles", "segment_membership_changes")
TABLE_COLUMNS = {
    "customer_segments": ["person_id", "segment_id", "segment_name", "as_of"],
    "segment_profiles": ["segment_id", "segment_name", "size", "share", "centroid", "top_features", "as_of"],
    "segment_membership_changes": [
        "person_id",
        "as_of",
        "previous_as_of",
        "previous_segment_id",
        "segment_id",
        "change_type",
    ],
    "customer_propensity": [
        "person_id",
        "as_of",
        "purchase_30d_probability",
        "purchase_30d_decile",
        "churn_90d_probability",
        "churn_90d_decile",
    ],
    "customer_clv": CLV_COLUMNS,
}


class MlInputError(RuntimeError):
    """The marts the ML stage reads are missing."""


@dataclass
class MlResult:
    as_of: date
    rows_written: dict[str, int]
    runs: list[ModelRun] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per step (for logs and the benchmark)

    @property
    def skipped(self) -> dict[str, str]:
        return {run.model_name: run.reason or "" for run in self.runs if run.status == "skipped"}

    def summary(self) -> str:
        models = ", ".join(f"{run.model_name}={run.status}" for run in self.runs)
        tables = ", ".join(f"{name}={count}" for name, count in self.rows_written.items())
        return f"ml as of {self.as_of}: {models}; rows {tables}"


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists ml")
    for ddl in TABLES_DDL.values():
        con.execute(ddl)


def replace_partition(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, as_of: date) -> int:
    """Delete the as_of partition of ml.<table> and insert `frame` (columns in contract order)."""
    columns = TABLE_COLUMNS[table]
    data = frame.copy()
    data["as_of"] = as_of
    data = data[columns]
    con.execute(f"delete from ml.{table} where as_of = ?", [as_of])
    if len(data):
        con.register("_ml_frame", data)
        quoted = ", ".join(f'"{c}"' for c in columns)
        con.execute(f"insert into ml.{table} ({quoted}) select {quoted} from _ml_frame")
        con.unregister("_ml_frame")
    return len(data)


def _previous_segments(con: duckdb.DuckDBPyConnection, as_of: date):
    rows = con.execute("select max(as_of) from ml.segment_profiles where as_of < ?", [as_of]).fetchall()
    previous_as_of = rows[0][0] if rows else None
    if previous_as_of is None:
        return None, None, None
    profiles = con.execute(
        "select segment_id, centroid::varchar as centroid from ml.segment_profiles where as_of = ? order by segment_id",
        [previous_as_of],
    ).df()
    assignments = con.execute(
        "select person_id, segment_id from ml.customer_segments where as_of = ? order by person_id",
        [previous_as_of],
    ).df()
    return profiles, assignments, previous_as_of


def run_ml(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> MlResult:
    """Train, score and write back every ML output for ctx.as_of in the working warehouse `con`."""
    if not table_exists(con, "marts", "fct_orders"):
        raise MlInputError("marts.fct_orders is missing: build the marts layer before the ML stage")
    as_of = ctx.as_of
    trained_at = day_end(as_of)
    model_folder = ctx.run_artifacts / "models"
    ensure_tables(con)
    clock = _StepClock()
    purchases = load_purchases(con, as_of)
    clock.lap("load")
    segment_frames, segment_run = fit_and_assign_segments(con, as_of, trained_at, model_folder)
    clock.lap("segments")
    propensity, propensity_runs = score_all(purchases, as_of, trained_at, model_folder)
    clock.lap("propensity")
    clv = fit_and_score_clv(purchases, as_of, trained_at, model_folder)
    clock.lap("clv")
    runs = [segment_run, *propensity_runs, *clv.runs]
    outputs = {**segment_frames, "customer_propensity": propensity, "customer_clv": clv.scores}
    rows_written = write_outputs(con, outputs, runs, as_of)
    clock.lap("write")
    return MlResult(as_of=as_of, rows_written=rows_written, runs=runs, seconds=clock.seconds)


@dataclass
class _StepClock:
    """Wall time per step, each measured from the end of the previous one."""

    seconds: dict[str, float] = field(default_factory=dict)
    _since: float = field(default_factory=time.perf_counter)

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = now - self._since
        self._since = now


def fit_and_assign_segments(
    con: duckdb.DuckDBPyConnection, as_of: date, trained_at: datetime, model_folder: Path
) -> tuple[dict[str, pd.DataFrame], ModelRun]:
    """Fit the segmentation on marts.customer_activity and assign every buyer (stable ids against the previous
    as-of).

    Returns the frames of the segment tables and the model run; without customer_activity or with too few
    customers, empty frames and a skipped run saying why.
    """
    empty = {table: pd.DataFrame(columns=TABLE_COLUMNS[table]) for table in SEGMENT_TABLES}
    if not table_exists(con, *SEGMENT_SOURCE):
        reason = f"{'.'.join(SEGMENT_SOURCE)} is missing"
        return empty, skipped("segments", as_of, trained_at, reason, features=list(SEGMENT_FEATURES))
    previous_profiles, previous_assignments, previous_as_of = _previous_segments(con, as_of)
    try:
        outcome = fit_segments(
            segment_features(con, as_of), as_of, trained_at, previous_profiles, previous_assignments, previous_as_of
        )
    except NotEnoughCustomers as error:
        run = skipped("segments", as_of, trained_at, str(error), time_unit="day", features=list(SEGMENT_FEATURES))
        return empty, run
    save_model(outcome.run, outcome.model, model_folder)
    frames = {
        "customer_segments": outcome.assignments,
        "segment_profiles": outcome.profiles,
        "segment_membership_changes": outcome.changes,
    }
    return frames, outcome.run


def write_outputs(
    con: duckdb.DuckDBPyConnection, outputs: dict[str, pd.DataFrame], runs: list[ModelRun], as_of: date
) -> dict[str, int]:
    """Replace the as-of partition of every ml table and record the model runs, in one transaction; returns the
    rows written per table."""
    con.execute("begin transaction")
    try:
        rows_written = {table: replace_partition(con, table, frame, as_of) for table, frame in outputs.items()}
        write_model_runs(con, runs)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return rows_written
