"""Benchmark: the ML stage (segments, propensity, CLV: train + score + write back) on synthetic marts.

    .venv/bin/python bench/ml.py [--customers 100000] [--history-days 730]

Simulates customers from known BG/NBD + Gamma-Gamma parameters (touchpoint.sources.synthetic_marts), writes
marts.fct_orders / customer_rfm / customer_activity into a temporary DuckDB file (untimed), then times one
`run_ml` that trains every model (the first day: no model yet) and prints the wall time per step, the peak
resident memory of the process, the rows written, and the fitted CLV parameters next to the simulated ones.
It then writes the marts of the next day (untimed) and times the day's `run_ml` again: within the training
cadence (ml/cadence.py), that run only scores with the models of the first day.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from touchpoint.config import RunContext
from touchpoint.ml.cadence import TrainingPolicy
from touchpoint.ml.stage import MlResult, run_ml
from touchpoint.sources.synthetic_marts import SimulationParams, build_synthetic_marts, write_marts

AS_OF = date(2026, 6, 30)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed_run(con: duckdb.DuckDBPyConnection, home: Path, as_of: date, run_id: str) -> MlResult:
    """One run_ml with the default cadence, its wall and CPU time and what each model did, printed."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = run_ml(RunContext(as_of=as_of, home=home, run_id=run_id), con, TrainingPolicy())
    total, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    actions = sorted({run.action or "" for run in result.runs})
    print(f"run_ml as of {as_of} ({'/'.join(actions)}): {total:.1f} s wall, {cpu:.1f} s CPU; "
          f"peak RSS {peak_rss_mb():.0f} MB")
    for step, seconds in result.seconds.items():
        print(f"  {step:<11} {seconds:7.1f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--history-days", type=int, default=730)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        con = duckdb.connect(str(home / "work.duckdb"))
        started = time.perf_counter()
        orders = build_synthetic_marts(con, args.customers, AS_OF, history_days=args.history_days, seed=42)
        count = con.execute("select count(*) from marts.fct_orders").fetchall()[0][0]
        print(f"synthetic marts: {args.customers} customers, {count} orders ({time.perf_counter() - started:.1f} s)")
        print(f"peak RSS after building marts: {peak_rss_mb():.0f} MB")

        result = timed_run(con, home, AS_OF, "bench-train")
        print("rows:", json.dumps(result.rows_written))
        for run in result.runs:
            status = run.status if run.status == "trained" else f"skipped ({run.reason})"
            validation = run.metrics.get("validation", {})
            extra = f" ROC-AUC {validation['roc_auc']:.3f} PR-AUC {validation['pr_auc']:.3f}" if validation else ""
            params = {k: round(v, 3) for k, v in run.parameters.items() if isinstance(v, float)}
            print(f"  {run.model_name:<20} {status}{extra} {params if params else ''}")
        print("simulated:", SimulationParams())

        next_day = AS_OF + timedelta(days=1)
        write_marts(con, orders, next_day, seed=42)
        scored = timed_run(con, home, next_day, "bench-score")
        for run in scored.runs:
            print(f"  {run.model_name:<20} {run.action} by {run.model_version} (max PSI {run.psi or 0:.3f})")
        con.close()


if __name__ == "__main__":
    main()
