"""The shipped syncs' holdout experiments read out against the demo world's true lift, end to end.

    .venv/bin/python bench/experiments.py --customers 10000 --work /tmp/experiments_10k

Generates a demo world (730 days, kept under `<work>/home/sources` for reruns with --reuse), runs every stage
of the DAG in this process with the repo's syncs (the churn audience's PostgreSQL destination pointed at a fresh
database on the local server, so the shipped 10% holdout runs), lets the world answer the sends
(`touchpoint generate --advance 31`, sources/treatment.py), runs again, and prints per experiment the readout of
`conversion_30d` (raw and CUPED) beside the world's true lift (`treatment.true_conversion_lift`), with the time of
each run and of the experiment and journeys models.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import duckdb
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from floors import model_seconds as dbt_model_seconds  # noqa: E402

from touchpoint import cli, pipeline  # noqa: E402
from touchpoint.config import Paths, RunContext  # noqa: E402
from touchpoint.sources import generate, last_day, treatment  # noqa: E402
from touchpoint.sources.generator import read_meta  # noqa: E402

WINDOW_DAYS = 30
PG = {"host": "127.0.0.1", "user": "postgres"}


def fresh_database() -> str:
    name = f"touchpoint_bench_{uuid.uuid4().hex[:8]}"
    con = psycopg2.connect(dbname="postgres", **PG)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f'create database "{name}"')
    con.close()
    return name


def timed_run(paths: Paths, run_id: str) -> float:
    started = time.perf_counter()
    pipeline.run_in_process(RunContext(as_of=last_day(paths.demo_sources), home=paths.home, run_id=run_id))
    return time.perf_counter() - started


def model_seconds(paths: Paths, folders: tuple[str, ...] = ("marts/journeys", "marts/experiments")) -> dict:
    """Seconds dbt reported for the models under `folders` (bench/floors.py reads the run results)."""
    models = {path.stem for folder in folders for path in (ROOT / "dbt_project" / "models" / folder).glob("*.*")}
    return {name: round(s, 2) for name, s in sorted(dbt_model_seconds(paths.home).items()) if name in models}


def readouts(paths: Paths) -> list[dict]:
    con = duckdb.connect(str(paths.published_db), read_only=True)
    try:
        return con.execute(
            "select experiment, treatment_size, control_size, treatment_value, control_value, absolute_lift, "
            "absolute_lift_ci_low, absolute_lift_ci_high, p_value, cuped_absolute_lift, cuped_absolute_lift_ci_low, "
            "cuped_absolute_lift_ci_high, has_sample_ratio_mismatch from marts.experiment_readouts "
            f"where metric = 'conversion_{WINDOW_DAYS}d' order by experiment"
        ).df().to_dict("records")
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args(argv)

    paths = Paths(args.work / "home")
    shutil.rmtree(paths.home, ignore_errors=True)
    paths.ensure()
    generate(paths.demo_sources, customers=args.customers, days=args.days, seed=args.seed)
    database = fresh_database()
    os.environ["TOUCHPOINT_CONN_TOUCHPOINT_CRM_POSTGRES"] = f"postgresql://{PG['user']}@{PG['host']}:5432/{database}"
    first = timed_run(paths, "run-1")
    print(f"run 1 (as of {last_day(paths.demo_sources)}): {first:.0f} s; models: {model_seconds(paths)}", flush=True)
    assert cli.main(["generate", "--advance", str(WINDOW_DAYS + 1), "--home", str(paths.home)]) == 0
    second = timed_run(paths, "run-2")
    print(f"run 2 (as of {last_day(paths.demo_sources)}): {second:.0f} s; models: {model_seconds(paths)}")
    start = read_meta(paths.demo_sources)["start"]
    for row in readouts(paths):
        lift, units = treatment.true_conversion_lift(
            paths.demo_sources / "truth", row["experiment"], date.fromisoformat(start), WINDOW_DAYS
        )
        print(
            f"{row['experiment']}: units {units} (treatment {row['treatment_size']}, control {row['control_size']}), "
            f"conversion {row['treatment_value']:.3f} vs {row['control_value']:.3f}; true lift {lift:.3f}; "
            f"read out {row['absolute_lift']:.3f} [{row['absolute_lift_ci_low']:.3f}, "
            f"{row['absolute_lift_ci_high']:.3f}] p={row['p_value']:.2g}; CUPED {row['cuped_absolute_lift']:.3f} "
            f"[{row['cuped_absolute_lift_ci_low']:.3f}, {row['cuped_absolute_lift_ci_high']:.3f}]; "
            f"SRM {row['has_sample_ratio_mismatch']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
