"""What an erasure costs: the erase stage, and the rewrite of the working warehouse it triggers, for 1 and for
1,000 requests on a warehouse that has run at least once.

    python bench/erasure.py HOME [--requests 1 1000] [--as-of YYYY-MM-DD]

HOME is a Touchpoint home after a full run (e.g. `touchpoint generate --customers 100000 --days 730` then
`touchpoint run`). Each measurement works on a copy of HOME, so HOME is left as it was. Per request count it
records that many erasure requests by email (random persons of the published pii file, seed 7), rebuilds
dbt's staging layer, then times the erase stage and the compaction of the working warehouse.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from touchpoint import pipeline
from touchpoint.config import Paths, RunContext
from touchpoint.privacy.erasure_requests import new_request, save_request
from touchpoint.warehouse import compact_database


def sample_emails(home: Path, count: int) -> list[str]:
    con = duckdb.connect(str(Paths(home).pii_db), read_only=True)
    try:
        emails = [row[0] for row in con.execute(
            "select email from persons where email is not null order by person_id").fetchall()]
    finally:
        con.close()
    return random.Random(7).sample(emails, count)


def measure(home: Path, as_of: date, requests: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="erasure_bench_")) / "home"
    shutil.copytree(home, work, ignore=shutil.ignore_patterns("sources", "airflow"))
    try:
        ctx = RunContext(as_of=as_of, home=work, run_id=f"bench-erasure-{requests}")
        started = time.perf_counter()
        for email in sample_emails(work, requests):
            save_request(ctx.paths, new_request([("email", email)], None))
        recorded = time.perf_counter() - started
        pipeline.dbt_layer(ctx, "staging")
        started = time.perf_counter()
        outcome = pipeline.erase(ctx)
        erased = time.perf_counter() - started
        started = time.perf_counter()
        compacted = compact_database(ctx.paths.work_db)
        compaction = time.perf_counter() - started
        return {
            "requests": requests,
            "record_requests_s": round(recorded, 2),
            "erase_stage_s": round(erased, 2),
            "compact_work_db_s": round(compaction, 2),
            "work_db_gb": round(compacted["bytes"] / 1e9, 2),
            "persons_erased": outcome["persons_erased"],
            "raw_rows_removed": sum(v for k, v in outcome["removed"].items() if k.startswith("raw.")),
            "landing_files_rewritten": outcome["removed"].get("landing_files_rewritten", 0),
        }
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("--requests", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--as-of", type=date.fromisoformat, default=None)
    args = parser.parse_args()
    con = duckdb.connect(str(Paths(args.home).published_db), read_only=True)
    try:
        as_of = args.as_of or con.execute("select max(as_of) from ml.model_runs").fetchall()[0][0]
    finally:
        con.close()
    print("| requests | record (s) | erase stage (s) | rewrite work DB (s) | work DB (GB) | persons | raw rows | "
          "landing files |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count in args.requests:
        row = measure(args.home.resolve(), as_of, count)
        print("| " + " | ".join(str(value) for value in row.values()) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
