"""Customer lifetime value: BG/NBD (purchase counts, dropout) and Gamma-Gamma (spend per purchase).

Maximum-likelihood fits with `scipy.optimize`, written in log space (gammaln/betaln/logaddexp) so
large frequencies or long tenures do not overflow. Conventions are the "buy till you die" ones
(Fader, Hardie & Lee 2005; the `lifetimes` package), with the day as the time unit:

- purchases on the same day count once, their amounts summed;
- frequency = number of repeat purchase days (distinct purchase days minus one);
- recency = days from first to last purchase day; T = days from first purchase day to the as-of date;
- monetary_value = mean value of the repeat purchase days (the first purchase excluded), 0 without repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

TIME_UNIT = "day"


class ModelFitError(RuntimeError):
    """The likelihood could not be maximised (too little or degenerate data)."""


# --------------------------------------------------------------------------- summary data


def rfm_summary(purchases: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Per-person frequency/recency/T/monetary_value in days from purchase rows.

    `purchases` has person_id, purchase_date (date-like) and amount; rows dated after `as_of` are ignored.
    Returns one row per person with at least one purchase day on or before `as_of`, sorted by person_id.
    """
    columns = ["person_id", "frequency", "recency", "T", "monetary_value", "first_purchase_date"]
    if purchases.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns}).astype({"person_id": "object"})
    frame = purchases[["person_id", "purchase_date", "amount"]].copy()
    frame["purchase_date"] = pd.to_datetime(frame["purchase_date"]).dt.normalize()
    end = pd.Timestamp(as_of)
    frame = frame[frame["purchase_date"] <= end]
    days = frame.groupby(["person_id", "purchase_date"], as_index=False)["amount"].sum()
    days = days.sort_values(["person_id", "purchase_date"], kind="stable")
    first = days.groupby("person_id")["purchase_date"].transform("min")
    days["is_repeat"] = days["purchase_date"] > first
    grouped = days.groupby("person_id")
    summary = pd.DataFrame(
        {
            "frequency": grouped["is_repeat"].sum().astype("float64"),
            "first_purchase_date": grouped["purchase_date"].min(),
            "last_purchase_date": grouped["purchase_date"].max(),
        }
    )
    repeat_amount = days[days["is_repeat"]].groupby("person_id")["amount"].mean()
    summary["monetary_value"] = repeat_amount.reindex(summary.index).fillna(0.0).astype("float64")
    summary["recency"] = (summary["last_purchase_date"] - summary["first_purchase_date"]).dt.days.astype("float64")
    summary["T"] = (end - summary["first_purchase_date"]).dt.days.astype("float64")
    summary = summary.reset_index().sort_values("person_id", kind="stable").reset_index(drop=True)
    return summary[columns]


# --------------------------------------------------------------------------- BG/NBD


def bgnbd_log_likelihood(params: np.ndarray, frequency: np.ndarray, recency: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood of BG/NBD with params (r, alpha, a, b)."""
    r, alpha, a, b = params
    x, t_x = frequency, recency
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + T)
    # The "died right after the last purchase" term only exists for repeat buyers.
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return a1 + a2 + np.logaddexp(a3, a4)


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


def _maximise(neg_mean_ll, x0: np.ndarray) -> np.ndarray:
    """Minimise a mean negative log-likelihood over log-parameters.

    BFGS first (fast); when it does not report convergence, Nelder-Mead from its end point and a second BFGS.
    """
    best = minimize(neg_mean_ll, x0, method="BFGS", options={"gtol": 1e-8})
    running_away = np.any(np.abs(best.x) > np.log(PARAMETER_RANGE[1]))
    if not best.success and not running_away:  # a run-away fit is reported by _require_interior
        simplex = minimize(
            neg_mean_ll,
            best.x,
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-12, "maxiter": 2000},
        )
        polished = minimize(neg_mean_ll, simplex.x, method="BFGS", options={"gtol": 1e-8})
        best = min([best, simplex, polished], key=lambda result: result.fun)
    if not np.all(np.isfinite(best.x)) or not np.isfinite(best.fun) or best.fun >= 1e300:
        raise ModelFitError("likelihood maximisation did not converge to finite parameters")
    return best.x


# Fitted parameters outside this range mean the likelihood has no interior maximum (e.g. nobody ever drops
# out, or every customer spends the same): the estimates run off to a boundary and are not usable.
PARAMETER_RANGE = (1e-5, 1e5)
_LOG_WALL = 16.0  # the optimiser is not allowed to wander beyond exp(+-16)


def _walled(objective):
    def wrapped(log_params: np.ndarray) -> float:
        if np.any(np.abs(log_params) > _LOG_WALL):
            return 1e300
        return objective(log_params)

    return wrapped


def _require_interior(model: str, params: dict[str, float]) -> None:
    low, high = PARAMETER_RANGE
    outside = {name: value for name, value in params.items() if not low <= value <= high}
    if outside:
        shown = ", ".join(f"{name}={value:.3g}" for name, value in outside.items())
        raise ModelFitError(
            f"{model} estimates ran to the boundary ({shown}): the data do not identify the model "
            "(e.g. no customer has lapsed, or spend does not vary)"
        )


def fit_bgnbd(frequency: np.ndarray, recency: np.ndarray, T: np.ndarray) -> BgNbdParams:
    """Maximum-likelihood BG/NBD fit (same objective as lifetimes' BetaGeoFitter with no penalizer)."""
    x = np.asarray(frequency, dtype="float64")
    t_x = np.asarray(recency, dtype="float64")
    big_t = np.asarray(T, dtype="float64")
    if len(x) < 2:
        raise ModelFitError("BG/NBD needs at least two customers")
    if not (x > 0).any():
        raise ModelFitError("BG/NBD needs at least one repeat purchase (every customer bought once)")
    if (big_t <= 0).all():
        raise ModelFitError("BG/NBD needs an observation period longer than zero days")
    # Compress identical (x, t_x, T) triples: the likelihood only depends on them.
    keys = np.stack([x, t_x, big_t], axis=1)
    unique, counts = np.unique(keys, axis=0, return_counts=True)
    ux, ut, uT = unique[:, 0], unique[:, 1], unique[:, 2]
    weights = counts / counts.sum()

    def neg_mean_ll(log_params: np.ndarray) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            value = -(weights * bgnbd_log_likelihood(np.exp(log_params), ux, ut, uT)).sum()
        return float(value) if np.isfinite(value) else 1e300

    scale = max(float(big_t.mean()), 1.0)
    best = _maximise(_walled(neg_mean_ll), np.log([1.0, scale, 1.0, 1.0]))
    r, alpha, a, b = np.exp(best)
    params = BgNbdParams(float(r), float(alpha), float(a), float(b))
    _require_interior("BG/NBD", params.as_dict())
    return params


def expected_purchases(params: BgNbdParams, t: float, frequency, recency, T) -> np.ndarray:
    """E[number of purchases in (T, T + t]] given each customer's history."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x = np.asarray(frequency, dtype="float64")
    t_x = np.asarray(recency, dtype="float64")
    big_t = np.asarray(T, dtype="float64")
    if t <= 0:
        return np.zeros_like(x)
    hyp_term = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + big_t + t))
    first = (a + b + x - 1) / (a - 1)
    second = 1 - hyp_term * ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
    with np.errstate(divide="ignore"):
        log_odds = (
            np.log(a) - np.log(b + np.maximum(x, 1) - 1) + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
        )
    denominator = 1 + np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)
    return first * second / denominator


def probability_alive(params: BgNbdParams, frequency, recency, T) -> np.ndarray:
    """P(still active at T | history); 1 for customers without repeat purchases (BG/NBD assumption)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x = np.asarray(frequency, dtype="float64")
    t_x = np.asarray(recency, dtype="float64")
    big_t = np.asarray(T, dtype="float64")
    log_div = (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, np.exp(-np.logaddexp(0.0, log_div)))


def expected_purchases_new_customer(params: BgNbdParams, t: float) -> float:
    """E[X(t)] for a customer just acquired (unconditional)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    first = (a + b - 1) / (a - 1)
    second = 1 - (alpha / (alpha + t)) ** r * hyp2f1(r, b, a + b - 1, t / (alpha + t))
    return float(first * second)


# --------------------------------------------------------------------------- Gamma-Gamma


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "gamma": self.gamma}


def gamma_gamma_log_likelihood(params: np.ndarray, frequency: np.ndarray, monetary_value: np.ndarray) -> np.ndarray:
    """Per-customer log-likelihood of the mean spend under Gamma-Gamma with params (p, q, gamma)."""
    p, q, v = params
    x, m = frequency, monetary_value
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + (p * x) * np.log(x)
        - (p * x + q) * np.log(x * m + v)
    )


def fit_gamma_gamma(frequency: np.ndarray, monetary_value: np.ndarray) -> GammaGammaParams:
    """Maximum-likelihood Gamma-Gamma on customers with >= 1 repeat purchase and positive mean spend."""
    x = np.asarray(frequency, dtype="float64")
    m = np.asarray(monetary_value, dtype="float64")
    keep = (x > 0) & (m > 0)
    x, m = x[keep], m[keep]
    if len(x) < 2:
        raise ModelFitError("Gamma-Gamma needs at least two customers with a repeat purchase of positive value")
    if np.allclose(m, m[0]):
        raise ModelFitError("Gamma-Gamma needs variation in spend (every repeat buyer spent the same)")

    def neg_mean_ll(log_params: np.ndarray) -> float:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            value = -gamma_gamma_log_likelihood(np.exp(log_params), x, m).mean()
        return float(value) if np.isfinite(value) else 1e300

    best = _maximise(_walled(neg_mean_ll), np.log([1.0, 2.0, float(np.mean(m))]))
    p, q, v = np.exp(best)
    params = GammaGammaParams(float(p), float(q), float(v))
    _require_interior("Gamma-Gamma", params.as_dict())
    return params


def expected_average_spend(params: GammaGammaParams, frequency, monetary_value) -> np.ndarray:
    """E[spend per purchase | history]: a weighted mean of the population mean and the customer's own."""
    p, q, v = params.p, params.q, params.gamma
    x = np.asarray(frequency, dtype="float64")
    m = np.asarray(monetary_value, dtype="float64")
    if q <= 1:
        raise ModelFitError(f"Gamma-Gamma q={q:.3f} <= 1: the population mean spend is undefined")
    population_mean = v * p / (q - 1)
    weight = (q - 1) / (p * x + q - 1)
    return weight * population_mean + (1 - weight) * m


# --------------------------------------------------------------------------- CLV


def customer_lifetime_value(
    bgnbd: BgNbdParams,
    spend: np.ndarray,
    frequency,
    recency,
    T,
    horizon_days: int = 365,
    annual_discount_rate: float = 0.10,
    period_days: int = 30,
) -> np.ndarray:
    """Discounted expected spend over the horizon, summed over `period_days` steps.

    Each step's expected purchases (difference of the cumulative BG/NBD expectation) times the expected
    spend per purchase, discounted to the as-of date at the annual rate (converted to the step length).
    """
    step_rate = (1 + annual_discount_rate) ** (period_days / 365.0) - 1
    total = np.zeros(len(np.asarray(frequency)), dtype="float64")
    previous = np.zeros_like(total)
    steps = int(np.ceil(horizon_days / period_days))
    for step in range(1, steps + 1):
        t = min(step * period_days, horizon_days)
        cumulative = expected_purchases(bgnbd, t, frequency, recency, T)
        total += (cumulative - previous) * spend / (1 + step_rate) ** step
        previous = cumulative
    return total


# --------------------------------------------------------------------------- backtest


def calibration_holdout_backtest(purchases: pd.DataFrame, as_of: date, holdout_days: int) -> dict[str, float]:
    """Fit BG/NBD on purchases up to as_of - holdout_days, predict repeat purchases in the holdout.

    Returns predicted vs actual totals and per-customer errors for the customers seen in calibration.
    Raises ModelFitError when the calibration period cannot be fitted.
    """
    cut = pd.Timestamp(as_of) - pd.Timedelta(days=holdout_days)
    dated = purchases.assign(purchase_date=pd.to_datetime(purchases["purchase_date"]).dt.normalize())
    calibration = rfm_summary(dated[dated["purchase_date"] <= cut], cut.date())
    params = fit_bgnbd(calibration["frequency"], calibration["recency"], calibration["T"])
    holdout = dated[(dated["purchase_date"] > cut) & (dated["purchase_date"] <= pd.Timestamp(as_of))]
    actual = holdout.groupby("person_id")["purchase_date"].nunique()
    actual = actual.reindex(calibration["person_id"]).fillna(0).to_numpy(dtype="float64")
    predicted = expected_purchases(
        params, holdout_days, calibration["frequency"], calibration["recency"], calibration["T"]
    )
    correlation = float(np.corrcoef(predicted, actual)[0, 1]) if actual.std() > 0 and predicted.std() > 0 else None
    return {
        "holdout_days": float(holdout_days),
        "calibration_end": cut.date().isoformat(),
        "customers": float(len(actual)),
        "predicted_total": float(predicted.sum()),
        "actual_total": float(actual.sum()),
        "relative_error_total": float((predicted.sum() - actual.sum()) / actual.sum()) if actual.sum() else None,
        "mae_per_customer": float(np.abs(predicted - actual).mean()),
        "correlation": correlation,
        "calibration_params": params.as_dict(),
    }
