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


def fit_and_score_clv(purchases: pd.DataFrame, as_of: date, trained_at: datetime, model_folder: Path) -> ClvOutcome:
    """purchases: person_id, purchase_date, amount (see features.load_purchases)."""
    summary = clv.rfm_summary(purchases, as_of)
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
    window = f"{summary['first_purchase_date'].min().date().isoformat()}..{as_of.isoformat()}" if len(summary) else None
    common = {"training_window": window, "time_unit": clv.TIME_UNIT}
    bg_features = ["frequency", "recency", "T"]
    gg_features = ["frequency", "monetary_value"]

    if summary.empty:
        reason = "no purchases on or before as_of"
        return ClvOutcome(
            scores[CLV_COLUMNS],
            [
                skipped("bg_nbd", as_of, trained_at, reason, features=bg_features, **common),
                skipped("gamma_gamma", as_of, trained_at, reason, features=gg_features, **common),
            ],
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
        reason = f"BG/NBD not fitted: {error}"
        return ClvOutcome(
            scores[CLV_COLUMNS],
            [
                skipped("bg_nbd", as_of, trained_at, reason, features=bg_features, metrics=data_metrics, **common),
                skipped("gamma_gamma", as_of, trained_at, "BG/NBD was not fitted", features=gg_features, **common),
            ],
        )

    scores["expected_purchases_90d"] = clv.expected_purchases(bg, 90, x, t_x, big_t)
    scores["expected_purchases_365d"] = clv.expected_purchases(bg, 365, x, t_x, big_t)
    scores["probability_alive"] = clv.probability_alive(bg, x, t_x, big_t)
    log_likelihood = clv.bgnbd_log_likelihood(
        np.array([bg.r, bg.alpha, bg.a, bg.b]), x.to_numpy(), t_x.to_numpy(), big_t.to_numpy()
    )
    bg_run = ModelRun(
        "bg_nbd",
        as_of,
        trained_at,
        parameters=bg.as_dict(),
        metrics={
            **data_metrics,
            "mean_log_likelihood": float(log_likelihood.mean()),
            "expected_purchases_365d_new_customer": clv.expected_purchases_new_customer(bg, 365),
            "backtest": _backtest(purchases, as_of, summary),
        },
        features=bg_features,
        **common,
    )
    save_model(bg_run, bg, model_folder)
    runs = [bg_run]

    try:
        gg = clv.fit_gamma_gamma(x, summary["monetary_value"])
        spend = clv.expected_average_spend(gg, x, summary["monetary_value"])
    except clv.ModelFitError as error:
        runs.append(
            skipped(
                "gamma_gamma",
                as_of,
                trained_at,
                f"Gamma-Gamma not fitted: {error}",
                features=gg_features,
                **common,
            )
        )
        return ClvOutcome(scores[CLV_COLUMNS], runs)

    repeaters = (x > 0) & (summary["monetary_value"] > 0)
    observed = summary.loc[repeaters, "monetary_value"]
    varies = repeaters.sum() > 2 and x[repeaters].std() > 0 and observed.std() > 0
    correlation = float(np.corrcoef(x[repeaters], observed)[0, 1]) if varies else None
    gg_run = ModelRun(
        "gamma_gamma",
        as_of,
        trained_at,
        parameters=gg.as_dict(),
        metrics={
            "customers_fitted": int(repeaters.sum()),
            "population_mean_spend": gg.gamma * gg.p / (gg.q - 1),
            "observed_mean_spend": float(observed.mean()),
            "mean_abs_error_spend_vs_observed": float(np.abs(spend[repeaters.to_numpy()] - observed).mean()),
            # Gamma-Gamma assumes spend is independent of frequency; a strong correlation weakens it.
            "frequency_spend_correlation": correlation,
        },
        features=gg_features,
        **common,
    )
    save_model(gg_run, gg, model_folder)
    runs.append(gg_run)
    scores["expected_avg_spend"] = spend
    scores["clv"] = clv.customer_lifetime_value(
        bg, spend, x, t_x, big_t, horizon_days=CLV_HORIZON_DAYS, annual_discount_rate=ANNUAL_DISCOUNT_RATE
    )
    return ClvOutcome(scores[CLV_COLUMNS], runs)
