# ruff: noqa: E501  (long SQL lines)
"""Benchmark: extract + load throughput (rows/s) from a generated demo systems dir.

    .venv/bin/python bench/extract_load.py --customers 10000 --days 30 [--home DIR] [--synthetic]

Uses the demo generator (`touchpoint.sources.generator.generate`) when it exists (unless --synthetic),
else a built-in synthetic systems dir of the same layout (docs/contracts.md §2): per customer about
3 orders, 6 order items, 30 web events, 10 email events, 1 POS transaction, 1 CRM contact.
Prints seconds and rows/s for each source's extract and for the load, then a rerun (incremental no-op).
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb

from touchpoint.config import RunContext
from touchpoint.ingest import SOURCES, extract_source, load_pending

START = date(2026, 1, 1)


def build_synthetic_systems(systems: Path, customers: int, days: int, seed: int = 7) -> None:
    """Demo-layout systems dir: ~3 orders, ~6 items, ~30 web events, ~10 email events per customer."""
    systems.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"select setseed({seed / 100})")
    start = START.isoformat()
    con.execute(
        f"""create table customers as select i as customer_id, 'user' || i || '@example.com' as email,
            'First' || (i % 997) as first_name, 'Last' || (i % 1999) as last_name, '+49 30 ' || (1000000 + i) as phone,
            strftime(timestamp '{start}' + to_minutes(cast(random() * {days} * 1440 as bigint)),
                     '%Y-%m-%dT%H:%M:%SZ') as created_at
            from range(1, {customers} + 1) t(i)"""
    )
    con.execute("alter table customers add column updated_at varchar")
    con.execute("update customers set updated_at = created_at")
    con.execute(
        f"""create table orders as select i as order_id, 1 + cast(random() * ({customers} - 1) as bigint) as customer_id,
            strftime(timestamp '{start}' + to_minutes(cast(random() * {days} * 1440 as bigint)),
                     '%Y-%m-%dT%H:%M:%SZ') as ordered_at,
            round(5 + random() * 200, 2) as total_amount, 'completed' as status, 'EUR' as currency
            from range(1, {customers} * 3 + 1) t(i)"""
    )
    con.execute("alter table orders add column updated_at varchar")
    con.execute("update orders set updated_at = ordered_at")
    con.execute(
        """create table order_items as select order_id, l as line_number, 'P' || (order_id * l % 200) as product_id,
            1 + (order_id % 3) as quantity, round(total_amount / 2, 2) as unit_price
            from orders, range(1, 3) t(l)"""
    )
    con.execute(
        "create table products as select 'P' || i as product_id, 'Product ' || i as name, "
        "'cat' || (i % 12) as category, cast(round(1 + i * 0.7, 2) as double) as price from range(0, 200) t(i)"
    )
    shop_path = systems / "shop.sqlite"
    shop_path.unlink(missing_ok=True)
    shop = sqlite3.connect(shop_path)
    for table in ("customers", "orders", "order_items", "products"):
        cursor = con.execute(f"select * from {table}")
        names = [d[0] for d in cursor.description]
        shop.execute(f"create table {table} ({', '.join(names)})")
        marks = ", ".join("?" for _ in names)
        while rows := cursor.fetchmany(100_000):
            shop.executemany(f"insert into {table} values ({marks})", rows)
    shop.commit()
    shop.close()

    for folder in ("crm", "web", "email", "pos"):
        (systems / folder).mkdir(exist_ok=True)
    per_day = {
        "web": customers * 30 // days,
        "email": customers * 10 // days,
        "pos": customers // days,
        "crm": max(1, customers // days),
    }
    for offset in range(days):
        day = START + timedelta(days=offset)
        ts = f"strftime(timestamp '{day.isoformat()}' + to_seconds(cast(random() * 86399 as bigint)), '%Y-%m-%dT%H:%M:%SZ')"
        base = offset * 10_000_000
        con.execute(
            f"""copy (select 'W-{offset}-' || i as event_id, {ts} as occurred_at, 'page_view' as event_type,
                'anon-' || (i % 50000) as anonymous_id,
                case when i % 4 = 0 then cast(1 + (i * 7919) % {customers} as varchar) end as customer_id,
                's-{offset}-' || (i // 8) as session_id, '/p/' || (i % 200) as page_url, 'mobile' as device_type,
                'organic' as channel from range({per_day["web"]}) t(i))
                to '{systems / "web" / f"events_{day}.jsonl"}' (format json)"""
        )
        con.execute(
            f"""copy (select 'E-{offset}-' || i as event_id, {ts} as occurred_at,
                'user' || (1 + (i * 31) % {customers}) || '@example.com' as email, 'open' as event_type,
                'c{offset % 5}' as campaign_id from range({per_day["email"]}) t(i))
                to '{systems / "email" / f"events_{day}.csv"}' (format csv, header)"""
        )
        con.execute(
            f"""copy (select 'T-' || ({base} + i) as transaction_id, {ts} as purchased_at,
                round(3 + random() * 80, 2) as total_amount, 'S' || (i % 9) as store_id,
                'L' || (i % 1000) as loyalty_id, null as phone, null as email from range({per_day["pos"]}) t(i))
                to '{systems / "pos" / f"transactions_{day}.csv"}' (format csv, header)"""
        )
        con.execute(
            f"""copy (select 'C-' || ({base} + i) as contact_id, 'First' || i as first_name, 'Last' || i as last_name,
                'crm' || ({base} + i) || '@example.com' as email, 'true' as email_opt_in, {ts} as updated_at
                from range({per_day["crm"]}) t(i))
                to '{systems / "crm" / f"contacts_{day}.csv"}' (format csv, header)"""
        )
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--home", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--synthetic", action="store_true", help="use the built-in synthetic systems dir")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="touchpoint-bench-"))
    as_of = START + timedelta(days=args.days - 1)
    ctx = RunContext(as_of=as_of, home=home, run_id="bench")
    ctx.paths.ensure()

    started = time.perf_counter()
    try:
        if args.synthetic:
            raise ImportError("synthetic systems requested")
        from touchpoint.sources.generator import generate  # the demo generator, when present

        generate(ctx.paths.demo_sources, args.customers, args.days, 7, START)
        how = "touchpoint.sources.generator.generate"
    except ImportError:
        build_synthetic_systems(ctx.source_systems, args.customers, args.days)
        how = "synthetic (bench/extract_load.py)"
    print(
        f"systems: {how}, {args.customers} customers, {args.days} days, "
        f"built in {time.perf_counter() - started:.1f} s at {ctx.source_systems}"
    )

    for attempt in ("first run", "rerun (same as-of)"):
        total_rows, total_extract = 0, 0.0
        for source in SOURCES:
            result = extract_source(ctx, source)
            total_rows += result.rows
            total_extract += result.seconds
            rate = result.rows / result.seconds if result.seconds else 0
            print(
                f"{attempt}: extract {source:6} {result.rows:>10,} rows {len(result.batches):>4} batches "
                f"{result.seconds:7.2f} s {rate:>12,.0f} rows/s errors={len(result.errors)}"
            )
        con = duckdb.connect(str(ctx.paths.work_db))
        loaded = load_pending(ctx, con)
        con.close()
        load_rate = loaded.rows_read / loaded.seconds if loaded.seconds else 0
        print(
            f"{attempt}: load {loaded.rows_read:,} rows ({loaded.rows_loaded:,} loaded, "
            f"{loaded.rows_quarantined:,} quarantined) in {len(loaded.batches)} batches: "
            f"{loaded.seconds:.2f} s, {load_rate:,.0f} rows/s"
        )
        both = total_extract + loaded.seconds
        print(
            f"{attempt}: extract+load {total_rows:,} rows in {both:.2f} s = "
            f"{(total_rows / both if both else 0):,.0f} rows/s"
        )


if __name__ == "__main__":
    main()
