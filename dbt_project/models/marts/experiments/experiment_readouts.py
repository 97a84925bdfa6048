"""Experiment readouts: per experiment and metric, the lift of the treated arm over the holdout, with its interval.

Why a Python model: the readout needs Welch's t quantiles, normal tails and a chi-square test (scipy), and
CUPED's per-experiment regression; SQL has none of the distributions. Everything else (the per-person outcome
windows) is SQL run in the model's DuckDB session (`PERSON_OUTCOMES_SQL`), so it reads the same marts as any
model. The statistics are plain functions over arrays, tested against scipy and hand-computed values
(tests/test_experiments_readouts.py) and calibrated with A/A experiments over many seeds.

Per person of marts.experiment_assignments (first assignment date D, from the run that assigned them; the send
follows that run, so outcomes count from the next day):
- outcome window: purchases (fct_orders.is_purchase, the one definition) dated D+1 .. D+N, N = var
  experiment_window_days (30); pre-period: D-N+1 .. D, the CUPED covariate (spend before the experiment);
- conversion_<N>d: at least one purchase in the window (0/1); revenue_per_person_<N>d: their net_amount
  summed (0 without one); churn_90d: no purchase in D+1 .. D+90 (var experiment_churn_days);
- a person counts for a metric once its window is over (D + window <= as_of): immature windows would bias
  every rate toward "nothing happened yet". People sent before the sync had its holdout
  (was_sent_before_assignment) are left out of both arms: they were treated before the experiment began.

Per experiment and metric:
- raw lift: difference of means (treatment - control). Proportions: Newcombe's hybrid score interval (Wilson
  limits per arm; `two_proportion` says why not Wald's), the p-value from the pooled two-proportion z test.
  Revenue: Welch's t (interval
  with Welch-Satterthwaite degrees of freedom, as scipy.stats.ttest_ind(equal_var=False)).
- relative lift: lift / control mean, its interval by the delta method (var of a ratio of independent means).
- CUPED (Deng et al. 2013): y' = y - theta (x - mean x), theta = cov(y, x) / var(x) over both arms pooled, x =
  pre-period spend; then Welch on y'. Same expectation, variance lower by corr(y, x)^2 (reported as
  cuped_variance_reduction). Reported beside the raw numbers, for every metric (pre-period spend is known for
  everyone, so it always applies; with no pre-period spend at all theta is 0 and CUPED equals raw).
- sample-ratio mismatch: chi-square of the assigned counts (all assigned people, matured or not) against the
  declared split (each person's holdout_share when assigned), flagged when p < 0.001: a broken assignment or
  a lost arm, which makes the readout untrustworthy whatever its p-value says.
"""

from statistics import NormalDist

import numpy as np
import pandas as pd

from touchpoint.config import run_as_of
from touchpoint.frames import temp_table

# scipy.stats is imported by the functions that use it, not above: its import is 1 s of every marts build, and
# most builds read no experiment that has a readout to compute.
Z_95 = NormalDist().inv_cdf(0.975)
SRM_ALPHA = 0.001
SIGNIFICANCE = 0.05
METRICS = ("conversion", "revenue_per_person", "churn")
COLUMNS = {
    "readout_id": "string",
    "experiment": "string",
    "metric": "string",
    "metric_kind": "string",
    "window_days": "int64",
    "as_of": "datetime64[s]",
    "treatment_size": "int64",
    "control_size": "int64",
    "treatment_value": "float64",
    "control_value": "float64",
    "absolute_lift": "float64",
    "absolute_lift_ci_low": "float64",
    "absolute_lift_ci_high": "float64",
    "relative_lift": "float64",
    "relative_lift_ci_low": "float64",
    "relative_lift_ci_high": "float64",
    "p_value": "float64",
    "is_significant": "boolean",
    "cuped_absolute_lift": "float64",
    "cuped_absolute_lift_ci_low": "float64",
    "cuped_absolute_lift_ci_high": "float64",
    "cuped_relative_lift": "float64",
    "cuped_relative_lift_ci_low": "float64",
    "cuped_relative_lift_ci_high": "float64",
    "cuped_p_value": "float64",
    "cuped_variance_reduction": "float64",
    "assigned_treatment": "int64",
    "assigned_control": "int64",
    "expected_control_share": "float64",
    "srm_p_value": "float64",
    "has_sample_ratio_mismatch": "boolean",
    "excluded_sent_before": "int64",
}

# One row per assigned person with the outcomes of every metric (null while the window is not over).
PERSON_OUTCOMES_SQL = """
with assignments as (
    select * replace (cast(first_assigned_date as date) as first_assigned_date) from {assignments}
),
purchases as (
    select person_id, cast(order_date as date) as order_date, net_amount
    from {orders}
    where is_purchase and cast(order_date as date) <= date '{as_of}'
),
windows as (
    select
        assignments.experiment,
        assignments.person_id,
        assignments.arm,
        assignments.holdout_share,
        assignments.was_sent_before_assignment,
        assignments.first_assigned_date,
        count(purchases.order_date) filter (
            where purchases.order_date > assignments.first_assigned_date
            and purchases.order_date <= assignments.first_assigned_date + {window_days}
        ) as window_purchases,
        coalesce(sum(purchases.net_amount) filter (
            where purchases.order_date > assignments.first_assigned_date
            and purchases.order_date <= assignments.first_assigned_date + {window_days}
        ), 0) as window_revenue,
        count(purchases.order_date) filter (
            where purchases.order_date > assignments.first_assigned_date
            and purchases.order_date <= assignments.first_assigned_date + {churn_days}
        ) as churn_window_purchases,
        coalesce(sum(purchases.net_amount) filter (
            where purchases.order_date > assignments.first_assigned_date - {window_days}
            and purchases.order_date <= assignments.first_assigned_date
        ), 0) as pre_period_spend
    from assignments
    left join purchases on purchases.person_id = assignments.person_id
    group by all
)
select
    experiment,
    person_id,
    arm,
    holdout_share,
    coalesce(was_sent_before_assignment, false) as was_sent_before_assignment,
    cast(pre_period_spend as double) as pre_period_spend,
    case when first_assigned_date + {window_days} <= date '{as_of}'
        then cast(window_purchases > 0 as double) end as conversion,
    case when first_assigned_date + {window_days} <= date '{as_of}'
        then cast(window_revenue as double) end as revenue_per_person,
    case when first_assigned_date + {churn_days} <= date '{as_of}'
        then cast(churn_window_purchases = 0 as double) end as churn
from windows
"""


def person_outcomes_sql(assignments: str, orders: str, as_of: str, window_days: int, churn_days: int) -> str:
    """SQL of one row per assigned person and its outcomes, over two relations (tables or subqueries)."""
    return PERSON_OUTCOMES_SQL.format(
        assignments=assignments, orders=orders, as_of=as_of, window_days=int(window_days), churn_days=int(churn_days)
    )


def _nan_result() -> dict:
    return {"diff": np.nan, "low": np.nan, "high": np.nan, "p": np.nan}


def wilson(successes: float, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval of one proportion."""
    p = successes / n
    centre = (p + Z_95**2 / (2 * n)) / (1 + Z_95**2 / n)
    half = Z_95 * np.sqrt(p * (1 - p) / n + Z_95**2 / (4 * n**2)) / (1 + Z_95**2 / n)
    return centre - half, centre + half


def two_proportion(successes_t: float, n_t: int, successes_c: float, n_c: int) -> dict:
    """Difference of two proportions: 95% interval by Newcombe's hybrid score method (1998, method 10: Wilson
    limits per arm) and the two-sided pooled-z p-value.

    Why not the textbook Wald interval (unpooled standard error): an arm at 0% or 100% has a standard error of
    zero, so the interval ignores that arm's uncertainty; a 10% holdout of a churn audience that barely buys
    (0 of 51 in the 10k demo) is exactly that case. Newcombe's interval keeps its coverage there and equals
    Wald's for large, balanced arms."""
    from scipy import stats
    if n_t < 1 or n_c < 1:
        return _nan_result()
    p_t, p_c = successes_t / n_t, successes_c / n_c
    diff = p_t - p_c
    (low_t, high_t), (low_c, high_c) = wilson(successes_t, n_t), wilson(successes_c, n_c)
    low = diff - np.sqrt((p_t - low_t) ** 2 + (high_c - p_c) ** 2)
    high = diff + np.sqrt((high_t - p_t) ** 2 + (p_c - low_c) ** 2)
    pooled = (successes_t + successes_c) / (n_t + n_c)
    se_pooled = np.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    p = 2 * stats.norm.sf(abs(diff) / se_pooled) if se_pooled > 0 else 1.0
    return {"diff": diff, "low": float(low), "high": float(high), "p": float(p)}


def welch(mean_t: float, var_t: float, n_t: int, mean_c: float, var_c: float, n_c: int) -> dict:
    """Difference of two means by Welch's t: 95% interval and two-sided p-value (sample variances, ddof 1)."""
    from scipy import stats
    if n_t < 2 or n_c < 2:
        return _nan_result()
    diff = mean_t - mean_c
    a, b = var_t / n_t, var_c / n_c
    se = np.sqrt(a + b)
    if se == 0:
        return {"diff": diff, "low": diff, "high": diff, "p": 1.0 if diff == 0 else 0.0}
    df = (a + b) ** 2 / (a**2 / (n_t - 1) + b**2 / (n_c - 1))
    half = float(stats.t.ppf(0.975, df)) * se
    p = 2 * stats.t.sf(abs(diff) / se, df)
    return {"diff": diff, "low": diff - half, "high": diff + half, "p": float(p)}


def relative_interval(mean_t: float, var_t: float, n_t: int, mean_c: float, var_c: float, n_c: int) -> dict:
    """mean_t / mean_c - 1 with a 95% delta-method interval (the arms independent); nan when mean_c is 0."""
    if n_t < 2 or n_c < 2 or mean_c == 0:
        return _nan_result()
    ratio = mean_t / mean_c - 1
    se = np.sqrt(var_t / n_t / mean_c**2 + mean_t**2 * var_c / n_c / mean_c**4)
    return {"diff": ratio, "low": ratio - Z_95 * se, "high": ratio + Z_95 * se, "p": np.nan}


def cuped_adjusted(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """(y - theta (x - mean x), theta), theta = cov(y, x) / var(x) over every unit (both arms pooled)."""
    var_x = float(np.var(x, ddof=1)) if len(x) > 1 else 0.0
    theta = float(np.cov(y, x, ddof=1)[0, 1] / var_x) if var_x > 0 else 0.0
    return y - theta * (x - x.mean()), theta


def sample_ratio_p_value(treatment: int, control: int, expected_control_share: float) -> float:
    """Chi-square goodness of fit of the arm counts to the declared split (1 degree of freedom)."""
    from scipy import stats
    total = treatment + control
    if total == 0 or not 0 < expected_control_share < 1:
        return np.nan
    expected = [total * (1 - expected_control_share), total * expected_control_share]
    return float(stats.chisquare([treatment, control], f_exp=expected).pvalue)


def _moments(values: np.ndarray) -> tuple[float, float, int]:
    n = len(values)
    return (float(values.mean()) if n else np.nan, float(values.var(ddof=1)) if n > 1 else np.nan, n)


def metric_readout(y: np.ndarray, x: np.ndarray, is_treatment: np.ndarray, kind: str) -> dict:
    """The raw and CUPED lifts of one metric: `y` the outcome, `x` the pre-period covariate, per person."""
    t, c = y[is_treatment], y[~is_treatment]
    mean_t, var_t, n_t = _moments(t)
    mean_c, var_c, n_c = _moments(c)
    if kind == "proportion":
        raw = two_proportion(float(t.sum()), n_t, float(c.sum()), n_c)
    else:
        raw = welch(mean_t, var_t, n_t, mean_c, var_c, n_c)
    relative = relative_interval(mean_t, var_t, n_t, mean_c, var_c, n_c)
    adjusted, _ = cuped_adjusted(y, x) if len(y) > 1 else (y, 0.0)
    at, ac = adjusted[is_treatment], adjusted[~is_treatment]
    amean_t, avar_t, _ = _moments(at)
    amean_c, avar_c, _ = _moments(ac)
    cuped = welch(amean_t, avar_t, n_t, amean_c, avar_c, n_c)
    # the relative CUPED lift is over the control's raw mean (the adjusted one is the same in expectation)
    cuped_relative = relative_interval(mean_c + cuped["diff"], avar_t, n_t, mean_c, avar_c, n_c)
    var_y = float(np.var(y, ddof=1)) if len(y) > 1 else np.nan
    reduction = 1 - float(np.var(adjusted, ddof=1)) / var_y if len(y) > 1 and var_y > 0 else np.nan
    return {
        "treatment_size": n_t,
        "control_size": n_c,
        "treatment_value": mean_t,
        "control_value": mean_c,
        "absolute_lift": raw["diff"],
        "absolute_lift_ci_low": raw["low"],
        "absolute_lift_ci_high": raw["high"],
        "relative_lift": relative["diff"],
        "relative_lift_ci_low": relative["low"],
        "relative_lift_ci_high": relative["high"],
        "p_value": raw["p"],
        "cuped_absolute_lift": cuped["diff"],
        "cuped_absolute_lift_ci_low": cuped["low"],
        "cuped_absolute_lift_ci_high": cuped["high"],
        "cuped_relative_lift": cuped_relative["diff"],
        "cuped_relative_lift_ci_low": cuped_relative["low"],
        "cuped_relative_lift_ci_high": cuped_relative["high"],
        "cuped_p_value": cuped["p"],
        "cuped_variance_reduction": reduction,
    }


def readouts(persons: pd.DataFrame, as_of: str, window_days: int, churn_days: int) -> pd.DataFrame:
    """One row per experiment and metric from `person_outcomes_sql`'s rows."""
    rows = []
    windows = {"conversion": window_days, "revenue_per_person": window_days, "churn": churn_days}
    kinds = {"conversion": "proportion", "revenue_per_person": "mean", "churn": "proportion"}
    for experiment, group in persons.groupby("experiment", sort=True):
        is_treatment_all = (group["arm"] == "treatment").to_numpy()
        assigned_t, assigned_c = int(is_treatment_all.sum()), int((~is_treatment_all).sum())
        expected_share = float(group["holdout_share"].astype(float).mean())
        srm_p = sample_ratio_p_value(assigned_t, assigned_c, expected_share)
        sent_before = group["was_sent_before_assignment"].fillna(False).astype(bool).to_numpy()
        for metric in METRICS:
            mature = group[~sent_before & group[metric].notna().to_numpy()]
            y = mature[metric].astype(float).to_numpy()
            x = mature["pre_period_spend"].astype(float).to_numpy()
            result = metric_readout(y, x, (mature["arm"] == "treatment").to_numpy(), kinds[metric])
            name = f"{metric}_{windows[metric]}d"
            rows.append({
                "readout_id": f"{experiment}:{name}",
                "experiment": experiment,
                "metric": name,
                "metric_kind": kinds[metric],
                "window_days": windows[metric],
                "as_of": pd.Timestamp(as_of),
                **result,
                "is_significant": bool(result["p_value"] < SIGNIFICANCE) if result["p_value"] == result["p_value"]
                else None,
                "assigned_treatment": assigned_t,
                "assigned_control": assigned_c,
                "expected_control_share": expected_share,
                "srm_p_value": srm_p,
                "has_sample_ratio_mismatch": bool(srm_p < SRM_ALPHA) if srm_p == srm_p else None,
                "excluded_sent_before": int(sent_before.sum()),
            })
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype(COLUMNS)


def model(dbt, session):
    dbt.config(materialized="table")
    # each dbt.config.get on a line of its own (dbt's parser only sees calls not nested in another)
    as_of = run_as_of(dbt.config.get("as_of"))
    window_days = dbt.config.get("window_days")
    churn_days = dbt.config.get("churn_days")
    assignments = dbt.ref("experiment_assignments").sql_query()
    orders = dbt.ref("fct_orders").sql_query()
    sql = person_outcomes_sql(f"({assignments})", f"({orders})", str(as_of), int(window_days), int(churn_days))
    persons = session.execute(sql).df()
    temp_table(session, "tp_experiment_readouts", readouts(persons, str(as_of), int(window_days), int(churn_days)))
    return session.sql("select * replace (cast(as_of as date) as as_of) from tp_experiment_readouts")
