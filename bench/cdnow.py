"""RFM on data nobody here generated: the CDNOW master file, run through `touchpoint run --extracts` and held,
customer by customer, against RFM computed from the file itself.

    .venv/bin/python bench/cdnow.py                              # as of 1997-12-31 and 1998-06-30
    .venv/bin/python bench/cdnow.py --as-of 1997-03-31 --as-of 1998-06-30 --home /tmp/cdnow

CDNOW (Fader & Hardie; Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value curves for customer base
analysis") is the purchase history of the 23,570 customers who first bought at the CD retailer CDNOW in the
first quarter of 1997, through 1998-06-30: 69,659 transactions. It ships in the `lifetimes` wheel as
lifetimes/datasets/CDNOW_master.txt (a header line, then whitespace-separated `customer_id` (5 digits),
`date` (YYYYMMDD), `number_of_cds`, `dollar_value`), read through bench/wheels.py.

Mapping to the landing contract (bring-your-own extracts; tests/fixtures/cdnow is a slice made the same way):
- shop_customers.csv: customer_id (the CDNOW id as text, zeros kept). CDNOW has no names or contacts, so
  identity can only keep each customer apart.
- shop_orders.csv: one order per line: order_id = `<customer_id>-<YYYYMMDD>-<n>`, n the line's 1-based place
  among that customer's lines of that day (1,774 customer-days hold several lines), so the ids are the same on
  every conversion; ordered_at = the day at 00:00Z; total_amount = dollar_value (80 lines are $0.00);
  status `completed` (stg_shop__orders nets only `cancelled`/`refunded` to 0, and fct_orders.is_purchase counts
  every kept order of non-negative value, $0 included, as a purchase; a missing status would read as `placed`,
  an order not yet fulfilled);
  currency USD; number_of_cds kept as an extra column.

Each as-of is one `touchpoint run` on the same home, given the whole file every time: rows after the as-of are
"not yet" for that run. After each, the published warehouse's marts.customer_rfm is joined to the customers
through identity.person_map (shop_customers records) and compared with tests/rfm_expected.py: per-column and
whole-row match rates, buyers missing or extra, customers sharing a person; the rfm_segment distribution; and
the buyers of customer_rfm without a row in ml.customer_propensity or ml.customer_clv (0: RFM and ML read one
definition of a purchase). Wall time and peak RSS (the largest process of the run's tree, ru_maxrss from wait4)
per run. Results also go to <home>/cdnow_bench.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wheels import wheel_members  # noqa: E402 (bench scripts import each other from this folder)

from tests.rfm_expected import Rfm, expected_rfm, read_cdnow  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LIFETIMES = ("lifetimes", "0.11.3")
MASTER = "lifetimes/datasets/CDNOW_master.txt"
AS_OF = ("1997-12-31", "1998-06-30")
ORDER_COLUMNS = ("order_id", "customer_id", "ordered_at", "total_amount", "status", "currency", "number_of_cds")
COMPARED = tuple(Rfm.__dataclass_fields__)


def master_text() -> str:
    """CDNOW_master.txt from the lifetimes wheel (downloaded once, cached)."""
    return wheel_members(*LIFETIMES, MASTER)[MASTER].decode("ascii")


def write_extracts(cdnow_text: str, out: Path) -> dict[str, int]:
    """CDNOW lines as landing-contract CSVs (shop_customers, shop_orders) in `out`; returns row counts."""
    out.mkdir(parents=True, exist_ok=True)
    lines_of_day: dict[tuple[str, str], int] = defaultdict(int)
    customers: dict[str, None] = {}
    orders = []
    for line in cdnow_text.splitlines()[1:]:
        if not line.strip():
            continue
        customer_id, day, cds, dollars = line.split()
        lines_of_day[customer_id, day] += 1
        customers.setdefault(customer_id)
        ordered_at = datetime.strptime(day, "%Y%m%d").strftime("%Y-%m-%dT00:00:00Z")
        order_id = f"{customer_id}-{day}-{lines_of_day[customer_id, day]}"
        orders.append((order_id, customer_id, ordered_at, dollars, "completed", "USD", cds))
    with (out / "shop_customers.csv").open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["customer_id"])
        writer.writerows([customer_id] for customer_id in customers)
    with (out / "shop_orders.csv").open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(ORDER_COLUMNS)
        writer.writerows(orders)
    return {"shop_customers": len(customers), "shop_orders": len(orders)}


def warehouse_rfm(warehouse: Path) -> tuple[dict[str, Rfm], dict[str, str]]:
    """customer_rfm per source customer id (through identity.person_map), and customer id -> person id."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        persons = dict(
            con.execute(
                "select source_record_id, person_id from identity.person_map where source_entity = 'shop_customers'"
            ).fetchall()
        )
        columns = ", ".join(f"rfm.{column}" for column in COMPARED)
        rows = con.execute(
            f"select person_map.source_record_id, {columns} from marts.customer_rfm as rfm "
            "inner join identity.person_map as person_map on rfm.person_id = person_map.person_id "
            "where person_map.source_entity = 'shop_customers'"
        ).fetchall()
    finally:
        con.close()
    return {row[0]: Rfm(*row[1:]) for row in rows}, persons


def segments_and_coverage(warehouse: Path) -> dict:
    """Buyers per rfm_segment (every segment of the grid, 0 included), and buyers the ML stage left unscored."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        segments = con.execute(
            "select grid.rfm_segment, count(rfm.person_id) from (select distinct rfm_segment from marts.rfm_segments) "
            "as grid left join marts.customer_rfm as rfm on grid.rfm_segment = rfm.rfm_segment "
            "group by grid.rfm_segment order by count(rfm.person_id) desc, grid.rfm_segment"
        ).fetchall()
        unscored = {
            table: con.execute(
                f"select count(*) from marts.customer_rfm as rfm where not exists (select 1 from {table} as ml "
                "where ml.person_id = rfm.person_id and ml.as_of = rfm.as_of)"
            ).fetchone()[0]
            for table in ("ml.customer_propensity", "ml.customer_clv")
        }
    finally:
        con.close()
    return {"segments": dict(segments), "buyers_without_ml_row": unscored}


def compare(expected: dict[str, Rfm], actual: dict[str, Rfm], persons: dict[str, str]) -> dict:
    both = expected.keys() & actual.keys()
    per_column = {
        column: sum(getattr(expected[c], column) == getattr(actual[c], column) for c in both) / max(len(expected), 1)
        for column in COMPARED
    }
    whole = sum(expected[c] == actual[c] for c in both)
    people: dict[str, int] = defaultdict(int)
    for person in persons.values():
        people[person] += 1
    mismatches = sorted(c for c in both if expected[c] != actual[c])
    return {
        "buyers_expected": len(expected),
        "buyers_in_warehouse": len(actual),
        "missing": len(expected.keys() - actual.keys()),
        "extra": len(actual.keys() - expected.keys()),
        "customers_sharing_a_person": sum(count for count in people.values() if count > 1),
        "match_rate": whole / max(len(expected), 1),
        "match_rate_by_column": per_column,
        "first_mismatches": [
            {"customer_id": c, "expected": asdict(expected[c]), "actual": asdict(actual[c])} for c in mismatches[:3]
        ],
    }


def timed_run(extracts: Path, home: Path, as_of: str, log: Path) -> dict:
    """One `touchpoint run`: exit code, wall seconds, peak RSS of the largest process in its tree."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "touchpoint"), "run", "--extracts", str(extracts), "--as-of", as_of, "--home", str(home)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        _, status, usage = os.wait4(process.pid, 0)
    return {
        "exit_code": os.waitstatus_to_exitcode(status),
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as-of", action="append", help="as-of date (repeatable; default 1997-12-31, 1998-06-30)")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "cdnow_bench")
    args = parser.parse_args(argv)
    shutil.rmtree(args.home, ignore_errors=True)
    text = master_text()
    purchases = read_cdnow(text)
    counts = write_extracts(text, args.home / "extracts")
    print(f"CDNOW: {counts['shop_customers']:,} customers, {counts['shop_orders']:,} orders", flush=True)
    results = {}
    for as_of in args.as_of or AS_OF:
        run = timed_run(args.home / "extracts", args.home / "home", as_of, args.home / f"run-{as_of}.log")
        warehouse = args.home / "home" / "warehouse.duckdb"
        if run["exit_code"] != 0:
            print(f"  touchpoint run as of {as_of} exited {run['exit_code']}: see {args.home}/run-{as_of}.log")
            warehouse = args.home / "home" / "work" / "warehouse.duckdb"  # what the failed run built
        actual, persons = warehouse_rfm(warehouse)
        result = {
            **run,
            **compare(expected_rfm(purchases, date.fromisoformat(as_of)), actual, persons),
            **segments_and_coverage(warehouse),
        }
        results[as_of] = result
        by_column = " ".join(f"{k} {v:.4f}" for k, v in result["match_rate_by_column"].items())
        print(
            f"as of {as_of}: buyers {result['buyers_expected']:,} (warehouse {result['buyers_in_warehouse']:,}, "
            f"missing {result['missing']}, extra {result['extra']}, sharing a person "
            f"{result['customers_sharing_a_person']}) | match rate {result['match_rate']:.4f} | {by_column} | "
            f"{run['seconds']:.0f} s, peak RSS {run['peak_rss_mb']} MB",
            flush=True,
        )
        buyers = max(result["buyers_in_warehouse"], 1)
        shares = ", ".join(f"{name} {count:,} ({count / buyers:.1%})" for name, count in result["segments"].items())
        print(f"  segments: {shares}", flush=True)
        print(f"  buyers without an ML row: {result['buyers_without_ml_row']}", flush=True)
    (args.home / "cdnow_bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
