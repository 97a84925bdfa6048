"""Benchmark: reverse-ETL throughput to PostgreSQL, full sync and incremental (1% changed).

    python bench/sync_postgres.py [--rows 1000000] [--dsn-base postgresql://postgres@127.0.0.1:5432]

Creates a scratch database `touchpoint_bench_<random>` (dropped at the end) and a scratch Touchpoint home,
builds a published warehouse of N consenting people, then times: the full first sync, a no-op rerun,
and a rerun after 1% of the people changed. Prints one line per phase with rows/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import psycopg2
import pyarrow as pa
import pyarrow.compute as pc

from touchpoint.activation import run_sync
from touchpoint.activation.definitions import parse_sync_definition
from touchpoint.config import RunContext

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the test doubles live in tests/
from tests.doubles.activation import PEOPLE_SCHEMA, write_published_warehouse  # noqa: E402

CONN = "touchpoint_bench_pg"


def people_table(rows: int, changed_every: int | None = None) -> pa.Table:
    ids = pa.array([f"P{i:08d}" for i in range(rows)])
    names = pa.array(["Ann"] * rows)
    if changed_every:
        names = pa.array(["Changed" if i % changed_every == 0 else "Ann" for i in range(rows)])
    return pa.table(
        {
            "person_id": ids,
            "email": pc.binary_join_element_wise(pc.utf8_lower(ids), "@example.com", ""),
            "first_name": names,
            "last_name": pa.array(["Lee"] * rows),
            "country": pa.array(["DE"] * rows),
            "rfm_segment": pa.array(["champions"] * rows),
            "consent": pa.array([True] * rows),
            "clv": pa.array([100.0] * rows),
            "churn_90d_decile": pa.array([5] * rows, pa.int32()),
            "segment_id": pa.array([1] * rows, pa.int32()),
        },
        schema=PEOPLE_SCHEMA,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dsn-base", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--batch-size", type=int, default=20_000)
    args = parser.parse_args()

    dbname = f"touchpoint_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{args.dsn_base}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"create database {dbname}")
    os.environ[f"TOUCHPOINT_CONN_{CONN.upper()}"] = f"{args.dsn_base}/{dbname}"
    sync = parse_sync_definition(
        {
            "name": "bench_pg",
            "source": {"table": "marts.customer_360"},
            "fields": [
                "person_id",
                "email",
                "first_name",
                "last_name",
                "country",
                "rfm_segment",
                "revenue",
                "last_order_date",
            ],
            "personal_fields": {"email": "clear", "first_name": "clear", "last_name": "clear"},
            "consent": "email_marketing",
            "email_field": "email",
            "destination": {"type": "postgres", "connection": CONN, "table": "bench_audience"},
            "batch_size": args.batch_size,
        }
    )
    try:
        with tempfile.TemporaryDirectory() as home_dir:
            home = Path(home_dir)
            ctx = RunContext(as_of=date(2026, 3, 31), home=home, run_id="bench-1")
            write_published_warehouse(home / "warehouse.duckdb", people_table(args.rows))
            phases = [
                ("full", "bench-1", None),
                ("no-op rerun", "bench-2", None),
                ("1% changed", "bench-3", 100),
            ]
            for label, run_id, changed_every in phases:
                if changed_every:
                    write_published_warehouse(
                        home / "warehouse.duckdb", people_table(args.rows, changed_every)
                    )
                ctx = RunContext(as_of=date(2026, 3, 31), home=home, run_id=run_id)
                started = time.perf_counter()
                result = run_sync(ctx, sync)
                elapsed = time.perf_counter() - started
                sent = result.sent
                rate = f"{sent / elapsed:,.0f} rows/s sent" if sent else "nothing sent"
                print(
                    f"{label:12} rows={args.rows:,} sent={sent:,} time={elapsed:.2f}s "
                    f"({rate}; {args.rows / elapsed:,.0f} audience rows/s diffed)"
                )
            with psycopg2.connect(f"{args.dsn_base}/{dbname}") as con, con.cursor() as cur:
                cur.execute(
                    "select count(*), count(*) filter (where first_name = 'Changed') from bench_audience"
                )
                total, changed = cur.fetchone()
            con.close()
            print(f"check        table rows={total:,} changed rows={changed:,}")
    finally:
        with admin.cursor() as cur:
            cur.execute(f"drop database if exists {dbname} with (force)")
        admin.close()


if __name__ == "__main__":
    main()
