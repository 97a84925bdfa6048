"""When a model is trained again, and which trained model scores a day otherwise.

Scoring runs every day; training runs when one of these holds, checked in this order (the first one found is
the recorded `training_trigger`):

- `forced`: TOUCHPOINT_ML_TRAIN=always;
- `no_model`: no usable trained model: none trained on an earlier as-of (a first run, or a backfill before the
  first training), or the latest one's file is missing or changed, it was trained with other versions of the
  libraries its file needs (a pickle is only trusted by the versions that wrote it), it read other features
  than the code reads today, it predates model versions, its file or feature reference fails to load, or its
  training day's ML gate (audit.gate_results, layer 'ml') failed a critical check;
- `cadence`: the latest trained model is TOUCHPOINT_ML_TRAIN_EVERY_DAYS (7) or more days older than the as-of;
- `drift`: the population stability index (ml/drift.py) of one of the model's input features, between the data
  it was trained on and today's, is above TOUCHPOINT_ML_RETRAIN_PSI (0.2);
- `volume`: today's customers differ from the training customers by more than TOUCHPOINT_ML_RETRAIN_VOLUME_CHANGE
  (0.2 = 20%), up or down.

Only models trained on an as-of strictly before the run's are candidates: a model trained on later data never
scores an earlier day (a backfill trains, or uses a model of its past). A rerun of a day reuses the decision its
first run recorded (`rerun_decision`): trained then, it trains again; scored by version V, it scores with V
again if V's file still verifies; otherwise it decides anew and records why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import joblib
import pandas as pd

from touchpoint.ml.drift import FeatureReference
from touchpoint.ml.model_runs import ModelRun, library_versions, model_version

TRAIN_SETTING = "TOUCHPOINT_ML_TRAIN"
EVERY_DAYS_SETTING = "TOUCHPOINT_ML_TRAIN_EVERY_DAYS"
PSI_SETTING = "TOUCHPOINT_ML_RETRAIN_PSI"
VOLUME_SETTING = "TOUCHPOINT_ML_RETRAIN_VOLUME_CHANGE"
TRAIN_MODES = ("auto", "always")
# The libraries a model file's pickle depends on: another version of any of them, and the file is not trusted.
PICKLE_LIBRARIES = ("scikit-learn", "numpy", "scipy", "joblib")
TRIGGERS = ("forced", "no_model", "cadence", "drift", "volume")


class MlSettingError(ValueError):
    """A TOUCHPOINT_ML_* setting has a value the ML stage cannot use."""


@dataclass(frozen=True)
class TrainingPolicy:
    """When to train (see the module docstring); `from_env` reads the TOUCHPOINT_ML_* settings."""

    mode: str = "auto"
    every_days: int = 7
    max_psi: float = 0.2
    max_volume_change: float = 0.2

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingPolicy:
        env = os.environ if environ is None else environ
        mode = env.get(TRAIN_SETTING, "").strip().lower() or cls.mode
        if mode not in TRAIN_MODES:
            raise MlSettingError(f"{TRAIN_SETTING} must be one of {', '.join(TRAIN_MODES)}, not {mode!r}")
        return cls(
            mode=mode,
            every_days=int(_number(env, EVERY_DAYS_SETTING, cls.every_days, "a whole number of days >= 1", whole=True)),
            max_psi=_number(env, PSI_SETTING, cls.max_psi, "a PSI above 0, e.g. 0.2"),
            max_volume_change=_number(env, VOLUME_SETTING, cls.max_volume_change, "a share above 0, e.g. 0.2 for 20%"),
        )

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "every_days": self.every_days, "max_psi": self.max_psi,
                "max_volume_change": self.max_volume_change}


def _number(env: Mapping[str, str], name: str, default: float, expected: str, whole: bool = False) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text.removesuffix("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise MlSettingError(f"{name} must be {expected}, not {text!r}") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise MlSettingError(f"{name} must be {expected}, not {text!r}")
    return value


@dataclass
class TrainedModel:
    """A model trained on an earlier as-of, loaded with its record and its training feature distribution."""

    record: ModelRun
    model: Any
    reference: FeatureReference


@dataclass
class Candidate:
    """The latest model of a name trained before the as-of: usable (`trained`) or why not (`unusable`)."""

    model_name: str
    trained: TrainedModel | None = None
    unusable: str | None = None


def reference_path(artifact_path: Path) -> Path:
    """The model's JSON sidecar (model_runs.save_model), which also holds its feature reference."""
    return artifact_path.with_suffix(".json")


def save_reference(run: ModelRun, reference: FeatureReference) -> None:
    """Rewrite the sidecar of a saved model with its final record and the training feature distribution."""
    if run.artifact_path is None:
        raise ValueError(f"{run.model_name} has no saved model file to keep a reference beside")
    sidecar = {**run.record(), "feature_reference": reference.as_dict()}
    reference_path(Path(run.artifact_path)).write_text(json.dumps(sidecar, indent=2, sort_keys=True))


RECORD_COLUMNS = """as_of, trained_at, training_window, time_unit, parameters, metrics, features, library_versions,
                     artifact_path, model_version"""


def _record_of(model_name: str, row: tuple[Any, ...]) -> ModelRun:
    """The ModelRun of a trained row of ml.model_runs (RECORD_COLUMNS)."""
    (trained_as_of, trained_at, window, unit, parameters, metrics, trained_features, versions, path, version) = row
    return ModelRun(
        model_name, trained_as_of, trained_at, training_window=window, time_unit=unit,
        parameters=json.loads(parameters or "{}"), metrics=json.loads(metrics or "{}"),
        features=json.loads(trained_features or "[]"), library_versions=json.loads(versions or "{}"),
        artifact_path=path, model_version=version, trained_as_of=trained_as_of,
    )


def artifact_file(artifact_path: str | Path, home: Path | None = None) -> Path:
    """A recorded model file: relative to the Touchpoint home (as written since), or absolute (as written
    before, and by callers that give no home)."""
    path = Path(artifact_path)
    return home / path if home is not None and not path.is_absolute() else path


def relative_to_home(artifact_path: str | None, home: Path) -> str | None:
    """How ml.model_runs keeps a model file: relative to the home when under it, so a moved home still finds
    its models."""
    if artifact_path is None or not Path(artifact_path).is_absolute():
        return artifact_path
    try:
        return str(Path(artifact_path).relative_to(home))
    except ValueError:
        return artifact_path


def latest_trained(con: duckdb.DuckDBPyConnection, model_name: str, as_of: date, features: list[str],
                   load: bool = True, home: Path | None = None) -> Candidate:
    """The newest model `model_name` trained on an as-of before `as_of`, loaded when it can be trusted.

    `load=False` (TOUCHPOINT_ML_TRAIN=always): the model file is not unpickled, only its feature reference read
    (to measure drift); `trained.model` is then None."""
    rows = con.execute(
        f"""select {RECORD_COLUMNS} from ml.model_runs
            where model_name = ? and action = 'trained' and as_of < ? order by as_of desc limit 1""",
        [model_name, as_of],
    ).fetchall()
    if not rows:
        return Candidate(model_name, unusable=f"no {model_name} model trained before {as_of.isoformat()}")
    return _trusted(con, _record_of(model_name, rows[0]), features, load, home)


def _trusted(con: duckdb.DuckDBPyConnection, record: ModelRun, features: list[str], load: bool = True,
             home: Path | None = None) -> Candidate:
    """`record`'s model loaded, or why it cannot score today."""
    name, trained_as_of = record.model_name, record.as_of
    why = _distrust(record, features, home) or _failed_gate(con, trained_as_of)
    if why is None:
        loaded = _load(record, load, home)
        if isinstance(loaded, TrainedModel):
            return Candidate(name, loaded)
        why = loaded
    return Candidate(name, unusable=f"the {name} model trained as of {trained_as_of}: {why}")


def _load(record: ModelRun, load: bool, home: Path | None = None) -> TrainedModel | str:
    """The model and its feature reference, or why they could not be read: a pickle names the classes and
    functions it was made of (e.g. touchpoint.ml.segments._log1p), so code renamed since breaks it."""
    path = artifact_file(str(record.artifact_path), home)
    try:
        model = joblib.load(path) if load else None
        sidecar = json.loads(reference_path(path).read_text())
        reference = FeatureReference.from_dict(sidecar["feature_reference"])
    except Exception as error:  # noqa: BLE001 - any failure to read a model means: train a new one
        return f"model file {path} or its feature reference could not be loaded ({type(error).__name__}: {error})"
    return TrainedModel(record, model, reference)


GATE_TABLE = ("audit", "gate_results")


def _failed_gate(con: duckdb.DuckDBPyConnection, trained_as_of: date) -> str | None:
    """Why a model trained as of `trained_as_of` is not trusted: its day's ML gate (the latest run of it)
    failed a critical check. A failed gate does not roll back the working warehouse, so the model's row stays
    in ml.model_runs; scoring with it would copy its validation metrics, and fail the gate again, every day
    until the cadence. None when the gate passed, or no gate result is kept (no audit.gate_results yet)."""
    present = {row[0] for row in con.execute(
        "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
        list(GATE_TABLE)).fetchall()}
    if not {"run_id", "layer", "success", "expectation"} <= present:
        return None
    table = ".".join(GATE_TABLE)
    if "as_of" in present:
        order = "checked_at desc nulls last, run_id desc" if "checked_at" in present else "run_id desc"
        latest = con.execute(
            f"select run_id from {table} where layer = 'ml' and as_of = ? order by {order} limit 1",
            [trained_as_of]).fetchall()
        run_id = latest[0][0] if latest else None
    else:
        run_id = trained_as_of.isoformat()  # the pipeline's run id
    if run_id is None:
        return None
    critical = "and severity = 'critical'" if "severity" in present else ""
    failed = [row[0] for row in con.execute(
        f"select distinct expectation from {table} where run_id = ? and layer = 'ml' and not success {critical} "
        "order by 1", [run_id]).fetchall()]
    if not failed:
        return None
    return f"the model of {trained_as_of.isoformat()} failed the ML gate ({', '.join(map(str, failed))})"


def _distrust(record: ModelRun, features: list[str], home: Path | None = None) -> str | None:
    """Why a recorded model cannot score today (None: it can)."""
    if not record.model_version or not record.artifact_path:
        return "no model version recorded (trained before versions were kept)"
    if record.features != list(features):
        return f"its features {record.features} are not today's {list(features)}"
    today = library_versions()
    changed = [f"{lib} {record.library_versions.get(lib)} -> {today[lib]}" for lib in PICKLE_LIBRARIES
               if record.library_versions.get(lib) != today[lib]]
    if changed:
        return f"library versions changed ({', '.join(changed)}): its file is not trusted"
    path = artifact_file(record.artifact_path, home)
    if not path.is_file():
        return f"model file {path} is missing"
    if model_version(record.trained_as_of or record.as_of, path) != record.model_version:
        return f"model file {path} is not the file trained (its hash differs from version {record.model_version})"
    try:
        sidecar = json.loads(reference_path(path).read_text())
    except (OSError, ValueError):
        return f"its feature reference {reference_path(path)} is missing or unreadable"
    if "feature_reference" not in sidecar:
        return f"{reference_path(path)} holds no feature reference"
    return None


@dataclass
class Decision:
    """Train or score a family of models (trained together) for one as-of, and what was measured to decide."""

    train: bool
    trigger: str | None = None
    reason: str | None = None
    models: dict[str, TrainedModel] = field(default_factory=dict)  # the models that score when not training
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model: PSI per feature, rows
    rerun: str | None = None  # a rerun that could not reuse its first run's decision: why (kept in `drift`)

    def psi(self, model_name: str) -> float | None:
        measured = [v for v in self.drift.get(model_name, {}).get("psi", {}).values() if v is not None]
        return max(measured) if measured else None


def decide(policy: TrainingPolicy, as_of: date, candidates: list[Candidate], today: pd.DataFrame) -> Decision:
    """Train or score the family of `candidates` (one per model, trained together) on today's features."""
    usable = {c.model_name: c.trained for c in candidates if c.trained is not None}
    drift = {name: _measure(model, today) for name, model in usable.items()}
    unusable = [c.unusable for c in candidates if c.trained is None]
    if policy.mode == "always":
        return Decision(True, "forced", f"{TRAIN_SETTING}=always", drift=drift)
    if unusable:
        return Decision(True, "no_model", "; ".join(unusable), drift=drift)
    trained_on = {model.record.as_of for model in usable.values()}
    if len(trained_on) > 1:
        dates = ", ".join(f"{name} {model.record.as_of}" for name, model in usable.items())
        return Decision(True, "no_model", f"the models were not trained together ({dates})", drift=drift)
    trained_as_of = trained_on.pop()
    age = (as_of - trained_as_of).days
    if age >= policy.every_days:
        reason = f"the model trained as of {trained_as_of} is {age} days old (train every {policy.every_days} days)"
        return Decision(True, "cadence", reason, drift=drift)
    worst = _worst_psi(drift)
    if worst is not None and worst[2] > policy.max_psi:
        name, feature, value = worst
        reason = f"PSI {value:.3f} of {feature} ({name}) since {trained_as_of} is above {policy.max_psi}"
        return Decision(True, "drift", reason, drift=drift)
    for name, measured in drift.items():
        change = measured["rows_change"]
        if change is not None and abs(change) > policy.max_volume_change:
            reason = (f"{measured['rows']} customers vs {measured['training_rows']} when {name} trained as of "
                      f"{trained_as_of} ({change:+.1%}, more than ±{policy.max_volume_change:.0%})")
            return Decision(True, "volume", reason, drift=drift)
    return Decision(False, models=usable, drift=drift)


def decide_family(con: duckdb.DuckDBPyConnection, policy: TrainingPolicy, as_of: date,
                  features: Mapping[str, list[str]], today: pd.DataFrame, home: Path | None = None) -> Decision:
    """Train or score the family of models `features` (model name -> its input features, trained together) for
    `as_of`: TOUCHPOINT_ML_TRAIN=always trains (no earlier model file is even loaded); a rerun of a day reuses
    that day's recorded decision (`rerun_decision`); otherwise `decide` on the latest earlier models."""
    note = None
    if policy.mode != "always":
        reused = rerun_decision(con, as_of, features, today, home)
        if isinstance(reused, Decision):
            return reused
        note = reused
    load = policy.mode != "always"
    candidates = [latest_trained(con, name, as_of, list(names), load=load, home=home)
                  for name, names in features.items()]
    decision = decide(policy, as_of, candidates, today)
    decision.rerun = note
    if note and decision.train:
        decision.reason = f"{decision.reason} ({note})"
    return decision


def rerun_decision(con: duckdb.DuckDBPyConnection, as_of: date, features: Mapping[str, list[str]],
                   today: pd.DataFrame, home: Path | None = None) -> Decision | str | None:
    """A rerun of `as_of` (ml.model_runs already has its rows) decides as its first run did, whatever was
    trained since (a backfill of earlier days, say): trained then, it trains again (training is deterministic
    on the same data) with the recorded trigger, reason and drift; scored then by model_version V, it scores
    with V again when V's file still verifies. Returns that decision; None on a first run; else why the
    first run's decision cannot be reused (the caller then decides anew and records it)."""
    names = list(features)
    rows = con.execute(
        f"""select model_name, action, model_version, training_trigger, training_reason, drift
            from ml.model_runs where as_of = ? and model_name in ({', '.join('?' for _ in names)})
            order by model_name""",
        [as_of, *names],
    ).fetchall()
    if not rows:
        return None
    first = {row[0]: row for row in rows}
    what = f"rerun of {as_of.isoformat()}"
    if set(first) != set(names):
        return f"{what}: its first run recorded {', '.join(sorted(first))} only, not the whole family; decided anew"
    triggered = [row for row in rows if row[3]]
    if triggered:
        _, _, _, trigger, reason, _ = triggered[0]
        drift = {row[0]: json.loads(row[5]) if row[5] else {} for row in rows}
        return Decision(True, trigger, reason, drift=drift)
    if any(row[1] != "scored" or not row[2] for row in rows):
        actions = ", ".join(f"{row[0]} {row[1]}" for row in rows)
        return f"{what}: its first run neither trained nor scored every model ({actions}); decided anew"
    models = {}
    for name, _, version, *_ in rows:
        found = con.execute(
            f"""select {RECORD_COLUMNS} from ml.model_runs
                where model_name = ? and action = 'trained' and model_version = ? and as_of < ?
                order by as_of desc limit 1""",
            [name, version, as_of],
        ).fetchall()
        if not found:
            return f"{what}: the {name} model {version} that scored it is no longer recorded as trained; decided anew"
        candidate = _trusted(con, _record_of(name, found[0]), list(features[name]), home=home)
        if candidate.trained is None:
            return f"{what}: the {name} model {version} that scored it cannot score again ({candidate.unusable}); " \
                   "decided anew"
        models[name] = candidate.trained
    return Decision(False, models=models, drift={name: _measure(model, today) for name, model in models.items()})


def _measure(model: TrainedModel, today: pd.DataFrame) -> dict[str, Any]:
    rows, training_rows = len(today), model.reference.rows
    return {
        "against_version": model.record.model_version,
        "psi": model.reference.stability(today),
        "rows": rows,
        "training_rows": training_rows,
        "rows_change": (rows / training_rows - 1) if training_rows else None,
    }


def _worst_psi(drift: dict[str, dict[str, Any]]) -> tuple[str, str, float] | None:
    measured = [(name, feature, value) for name, d in drift.items() for feature, value in d["psi"].items()
                if value is not None]
    return max(measured, key=lambda item: item[2]) if measured else None


def with_decision(run: ModelRun, decision: Decision) -> ModelRun:
    """Record on `run` why its family trained (or that it scored) and the drift measured."""
    run.training_trigger = decision.trigger if decision.train else None
    run.training_reason = decision.reason if decision.train else None
    run.psi = decision.psi(run.model_name)
    run.drift = dict(decision.drift.get(run.model_name, {}))
    if decision.rerun:
        run.drift["rerun"] = decision.rerun
    return run


def scored_run(model: TrainedModel, as_of: date, decision: Decision, metrics: dict[str, Any] | None = None) -> ModelRun:
    """The ml.model_runs record of a day scored by `model` (trained on an earlier as-of): the model's own record
    (parameters, validation metrics, file), with today's counts in `metrics` where given."""
    trained = model.record
    run = ModelRun(
        trained.model_name, as_of, trained.trained_at, action="scored",
        training_window=trained.training_window, time_unit=trained.time_unit, parameters=dict(trained.parameters),
        metrics={**trained.metrics, **(metrics or {})}, features=list(trained.features),
        library_versions=dict(trained.library_versions), artifact_path=trained.artifact_path,
        model_version=trained.model_version, trained_as_of=trained.trained_as_of or trained.as_of,
    )
    return with_decision(run, decision)

