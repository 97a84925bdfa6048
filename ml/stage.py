"""The ML stage: read the marts, score segments, propensity and CLV (training them on a cadence), write the `ml`
schema.

`run_ml(ctx, con)` is what the DAG and the CLI call. Every day is scored; a family of models (segments, each
propensity task, CLV's BG/NBD + Gamma-Gamma) is trained again only when ml/cadence.py says so (no usable model,
its age, drift, volume, or TOUCHPOINT_ML_TRAIN=always), else the latest model trained on an earlier as-of scores
the day. Every `ml` table keeps one partition per as_of date;
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
from touchpoint.ml import clv
from touchpoint.ml.cadence import (
    TrainingPolicy,
    decide_family,
    relative_to_home,
    save_reference,
    scored_run,
    with_decision,
)
from touchpoint.ml.clv_scoring import BG_FEATURES, CLV_COLUMNS, GG_FEATURES, ClvOutcome, clv_rows, fit_and_score_clv
from touchpoint.ml.drift import FeatureReference
from touchpoint.ml.features import (
    PROPENSITY_FEATURES,
    SEGMENT_SOURCE,
    day_end,
    load_purchases,
    propensity_features,
    segment_features,
)
from touchpoint.ml.model_runs import ModelRun, ensure_model_runs, save_model, skipped, write_model_runs
from touchpoint.ml.propensity import TASKS, NotEnoughData, PropensityTask, propensity_rows, score_with, train_and_score
from touchpoint.ml.segments import FEATURES as SEGMENT_FEATURES
from touchpoint.ml.segments import NotEnoughCustomers, assign_segments, fit_segments
from touchpoint.warehouse import relation_exists

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
        models = ", ".join(f"{run.model_name}={_what_was_done(run)}" for run in self.runs)
        tables = ", ".join(f"{name}={count}" for name, count in self.rows_written.items())
        return f"ml as of {self.as_of}: {models}; rows {tables}"


def _what_was_done(run: ModelRun) -> str:
    if run.action == "scored":
        return f"scored by {run.model_version}"
    if run.action == "trained":
        return f"trained ({run.training_trigger})" if run.training_trigger else "trained"
    return "skipped"


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists ml")
    for ddl in TABLES_DDL.values():
        con.execute(ddl)
    ensure_model_runs(con)


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
    # the latest earlier run that assigned anyone: retention may have thinned the assignments of a day whose
    # profiles it keeps (privacy/retention.py, score history), and a rerun of an old day must not compare with it
    rows = con.execute(
        "select max(as_of) from ml.segment_profiles as p where as_of < ? "
        "and exists (select 1 from ml.customer_segments as s where s.as_of = p.as_of)",
        [as_of],
    ).fetchall()
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


def run_ml(ctx: RunContext, con: duckdb.DuckDBPyConnection, policy: TrainingPolicy | None = None) -> MlResult:
    """Score (and, when the policy says so, train) and write back every ML output for ctx.as_of in the working
    warehouse `con`. `policy`: when to train; by default from the TOUCHPOINT_ML_* settings (a bad one raises
    MlSettingError before anything is read)."""
    policy = policy or TrainingPolicy.from_env()
    if not relation_exists(con, "marts", "fct_orders"):
        raise MlInputError("marts.fct_orders is missing: build the marts layer before the ML stage")
    as_of = ctx.as_of
    model_folder = ctx.run_artifacts / "models"
    ensure_tables(con)
    clock = _StepClock()
    purchases = load_purchases(con, as_of)
    clock.lap("load")
    day = _Day(con, as_of, policy, model_folder, ctx.paths.home)
    segment_frames, segment_run = fit_and_assign_segments(day)
    clock.lap("segments")
    propensity, propensity_runs = score_propensity(day, purchases)
    clock.lap("propensity")
    clv_outcome = score_clv(day, purchases)
    clock.lap("clv")
    runs = [segment_run, *propensity_runs, *clv_outcome.runs]
    for run in runs:  # kept relative to the home in ml.model_runs: a moved home still finds its models
        run.artifact_path = relative_to_home(run.artifact_path, ctx.paths.home)
    outputs = {**segment_frames, "customer_propensity": propensity, "customer_clv": clv_outcome.scores}
    rows_written = write_outputs(con, outputs, runs, as_of)
    clock.lap("write")
    return MlResult(as_of=as_of, rows_written=rows_written, runs=runs, seconds=clock.seconds)


@dataclass(frozen=True)
class _Day:
    """What every model family of one run shares: the warehouse, the as-of, the training policy, the model folder."""

    con: duckdb.DuckDBPyConnection
    as_of: date
    policy: TrainingPolicy
    model_folder: Path
    home: Path | None = None  # recorded model files are relative to it

    @property
    def as_of_end(self) -> datetime:
        """The end of the as-of day: the cut-off of the data, and the trained_at of a model trained today."""
        return day_end(self.as_of)


@dataclass
class _StepClock:
    """Wall time per step, each measured from the end of the previous one."""

    seconds: dict[str, float] = field(default_factory=dict)
    _since: float = field(default_factory=time.perf_counter)

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = now - self._since
        self._since = now


def fit_and_assign_segments(day: _Day) -> tuple[dict[str, pd.DataFrame], ModelRun]:
    """Assign every buyer a segment (stable ids against the previous as-of), training the segmentation on
    marts.customer_activity first when the policy says so.

    Returns the frames of the segment tables and the model run; without customer_activity or with too few
    customers, empty frames and a skipped run saying why.
    """
    as_of, trained_at = day.as_of, day.as_of_end
    empty = {table: pd.DataFrame(columns=TABLE_COLUMNS[table]) for table in SEGMENT_TABLES}
    if not relation_exists(day.con, *SEGMENT_SOURCE):
        reason = f"{'.'.join(SEGMENT_SOURCE)} is missing"
        return empty, skipped("segments", as_of, trained_at, reason, features=list(SEGMENT_FEATURES))
    frame = segment_features(day.con, as_of)
    decision = decide_family(day.con, day.policy, as_of, {"segments": list(SEGMENT_FEATURES)}, frame, day.home)
    previous = _previous_segments(day.con, as_of)
    try:
        if decision.train:
            outcome = fit_segments(frame, as_of, trained_at, *previous)
            save_model(outcome.run, outcome.model, day.model_folder)
            save_reference(with_decision(outcome.run, decision), FeatureReference.of(frame, SEGMENT_FEATURES))
            tables, run = (outcome.assignments, outcome.profiles, outcome.changes), outcome.run
        else:
            model = decision.models["segments"]
            assigned = assign_segments(model.model, frame, *previous)
            tables = (assigned.assignments, assigned.profiles, assigned.changes)
            today = {"customers": len(frame), "matching_cost": None, **assigned.metrics}  # none of the training day's
            run = scored_run(model, as_of, decision, today)
    except NotEnoughCustomers as error:
        run = skipped("segments", as_of, trained_at, str(error), time_unit="day", features=list(SEGMENT_FEATURES))
        return empty, with_decision(run, decision)
    return dict(zip(SEGMENT_TABLES, tables, strict=True)), run


def score_propensity(day: _Day, purchases: pd.DataFrame) -> tuple[pd.DataFrame, list[ModelRun]]:
    """Rows of ml.customer_propensity for every buyer and one run per task, each task trained when the policy
    says so. A task that must train but cannot (too little data) is skipped: its two columns stay null."""
    current = propensity_features(purchases, day.as_of_end)
    # Drift is measured against the customers the model scored on its training day, not its training rows:
    # those are snapshots 1..3 horizons old, so their tenure differs from today's by construction (PSI of
    # tenure_days 0.93 for the 30-day model and 3.8 for the 90-day one against the same day's customers, on
    # 5,000 synthetic customers); against the training day's customers a week later the largest PSI is 0.007.
    scores, runs = {}, []
    for task in TASKS:
        family = {task.model_name: list(PROPENSITY_FEATURES)}
        decision = decide_family(day.con, day.policy, day.as_of, family, current, day.home)
        if not decision.train:
            model = decision.models[task.model_name]
            scores[task.model_name] = score_with(model.model, current)
            runs.append(scored_run(model, day.as_of, decision, {"scored_rows": len(current)}))
            continue
        scored, run = _train_propensity(day, purchases, task)
        if scored is not None:
            save_reference(with_decision(run, decision), FeatureReference.of(current, PROPENSITY_FEATURES))
            scores[task.model_name] = scored
        runs.append(with_decision(run, decision))
    return propensity_rows(current, day.as_of, scores), runs


def _train_propensity(day: _Day, purchases: pd.DataFrame, task: PropensityTask) -> tuple[pd.DataFrame | None, ModelRun]:
    try:
        scored, run, model = train_and_score(purchases, day.as_of_end, task)
    except NotEnoughData as error:
        run = skipped(task.model_name, day.as_of, day.as_of_end, str(error), time_unit="day",
                      features=list(PROPENSITY_FEATURES))
        return None, run
    save_model(run, model, day.model_folder)
    return scored, run


def score_clv(day: _Day, purchases: pd.DataFrame) -> ClvOutcome:
    """Rows of ml.customer_clv for every buyer and the runs of BG/NBD and Gamma-Gamma, trained together when the
    policy says so (either one unusable trains both)."""
    summary = clv.rfm_summary(purchases, day.as_of)
    family = {"bg_nbd": list(BG_FEATURES), "gamma_gamma": list(GG_FEATURES)}
    decision = decide_family(day.con, day.policy, day.as_of, family, summary, day.home)
    if not decision.train:
        bg, gg = decision.models["bg_nbd"], decision.models["gamma_gamma"]
        runs = [scored_run(bg, day.as_of, decision), scored_run(gg, day.as_of, decision)]
        return ClvOutcome(clv_rows(summary, day.as_of, bg.model, gg.model), runs)
    outcome = fit_and_score_clv(purchases, day.as_of, day.as_of_end, day.model_folder, summary)
    features = {"bg_nbd": BG_FEATURES, "gamma_gamma": GG_FEATURES}
    for run in outcome.runs:
        with_decision(run, decision)
        if run.action == "trained":
            save_reference(run, FeatureReference.of(summary, features[run.model_name]))
    return outcome


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
