"""Plain-data checks of the ML outputs for one as_of, for the ML quality gate to assert on.

Each check is a dict: check, table, success (bool), severity ('error' fails the gate, 'warning' is reported),
observed, threshold, detail. Nothing here raises on bad outputs; it reports them.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import duckdb
import numpy as np

from touchpoint.ml.features import ORDER_TIME, PURCHASE_FILTER, day_end, table_exists

PROBABILITY_COLUMNS = {
    "customer_propensity": ["purchase_30d_probability", "churn_90d_probability"],
    "customer_clv": ["probability_alive"],
}
PROPENSITY_MODELS = {"purchase_propensity": "purchase_30d", "churn_propensity": "churn_90d"}


def _check(
    check: str, table: str, success: bool, observed: Any, threshold: Any, detail: str, severity: str = "error"
) -> dict[str, Any]:
    return {
        "check": check,
        "table": table,
        "success": bool(success),
        "severity": severity,
        "observed": observed,
        "threshold": threshold,
        "detail": detail,
    }


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> Any:
    return con.execute(sql, params).fetchall()[0][0]


def _model_runs(con: duckdb.DuckDBPyConnection, as_of: date) -> dict[str, dict[str, Any]]:
    rows = con.execute(
        "select model_name, status, reason, metrics::varchar from ml.model_runs where as_of = ?", [as_of]
    ).fetchall()
    return {
        name: {"status": status, "reason": reason, "metrics": json.loads(metrics or "{}")}
        for name, status, reason, metrics in rows
    }


def population_stability(previous: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI between two score distributions, bins from the previous run's quantiles."""
    if len(previous) == 0 or len(current) == 0:
        return float("nan")
    edges = np.unique(np.quantile(previous, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0 if np.allclose(current, previous[0]) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(previous, edges)[0] / len(previous)
    actual = np.histogram(current, edges)[0] / len(current)
    expected, actual = np.clip(expected, 1e-4, None), np.clip(actual, 1e-4, None)
    return float(((actual - expected) * np.log(actual / expected)).sum())


def ml_output_checks(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    auc_floor: float = 0.6,
    max_psi: float = 0.25,
    min_segment_share: float = 0.01,
    segment_count_range: tuple[int, int] = (2, 12),
) -> list[dict[str, Any]]:
    """Checks of the ml tables written for `as_of` (see module doc for the shape)."""
    results: list[dict[str, Any]] = []
    if not table_exists(con, "ml", "model_runs"):
        return [_check("ml_tables_exist", "ml.model_runs", False, None, None, "the ML stage has not written")]
    runs = _model_runs(con, as_of)
    for name in ["segments", *PROPENSITY_MODELS, "bg_nbd", "gamma_gamma"]:
        run = runs.get(name)
        status = run["status"] if run else "missing"
        results.append(
            _check(
                "model_trained",
                "ml.model_runs",
                status == "trained",
                status,
                "trained",
                f"{name}: {status}" + (f" ({run['reason']})" if run and run["reason"] else ""),
                severity="error" if status == "missing" else "warning",
            )
        )

    # Probabilities in [0, 1]
    for table, columns in PROBABILITY_COLUMNS.items():
        for column in columns:
            bad = _scalar(
                con,
                f"select count(*) from ml.{table} where as_of = ? and ({column} < 0 or {column} > 1 "
                f"or isnan({column}))",
                [as_of],
            )
            results.append(
                _check(
                    "probability_in_range",
                    f"ml.{table}.{column}",
                    bad == 0,
                    bad,
                    0,
                    f"{bad} values outside [0, 1]",
                )
            )

    # Every active person (>= 1 purchase up to as_of) scored by every trained model
    active = f"select distinct person_id from marts.fct_orders where {PURCHASE_FILTER} and {ORDER_TIME} < ?"
    for model, prefix in PROPENSITY_MODELS.items():
        if runs.get(model, {}).get("status") != "trained":
            continue
        missing = _scalar(
            con,
            f"""select count(*) from ({active}) as a
                left join ml.customer_propensity as p on p.person_id = a.person_id and p.as_of = ?
                where p.{prefix}_probability is null or p.{prefix}_decile not between 1 and 10""",
            [day_end(as_of), as_of],
        )
        results.append(
            _check(
                "no_missing_scores",
                f"ml.customer_propensity.{prefix}",
                missing == 0,
                missing,
                0,
                f"{missing} active persons without a {prefix} score and decile",
            )
        )
    if runs.get("bg_nbd", {}).get("status") == "trained":
        missing = _scalar(
            con,
            f"""select count(*) from ({active}) as a
                left join ml.customer_clv as c on c.person_id = a.person_id and c.as_of = ?
                where c.expected_purchases_90d is null
                   or (c.clv is null and ? = 'trained') or c.clv < 0 or c.expected_purchases_90d < 0""",
            [day_end(as_of), as_of, runs.get("gamma_gamma", {}).get("status")],
        )
        results.append(
            _check(
                "no_missing_scores",
                "ml.customer_clv",
                missing == 0,
                missing,
                0,
                f"{missing} active persons without a valid (non-negative) CLV row",
            )
        )

    # Segments: everyone assigned, count and sizes
    if runs.get("segments", {}).get("status") == "trained":
        missing = _scalar(
            con,
            f"""select count(*) from ({active}) as a
                left join ml.customer_segments as s on s.person_id = a.person_id and s.as_of = ?
                where s.segment_id is null""",
            [day_end(as_of), as_of],
        )
        results.append(
            _check(
                "no_missing_scores",
                "ml.customer_segments",
                missing == 0,
                missing,
                0,
                f"{missing} active persons without a segment",
            )
        )
        sizes = [
            row[0]
            for row in con.execute(
                "select count(*) from ml.customer_segments where as_of = ? group by segment_id", [as_of]
            ).fetchall()
        ]
        low, high = segment_count_range
        results.append(
            _check(
                "segment_count",
                "ml.customer_segments",
                low <= len(sizes) <= high,
                len(sizes),
                list(segment_count_range),
                f"{len(sizes)} segments",
            )
        )
        smallest = min(sizes) / sum(sizes) if sizes else 0.0
        results.append(
            _check(
                "segment_min_share",
                "ml.customer_segments",
                smallest >= min_segment_share,
                round(smallest, 4),
                min_segment_share,
                "share of the smallest segment",
            )
        )

    # Validation AUC above the floor
    for model in PROPENSITY_MODELS:
        run = runs.get(model)
        if not run or run["status"] != "trained":
            continue
        auc = run["metrics"].get("validation", {}).get("roc_auc")
        results.append(
            _check(
                "auc_above_floor",
                f"ml.model_runs.{model}",
                auc is not None and auc >= auc_floor,
                auc,
                auc_floor,
                "validation ROC-AUC of the chosen model",
            )
        )

    # Drift against the previous run
    previous_as_of = _scalar(con, "select max(as_of) from ml.customer_propensity where as_of < ?", [as_of])
    if previous_as_of is not None:
        for table, column in [
            ("customer_propensity", "purchase_30d_probability"),
            ("customer_propensity", "churn_90d_probability"),
            ("customer_clv", "clv"),
        ]:

            def values(day: date, table: str = table, column: str = column) -> np.ndarray:
                rows = con.execute(
                    f"select {column} from ml.{table} where as_of = ? and {column} is not null", [day]
                ).fetchall()
                return np.array([row[0] for row in rows], dtype="float64")

            psi = population_stability(values(previous_as_of), values(as_of))
            results.append(
                _check(
                    "drift_psi",
                    f"ml.{table}.{column}",
                    bool(np.isfinite(psi) and psi <= max_psi),
                    None if not np.isfinite(psi) else round(psi, 4),
                    max_psi,
                    f"population stability index vs {previous_as_of}",
                    severity="warning",
                )
            )
    return results
