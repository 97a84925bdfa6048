"""Regenerate tests/fixtures/cdnow: a slice of the CDNOW master file and its landing-contract extracts.

    .venv/bin/python bench/cdnow_fixture.py

Every transaction of these customers (README.md there says why each group is in):
- the first 100 ids (00001-00100, all of them first buyers on 1997-01-01);
- for each day of the test's backfill week (1997-04-01 .. 1997-04-07), the two lowest ids above 00100 that
  bought that day, so every day of the backfill moves someone's RFM;
- the two lowest ids with a $0.00 transaction;
- the lowest id among the ten heaviest buyers of the whole file (00499, 110 transactions);
- the two lowest ids whose average order value as of the test's first date (1997-03-31) is an exact half cent
  that a division in floating point rounds the wrong way (00157, 00174), so such a rounding shows.
The slice keeps the master file's lines (header included) as they are, in their order.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cdnow import LIFETIMES, MASTER, master_text, write_extracts  # noqa: E402 (bench scripts import each other)

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "cdnow"
FIRST_AS_OF = date(1997, 3, 31)
BACKFILL_WEEK = [date(1997, 4, 1) + timedelta(days=offset) for offset in range(7)]


def chosen_customers(rows: list[list[str]]) -> set[str]:
    """The customer ids of the slice, per the rules in this module's docstring."""
    ids = sorted({customer_id for customer_id, *_ in rows})
    chosen = set(ids[:100])
    for day in BACKFILL_WEEK:
        buyers = sorted({c for c, bought, *_ in rows if bought == day.strftime("%Y%m%d") and c > ids[99]})
        chosen.update(buyers[:2])
    chosen.update(sorted({c for c, _, _, dollars in rows if float(dollars) == 0})[:2])
    heaviest = [customer_id for customer_id, _ in Counter(c for c, *_ in rows).most_common(10)]
    chosen.add(min(heaviest))
    chosen.update(sorted(half_cent_averages(rows, FIRST_AS_OF, misrounded_in_floats=True))[:2])
    return chosen


def half_cent_averages(rows: list[list[str]], as_of: date, misrounded_in_floats: bool = False) -> set[str]:
    """Customers whose mean order value up to `as_of` lies exactly halfway between two cents (with
    `misrounded_in_floats`, only those where dollars / orders in floating point, rounded half up, loses the cent)."""
    cents: Counter[str] = Counter()
    orders: Counter[str] = Counter()
    for customer_id, bought, _, dollars in rows:
        if bought <= as_of.strftime("%Y%m%d"):
            cents[customer_id] += round(float(dollars) * 100)
            orders[customer_id] += 1
    halves = {c for c in orders if (2 * cents[c]) % (2 * orders[c]) == orders[c]}
    if not misrounded_in_floats:
        return halves
    exact = {c: (2 * cents[c] + orders[c]) // (2 * orders[c]) for c in halves}
    return {c for c in halves if math.floor(cents[c] / 100 / orders[c] * 100 + 0.5) != exact[c]}


def main() -> int:
    header, *lines = master_text().splitlines()
    rows = [line.split() for line in lines if line.strip()]
    chosen = chosen_customers(rows)
    kept = [line for line, row in zip([x for x in lines if x.strip()], rows, strict=True) if row[0] in chosen]
    FIXTURE.mkdir(parents=True, exist_ok=True)
    slice_text = "\n".join([header, *kept]) + "\n"
    (FIXTURE / "CDNOW_slice.txt").write_text(slice_text)
    counts = write_extracts(slice_text, FIXTURE / "extracts")
    print(f"{FIXTURE.relative_to(ROOT)}: {len(chosen)} customers, {len(kept)} transactions "
          f"from {MASTER} ({'=='.join(LIFETIMES)}); extracts {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
