"""The statistics of marts.experiment_readouts (dbt_project/models/marts/experiments/experiment_readouts.py).

Ground truth here is synthetic, by design: the tests build assignments and orders with a known lift (or none),
run the model's own SQL (the per-person outcome windows) and statistics on them, and check
- the formulas against scipy and hand-computed values on tiny examples,
- CUPED: same expectation, less variance when pre-period spend correlates with the outcome,
- the sample-ratio-mismatch check flags a broken split and passes a sound one,
- calibration over many seeds: A/A experiments (no effect) give p < 0.05 and intervals missing 0 about 5% of
  the time, and experiments with a known lift have intervals covering it about 95% of the time (both asserted
  within 99.9% binomial bounds), with the raw and the CUPED figures alike.
The demo generator does not apply a treatment effect (see docs/experiments.md, "Ground truth").
"""

from __future__ import annotations

import importlib.util
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.conftest import PROJECT_ROOT

MODEL_FILE = PROJECT_ROOT / "dbt_project" / "models" / "marts" / "experiments" / "experiment_readouts.py"
_spec = importlib.util.spec_from_file_location("experiment_readouts", MODEL_FILE)
readout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readout)

AS_OF = date(2026, 6, 30)
ASSIGNED = date(2026, 3, 1)
WINDOW, CHURN = 30, 90
SEEDS = 200


def binomial_bounds(n: int, p: float, level: float = 0.999) -> tuple[int, int]:
    tail = (1 - level) / 2
    return int(stats.binom.ppf(tail, n, p)), int(stats.binom.isf(tail, n, p))


# --- the formulas, on examples small enough to check by hand ---------------------------------------------------

def test_two_proportion_by_hand() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, example (a): 56/70 - 48/80, method 10: 0.0524 .. 0.3339
    newcombe = readout.two_proportion(56, 70, 48, 80)
    assert newcombe["diff"] == pytest.approx(0.2)
    assert (newcombe["low"], newcombe["high"]) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    # Wilson's interval of one proportion, by its formula: 0 of 51 still leaves room up to 7%
    assert readout.wilson(0, 51) == pytest.approx((0.0, 1.959964**2 / (51 + 1.959964**2)), abs=1e-7)
    # for large, balanced arms the interval is Wald's (unpooled standard error)
    big = readout.two_proportion(3000, 10000, 2000, 10000)
    se = np.sqrt(0.3 * 0.7 / 10000 + 0.2 * 0.8 / 10000)
    assert (big["low"], big["high"]) == pytest.approx((0.1 - 1.959964 * se, 0.1 + 1.959964 * se), abs=2e-4)
    # an arm with no conversion keeps its uncertainty: Wald's interval would end at the treated arm's own width
    zero = readout.two_proportion(72, 412, 0, 51)
    wald_low = 72 / 412 - 1.959964 * np.sqrt(72 / 412 * (1 - 72 / 412) / 412)
    assert zero["low"] < wald_low - 0.03
    # 30/100 treated vs 20/100 control
    result = readout.two_proportion(30, 100, 20, 100)
    assert result["diff"] == pytest.approx(0.1)
    pooled_z = 0.1 / np.sqrt(0.25 * 0.75 * (2 / 100))
    assert result["p"] == pytest.approx(2 * stats.norm.sf(pooled_z))
    assert result["p"] == pytest.approx(0.1025, abs=5e-4)  # z = 1.633
    # the pooled z test is the chi-square test of the 2x2 table without continuity correction
    chi2 = stats.chi2_contingency([[30, 70], [20, 80]], correction=False)
    assert result["p"] == pytest.approx(chi2.pvalue)
    assert readout.two_proportion(0, 10, 0, 10)["p"] == 1.0


def test_welch_matches_scipy() -> None:
    treated = np.array([12.0, 0.0, 30.5, 7.25, 0.0, 18.0, 22.0])
    control = np.array([5.0, 0.0, 0.0, 11.0, 3.5])
    result = readout.welch(treated.mean(), treated.var(ddof=1), len(treated),
                           control.mean(), control.var(ddof=1), len(control))
    reference = stats.ttest_ind(treated, control, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert result["diff"] == pytest.approx(treated.mean() - control.mean())
    assert result["p"] == pytest.approx(reference.pvalue)
    assert (result["low"], result["high"]) == pytest.approx((interval.low, interval.high))


def test_relative_lift_by_the_delta_method() -> None:
    result = readout.relative_interval(12.0, 16.0, 400, 10.0, 9.0, 100)
    se = np.sqrt(16.0 / 400 / 100 + 144 * 9.0 / 100 / 10_000)
    assert result["diff"] == pytest.approx(0.2)
    assert (result["low"], result["high"]) == pytest.approx((0.2 - 1.959964 * se, 0.2 + 1.959964 * se), rel=1e-6)
    assert np.isnan(readout.relative_interval(1.0, 1.0, 10, 0.0, 1.0, 10)["diff"])


def test_cuped_keeps_the_lift_and_removes_the_explained_variance() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    pre = rng.gamma(2.0, 20.0, n)
    is_treatment = rng.uniform(size=n) >= 0.5
    y = 0.8 * pre + rng.normal(0, 10, n) + 5.0 * is_treatment
    adjusted, theta = readout.cuped_adjusted(y, pre)
    assert theta == pytest.approx(np.cov(y, pre)[0, 1] / np.var(pre, ddof=1))
    assert adjusted.mean() == pytest.approx(y.mean())
    result = readout.metric_readout(y, pre, is_treatment, "mean")
    correlation = np.corrcoef(y, pre)[0, 1]
    assert result["cuped_variance_reduction"] == pytest.approx(correlation**2, rel=1e-9)
    assert result["cuped_variance_reduction"] > 0.8
    raw_width = result["absolute_lift_ci_high"] - result["absolute_lift_ci_low"]
    cuped_width = result["cuped_absolute_lift_ci_high"] - result["cuped_absolute_lift_ci_low"]
    assert cuped_width < 0.5 * raw_width
    assert result["cuped_absolute_lift_ci_low"] < 5.0 < result["cuped_absolute_lift_ci_high"]
    # an unrelated covariate changes (almost) nothing
    noise = rng.normal(0, 1, n)
    unrelated = readout.metric_readout(y, noise, is_treatment, "mean")
    assert unrelated["cuped_variance_reduction"] < 0.01
    assert unrelated["cuped_absolute_lift"] == pytest.approx(unrelated["absolute_lift"], abs=0.5)
    # no pre-period spend at all: theta 0, CUPED is the raw Welch readout
    flat = readout.metric_readout(y, np.zeros(n), is_treatment, "mean")
    assert flat["cuped_absolute_lift"] == pytest.approx(flat["absolute_lift"])
    assert flat["cuped_p_value"] == pytest.approx(flat["p_value"])


def test_sample_ratio_mismatch() -> None:
    assert readout.sample_ratio_p_value(9000, 1000, 0.1) == pytest.approx(1.0)
    assert readout.sample_ratio_p_value(900, 100, 0.1) > 0.5
    # 8% held out where 10% was declared, on 10,000 people: a broken split
    assert readout.sample_ratio_p_value(9200, 800, 0.1) < 1e-6
    assert readout.sample_ratio_p_value(9200, 800, 0.1) == pytest.approx(
        stats.chisquare([9200, 800], [9000, 1000]).pvalue)
    assert readout.sample_ratio_p_value(5100, 4900, 0.5) > readout.SRM_ALPHA  # noise, not a mismatch


# --- the model's SQL and statistics on synthetic assignments and orders ----------------------------------------

def synthetic_experiment(
    seed: int,
    n: int = 2000,
    holdout: float = 0.2,
    conversion_lift: float = 0.0,
    spend_lift: float = 0.0,
    experiment: str = "exp",
    control_share_actual: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(assignments, orders) as marts.experiment_assignments and marts.fct_orders hold them.

    Each person has a latent activity a ~ Gamma: pre-period spend and the outcomes depend on it (so CUPED has
    something to explain). The treated buy in the window with probability p0(a) + conversion_lift and spend
    spend_lift more per order: the true lifts are known exactly (`true_lifts`).
    """
    rng = np.random.default_rng(seed)
    share = holdout if control_share_actual is None else control_share_actual
    arms = np.where(rng.uniform(size=n) < share, "control", "treatment")
    activity = rng.gamma(1.5, 1.0, n)
    base = np.clip(0.08 + 0.1 * activity, 0, 0.8)
    treated = arms == "treatment"
    ids = np.array([f"{experiment}-{i:05d}" for i in range(n)])
    assignments = pd.DataFrame({
        "experiment": experiment, "person_id": ids, "arm": arms, "holdout_share": holdout,
        "first_assigned_date": pd.Timestamp(ASSIGNED), "was_sent_before_assignment": False, "sync_name": "s",
    })
    orders = []
    # pre-period: up to two purchases in the 30 days before (and on) the assignment date
    for _ in range(2):
        buys = rng.uniform(size=n) < np.clip(0.15 * activity, 0, 0.9)
        days = rng.integers(0, WINDOW, n)
        amounts = rng.gamma(2.0, 15.0 + 10.0 * activity)
        orders.append(pd.DataFrame({"person_id": ids[buys], "order_date": [ASSIGNED - timedelta(int(d)) for d in
                                    days[buys]], "net_amount": amounts[buys], "is_purchase": True}))
    # the outcome window: one purchase or none (so conversion and revenue have known means)
    converts = rng.uniform(size=n) < base + conversion_lift * treated
    days = rng.integers(1, WINDOW + 1, n)
    amounts = rng.gamma(2.0, 15.0 + 10.0 * activity) + spend_lift * treated
    orders.append(pd.DataFrame({"person_id": ids[converts], "order_date": [ASSIGNED + timedelta(int(d)) for d in
                                days[converts]], "net_amount": amounts[converts], "is_purchase": True}))
    # a cancelled order in the window is not a purchase and must not count
    orders.append(pd.DataFrame({"person_id": ids[:50], "order_date": ASSIGNED + timedelta(3), "net_amount": 99.0,
                                "is_purchase": False}))
    frame = pd.concat(orders, ignore_index=True)
    frame["order_date"] = pd.to_datetime(frame["order_date"])
    return assignments, frame


def true_lifts(conversion_lift: float, spend_lift: float) -> dict[str, float]:
    """The true absolute lifts of synthetic_experiment: conversion + lift; revenue per person E[p] * spend +
    lift * E[spend per order]; computed from the generating process by a very large simulation of the control."""
    rng = np.random.default_rng(12345)
    activity = rng.gamma(1.5, 1.0, 2_000_000)
    base = np.clip(0.08 + 0.1 * activity, 0, 0.8)
    spend = 2.0 * (15.0 + 10.0 * activity)
    revenue_lift = float(np.mean((base + conversion_lift) * (spend + spend_lift) - base * spend))
    return {"conversion_30d": conversion_lift, "revenue_per_person_30d": revenue_lift}


def run_readout(assignments: pd.DataFrame, orders: pd.DataFrame, as_of: date = AS_OF) -> pd.DataFrame:
    con = duckdb.connect()
    con.register("assignments", assignments)
    con.register("orders", orders)
    persons = con.execute(readout.person_outcomes_sql("assignments", "orders", as_of.isoformat(), WINDOW, CHURN)).df()
    return readout.readouts(persons, as_of.isoformat(), WINDOW, CHURN).set_index("metric")


def test_outcome_windows_on_a_hand_made_example() -> None:
    day = pd.Timestamp(ASSIGNED)
    assignments = pd.DataFrame({
        "experiment": "e", "person_id": ["a", "b", "c", "d"], "arm": ["treatment", "treatment", "control", "control"],
        "holdout_share": 0.5, "first_assigned_date": day, "was_sent_before_assignment": [False, False, False, True],
        "sync_name": "s",
    })
    orders = pd.DataFrame({
        "person_id": ["a", "a", "a", "b", "b", "c", "d"],
        "order_date": [day, day + pd.Timedelta(days=1), day + pd.Timedelta(days=30), day + pd.Timedelta(days=31),
                       day - pd.Timedelta(days=29), day + pd.Timedelta(days=5), day + pd.Timedelta(days=2)],
        "net_amount": [40.0, 10.0, 5.0, 7.0, 8.0, 20.0, 50.0],
        "is_purchase": [True, True, True, True, True, False, True],
    })
    con = duckdb.connect()
    con.register("assignments", assignments)
    con.register("orders", orders)
    persons = con.execute(readout.person_outcomes_sql("assignments", "orders", AS_OF.isoformat(), WINDOW, CHURN)
                          ).df().set_index("person_id")
    # a: the assignment day is pre-period; days 1 and 30 are in the window. b: day 31 is not, day -29 is pre.
    # c: a cancelled order is no purchase. d: sent before the holdout, kept here and left out by the readout.
    assert persons.loc[["a", "b", "c", "d"], "conversion"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert persons.loc[["a", "b", "c", "d"], "revenue_per_person"].tolist() == [15.0, 0.0, 0.0, 50.0]
    assert persons.loc[["a", "b", "c", "d"], "pre_period_spend"].tolist() == [40.0, 8.0, 0.0, 0.0]
    assert persons.loc[["a", "b", "c", "d"], "churn"].tolist() == [0.0, 0.0, 1.0, 0.0]
    # a window not over by the as-of is not counted yet
    early = con.execute(readout.person_outcomes_sql("assignments", "orders", (ASSIGNED + timedelta(40)).isoformat(),
                                                    WINDOW, CHURN)).df()
    assert early["conversion"].notna().all() and early["churn"].isna().all()
    result = readout.readouts(persons.reset_index(), AS_OF.isoformat(), WINDOW, CHURN).set_index("metric")
    row = result.loc["conversion_30d"]
    assert (row["treatment_size"], row["control_size"], row["excluded_sent_before"]) == (2, 1, 1)
    assert (row["assigned_treatment"], row["assigned_control"]) == (2, 2)
    assert row["readout_id"] == "e:conversion_30d"


def test_a_known_lift_is_recovered_within_its_interval() -> None:
    assignments, orders = synthetic_experiment(seed=7, n=20_000, holdout=0.1, conversion_lift=0.05, spend_lift=10.0)
    result = run_readout(assignments, orders)
    truth = true_lifts(0.05, 10.0)
    for metric, lift in truth.items():
        row = result.loc[metric]
        assert row["absolute_lift_ci_low"] < lift < row["absolute_lift_ci_high"], (metric, row)
        assert row["cuped_absolute_lift_ci_low"] < lift < row["cuped_absolute_lift_ci_high"], (metric, row)
        assert row["p_value"] < 0.001 and row["is_significant"]
    assert not result["has_sample_ratio_mismatch"].any()
    conversion = result.loc["conversion_30d"]
    assert conversion["relative_lift"] == pytest.approx(
        conversion["absolute_lift"] / conversion["control_value"])
    assert result.loc["revenue_per_person_30d", "cuped_variance_reduction"] > 0.02
    churn = result.loc["churn_90d"]
    assert churn["absolute_lift"] == pytest.approx(-conversion["absolute_lift"])  # one purchase at most, in 30 days


def test_a_broken_split_is_flagged() -> None:
    # declared 10%, actually 7% held out (e.g. the control was partly sent and dropped)
    assignments, orders = synthetic_experiment(seed=1, n=10_000, holdout=0.1, control_share_actual=0.07)
    result = run_readout(assignments, orders)
    assert result["has_sample_ratio_mismatch"].all() and (result["srm_p_value"] < 1e-6).all()
    sound = run_readout(*synthetic_experiment(seed=1, n=10_000, holdout=0.1))
    assert not sound["has_sample_ratio_mismatch"].any()


@pytest.mark.parametrize(("conversion_lift", "spend_lift"), [(0.0, 0.0), (0.04, 8.0)], ids=["a_a", "known_lift"])
def test_calibration_over_many_seeds(conversion_lift: float, spend_lift: float) -> None:
    """Each seed is a new experiment of 2,000 people with 20% held out. The 95% intervals must cover the true
    lift in about 95% of them (for A/A: p < 0.05 in about 5%), raw and CUPED."""
    truth = true_lifts(conversion_lift, spend_lift)
    misses = {(metric, kind): 0 for metric in truth for kind in ("raw", "cuped")}
    false_positives = {metric: 0 for metric in truth}
    for seed in range(SEEDS):
        result = run_readout(*synthetic_experiment(seed=1000 + seed, conversion_lift=conversion_lift,
                                                   spend_lift=spend_lift))
        for metric, lift in truth.items():
            row = result.loc[metric]
            misses[(metric, "raw")] += not row["absolute_lift_ci_low"] <= lift <= row["absolute_lift_ci_high"]
            misses[(metric, "cuped")] += not (row["cuped_absolute_lift_ci_low"] <= lift
                                              <= row["cuped_absolute_lift_ci_high"])
            false_positives[metric] += bool(row["p_value"] < 0.05)
    low, high = binomial_bounds(SEEDS, 0.05)
    assert all(low <= count <= high for count in misses.values()), (misses, (low, high))
    if conversion_lift == 0 and spend_lift == 0:
        assert all(low <= count <= high for count in false_positives.values()), (false_positives, (low, high))
