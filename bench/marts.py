"""Benchmark: the marts stage (dbt) against the same RFM computed by one hand-written DuckDB query from raw.

    .venv/bin/python bench/marts.py [--customers 20000] [--orders 100000] [--events 100000]

Writes synthetic raw tables (bench/gates.py), builds staging and identity with dbt (untimed), then times
`dbt build --select path:models/marts --exclude source:ml+` (the marts layer: every mart but customer_360,
which reads the ML outputs; data tests and unit tests, dbt start-up included) and
`dbt run` of the same, and one SQL statement that computes RFM with the same rules (latest order version,
as-of cut, purchases = orders not cancelled or refunded, mid-rank quintiles for R and M, frequency bands for F,
the segment grid of seeds/marts/rfm_segments.csv) from raw.shop_orders
per shop customer (no identity stitching, no POS: it is the floor, not an equivalent). Prints both and the
ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import duckdb
from gates import AS_OF, make_raw_tables

PROJECT = Path(__file__).resolve().parent.parent
DBT = PROJECT / ".venv" / "bin" / "dbt"

HAND_WRITTEN_RFM = """
with orders as (
    select trim(order_id) as order_id, trim(customer_id) as customer_id,
        cast(ordered_at as date) as order_date,
           lower(trim(status)) in ('cancelled', 'refunded') or total_amount < 0 as is_not_purchase,
           case when lower(trim(status)) in ('cancelled',
               'refunded') then 0 else total_amount end as net_amount
    from raw.shop_orders
    where (updated_at is null or updated_at < $as_of_end) and ordered_at < $as_of_end
    qualify row_number() over (partition by trim(order_id)
                               order by updated_at desc nulls last, _extracted_at desc, _row_number desc) = 1
),
buyers as (
    select customer_id, date_diff('day', max(order_date) filter (where not is_not_purchase),
        $as_of) as recency_days,
           count(*) filter (where not is_not_purchase) as frequency, sum(net_amount) as monetary
    from orders group by customer_id having count(*) filter (where not is_not_purchase) >= 1
),
ranked as (
    -- not count(*) filter (...) over (): DuckDB 2.0 counts a FILTERed window frame row by row (quadratic)
    select *, count(*) over () as n, sum((frequency > 1)::integer) over () as nr,
           rank() over (order by recency_days desc) - 1 as rb,
               count(*) over (partition by recency_days) as rt,
           rank() over (partition by frequency > 1 order by frequency) - 1 as fb,
           count(*) over (partition by frequency) as ft,
           rank() over (order by monetary) - 1 as mb, count(*) over (partition by monetary) as mt
    from buyers
),
scored as (
    select customer_id, recency_days, frequency, monetary,
           least(5, 1 + (5 * (2 * rb + rt)) // (2 * n)) as r,
           case when frequency = 1 then 1 else 2 + (4 * (2 * fb + ft)) // (2 * nr) end as f,
           least(5, 1 + (5 * (2 * mb + mt)) // (2 * n)) as m
    from ranked
)
select scored.*, grid.rfm_segment
from (select *, (f + m + 1) // 2 as fm from scored) as scored
left join read_csv('$segment_grid') as grid on grid.r_score = scored.r and grid.fm_score = scored.fm
"""
SEGMENT_GRID = PROJECT / "dbt_project" / "seeds" / "marts" / "rfm_segments.csv"


def dbt(db: Path, command: str, select: str) -> tuple[float, float]:
    """Wall seconds of the dbt process, and the seconds dbt reports for running the nodes (no start-up)."""
    env = {**os.environ, "TOUCHPOINT_WORK_DB": str(db), "DBT_PROFILES_DIR": str(PROJECT / "dbt_project")}
    started = time.perf_counter()
    result = subprocess.run(
        [str(DBT), command, "--project-dir", str(PROJECT / "dbt_project"), "--target-path",
         str(db.parent / "dbt_target"), "--log-path", str(db.parent / "dbt_logs"),
         "--vars", json.dumps({"as_of": AS_OF.isoformat()}), "--select", *select.split()],
        env=env, capture_output=True, text=True, cwd=PROJECT / "dbt_project")
    if result.returncode != 0:
        raise SystemExit(f"dbt {command} failed:\n{result.stdout[-4000:]}")
    wall = time.perf_counter() - started
    reported = re.search(r"Finished running .* in .*\((\d+\.\d+)s\)", result.stdout)
    return wall, float(reported.group(1)) if reported else wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="touchpoint-bench-marts-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "warehouse.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    make_raw_tables(con, args.customers, args.orders, args.events)
    con.close()
    print(f"scale: {args.customers:,} shop customers, {args.orders:,} shop orders and POS transactions, "
          f"{args.events:,} web and email events")
    upstream, _ = dbt(db, "build", "path:models/staging path:models/intermediate path:models/identity")
    print(f"staging + identity (dbt build, not part of the comparison): {upstream:.1f} s")
    # the marts layer as the pipeline builds it: customer_360 reads ML outputs and is built after the ML stage
    marts_build = dbt(db, "build", "path:seeds/marts path:models/marts --exclude source:ml+")
    marts_run = dbt(db, "run", "path:models/marts --exclude source:ml+")

    con = duckdb.connect(str(db), read_only=True)
    as_of_end = f"timestamp '{AS_OF.isoformat()}' + interval 1 day"
    sql = (HAND_WRITTEN_RFM.replace("$as_of_end", as_of_end).replace("$as_of", f"date '{AS_OF.isoformat()}'")
           .replace("$segment_grid", str(SEGMENT_GRID)))
    started = time.perf_counter()
    hand = con.execute(f"select count(*), count(distinct rfm_segment) from ({sql})").fetchall()[0]
    hand_seconds = time.perf_counter() - started
    marts = con.execute("select count(*), count(distinct rfm_segment) from marts.customer_rfm").fetchall()[0]
    orders = con.execute("select count(*) from marts.fct_orders").fetchall()[0][0]
    con.close()
    print(f"marts stage, dbt build (7 models + tests): {marts_build[0]:.1f} s wall, "
          f"{marts_build[1]:.1f} s in dbt's nodes; dbt run only: {marts_run[0]:.1f} s wall, "
          f"{marts_run[1]:.1f} s in nodes "
          f"-> {orders:,} orders in fct_orders, {marts[0]:,} rows in customer_rfm "
          f"({marts[1]} segments)")
    print(f"hand-written RFM query from raw (shop customers only): {hand_seconds:.2f} s -> {hand[0]:,} rows "
          f"({hand[1]} segments)")
    print(f"ratio dbt build / hand-written: {marts_build[0] / hand_seconds:.0f}x wall, "
          f"{marts_build[1] / hand_seconds:.0f}x nodes; dbt run / hand-written: "
          f"{marts_run[0] / hand_seconds:.0f}x wall, {marts_run[1] / hand_seconds:.0f}x nodes")


if __name__ == "__main__":
    main()
