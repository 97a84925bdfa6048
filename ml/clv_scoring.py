"""Fit BG/NBD + Gamma-Gamma as of a date and score every customer: the rows of `ml.customer_clv`.

Degradation (documented behaviour, never a crash):
- no purchases: both models skipped, no rows;
- BG/NBD cannot be fitted (e.g. nobody bought twice): both models skipped; rows keep the summary
  (frequency, recency, T, monetary_value) with null predictions and null clv;
- Gamma-Gamma cannot be fitted (too few repeat buyers, no spend variation, q <= 1): gamma_gamma skipped;
  BG/NBD predictions are kept, expected_avg_spend and clv are null.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from touchpoint.ml import clv
from touchpoint.ml.model_runs import ModelRun, save_model, skipped

CLV_HORIZON_DAYS = 365
ANNUAL_DISCOUNT_RATE = 0.10
BACKTEST_HOLDOUT_DAYS = 90
BG_FEATURES = ("frequency", "recency", "T")
GG_FEATURES = ("frequency", "monetary_value")

CLV_COLUMNS = [
    "person_id",
    "as_of",
    "frequency",
    "recency",
    "T",
    "monetary_value",
    "expected_purchases_90d",
    "expected_purchases_365d",
    "probability_alive",
    "expected_avg_spend",
    "clv",
    "clv_horizon_days",
    "discount_rate",
]


@dataclass
class ClvOutcome:
    scores: pd.DataFrame
    runs: list[ModelRun]


def _backtest(purchases: pd.DataFrame, as_of: date, summary: pd.DataFrame) -> dict:
    # Keep at least two thirds of the longest history for calibration.
    holdout = int(min(BACKTEST_HOLDOUT_DAYS, summary["T"].max() // 3))
    if holdout < 7:
        return {"skipped": f"history of {int(summary['T'].max())} days is too short for a holdout"}
    try:
        return clv.calibration_holdout_backtest(purchases, as_of, holdout)
    except clv.ModelFitError as error:
        return {"skipped": f"calibration fit failed: {error}"}


def fit_and_score_clv(
    purchases: pd.DataFrame, as_of: date, trained_at: datetime, model_folder: Path, summary: pd.DataFrame | None = None
) -> ClvOutcome:
    """Fit BG/NBD and Gamma-Gamma as of `as_of` and score every customer. purchases: person_id, purchase_date,
    amount (see features.load_purchases); `summary`: their clv.rfm_summary when already computed."""
    summary = clv.rfm_summary(purchases, as_of) if summary is None else summary
    window = f"{summary['first_purchase_date'].min().date().isoformat()}..{as_of.isoformat()}" if len(summary) else None
    records = _RunRecords(as_of, trained_at, window)

    if summary.empty:
        reason = "no purchases on or before as_of"
        return ClvOutcome(
            clv_rows(summary, as_of),
            [records.skipped("bg_nbd", reason, BG_FEATURES), records.skipped("gamma_gamma", reason, GG_FEATURES)],
        )

    x, t_x, big_t = summary["frequency"], summary["recency"], summary["T"]
    data_metrics = {
        "customers": len(summary),
        "repeat_customers": int((x > 0).sum()),
        "purchase_days": float(x.sum() + len(summary)),
    }
    try:
        bg = clv.fit_bgnbd(x, t_x, big_t)
    except clv.ModelFitError as error:
        return ClvOutcome(
            clv_rows(summary, as_of),
            [
                records.skipped("bg_nbd", f"BG/NBD not fitted: {error}", BG_FEATURES, metrics=data_metrics),
                records.skipped("gamma_gamma", "BG/NBD was not fitted", GG_FEATURES),
            ],
        )
    bg_run = _bg_nbd_run(records, bg, purchases, summary, data_metrics)
    save_model(bg_run, bg, model_folder)

    try:
        gg = clv.fit_gamma_gamma(x, summary["monetary_value"])
        spend = clv.expected_average_spend(gg, x, summary["monetary_value"])
    except clv.ModelFitError as error:
        # BG/NBD's expected purchases are still worth publishing: only spend and CLV stay null.
        gg_skipped = records.skipped("gamma_gamma", f"Gamma-Gamma not fitted: {error}", GG_FEATURES)
        return ClvOutcome(clv_rows(summary, as_of, bg), [bg_run, gg_skipped])

    gg_run = _gamma_gamma_run(records, gg, spend, summary)
    save_model(gg_run, gg, model_folder)
    return ClvOutcome(clv_rows(summary, as_of, bg, gg), [bg_run, gg_run])


def clv_rows(
    summary: pd.DataFrame,
    as_of: date,
    bg: clv.BgNbdParams | None = None,
    gg: clv.GammaGammaParams | None = None,
) -> pd.DataFrame:
    """Rows of ml.customer_clv for every customer of `summary` (clv.rfm_summary as of `as_of`): BG/NBD's
    predictions when `bg` is given, spend and CLV when `gg` is too; null otherwise."""
    scores = _unscored_rows(summary, as_of)
    if bg is None or summary.empty:
        return scores[CLV_COLUMNS]
    x, t_x, big_t = summary["frequency"], summary["recency"], summary["T"]
    scores["expected_purchases_90d"] = clv.expected_purchases(bg, 90, x, t_x, big_t)
    scores["expected_purchases_365d"] = clv.expected_purchases(bg, 365, x, t_x, big_t)
    scores["probability_alive"] = clv.probability_alive(bg, x, t_x, big_t)
    if gg is None:
        return scores[CLV_COLUMNS]
    spend = clv.expected_average_spend(gg, x, summary["monetary_value"])
    scores["expected_avg_spend"] = spend
    scores["clv"] = clv.customer_lifetime_value(
        bg, spend, x, t_x, big_t, horizon_days=CLV_HORIZON_DAYS, annual_discount_rate=ANNUAL_DISCOUNT_RATE
    )
    return scores[CLV_COLUMNS]


@dataclass(frozen=True)
class _RunRecords:
    """Builds the ml.model_runs records of one CLV fit, which share the as-of, the time of training and the
    training window."""

    as_of: date
    trained_at: datetime
    training_window: str | None

    def skipped(
        self, model_name: str, reason: str, features: tuple[str, ...], metrics: dict | None = None
    ) -> ModelRun:
        extra = {} if metrics is None else {"metrics": metrics}
        return skipped(
            model_name,
            self.as_of,
            self.trained_at,
            reason,
            features=list(features),
            training_window=self.training_window,
            time_unit=clv.TIME_UNIT,
            **extra,
        )

    def trained(self, model_name: str, parameters: dict, metrics: dict, features: tuple[str, ...]) -> ModelRun:
        return ModelRun(
            model_name,
            self.as_of,
            self.trained_at,
            parameters=parameters,
            metrics=metrics,
            features=list(features),
            training_window=self.training_window,
            time_unit=clv.TIME_UNIT,
        )


def _unscored_rows(summary: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """One row per customer with the RFM summary and null predictions: what is published when a model cannot
    be fitted (every buyer keeps a row, a missing score is visible as null)."""
    scores = pd.DataFrame(
        {
            "person_id": summary["person_id"].astype("object"),
            "as_of": pd.Series([as_of] * len(summary), dtype="object"),
            "frequency": summary["frequency"],
            "recency": summary["recency"],
            "T": summary["T"],
            "monetary_value": summary["monetary_value"],
        }
    )
    for column in [
        "expected_purchases_90d",
        "expected_purchases_365d",
        "probability_alive",
        "expected_avg_spend",
        "clv",
    ]:
        scores[column] = np.nan
    scores["clv_horizon_days"] = CLV_HORIZON_DAYS
    scores["discount_rate"] = ANNUAL_DISCOUNT_RATE
    return scores


def _bg_nbd_run(
    records: _RunRecords,
    bg: clv.BgNbdParams,
    purchases: pd.DataFrame,
    summary: pd.DataFrame,
    data_metrics: dict[str, float],
) -> ModelRun:
    """The fitted BG/NBD's record: fit quality, what it expects of a new customer, and a holdout backtest."""
    x, t_x, big_t = summary["frequency"], summary["recency"], summary["T"]
    log_likelihood = clv.bgnbd_log_likelihood(
        np.array([bg.r, bg.alpha, bg.a, bg.b]), x.to_numpy(), t_x.to_numpy(), big_t.to_numpy()
    )
    metrics = {
        **data_metrics,
        "mean_log_likelihood": float(log_likelihood.mean()),
        "expected_purchases_365d_new_customer": clv.expected_purchases_new_customer(bg, 365),
        "backtest": _backtest(purchases, records.as_of, summary),
    }
    return records.trained("bg_nbd", bg.as_dict(), metrics, BG_FEATURES)


def _gamma_gamma_run(
    records: _RunRecords, gg: clv.GammaGammaParams, spend: np.ndarray, summary: pd.DataFrame
) -> ModelRun:
    """The fitted Gamma-Gamma's record: how its spend estimate compares with what repeat buyers spent."""
    x = summary["frequency"]
    repeaters = (x > 0) & (summary["monetary_value"] > 0)
    observed = summary.loc[repeaters, "monetary_value"]
    varies = repeaters.sum() > 2 and x[repeaters].std() > 0 and observed.std() > 0
    correlation = float(np.corrcoef(x[repeaters], observed)[0, 1]) if varies else None
    metrics = {
        "customers_fitted": int(repeaters.sum()),
        "population_mean_spend": gg.gamma * gg.p / (gg.q - 1),
        "observed_mean_spend": float(observed.mean()),
        "mean_abs_error_spend_vs_observed": float(np.abs(spend[repeaters.to_numpy()] - observed).mean()),
        # Gamma-Gamma assumes spend is independent of frequency; a strong correlation weakens it.
        "frequency_spend_correlation": correlation,
    }
    return records.trained("gamma_gamma", gg.as_dict(), metrics, GG_FEATURES)
