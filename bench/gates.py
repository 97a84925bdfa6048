"""Benchmark: the raw and marts gates on 1M-row tables, time and peak memory.

    .venv/bin/python bench/gates.py [--rows 1000000] [--keep DIR]

A child process writes a warehouse file with every raw table (contracts.md §4) and the marts the marts
suite reads, each with --rows rows (identity.persons and the per-person marts with rows / 5); then this
process opens it and runs `run_gate` for "raw" and "marts", printing seconds and the peak resident memory
of the gate process (ru_maxrss). For scale: the same process before any gate, and the bytes one table would
take as a pandas DataFrame (what GX's pandas path would have to load, per table).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

AS_OF = date(2026, 3, 31)


def make_raw_tables(con, customers: int, orders: int, events: int, days: int = 365) -> None:
    """Synthetic raw tables per contracts.md §4: two loads (the last on the as-of day), plausible values."""
    from touchpoint.ingest import ensure_tables

    ensure_tables(con)  # the loader's own raw schema (contracts.md §4), empty
    load = "case when i % 2 = 0 then timestamp '2026-03-31' else timestamp '2026-04-01' end"
    when = f"timestamp '2026-03-31 23:00' - to_minutes(cast(hash(i, 'when') % ({days} * 1440) as bigint))"
    con.execute(f"""
        insert into raw.shop_customers
        select 'S-' || i, 'user' || i || '@example.com', 'First' || (i % 997), 'Last' || (i % 1009),
               '+4930' || (1000000 + i), 'Street ' || (i % 500), null, 'City' || (i % 50),
                   lpad((10000 + i % 80000)::varchar, 5, '0'),
               null, 'DE', date '1960-01-01' + (i % 15000)::int, {when}, {when}, null, 'b', 'customers',
                   i, {load}, ({load})::date - 1
        from range(1, {customers} + 1) as t(i)""")
    con.execute(f"""
        insert into raw.crm_contacts
        select 'C-' || i, 'First' || (i % 997), 'Last' || (i % 1009),
               case when i % 50 = 0 then 'broken' else 'user' || i || '@example.com' end,
                   '+4930' || (1000000 + i),
               'Street ' || (i % 500), null, 'City' || (i % 50), lpad((10000 + i % 80000)::varchar, 5,
                   '0'), null, 'DE',
               null, i % 3 > 0, {when}, null, 'b', 'contacts', i, {load}, ({load})::date - 1
        from range(1, {customers} // 2 + 1) as t(i)""")
    con.execute(f"""
        insert into raw.shop_orders
        select 'O-' || i, 'S-' || (1 + hash(i, 'c') % {customers}), {when},
               cast(5 + (hash(i, 'amount') % 20000) / 100.0 as decimal(18, 2)),
               case when i % 20 = 0 then 'cancelled' when i % 20 = 1 then 'refunded' else 'completed' end,
               'EUR', {when}, null, 'b', 'orders', i, {load}, ({load})::date - 1
        from range(1, {orders} + 1) as t(i)""")
    con.execute("""
        insert into raw.shop_products
        select 'PR-' || i, 'Product ' || i, 'category ' || (i % 12), 10 + i % 90, timestamp '2025-01-01',
               null, 'b', 'products', i, timestamp '2026-04-01', date '2026-03-31'
        from range(1, 501) as t(i)""")
    con.execute(f"""
        insert into raw.shop_order_items
        select 'O-' || i, 1, 'PR-' || (1 + hash(i, 'p') % 500), 1, 10.00, null, 'b', 'items', i,
               {load}, ({load})::date - 1
        from range(1, {orders} + 1) as t(i)""")
    con.execute(f"""
        insert into raw.pos_transactions
        select 'P-' || i, {when}, cast(3 + (hash(i, 'a') % 9000) / 100.0 as decimal(18, 2)),
            'STORE-' || (i % 20),
               null, null, 'user' || (1 + hash(i, 'c') % {customers}) || '@example.com', null, 'b',
                   'pos', i, {load}, ({load})::date - 1
        from range(1, {orders} + 1) as t(i)""")
    con.execute(f"""
        insert into raw.web_events
        select 'W-' || i, {when}, case when i % 3 = 0 then 'product_view' else 'page_view' end,
               'anon-' || (i // 7), case when i % 11 = 0 then 'S-' || (1 + hash(i // 7) % {customers}) end,
               'sess-' || (i // 7), '/p/' || (i % 500), null, 'mobile', 'organic', null, 'b', 'web', i,
               {load}, ({load})::date - 1
        from range(1, {events} + 1) as t(i)""")
    con.execute(f"""
        insert into raw.email_events
        select 'E-' || i, {when}, 'user' || (1 + hash(i, 'c') % {customers}) || '@example.com',
               case when i % 4 = 0 then 'open' else 'sent' end, 'camp-' || (i % 30), null, 'b', 'email',
                   i, {load}, ({load})::date - 1
        from range(1, {events} + 1) as t(i)""")


def make_marts_tables(con, rows: int) -> None:
    """Marts shaped like dbt's, for the marts suite only: `rows` orders and events, rows / 5 persons."""
    persons = max(rows // 5, 1)
    for schema in ("identity", "marts"):
        con.execute(f"create schema if not exists {schema}")
    con.execute(f"create or replace table identity.persons as "
                f"select 'p' || i as person_id from range({persons}) t(i)")
    con.execute(f"""create or replace table marts.fct_orders as
        select 'shop:O-' || i as order_id, 'p' || (hash(i) % {persons}) as person_id,
               case when i % 5 = 0 then 'store' else 'online' end as channel,
               date '2026-03-31' - (hash(i, 'd') % 365)::int as order_date, 10.00 as net_amount
        from range({rows}) t(i)""")
    con.execute(f"""create or replace table marts.customer_rfm as
        select 'p' || i as person_id, date '2026-03-31' as as_of, i % 365 as recency_days,
            1 + i % 9 as frequency,
               1 + i % 5 as r_score, 1 + (i // 5) % 5 as f_score, 1 + (i // 25) % 5 as m_score,
               'Champions' as rfm_segment
        from range({persons}) t(i)""")
    con.execute("create or replace table marts.customer_rfm_history as select * from marts.customer_rfm")
    con.execute("create or replace table marts.customer_360 as select person_id, 0 as orders_count "
                "from identity.persons")
    con.execute("create or replace table marts.dim_consents as select person_id, "
                "'email_marketing' as purpose from identity.persons where person_id like '%1'")
    con.execute(f"""create or replace table marts.fct_web_sessions as
        select 'sess-' || i as session_id,
            'p' || (hash(i) % {persons}) as person_id from range({rows}) t(i)""")
    con.execute(f"""create or replace table marts.fct_email_engagement as
        select 'e' || i as email_engagement_id,
            'p' || (i % {persons}) as person_id from range({rows}) t(i)""")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="folder to keep the warehouse and reports in")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        import duckdb

        con = duckdb.connect(str(args.prepare))
        make_raw_tables(con, customers=max(args.rows // 5, 1), orders=args.rows, events=args.rows)
        make_marts_tables(con, args.rows)
        con.close()
        return

    folder = args.keep or Path(tempfile.mkdtemp(prefix="touchpoint-bench-gates-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "warehouse.duckdb"
    db.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--prepare", str(db)], check=True)
    print(f"prepared {db} ({db.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s")

    import duckdb

    from touchpoint.config import RunContext
    from touchpoint.expectations import run_gate

    ctx = RunContext(as_of=AS_OF, home=folder, run_id="bench-gates")
    con = duckdb.connect(str(db))
    counts = con.execute("select count(*) from raw.shop_orders").fetchall()[0][0], \
        con.execute("select count(*) from marts.fct_orders").fetchall()[0][0]
    print(f"rows: raw.<entity> up to {counts[0]:,} each (8 tables), marts.fct_orders {counts[1]:,}")
    print(f"peak RSS before gates: {peak_rss_mb():.0f} MB")
    started = time.perf_counter()
    from touchpoint.expectations.gate import _quiet_gx

    _quiet_gx()
    import great_expectations  # noqa: F401  (imported here so its cost is measured apart)

    print(f"GX import: {time.perf_counter() - started:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
    for layer in ("raw", "marts"):
        started = time.perf_counter()
        result = run_gate(ctx, layer, con, raise_on_failure=False)
        seconds = time.perf_counter() - started
        print(f"gate {layer}: {len(result.results)} expectations, success={result.success}, "
              f"{seconds:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
        for failure in result.failures + result.warnings:
            print(f"  {failure.severity}: {failure.line()}")
    size = con.execute("select * from raw.shop_orders").df().memory_usage(deep=True).sum()
    print(f"for scale: raw.shop_orders alone as a pandas DataFrame is {size / 1e6:.0f} MB "
          f"(peak RSS after loading it {peak_rss_mb():.0f} MB)")
    con.close()


if __name__ == "__main__":
    main()
