"""Orchestration overhead: customer_360 under a real Airflow scheduler against the same stages called directly
in one process, on the same demo world and the same as-of date.

    .venv/bin/python bench/orchestration.py --customers 100000 --work /tmp/orchestration
    .venv/bin/python bench/orchestration.py --customers 2000 --days 120          # a quick look

The demo world is generated once into `<work>/sources` (kept for reruns) and linked into two fresh homes.
`direct` calls `touchpoint.pipeline`'s stages in the DAG's order (sources one after another, no lease, no
Airflow); `dag` starts api-server, scheduler, dag-processor and triggerer (LocalExecutor, SQLite metadata),
triggers one run through the REST API and takes the run's own start and end. Both homes must end with the same
published tables (row counts compared). Prints per-stage seconds, both walls and the ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from touchpoint import pipeline  # noqa: E402
from touchpoint.airflow_server import AirflowDeployment, AirflowServices, free_port  # noqa: E402
from touchpoint.config import Paths, RunContext  # noqa: E402
from touchpoint.sources import generate, last_day  # noqa: E402

COMPARED_SCHEMAS = ("raw", "identity", "marts", "ml")


def fresh_home(work: Path, name: str, sources: Path) -> Paths:
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "sources").symlink_to(sources)
    return Paths(home).ensure()


def run_direct(paths: Paths, as_of: date) -> dict[str, float]:
    ctx = RunContext(as_of=as_of, home=paths.home, run_id=as_of.isoformat())
    stages = pipeline.stages_in_order(ctx)  # the DAG's stages and order, the repo's syncs
    seconds = {}
    for name, stage in stages:
        started = time.perf_counter()
        stage()
        seconds[name] = time.perf_counter() - started
        print(f"  direct {name:<34} {seconds[name]:7.1f}s", flush=True)
    return seconds


def run_dag(paths: Paths, as_of: date, timeout_s: float) -> tuple[float, float, dict[str, float]]:
    """(run wall from its start to end, trigger-to-finished wall, per-task seconds)."""
    # Triggered runs only: a scheduled run for today would compete for the warehouse.
    deployment = AirflowDeployment(paths, port=free_port(), extra_env={"TOUCHPOINT_SCHEDULE": "none"})
    with AirflowServices(deployment) as services:
        client = services.wait_ready()
        client.set_paused("customer_360", False)
        triggered = time.perf_counter()
        run_id = client.trigger("customer_360", as_of=as_of)
        run = client.wait_for_run("customer_360", run_id, timeout_s, services)
        finished = time.perf_counter() - triggered
        if run["state"] != "success":
            sys.exit(f"DAG run {run['state']}: see {services.deployment.logs}")
        tasks = {
            (ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"): ti["duration"] or 0.0
            for ti in client.task_instances("customer_360", run_id)
        }
        wall = (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])).total_seconds()
        return wall, finished, tasks


def table_counts(paths: Paths) -> dict[str, int]:
    con = duckdb.connect(str(paths.published_db), read_only=True)
    try:
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            f"where table_schema in {COMPARED_SCHEMAS} and table_type = 'BASE TABLE'"
        ).fetchall()
        return {f"{s}.{t}": con.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0] for s, t in tables}
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "touchpoint-orchestration")
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    args = parser.parse_args(argv)

    sources = (args.work / f"sources-{args.customers}x{args.days}").resolve()
    if not (sources / "generator.json").exists():
        started = time.perf_counter()
        generate(sources, customers=args.customers, days=args.days, seed=args.seed)
        print(f"generated {args.customers:,} customers x {args.days} days in {time.perf_counter() - started:.0f}s")
    as_of = last_day(sources)

    direct_paths = fresh_home(args.work, "direct", sources)
    started = time.perf_counter()
    direct = run_direct(direct_paths, as_of)
    direct_wall = time.perf_counter() - started

    dag_paths = fresh_home(args.work, "dag", sources)
    dag_wall, dag_trigger_to_done, tasks = run_dag(dag_paths, as_of, args.timeout)
    for name, seconds in sorted(tasks.items()):
        print(f"  dag    {name:<34} {seconds:7.1f}s  (direct {direct.get(name, 0.0):7.1f}s)")

    same = table_counts(direct_paths) == table_counts(dag_paths)
    summary = {
        "customers": args.customers,
        "days": args.days,
        "as_of": as_of.isoformat(),
        "direct_wall_s": round(direct_wall, 1),
        "dag_run_wall_s": round(dag_wall, 1),
        "dag_trigger_to_done_s": round(dag_trigger_to_done, 1),
        "ratio_run_wall": round(dag_wall / direct_wall, 3),
        "ratio_trigger_to_done": round(dag_trigger_to_done / direct_wall, 3),
        "sum_of_dag_task_durations_s": round(sum(tasks.values()), 1),
        "same_published_row_counts": same,
    }
    print(json.dumps(summary, indent=2))
    (args.work / f"result-{args.customers}.json").write_text(json.dumps({**summary, "direct": direct, "dag": tasks}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
