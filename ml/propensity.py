"""Purchase (30 days) and churn (90 days) propensity, point in time, with time-based validation.

For a horizon H and as-of cut-off C (the first instant after the as-of day):
- validation snapshot: features from orders before C - H, label from [C - H, C);
- training snapshots: cut-offs C - 2H, C - 3H, ... (labels end before the validation cut-off);
- the chosen model is then refitted on the most recent labelled snapshots (C - H, C - 2H, ...) and
  scores every customer with features as of C.
Candidates: HistGradientBoostingClassifier and a LogisticRegression baseline, both class-weighted for
imbalance and wrapped in CalibratedClassifierCV; the higher validation PR-AUC wins.

Churn is "no purchase in the next 90 days" among customers with at least one purchase.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from touchpoint.ml.features import PROPENSITY_FEATURES, labelled_snapshot, propensity_features
from touchpoint.ml.model_runs import ModelRun, save_model, skipped

RANDOM_STATE = 20240601
TRAINING_SNAPSHOTS = 3
MAX_TRAINING_ROWS = 60_000  # per fit (random sample); enough for 11 features, bounds the time
MIN_ROWS_PER_CLASS = 5  # calibration uses 3 folds; fewer examples of a class cannot be calibrated
RATE_FEATURES = ["online_share"]
SKEWED_FEATURES = [f for f in PROPENSITY_FEATURES if f not in RATE_FEATURES]


@dataclass(frozen=True)
class PropensityTask:
    model_name: str
    horizon_days: int
    predicts_churn: bool  # label is "no purchase in the horizon" instead of "a purchase"
    column_prefix: str


PURCHASE_30D = PropensityTask("purchase_propensity", 30, False, "purchase_30d")
CHURN_90D = PropensityTask("churn_propensity", 90, True, "churn_90d")
TASKS = (PURCHASE_30D, CHURN_90D)


class NotEnoughData(ValueError):
    """The history cannot support a labelled, validated model."""


def _log1p(values):
    return np.log1p(np.clip(values, 0, None))


def candidate_pipelines(n_rows: int) -> dict[str, Pipeline]:
    # Isotonic needs plenty of data per fold; sigmoid is safer on small samples.
    method = "isotonic" if n_rows >= 6000 else "sigmoid"
    linear_features = ColumnTransformer(
        [
            (
                "log_scaled",
                Pipeline([("log", FunctionTransformer(_log1p)), ("scale", StandardScaler())]),
                SKEWED_FEATURES,
            ),
            ("scaled", StandardScaler(), RATE_FEATURES),
        ]
    )
    tree_features = ColumnTransformer([("raw", "passthrough", PROPENSITY_FEATURES)])
    logistic = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=RANDOM_STATE)
    # Few bins: with class weights, binning uses weighted percentiles, which dominate the fit time.
    boosting = HistGradientBoostingClassifier(
        class_weight="balanced",
        max_iter=80,
        learning_rate=0.1,
        max_leaf_nodes=15,
        max_bins=32,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=RANDOM_STATE,
    )
    return {
        "logistic_regression": Pipeline(
            [("features", linear_features), ("model", CalibratedClassifierCV(logistic, method=method, cv=3))]
        ),
        "hist_gradient_boosting": Pipeline(
            [("features", tree_features), ("model", CalibratedClassifierCV(boosting, method=method, cv=3))]
        ),
    }


def top_decile_lift(labels: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    top = order[: max(1, int(np.ceil(len(order) * 0.1)))]
    base = labels.mean()
    return float(labels[top].mean() / base) if base > 0 else float("nan")


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "brier": float(brier_score_loss(labels, scores)),
        "top_decile_lift": top_decile_lift(labels, scores),
        "base_rate": float(labels.mean()),
        "rows": int(len(labels)),
        "positives": int(labels.sum()),
    }


def deciles(probabilities: np.ndarray, person_ids: np.ndarray) -> np.ndarray:
    """1..10 with 10 the highest probability; ties broken by person_id so reruns agree."""
    n = len(probabilities)
    if n == 0:
        return np.array([], dtype="int64")
    order = np.lexsort((person_ids.astype(str), probabilities))
    ranks = np.empty(n, dtype="int64")
    ranks[order] = np.arange(n)
    return (ranks * 10 // n + 1).astype("int64")


def _snapshots(purchases: pd.DataFrame, task: PropensityTask, cutoffs: list[datetime]) -> pd.DataFrame:
    frames = []
    for cutoff in cutoffs:
        snapshot = labelled_snapshot(purchases, cutoff, task.horizon_days)
        if task.predicts_churn:
            snapshot["label"] = 1 - snapshot["label"]
        if len(snapshot):
            frames.append(snapshot)
    if not frames:
        return pd.DataFrame(columns=["person_id", *PROPENSITY_FEATURES, "label", "cutoff"])
    return pd.concat(frames, ignore_index=True)


def _require_both_classes(frame: pd.DataFrame, what: str, task: PropensityTask) -> None:
    counts = frame["label"].value_counts()
    positives, negatives = int(counts.get(1, 0)), int(counts.get(0, 0))
    if min(positives, negatives) < MIN_ROWS_PER_CLASS:
        label = "churned" if task.predicts_churn else "purchased"
        raise NotEnoughData(
            f"{what} has {positives} customers who {label} and {negatives} who did not "
            f"(need >= {MIN_ROWS_PER_CLASS} of each)"
        )


def _cap(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame) <= MAX_TRAINING_ROWS:
        return frame
    return frame.sample(n=MAX_TRAINING_ROWS, random_state=RANDOM_STATE).sort_index()


def train_and_score(
    purchases: pd.DataFrame, as_of_end: datetime, task: PropensityTask
) -> tuple[pd.DataFrame, ModelRun, Pipeline | None]:
    """Validate, refit and score one task. Returns (person_id, probability), the run record and the model.

    Raises NotEnoughData when the history cannot support the model (the caller records a skipped run).
    """
    horizon = timedelta(days=task.horizon_days)
    validation_cutoff = as_of_end - horizon
    train_cutoffs = [validation_cutoff - horizon * k for k in range(1, TRAINING_SNAPSHOTS + 1)]
    refit_cutoffs = [validation_cutoff - horizon * k for k in range(0, TRAINING_SNAPSHOTS)]

    train = _cap(_snapshots(purchases, task, train_cutoffs))
    validation = _snapshots(purchases, task, [validation_cutoff])
    _require_both_classes(train, f"training data (cut-offs before {validation_cutoff:%Y-%m-%d})", task)
    _require_both_classes(validation, f"validation data (cut-off {validation_cutoff:%Y-%m-%d})", task)

    candidates = candidate_pipelines(len(train))
    evaluation: dict[str, dict[str, float]] = {}
    for name, pipeline in candidates.items():
        pipeline.fit(train[PROPENSITY_FEATURES], train["label"].to_numpy())
        scores = pipeline.predict_proba(validation[PROPENSITY_FEATURES])[:, 1]
        evaluation[name] = classification_metrics(validation["label"].to_numpy(), scores)
    chosen = max(evaluation, key=lambda name: (evaluation[name]["pr_auc"], name == "logistic_regression"))
    others = [name for name in evaluation if name != chosen]
    reason = (
        f"{chosen} has the higher validation PR-AUC ({evaluation[chosen]['pr_auc']:.4f} vs "
        + ", ".join(f"{name} {evaluation[name]['pr_auc']:.4f}" for name in others)
        + ")"
    )

    refit = _cap(_snapshots(purchases, task, refit_cutoffs))
    _require_both_classes(refit, "refit data", task)
    final = candidate_pipelines(len(refit))[chosen]
    final.fit(refit[PROPENSITY_FEATURES], refit["label"].to_numpy())

    scored = score_with(final, propensity_features(purchases, as_of_end))
    first_cutoff = min(refit_cutoffs)
    run = ModelRun(
        task.model_name,
        (as_of_end - timedelta(days=1)).date(),
        as_of_end,
        training_window=(
            f"feature cut-offs {first_cutoff:%Y-%m-%d}..{max(refit_cutoffs):%Y-%m-%d}, labels to "
            f"{as_of_end - timedelta(days=1):%Y-%m-%d}"
        ),
        time_unit="day",
        parameters={
            "algorithm": chosen,
            "horizon_days": task.horizon_days,
            "label": "no purchase in horizon" if task.predicts_churn else "purchase in horizon",
            "calibration": final.named_steps["model"].method,
            "class_weight": "balanced",
            "random_state": RANDOM_STATE,
        },
        metrics={
            "validation_cutoff": f"{validation_cutoff:%Y-%m-%d}",
            "training_cutoffs": [f"{c:%Y-%m-%d}" for c in train_cutoffs],
            "validation": evaluation[chosen],
            "candidates": evaluation,
            "selection": reason,
            "training_rows": int(len(train)),
            "refit_rows": int(len(refit)),
            "scored_rows": int(len(scored)),
        },
        features=list(PROPENSITY_FEATURES),
    )
    return scored, run, final


def score_all(
    purchases: pd.DataFrame, as_of: date, as_of_end: datetime, model_folder
) -> tuple[pd.DataFrame, list[ModelRun]]:
    """Train every task and return the rows of ml.customer_propensity for every customer, plus one run record
    per task (the ML stage trains on a cadence instead: ml/stage.py).

    A task without enough data is recorded as skipped and its two columns stay null.
    """
    current = propensity_features(purchases, as_of_end)
    runs, scores = [], {}
    for task in TASKS:
        try:
            scored, run, model = train_and_score(purchases, as_of_end, task)
        except NotEnoughData as error:
            runs.append(skipped(task.model_name, as_of, as_of_end, str(error), time_unit="day",
                                features=list(PROPENSITY_FEATURES)))
            continue
        save_model(run, model, model_folder)
        runs.append(run)
        scores[task.model_name] = scored
    return propensity_rows(current, as_of, scores), runs


def score_with(model: Pipeline, current: pd.DataFrame) -> pd.DataFrame:
    """(person_id, probability) of every customer in `current` (propensity_features) by a trained model."""
    probabilities = (
        model.predict_proba(current[PROPENSITY_FEATURES])[:, 1] if len(current) else np.array([], dtype="float64")
    )
    return pd.DataFrame({"person_id": current["person_id"], "probability": probabilities})


def propensity_rows(people: pd.DataFrame, as_of: date, scores: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Rows of ml.customer_propensity: every customer in `people` (propensity_features), with the probability
    and decile of each task in `scores` (model_name -> person_id, probability); a task without scores keeps its
    two columns null."""
    current = people[["person_id"]].copy()  # `current`: bench/mutations.py mutates a line below by its text
    current["as_of"] = pd.Series([as_of] * len(current), dtype="object")
    for task in TASKS:
        probability_column = f"{task.column_prefix}_probability"
        decile_column = f"{task.column_prefix}_decile"
        if task.model_name not in scores:
            current[probability_column] = np.nan
            current[decile_column] = pd.array([pd.NA] * len(current), dtype="Int64")
            continue
        merged = current[["person_id"]].merge(scores[task.model_name], on="person_id", how="left")
        current[probability_column] = merged["probability"].to_numpy()
        current[decile_column] = pd.array(
            deciles(merged["probability"].to_numpy(), merged["person_id"].to_numpy()), dtype="Int64"
        )
    return current
