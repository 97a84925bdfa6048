"""Benchmark the demo source generator: rows written, seconds, rows/s and peak RSS.

Usage: .venv/bin/python bench/generate.py [--customers 100000] [--days 730] [--seed 42] [--out DIR]
                                         [--chunk-customers N]
       .venv/bin/python bench/generate.py --customers 1000000   # issue 17: within 4 GB peak RSS, in chunks
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from touchpoint.sources.generator import CHUNK_CUSTOMERS, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="kept when given, else a temporary folder")
    parser.add_argument("--chunk-customers", type=int, default=CHUNK_CUSTOMERS, help="customers per chunk")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="touchpoint-bench-"))
    try:
        t0 = time.perf_counter()

        def progress(done: int, chunks: int) -> None:
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"chunk {done}/{chunks} at {time.perf_counter() - t0:,.0f} s, peak RSS {rss_mb:,.0f} MB", flush=True)

        summary = generate(
            out,
            customers=args.customers,
            days=args.days,
            seed=args.seed,
            chunk_customers=args.chunk_customers,
            on_chunk=progress,
        )
        usage = resource.getrusage(resource.RUSAGE_SELF)
        peak_mb, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
        size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
        files = sum(1 for p in out.rglob("*") if p.is_file())
        for entity, rows in summary.rows.items():
            print(f"{entity:>18}: {rows:>12,} rows")
        print(
            f"customers={args.customers:,} chunk={min(args.chunk_customers, args.customers):,} days={args.days} "
            f"rows={summary.total_rows:,} "
            f"seconds={summary.seconds:.1f} rows/s={summary.total_rows / summary.seconds:,.0f} "
            f"cpu_seconds={cpu:.1f} rows/cpu_s={summary.total_rows / cpu:,.0f} "
            f"peak_rss_mb={peak_mb:,.0f} files={files:,} size_mb={size_mb:,.0f}"
        )
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
