"""ML suite: the outputs of the ML stage (ml.customer_segments, ml.customer_propensity, ml.customer_clv,
ml.model_runs) for the run's as-of date.

The checks themselves belong to the ML stage (`touchpoint.ml.checks.ml_output_checks`: models trained,
probabilities in [0, 1], every active person scored, CLV non-negative, segment count and sizes, validation
AUC above a floor, drift against the previous as-of). This module turns each of them into a gate
expectation, so they are judged, recorded in audit.gate_results and reported like every other layer:
severity 'error' is critical, 'warning' is reported only; the sample shows observed, threshold and detail.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from touchpoint.config import RunContext

from .. import checks
from ..checks import Check


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _shown(outcome: dict[str, Any]) -> str:
    observed = json.dumps(outcome.get("observed"), default=str)
    threshold = json.dumps(outcome.get("threshold"), default=str)
    return f"observed {observed}, threshold {threshold}: {outcome.get('detail') or ''}".strip(": ")


def build_suite(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> list[Check]:
    from touchpoint.ml.checks import ml_output_checks

    suite: list[Check] = []
    seen: dict[str, int] = {}
    for outcome in ml_output_checks(con, ctx.as_of):
        name = str(outcome["check"])
        table = str(outcome["table"])
        key = f"{table}.{name}"
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:  # the same check on the same table twice: keep ids unique
            name = f"{name}_{seen[key]}"
        suite.append(checks.custom(
            name, table, None,
            metrics_sql=f"select 1, {0 if outcome['success'] else 1}",
            sample_sql=f"select {_literal(_shown(outcome))}",
            severity=checks.CRITICAL if outcome.get("severity", "error") == "error" else checks.WARNING,
            description=str(outcome.get("detail") or name),
        ))
    return suite
