"""The quality gate: run a layer's suite, judge it with Great Expectations, record it, stop on failure.

How it works, and why: GX 1.x has no DuckDB datasource and its SQL path through duckdb-engine returned
empty metrics, while its pandas path works but would pull whole tables into memory. So DuckDB computes
every check's metrics (element count, unexpected count, a few offending values: see `checks.py`), and GX
validates the resulting one-row frame of "share of expected elements" per check with one
`ExpectColumnMinToBeBetween(min_value=mostly)` each, severity included. Memory is bounded by DuckDB's
aggregation, not by table size (bench/gates.py measures it on 1M-row tables).

`run_gate` writes `<run artifacts>/gates/<layer>.json` (our results plus GX's suite and validation
result), `<layer>.md` and `<layer>.html`, replaces this run's rows of the layer in `audit.gate_results`,
and raises `GateFailed` when a critical expectation fails.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from touchpoint.config import RunContext

from .checks import CRITICAL, Check, Measurement, measure
from .suites import suite_for

AUDIT_TABLE = "audit.gate_results"


@dataclass(frozen=True)
class ExpectationResult:
    """The outcome of one expectation of a suite."""

    expectation: str
    table: str
    column: str | None
    success: bool
    severity: str
    element_count: int
    unexpected_count: int
    unexpected_share: float
    mostly: float
    sample: list[Any]
    description: str = ""
    error: str | None = None

    @property
    def check_id(self) -> str:
        return ".".join(part for part in (self.table, self.column, self.expectation) if part)

    def line(self) -> str:
        if self.error:
            return f"{self.check_id}: could not run ({self.error})"
        shown = ", ".join(json.dumps(v, default=str) for v in self.sample)
        tolerance = f" (tolerated share {1 - self.mostly:.0%})" if self.mostly < 1 else ""
        return (f"{self.check_id}: {self.unexpected_count} of {self.element_count} unexpected{tolerance}"
                + (f"; e.g. {shown}" if shown else ""))


@dataclass(frozen=True)
class GateResult:
    """A layer's gate: success means no critical expectation failed (warnings are reported only)."""

    run_id: str
    layer: str
    suite: str
    as_of: str
    success: bool
    results: list[ExpectationResult]
    seconds: float
    reports: dict[str, Path] = field(default_factory=dict)

    @property
    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success and r.severity == CRITICAL]

    @property
    def warnings(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success and r.severity != CRITICAL]

    def summary(self) -> str:
        head = (f"gate {self.layer}: {'passed' if self.success else 'FAILED'} - "
                f"{len(self.results) - len(self.failures) - len(self.warnings)} of {len(self.results)} "
                f"expectations met, {len(self.failures)} failed, {len(self.warnings)} warnings")
        lines = [head] + [f"  FAILED  {r.line()}" for r in self.failures]
        lines += [f"  WARNING {r.line()}" for r in self.warnings]
        if "html" in self.reports:
            lines.append(f"  report: {self.reports['html']}")
        return "\n".join(lines)


class GateFailed(RuntimeError):
    """A critical expectation failed: nothing may be published or synced from this run."""

    def __init__(self, result: GateResult, note: str = "") -> None:
        super().__init__(result.summary() + (f"\n{note}" if note else ""))
        self.result = result
        self.note = note


def run_gate(ctx: RunContext, layer: str, con: duckdb.DuckDBPyConnection, *,
             raise_on_failure: bool = True) -> GateResult:
    """Run the suite of `layer` ("raw", "marts", "ml", ...) against the open warehouse `con`: judge it, write
    its reports, record it in audit.gate_results, and raise GateFailed on a critical failure."""
    result, gx_suite, gx_validation = _judge(ctx, layer, con)
    reports = _write_reports(ctx.run_artifacts / "gates", result, gx_suite, gx_validation)
    result = GateResult(**{**result.__dict__, "reports": reports})
    _record(con, result)
    if not result.success and raise_on_failure:
        raise GateFailed(result)
    return result


def evaluate_gate(ctx: RunContext, layer: str, con: duckdb.DuckDBPyConnection) -> GateResult:
    """Judge the suite of `layer` without writing reports or audit rows (a what-if, e.g. without a batch)."""
    return _judge(ctx, layer, con)[0]


def _judge(ctx: RunContext, layer: str,
           con: duckdb.DuckDBPyConnection) -> tuple[GateResult, dict[str, Any], dict[str, Any]]:
    started = time.perf_counter()
    checks = suite_for(layer)(ctx, con)
    ids = [c.check_id for c in checks]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"suite {layer} has duplicate expectation ids: {duplicated}")
    measurements = [measure(con, check) for check in checks]
    suite_name = f"touchpoint_{layer}"
    verdicts, gx_suite, gx_validation = _judge_with_gx(suite_name, checks, measurements)
    results = [
        ExpectationResult(
            expectation=c.name, table=c.table, column=c.column, success=verdicts[c.check_id],
            severity=c.severity, element_count=m.element_count, unexpected_count=m.unexpected_count,
            unexpected_share=round(m.unexpected_share, 6), mostly=c.mostly, sample=m.sample,
            description=c.description, error=m.error,
        )
        for c, m in zip(checks, measurements, strict=True)
    ]
    success = all(r.success for r in results if r.severity == CRITICAL)
    result = GateResult(ctx.run_id, layer, suite_name, ctx.as_of.isoformat(), success, results,
                        round(time.perf_counter() - started, 3))
    return result, gx_suite, gx_validation


def _quiet_gx() -> None:
    """GX logs hundreds of INFO lines and phones home on import: neither belongs in a pipeline log."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # some GX modules pin their own logger to INFO at import, so every GX logger is set, not just the root
    names = [n for n in logging.root.manager.loggerDict if n.startswith(("great_expectations", "posthog"))]
    for name in ("great_expectations", "posthog", *names):
        logging.getLogger(name).setLevel(logging.WARNING)


def _judge_with_gx(suite_name: str, checks: list[Check], measurements: list[Measurement],
                   ) -> tuple[dict[str, bool], dict[str, Any], dict[str, Any]]:
    _quiet_gx()
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    _quiet_gx()  # again: importing GX resets its loggers

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    # One row: per check, the share of its elements that met it (an unrunnable check counts as 0).
    frame = pd.DataFrame({
        c.check_id: [0.0 if m.error else 1.0 - m.unexpected_share] for c, m in zip(checks, measurements,
                                                                                 strict=True)
    })
    suite = gx.ExpectationSuite(name=suite_name)
    for check in checks:
        suite.add_expectation(gxe.ExpectColumnMinToBeBetween(
            column=check.check_id, min_value=check.mostly, max_value=1.0, severity=check.severity,
            description=check.description or None,
            meta={"check": check.name, "table": check.table, "column": check.column, **check.details},
        ))
    batch = (context.data_sources.add_pandas("touchpoint_metrics")
             .add_dataframe_asset(suite_name)
             .add_batch_definition_whole_dataframe("run")
             .get_batch(batch_parameters={"dataframe": frame}))
    validation = batch.validate(suite)
    verdicts = {r.expectation_config.kwargs["column"]: bool(r.success) for r in validation.results}
    return verdicts, suite.to_json_dict(), validation.describe_dict()


def _write_reports(folder: Path, result: GateResult, gx_suite: dict[str, Any],
                   gx_validation: dict[str, Any]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in asdict(result).items() if k != "reports"}
    body["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    paths = {kind: folder / f"{result.layer}.{kind}" for kind in ("json", "md", "html")}
    paths["json"].write_text(json.dumps({**body, "gx_suite": gx_suite, "gx_validation": gx_validation},
                                        indent=2, default=str))
    rows = sorted(result.results, key=lambda r: (r.success, r.severity != CRITICAL, r.check_id))
    status = "passed" if result.success else "FAILED"
    md = [f"# Gate `{result.layer}` {status}", "",
          f"Run `{result.run_id}`, as of {result.as_of}, {len(result.results)} expectations, "
          f"{len(result.failures)} failed, {len(result.warnings)} warnings, {result.seconds} s.", "",
          "| status | severity | table | column | expectation | unexpected | of | sample |",
          "| --- | --- | --- | --- | --- | ---: | ---: | --- |"]
    for r in rows:
        md.append(f"| {'ok' if r.success else 'FAIL'} | {r.severity} | {r.table} | {r.column or ''} | "
                  f"{r.expectation} | {r.unexpected_count} | {r.element_count} | "
                  f"{(r.error or json.dumps(r.sample, default=str)).replace('|', '/')} |")
    paths["md"].write_text("\n".join(md) + "\n")
    cells = "".join(
        f"<tr class={'ok' if r.success else ('fail' if r.severity == CRITICAL else 'warn')}>"
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            "ok" if r.success else "FAIL", r.severity, r.table, r.column or "", r.expectation, r.description,
            r.unexpected_count, r.element_count, r.error or json.dumps(r.sample, default=str)))
        + "</tr>"
        for r in rows
    )
    paths["html"].write_text(
        "<!doctype html><meta charset=utf-8><title>Gate " + html.escape(result.layer) + "</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".fail{background:#fdd}.warn{background:#ffd}table{border-collapse:collapse}</style>"
        f"<h1>Gate {html.escape(result.layer)}: {status}</h1><p>Run {html.escape(result.run_id)}, as of "
        f"{result.as_of}, {result.seconds} s</p><table><tr><th>status<th>severity<th>table<th>column"
        f"<th>expectation<th>description<th>unexpected<th>of<th>sample</tr>{cells}</table>"
    )
    return paths


def _record(con: duckdb.DuckDBPyConnection, result: GateResult) -> None:
    """Replace this run's rows of the layer in audit.gate_results (a rerun does not append twice)."""
    con.execute("create schema if not exists audit")
    con.execute(f"""
        create table if not exists {AUDIT_TABLE} (
            run_id varchar, layer varchar, suite varchar, expectation varchar, "column" varchar,
            success boolean, unexpected_count bigint, sample json,
            table_name varchar, severity varchar, element_count bigint, as_of date, checked_at timestamp
        )""")
    present = {r[0] for r in con.execute(
        "select column_name from information_schema.columns where table_schema = 'audit' "
        "and table_name = 'gate_results'").fetchall()}
    con.execute(f"delete from {AUDIT_TABLE} where run_id = ? and layer = ?", [result.run_id, result.layer])
    checked_at = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {"run_id": result.run_id, "layer": result.layer, "suite": result.suite, "expectation": r.expectation,
         "column": r.column, "success": r.success, "unexpected_count": r.unexpected_count,
         "sample": json.dumps({"values": r.sample, "error": r.error} if r.error else r.sample, default=str),
         "table_name": r.table, "severity": r.severity, "element_count": r.element_count,
         "as_of": result.as_of, "checked_at": checked_at}
        for r in result.results
    ]
    names = [n for n in rows[0] if n in present] if rows else []
    if not names:
        return
    columns = ", ".join(f'"{n}"' for n in names)
    con.executemany(f"insert into {AUDIT_TABLE} ({columns}) values ({', '.join('?' * len(names))})",
                    [[row[n] for n in names] for row in rows])
