# ruff: noqa: E501  (long SQL lines)
"""Benchmark: extract + load throughput (rows/s) from a generated demo systems dir.

    .venv/bin/python bench/extract_load.py --customers 10000 --days 30 [--home DIR] [--synthetic]
        [--sources DIR] [--parquet]

Uses the demo generator (`touchpoint.sources.generator.generate`) when it exists (unless --synthetic or
--sources), else a built-in synthetic systems dir of the same layout (docs/contracts.md §2): per customer about
3 orders, 6 order items, 30 web events, 10 email events, 1 POS transaction, 1 CRM contact.

Each source is extracted and then loaded on its own, so every figure is extract + load of one input format:
shop = SQLite, crm/email/pos = CSV, web = JSON lines. With --parquet the daily files are also written as
bring-your-own Parquet extracts (text columns, one file per day) and run through `--extracts` the same way.
Prints wall seconds, process CPU seconds (DuckDB's threads included; a better yardstick than wall time on a shared
machine) and rows/s per source, per format and in total, then a rerun (incremental no-op). Note the load average.
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
    parser.add_argument("--parquet", action="store_true", help="also run the daily files as Parquet extracts")
    parser.add_argument(
        "--sources",
        type=Path,
        default=None,
        help="reuse a generated world (`touchpoint generate --seed 7 --start 2026-01-01 --out DIR`) instead of "
        "generating one: it is linked as <home>/sources and only read",
    )
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="touchpoint-bench-"))
    as_of = START + timedelta(days=args.days - 1)
    ctx = RunContext(as_of=as_of, home=home, run_id="bench")
    ctx.paths.ensure()

    started = time.perf_counter()
    try:
        if args.sources is not None:
            ctx.paths.demo_sources.symlink_to(args.sources.resolve(), target_is_directory=True)
            how = f"existing world {args.sources}"
        elif args.synthetic:
            raise ImportError("synthetic systems requested")
        else:
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
        _run_sources(ctx, attempt, FORMATS)
    if args.parquet:
        extracts = home / "parquet_extracts"
        started = time.perf_counter()
        rows = write_parquet_extracts(ctx.source_systems, extracts)
        print(f"parquet extracts: {rows:,} rows written in {time.perf_counter() - started:.1f} s at {extracts}")
        byo = RunContext(as_of=as_of, home=home / "parquet_home", run_id="bench", extracts_dir=extracts)
        byo.paths.ensure()
        _run_sources(byo, "parquet", dict.fromkeys(FORMATS, "Parquet"))


# The input format each source's demo extract arrives in.
FORMATS = {"shop": "SQLite", "crm": "CSV", "web": "JSONL", "email": "CSV", "pos": "CSV"}


def _run_sources(ctx: RunContext, attempt: str, formats: dict[str, str]) -> None:
    """Extract then load each source; print per source, per format and in total (wall and CPU seconds)."""
    totals: dict[str, list[float]] = {}
    for source in SOURCES:
        wall, cpu = time.perf_counter(), time.process_time()
        result = extract_source(ctx, source)
        extract_wall = time.perf_counter() - wall
        con = duckdb.connect(str(ctx.paths.work_db))
        loaded = load_pending(ctx, con)
        con.close()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"{attempt}: {source:6} ({formats[source]:7}) {result.rows:>10,} rows {len(result.batches):>5} batches "
            f"extract {extract_wall:6.2f} s + load {loaded.seconds:6.2f} s = {wall:6.2f} s "
            f"{_rate(result.rows, wall):>10} rows/s (cpu {cpu:6.2f} s, {_rate(result.rows, cpu):>10} rows/cpu-s) "
            f"quarantined={loaded.rows_quarantined} errors={len(result.errors)}"
        )
        for key in (formats[source], "all"):
            total = totals.setdefault(key, [0, 0.0, 0.0])
            total[0] += result.rows
            total[1] += wall
            total[2] += cpu
    for key, (rows, wall, cpu) in totals.items():
        print(
            f"{attempt}: {key:7} extract+load {int(rows):>10,} rows in {wall:7.2f} s = {_rate(rows, wall):>10} rows/s "
            f"(cpu {cpu:7.2f} s, {_rate(rows, cpu):>10} rows/cpu-s)"
        )


def _rate(rows: float, seconds: float) -> str:
    return f"{rows / seconds:,.0f}" if seconds else "-"


def write_parquet_extracts(systems: Path, extracts: Path) -> int:
    """The demo's daily CSV and JSON-lines files as bring-your-own Parquet extracts, `<entity>/<file>.parquet`."""
    from touchpoint.ingest import ENTITY_SPECS
    from touchpoint.ingest.extract import DAILY_FILES

    con = duckdb.connect()
    rows = 0
    for entity, (folder, prefix, suffix) in DAILY_FILES.items():
        (extracts / entity).mkdir(parents=True, exist_ok=True)
        as_text = ", ".join(f"'{name}': 'VARCHAR'" for name in ENTITY_SPECS[entity].column_names)
        for path in sorted((systems / folder).glob(f"{prefix}*{suffix}")):
            reader = (
                f"read_csv('{path}', all_varchar = true, header = true)"
                if suffix == ".csv"
                else f"read_json('{path}', format = 'newline_delimited', columns = {{{as_text}}})"
            )
            target = extracts / entity / f"{path.stem}.parquet"
            rows += con.execute(f"copy (select * from {reader}) to '{target}' (format parquet)").fetchone()[0]
    con.close()
    return rows


if __name__ == "__main__":
    main()
