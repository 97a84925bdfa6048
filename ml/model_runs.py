"""One record per fitted (or skipped) model: saved next to the model file and in `ml.model_runs`."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import joblib

LIBRARIES = ("scikit-learn", "scipy", "numpy", "pandas", "duckdb", "joblib")

MODEL_RUNS_DDL = """
create table if not exists ml.model_runs (
    model_name varchar not null,
    as_of date not null,
    trained_at timestamp not null,
    status varchar not null,          -- 'trained' (a trained model scored the day) | 'skipped'
    reason varchar,                   -- why skipped (null when trained)
    training_window varchar,
    time_unit varchar,
    parameters json,
    metrics json,
    features json,
    library_versions json,
    artifact_path varchar,
    algorithm varchar,                -- the estimator chosen (model_name names the purpose, stably)
    action varchar,                   -- 'trained' (this as-of) | 'scored' (by a model trained earlier) | 'skipped'
    model_version varchar,            -- the model that scored the day: '<trained_as_of>.<sha256 of its file, 12>'
    trained_as_of date,               -- the as-of the scoring model was trained on (<= as_of)
    training_trigger varchar,         -- why the model was trained: forced | no_model | cadence | drift | volume
    training_reason varchar,          -- the same in words, with the values measured
    psi double,                       -- largest input-feature PSI against the latest earlier trained model
    drift json,                       -- PSI per feature and customers now vs at training (ml/cadence.py)
    primary key (model_name, as_of)
)
"""
COLUMNS = (
    "model_name", "as_of", "trained_at", "status", "reason", "training_window", "time_unit", "parameters", "metrics",
    "features", "library_versions", "artifact_path", "algorithm", "action", "model_version", "trained_as_of",
    "training_trigger", "training_reason", "psi", "drift",
)
JSON_COLUMNS = ("parameters", "metrics", "features", "library_versions", "drift")
# A warehouse written before `algorithm` existed, and before the segmentation model was named for its purpose
# rather than for KMeans (it may be a Gaussian mixture): brought up to date in place, history kept.
MIGRATIONS = (
    "alter table ml.model_runs add column if not exists algorithm varchar",
    "update ml.model_runs set model_name = 'segments' where model_name = 'kmeans_segments'",
    "update ml.model_runs set algorithm = coalesce(parameters->>'algorithm', model_name) "
    "where algorithm is null and status = 'trained'",
    # Cadence (ml/cadence.py): until then every recorded model was trained (or skipped) on its own as-of.
    "alter table ml.model_runs add column if not exists action varchar",
    "alter table ml.model_runs add column if not exists model_version varchar",
    "alter table ml.model_runs add column if not exists trained_as_of date",
    "alter table ml.model_runs add column if not exists training_trigger varchar",
    "alter table ml.model_runs add column if not exists training_reason varchar",
    "alter table ml.model_runs add column if not exists psi double",
    "alter table ml.model_runs add column if not exists drift json",
    "update ml.model_runs set action = status, trained_as_of = case when status = 'trained' then as_of end "
    "where action is null",
)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class ModelRun:
    model_name: str
    as_of: date
    trained_at: datetime
    status: str = "trained"
    reason: str | None = None
    training_window: str | None = None
    time_unit: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    features: list[str] = field(default_factory=list)
    library_versions: dict[str, str] = field(default_factory=library_versions)
    artifact_path: str | None = None
    # cadence (ml/cadence.py): what the stage did with the model for this as-of, and why
    action: str | None = None  # trained | scored | skipped; None: from the status (trained or skipped today)
    model_version: str | None = None
    trained_as_of: date | None = None
    training_trigger: str | None = None
    training_reason: str | None = None
    psi: float | None = None
    drift: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action is None:
            self.action = "trained" if self.status == "trained" else "skipped"
        if self.trained_as_of is None and self.action == "trained":
            self.trained_as_of = self.as_of

    @property
    def algorithm(self) -> str | None:
        """The estimator in production: `parameters["algorithm"]` when the model chose among several, else the
        model itself (bg_nbd, gamma_gamma); None when skipped."""
        if self.status != "trained":
            return None
        return str(self.parameters.get("algorithm") or self.model_name)

    def record(self) -> dict[str, Any]:
        row = asdict(self)
        row["algorithm"] = self.algorithm
        row["as_of"] = self.as_of.isoformat()
        row["trained_at"] = self.trained_at.isoformat()
        row["trained_as_of"] = self.trained_as_of.isoformat() if self.trained_as_of else None
        return _clean(row)


def skipped(model_name: str, as_of: date, trained_at: datetime, reason: str, **extra: Any) -> ModelRun:
    return ModelRun(model_name=model_name, as_of=as_of, trained_at=trained_at, status="skipped", reason=reason, **extra)


# Fitted attributes that hold one value per training row: not needed to score, and a model file kept after an
# erasure must not keep the erased person's row (docs/privacy.md). KMeans keeps `labels_`.
ROW_LEVEL_ATTRIBUTES = ("labels_",)


def without_training_rows(model: Any) -> Any:
    """A copy of `model` (or of each step of a Pipeline) without its per-training-row attributes."""
    import copy

    model = copy.deepcopy(model)
    for part in [model, *(step for _, step in getattr(model, "steps", []))]:
        for attribute in ROW_LEVEL_ATTRIBUTES:
            if hasattr(part, attribute):
                delattr(part, attribute)
    return model


def model_version(trained_as_of: date, model_path: Path) -> str:
    """`<training as-of>.<first 12 hex digits of the model file's sha256>`: stable for identical models."""
    return f"{trained_as_of.isoformat()}.{hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]}"


def save_model(run: ModelRun, model: Any, folder: Path) -> ModelRun:
    """Write `<model_name>.<sha12>.joblib` and `<model_name>.<sha12>.json` (the run record) under folder, sha12
    being the first 12 hex digits of the model file's sha256: a file, once written, is never overwritten by
    another model (a rerun of a training day that trains another model writes another file; the same model,
    the same file).

    Sets and returns the run with its artifact_path and model_version (`<as_of>.<sha12>`: the same model gives
    the same version, and a file changed since is recognised).
    """
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{run.model_name}.joblib.partial"
    joblib.dump(without_training_rows(model), partial)
    digest = hashlib.sha256(partial.read_bytes()).hexdigest()[:12]
    model_path = folder / f"{run.model_name}.{digest}.joblib"
    partial.replace(model_path)
    run.artifact_path = str(model_path)
    run.model_version = f"{run.as_of.isoformat()}.{digest}"
    model_path.with_suffix(".json").write_text(json.dumps(run.record(), indent=2, sort_keys=True))
    return run


def ensure_model_runs(con: duckdb.DuckDBPyConnection) -> None:
    """Create ml.model_runs, or bring one written by an earlier version up to date (history kept)."""
    con.execute("create schema if not exists ml")
    con.execute(MODEL_RUNS_DDL)
    for migration in MIGRATIONS:
        con.execute(migration)


def write_model_runs(con: duckdb.DuckDBPyConnection, runs: list[ModelRun]) -> None:
    """Replace the rows of these (model_name, as_of) pairs: a rerun never appends twice."""
    ensure_model_runs(con)
    for run in runs:
        row = run.record()
        values = {
            **{column: getattr(run, column) for column in COLUMNS},
            "algorithm": run.algorithm,
            **{column: json.dumps(row[column], sort_keys=True) for column in JSON_COLUMNS},
            "psi": row["psi"],
        }
        con.execute("delete from ml.model_runs where model_name = ? and as_of = ?", [run.model_name, run.as_of])
        con.execute(
            f"insert into ml.model_runs ({', '.join(COLUMNS)}) values ({', '.join('?' for _ in COLUMNS)})",
            [values[column] for column in COLUMNS],
        )
