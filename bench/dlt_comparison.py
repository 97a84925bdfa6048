# ruff: noqa: E501  (long SQL lines)
"""Benchmark: the same 1M-row orders CSV through dlt's DuckDB destination and through touchpoint.ingest.

    .venv/bin/python bench/dlt_comparison.py [--rows 1000000] [--dlt-site DIR]

dlt is not a runtime dependency. Install it apart from the project's packages, e.g.
`uv pip install --target .venv/dlt-site dlt==1.31.0` (installing into the venv itself would upgrade
setuptools), and point --dlt-site at that folder; it is appended to sys.path.

Three runs, each into a fresh DuckDB file, timed end to end (read CSV -> typed table):
  dlt/rows   csv.DictReader rows with column type hints (dlt's usual path: per-row normalisation),
             parquet load files
  dlt/arrow  a pyarrow table read by pyarrow.csv (dlt's fast path; types inferred by Arrow)
  touchpoint extract_source + load_pending (landing Parquet, typed raw table, per-row quarantine)
The CSV has 0.1% malformed amounts and 0.1% malformed timestamps; the script prints where each
tool put them.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from touchpoint.config import RunContext
from touchpoint.ingest import extract_source, load_pending

HINTS = {
    "order_id": {"data_type": "text"},
    "customer_id": {"data_type": "text"},
    "ordered_at": {"data_type": "timestamp"},
    "total_amount": {"data_type": "decimal", "precision": 18, "scale": 2},
    "status": {"data_type": "text"},
    "currency": {"data_type": "text"},
    "updated_at": {"data_type": "timestamp"},
}


def write_csv(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    duckdb.execute(
        f"""copy (
            select 'O-' || i as order_id, 'S-' || (i % 250000) as customer_id,
                case when i % 1000 = 7 then 'not a time'
                     else strftime(timestamp '2026-01-01' + to_seconds(i * 7 % 7776000), '%Y-%m-%dT%H:%M:%SZ') end as ordered_at,
                case when i % 1000 = 3 then 'abc' else cast(round(5 + (i % 20000) / 100.0, 2) as varchar) end as total_amount,
                'completed' as status, 'EUR' as currency,
                strftime(timestamp '2026-01-01' + to_seconds(i * 7 % 7776000), '%Y-%m-%dT%H:%M:%SZ') as updated_at
            from range({rows}) t(i)
        ) to '{path}' (format csv, header)"""
    )


def run_dlt(dlt, csv_path: Path, work: Path, mode: str) -> tuple[float, str]:
    database = work / f"dlt_{mode}.duckdb"
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{mode}",
        destination=dlt.destinations.duckdb(str(database)),
        dataset_name="raw",
        pipelines_dir=str(work / "dlt_pipelines"),
    )
    started = time.perf_counter()
    if mode == "rows":

        @dlt.resource(name="shop_orders", columns=HINTS, write_disposition="replace")
        def orders():
            with open(csv_path, newline="", encoding="utf-8") as handle:
                yield from csv.DictReader(handle)

        # parquet load files: dlt's default for DuckDB (insert_values, one huge INSERT) did not finish
        # loading 1M rows in 8 minutes on the benchmark machine.
        pipeline.run(orders(), loader_file_format="parquet")
    else:
        from pyarrow import csv as pa_csv

        table = pa_csv.read_csv(csv_path)
        pipeline.run(table, table_name="shop_orders", write_disposition="replace")
    seconds = time.perf_counter() - started
    con = duckdb.connect(str(database), read_only=True)
    tables = con.execute(
        "select table_name, column_name, data_type from information_schema.columns "
        "where table_schema = 'raw' and table_name like 'shop_orders%' order by table_name, ordinal_position"
    ).fetchall()
    count = con.execute("select count(*) from raw.shop_orders").fetchone()[0]
    variants = [f"{t}.{c} {d}" for t, c, d in tables if "__v_" in c]
    types = {c: d for t, c, d in tables if t == "shop_orders" and c in HINTS}
    con.close()
    return seconds, f"{count:,} rows in raw.shop_orders; types {types}; variant columns {variants or 'none'}"


def run_touchpoint(csv_path: Path, work: Path) -> tuple[float, str]:
    extracts = work / "extracts"
    extracts.mkdir(parents=True, exist_ok=True)
    os.link(csv_path, extracts / "shop_orders.csv")
    ctx = RunContext(as_of=date(2026, 3, 31), home=work / "home", run_id="bench", extracts_dir=extracts)
    started = time.perf_counter()
    extract = extract_source(ctx, "shop")
    con = duckdb.connect(str(work / "touchpoint.duckdb"))
    loaded = load_pending(ctx, con)
    seconds = time.perf_counter() - started
    reasons = con.execute(
        "select column_name, count(*) from audit.quarantine group by 1 order by 1"
    ).fetchall()
    con.close()
    return seconds, (
        f"extract {extract.seconds:.2f} s + load {loaded.seconds:.2f} s; {loaded.rows_loaded:,} rows in "
        f"raw.shop_orders, {loaded.rows_quarantined:,} in audit.quarantine (by column {reasons})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--dlt-site", type=Path, default=Path(__file__).resolve().parent.parent / ".venv" / "dlt-site"
    )
    args = parser.parse_args()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    sys.path.append(str(args.dlt_site))  # after the venv: the project's own packages win
    import dlt

    work = Path(tempfile.mkdtemp(prefix="touchpoint-dlt-bench-"))
    csv_path = work / "shop_orders.csv"
    write_csv(csv_path, args.rows)
    size_mb = csv_path.stat().st_size / 1e6
    print(
        f"input: {args.rows:,} rows, {size_mb:.0f} MB CSV ({work}); dlt {dlt.__version__}, duckdb {duckdb.__version__}"
    )
    for name, runner in (
        ("touchpoint", lambda: run_touchpoint(csv_path, work)),
        ("dlt/arrow", lambda: run_dlt(dlt, csv_path, work, "arrow")),
        ("dlt/rows", lambda: run_dlt(dlt, csv_path, work, "rows")),
    ):
        seconds, detail = runner()
        print(f"{name:11} {seconds:8.2f} s {args.rows / seconds:>12,.0f} rows/s  {detail}")


if __name__ == "__main__":
    main()
