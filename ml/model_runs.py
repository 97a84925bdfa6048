"""One record per fitted (or skipped) model: saved next to the model file and in `ml.model_runs`."""

from __future__ import annotations

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
    status varchar not null,          -- 'trained' | 'skipped'
    reason varchar,                   -- why skipped (null when trained)
    training_window varchar,
    time_unit varchar,
    parameters json,
    metrics json,
    features json,
    library_versions json,
    artifact_path varchar,
    algorithm varchar,                -- the estimator chosen (model_name names the purpose, stably)
    primary key (model_name, as_of)
)
"""
COLUMNS = (
    "model_name, as_of, trained_at, status, reason, training_window, time_unit, parameters, metrics, features, "
    "library_versions, artifact_path, algorithm"
)
# A warehouse written before `algorithm` existed, and before the segmentation model was named for its purpose
# rather than for KMeans (it may be a Gaussian mixture): brought up to date in place, history kept.
MIGRATIONS = (
    "alter table ml.model_runs add column if not exists algorithm varchar",
    "update ml.model_runs set model_name = 'segments' where model_name = 'kmeans_segments'",
    "update ml.model_runs set algorithm = coalesce(parameters->>'algorithm', model_name) "
    "where algorithm is null and status = 'trained'",
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


def save_model(run: ModelRun, model: Any, folder: Path) -> ModelRun:
    """Write `<model_name>.joblib` and `<model_name>.json` (the run record) under folder.

    Sets and returns the run with its artifact_path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{run.model_name}.joblib"
    joblib.dump(without_training_rows(model), model_path)
    run.artifact_path = str(model_path)
    (folder / f"{run.model_name}.json").write_text(json.dumps(run.record(), indent=2, sort_keys=True))
    return run


def write_model_runs(con: duckdb.DuckDBPyConnection, runs: list[ModelRun]) -> None:
    """Replace the rows of these (model_name, as_of) pairs: a rerun never appends twice."""
    con.execute("create schema if not exists ml")
    con.execute(MODEL_RUNS_DDL)
    for migration in MIGRATIONS:
        con.execute(migration)
    for run in runs:
        row = run.record()
        con.execute("delete from ml.model_runs where model_name = ? and as_of = ?", [run.model_name, run.as_of])
        con.execute(
            f"insert into ml.model_runs ({COLUMNS}) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run.model_name,
                run.as_of,
                run.trained_at,
                run.status,
                run.reason,
                run.training_window,
                run.time_unit,
                json.dumps(row["parameters"], sort_keys=True),
                json.dumps(row["metrics"], sort_keys=True),
                json.dumps(row["features"]),
                json.dumps(row["library_versions"], sort_keys=True),
                run.artifact_path,
                run.algorithm,
            ],
        )
