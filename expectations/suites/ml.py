"""ML suite: what the ML stage wrote for the run's as-of date (ml.model_runs, ml.customer_propensity,
ml.customer_clv, ml.customer_segments; contracts in dbt_project/models/ml/_ml__sources.yml) is complete,
in range and stable. Each check is measured in DuckDB over the `as_of` partition, with counts and offending rows.

Critical (the run stops):
- `ml.tables_exist`: the ml tables this suite reads exist; when one is missing the ML stage has not written, and
  that is the only check (the others could not run);
- `ml.model_runs.model_name.model_recorded`: every model has its row in ml.model_runs for the as-of;
- `probability_in_range`: purchase and churn probabilities, and CLV's probability_alive, are in [0, 1] (NaN fails);
- `no_missing_scores`: every buyer (a person with a purchase up to the end of the as-of day,
  marts.fct_orders.is_purchase: the one purchase definition) has a score from every model that was trained:
  both propensities with their decile, a CLV row (expected purchases; CLV when Gamma-Gamma trained), a segment;
  buyers who did not grant profiling (marts.dim_consents) excepted;
- `profiling_consent_respected`: no score is written for a person whose profiling consent is not granted;
- `non_negative`: CLV and expected purchases are never negative;
- `segment_count` and `segment_min_share`: the segmentation has 2..12 segments and none under 1% of customers;
- `ml.model_runs.metrics.auc_above_floor`: each trained propensity model's validation ROC-AUC is at least 0.6.

Warnings (reported, the run goes on):
- `ml.model_runs.status.model_trained`: a recorded model was skipped (too few customers, nobody churned, ...);
- `drift_psi`: the population stability index of each score's distribution against the previous as-of (10 bins
  at the previous scores' deciles) is at most 0.25; no previous as-of, no comparison.

Thresholds come from the environment: TOUCHPOINT_GATE_ML_AUC_FLOOR, TOUCHPOINT_GATE_ML_MAX_PSI,
TOUCHPOINT_GATE_ML_MIN_SEGMENT_SHARE, TOUCHPOINT_GATE_ML_MIN_SEGMENTS, TOUCHPOINT_GATE_ML_MAX_SEGMENTS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime

import duckdb

from touchpoint.config import RunContext
from touchpoint.sql_text import sql_literal

from .. import checks
from ..checks import SAMPLE_SIZE, Check

# ml.model_runs.model_name of every model the ML stage records per as-of (the _ml__sources.yml contract).
MODELS = ("segments", "purchase_propensity", "churn_propensity", "bg_nbd", "gamma_gamma")
# The propensity models and the column prefix of their scores in ml.customer_propensity.
PROPENSITY = {"purchase_propensity": "purchase_30d", "churn_propensity": "churn_90d"}
PROBABILITIES = {
    "ml.customer_propensity": ("purchase_30d_probability", "churn_90d_probability"),
    "ml.customer_clv": ("probability_alive",),
}
NON_NEGATIVE = ("clv", "expected_purchases_90d", "expected_purchases_365d")
DRIFT = {"ml.customer_propensity": ("purchase_30d_probability", "churn_90d_probability"), "ml.customer_clv": ("clv",)}
SCORED_TABLES = ("ml.customer_propensity", "ml.customer_clv", "ml.customer_segments")
TABLES = ("model_runs", "customer_propensity", "customer_clv", "customer_segments")
PSI_BINS = 10


@dataclass(frozen=True)
class MlSuiteConfig:
    auc_floor: float = 0.6
    max_psi: float = 0.25
    min_segment_share: float = 0.01
    min_segments: int = 2
    max_segments: int = 12

    @classmethod
    def from_env(cls) -> MlSuiteConfig:
        def read(name: str, default: float) -> str:
            return os.environ.get(f"TOUCHPOINT_GATE_ML_{name}", str(default))

        return cls(
            auc_floor=float(read("AUC_FLOOR", cls.auc_floor)),
            max_psi=float(read("MAX_PSI", cls.max_psi)),
            min_segment_share=float(read("MIN_SEGMENT_SHARE", cls.min_segment_share)),
            min_segments=int(read("MIN_SEGMENTS", cls.min_segments)),
            max_segments=int(read("MAX_SEGMENTS", cls.max_segments)),
        )


def build_suite(ctx: RunContext, con: duckdb.DuckDBPyConnection, config: MlSuiteConfig | None = None) -> list[Check]:
    config = config or MlSuiteConfig.from_env()
    suite = [tables_exist()]
    if con.execute(suite[0].metrics_sql).fetchall()[0][1]:
        return suite
    day = _day(ctx.as_of)
    suite += [model_recorded(day), model_trained(day), model_not_from_the_future(day)]
    suite.append(auc_above_floor(day, config.auc_floor))
    suite += [
        checks.between(table, column, 0, 1, scope=f"as_of = {day}", name="probability_in_range",
                       label=f"person_id || ': ' || {column}", description=f"{column} in [0, 1]")
        for table, columns in PROBABILITIES.items() for column in columns
    ]
    not_profiled = _not_profiled(con)
    suite += [*missing_scores(day, ctx.as_of_end, not_profiled), *profiling_consent_respected(day, not_profiled)]
    suite += [segment_count(day, config), segment_min_share(day, config)]
    suite += [
        checks.between("ml.customer_clv", column, min_value=0, scope=f"as_of = {day}", name="non_negative",
                       label=f"person_id || ': ' || {column}", description=f"{column} is never negative")
        for column in NON_NEGATIVE
    ]
    suite += [drift_psi(table, column, day, config.max_psi) for table, columns in DRIFT.items() for column in columns]
    return suite


def _day(as_of: date) -> str:
    return f"date {sql_literal(as_of.isoformat())}"


def _trained(model: str, day: str) -> str:
    """SQL: `model` was trained for the as-of (a skipped model has no scores to check)."""
    return (f"exists (select 1 from ml.model_runs where model_name = {sql_literal(model)} and as_of = {day} "
            f"and status = 'trained')")


def _values(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"({sql_literal(name)})" for name in names)


def tables_exist() -> Check:
    missing = (f"from (values {_values(TABLES)}) as expected(name) where not exists (select 1 from "
               "information_schema.tables as t where t.table_schema = 'ml' and t.table_name = expected.name)")
    return checks.custom(
        "tables_exist", "ml", None,
        metrics_sql=f"select {len(TABLES)}, count(*) {missing}",
        sample_sql=f"select 'ml.' || name || ' is missing: the ML stage has not written' {missing} order by name",
        description="the ML stage wrote its tables",
    )


def model_recorded(day: str) -> Check:
    missing = (f"from (values {_values(MODELS)}) as expected(model_name) where not exists (select 1 from "
               f"ml.model_runs as runs where runs.model_name = expected.model_name and runs.as_of = {day})")
    return checks.custom(
        "model_recorded", "ml.model_runs", "model_name",
        metrics_sql=f"select {len(MODELS)}, count(*) {missing}",
        sample_sql=f"select model_name || ': no run recorded' {missing} order by model_name",
        description="every model has its ml.model_runs row for the as-of",
    )


def model_trained(day: str) -> Check:
    runs = f"from ml.model_runs where as_of = {day} and model_name in ({', '.join(map(sql_literal, MODELS))})"
    return checks.custom(
        "model_trained", "ml.model_runs", "status",
        metrics_sql=f"select count(*), count(*) filter (where status <> 'trained') {runs}",
        sample_sql=f"select model_name || ': ' || status || coalesce(' (' || reason || ')', '') {runs} "
                   f"and status <> 'trained' order by model_name",
        severity=checks.WARNING, description="every recorded model was trained, not skipped",
    )


def model_not_from_the_future(day: str) -> Check:
    """A day is scored by a model trained on data up to that day at the latest (ml/cadence.py picks one trained
    before the as-of): a later one would leak the future into a backfill's scores."""
    runs = f"from ml.model_runs where as_of = {day}"
    return checks.custom(
        "model_not_from_the_future", "ml.model_runs", "trained_as_of",
        metrics_sql=f"select count(*), count(*) filter (where trained_as_of > as_of) {runs}",
        sample_sql=f"select model_name || ': scored by the model of ' || trained_as_of {runs} "
                   f"and trained_as_of > as_of order by model_name",
        description="no model trained after the as-of scored it",
    )


def auc_above_floor(day: str, floor: float) -> Check:
    models = ", ".join(map(sql_literal, PROPENSITY))
    runs = (f"from (select model_name, try_cast(json_extract_string(metrics, '$.validation.roc_auc') as double) "
            f"as auc from ml.model_runs where as_of = {day} and status = 'trained' and model_name in ({models}))")
    bad = f"auc is null or auc < {floor!r}"
    return checks.custom(
        "auc_above_floor", "ml.model_runs", "metrics",
        metrics_sql=f"select count(*), count(*) filter (where {bad}) {runs}",
        sample_sql=f"select model_name || ': validation ROC-AUC ' || coalesce(round(auc, 4)::varchar, 'missing') "
                   f"|| ', floor {floor}' {runs} where {bad} order by model_name",
        description=f"validation ROC-AUC of each trained propensity model >= {floor}",
        details={"min_value": floor},
    )


def _not_profiled(con: duckdb.DuckDBPyConnection) -> str:
    """SQL: the persons the ML stage must not score (profiling not granted in marts.dim_consents); nobody when
    the marts have no dim_consents (the ML stage's own tests build only the marts it reads)."""
    present = con.execute(
        "select count(*) from duckdb_tables() where schema_name = 'marts' and table_name = 'dim_consents'"
    ).fetchone()[0]
    if not present:
        return "select null::varchar as person_id where false"
    return "select person_id from marts.dim_consents where purpose = 'profiling' and not is_granted"


def profiling_consent_respected(day: str, not_profiled: str) -> list[Check]:
    suite = []
    for table in SCORED_TABLES:
        scored = f"from {table} where as_of = {day}"
        refused = f"person_id in ({not_profiled})"
        suite.append(checks.custom(
            "profiling_consent_respected", table, "person_id",
            f"select count(*), count(*) filter (where {refused}) {scored}",
            f"select person_id {scored} and {refused} order by 1 limit {SAMPLE_SIZE}",
            description="no score for a person whose profiling consent is not granted",
        ))
    return suite


def _buyers_without(
    scores: str, bad: str, day: str, as_of_end: datetime, trained: str, not_profiled: str
) -> tuple[str, str]:
    """(metrics, sample) SQL: buyers up to `as_of_end` (except those the ML stage may not profile) whose row
    of `scores` (person_id, ...) for the as-of is missing or `bad`, counted only when `trained`."""
    buyers = (
        "select distinct person_id from marts.fct_orders where is_purchase and person_id is not null "
        f"and coalesce(ordered_at::timestamp, order_date::timestamp) < "
        f"timestamp {sql_literal(as_of_end.isoformat(sep=' '))} and person_id not in ({not_profiled})"
    )
    joined = (f"from ({buyers}) as buyers left join (select * from {scores} where as_of = {day}) as scored "
              f"using (person_id) where {trained}")
    unscored = f"scored.person_id is null or {bad}"
    return (f"select count(*), count(*) filter (where {unscored}) {joined}",
            f"select buyers.person_id {joined} and ({unscored}) order by 1 limit {SAMPLE_SIZE}")


def missing_scores(day: str, as_of_end: datetime, not_profiled: str) -> list[Check]:
    suite = []
    for model, prefix in PROPENSITY.items():
        bad = f"{prefix}_probability is null or {prefix}_decile is null or {prefix}_decile not between 1 and 10"
        metrics, sample = _buyers_without("ml.customer_propensity", bad, day, as_of_end, _trained(model, day),
                                           not_profiled)
        suite.append(checks.custom("no_missing_scores", "ml.customer_propensity", f"{prefix}_probability",
                                   metrics, sample, description=f"every buyer has a {prefix} score and decile"))
    clv_bad = (f"expected_purchases_90d is null or (clv is null and {_trained('gamma_gamma', day)})")
    metrics, sample = _buyers_without("ml.customer_clv", clv_bad, day, as_of_end, _trained("bg_nbd", day),
                                       not_profiled)
    suite.append(checks.custom("no_missing_scores", "ml.customer_clv", None, metrics, sample,
                               description="every buyer has a CLV row (expected purchases, and CLV)"))
    metrics, sample = _buyers_without("ml.customer_segments", "segment_id is null", day, as_of_end,
                                      _trained("segments", day), not_profiled)
    suite.append(checks.custom("no_missing_scores", "ml.customer_segments", "segment_id", metrics, sample,
                               description="every buyer has a segment"))
    return suite


def segment_count(day: str, config: MlSuiteConfig) -> Check:
    low, high = config.min_segments, config.max_segments
    counted = (f"from (select count(distinct segment_id) as n from ml.customer_segments where as_of = {day}) "
               f"where {_trained('segments', day)}")
    return checks.custom(
        "segment_count", "ml.customer_segments", None,
        metrics_sql=f"select count(*), count(*) filter (where n not between {low} and {high}) {counted}",
        sample_sql=f"select n || ' segments, expected {low}..{high}' {counted}",
        description=f"{low}..{high} segments", details={"min_value": low, "max_value": high},
    )


def segment_min_share(day: str, config: MlSuiteConfig) -> Check:
    share = config.min_segment_share
    sizes = (f"from (select segment_id, any_value(segment_name) as segment_name, count(*) as size, "
             f"sum(count(*)) over () as total from ml.customer_segments where as_of = {day} group by segment_id) "
             f"where {_trained('segments', day)}")
    return checks.custom(
        "segment_min_share", "ml.customer_segments", "segment_id",
        metrics_sql=f"select count(*), count(*) filter (where size < total * {share!r}) {sizes}",
        sample_sql=f"select 'segment ' || segment_id || ' (' || segment_name || '): ' || size || ' of ' || total "
                   f"{sizes} and size < total * {share!r} order by size",
        description=f"no segment holds under {share:.0%} of customers", details={"min_value": share},
    )


def _psi(table: str, column: str, day: str) -> str:
    """SQL CTEs ending in `measured` (previous_day, n_previous, n_latest, psi): the population stability index
    of `column` at the as-of against the latest earlier as-of, on bins cut at the previous values' deciles
    (the outer bins open-ended); empty bins count as a share of 1e-4. PSI is null when one side has no values,
    infinite when the previous values were all equal and the latest are not."""
    quantiles = ", ".join(repr(i / PSI_BINS) for i in range(PSI_BINS + 1))
    bin_of = "len(list_filter(inner_edges, lambda edge: edge <= value))"
    return f"""with
        previous_day as (select max(as_of) as day from {table} where as_of < {day}),
        previous as (select {column}::double as value from {table}
                     where as_of = (select day from previous_day) and {column} is not null),
        latest as (select {column}::double as value from {table} where as_of = {day} and {column} is not null),
        edges as (select list_sort(list_distinct(quantile_cont(value, [{quantiles}]))) as edges from previous),
        cut as (select edges, coalesce(edges[2:len(edges) - 1], []) as inner_edges from edges),
        binned as (select 'previous' as side, {bin_of} as bin from previous, cut
                   union all select 'latest', {bin_of} from latest, cut),
        bins as (select unnest(range(0, len(inner_edges) + 1)) as bin from cut),
        shares as (
            select greatest(count(binned.side) filter (where binned.side = 'previous')
                            / (select count(*) from previous), 1e-4) as expected,
                   greatest(count(binned.side) filter (where binned.side = 'latest')
                            / (select count(*) from latest), 1e-4) as actual
            from bins left join binned using (bin) group by bins.bin),
        sizes as (select (select day from previous_day) as previous_day, (select count(*) from previous) as n_previous,
                         (select count(*) from latest) as n_latest),
        measured as (
            select previous_day, n_previous, n_latest,
                   case when n_previous = 0 or n_latest = 0 then null
                        when (select len(edges) from cut) = 1 then
                            case when (select bool_and(value = (select edges[1] from cut)) from latest) then 0.0
                            else 'inf'::double end
                        else (select sum((actual - expected) * ln(actual / expected)) from shares)
                   end as psi
            from sizes)
    """


def drift_psi(table: str, column: str, day: str, max_psi: float) -> Check:
    measured = _psi(table, column, day)
    compared = "previous_day is not null"
    bad = f"psi is null or psi > {max_psi!r}"
    return checks.custom(
        "drift_psi", table, column,
        metrics_sql=f"{measured} select count(*) filter (where {compared}), "
                    f"count(*) filter (where {compared} and ({bad})) from measured",
        sample_sql=f"{measured} select 'psi ' || coalesce(round(psi, 4)::varchar, 'undefined') || ' vs ' "
                   f"|| previous_day || ' (' || n_previous || ' -> ' || n_latest || ' values), max {max_psi}' "
                   f"from measured where {compared}",
        severity=checks.WARNING, description=f"population stability index vs the previous as-of <= {max_psi}",
        details={"max_value": max_psi},
    )
