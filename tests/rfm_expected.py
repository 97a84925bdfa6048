"""RFM computed in plain Python from a transaction list, to hold `marts.customer_rfm` against.

Written from the rules in customer_rfm's description (dbt_project/models/marts/_marts__models.yml), not from its
SQL: a purchase counts on or before the as-of day; recency_days = as_of - last purchase date; frequency = number
of purchases; monetary = their sum; avg_order_value = monetary / frequency rounded half up to cents; R and M are
mid-rank quintiles (score = 1 + floor(5 * (below + ties / 2) / n), at most 5, lower recency better); F is by
frequency band: 1 purchase = F1, repeat buyers get 2 + floor(4 * (below + ties / 2) / r) ranked among the r
repeat buyers; the segment is the cell (R, FM) of the grid, FM = round-half-up of (f + m) / 2. The grid itself
is data, not logic: it is read from the seed the warehouse reads (dbt_project/seeds/marts/rfm_segments.csv), the
one list of segments.

Also reads the CDNOW transaction file layout (lifetimes/datasets/CDNOW_master.txt): shared by
tests/test_history_cdnow.py and bench/cdnow.py, so the test and the bench hold the warehouse to one oracle.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

CENT = Decimal("0.01")
SEGMENT_GRID = Path(__file__).resolve().parent.parent / "dbt_project" / "seeds" / "marts" / "rfm_segments.csv"


def segment_grid(path: Path = SEGMENT_GRID) -> dict[tuple[int, int], str]:
    """(r_score, fm_score) -> segment, from the seed."""
    with path.open(newline="") as file:
        return {(int(row["r_score"]), int(row["fm_score"])): row["rfm_segment"] for row in csv.DictReader(file)}


@dataclass(frozen=True)
class Purchase:
    customer_id: str
    day: date
    amount: Decimal


@dataclass(frozen=True)
class Rfm:
    recency_days: int
    frequency: int
    monetary: Decimal
    avg_order_value: Decimal
    last_order_date: date
    r_score: int
    f_score: int
    m_score: int
    rfm_segment: str


def read_cdnow(text: str) -> list[Purchase]:
    """CDNOW transactions: a header line, then `customer_id YYYYMMDD number_of_cds dollar_value` per line."""
    purchases = []
    for line in text.splitlines()[1:]:
        if line.strip():
            customer_id, day, _cds, dollars = line.split()
            purchases.append(Purchase(customer_id, datetime.strptime(day, "%Y%m%d").date(), Decimal(dollars)))
    return purchases


def _mid_rank_scores(
    values: dict[str, object], better_is_lower: bool = False, lowest: int = 1, levels: int = 5
) -> dict[str, int]:
    """`lowest` + floor(levels * (below + ties / 2) / n): mid-rank quantiles over `values`."""
    n = len(values)
    ties = Counter(values.values())
    worse_than: dict[object, int] = {}
    running = 0
    for value in sorted(ties, reverse=better_is_lower):  # worst first
        worse_than[value] = running
        running += ties[value]
    return {
        key: lowest + min(levels - 1, (levels * (2 * worse_than[value] + ties[value])) // (2 * n))
        for key, value in values.items()
    }


def _frequency_bands(frequency: dict[str, int]) -> dict[str, int]:
    """F1 for one purchase; F2..F5 as mid-rank quartiles among the repeat buyers."""
    repeat = {customer: count for customer, count in frequency.items() if count > 1}
    scores = _mid_rank_scores(repeat, lowest=2, levels=4)
    return {customer: scores.get(customer, 1) for customer in frequency}


def expected_rfm(purchases: Iterable[Purchase], as_of: date) -> dict[str, Rfm]:
    """RFM per customer with at least one purchase on or before `as_of`."""
    days: dict[str, list[date]] = defaultdict(list)
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    for purchase in purchases:
        if purchase.day <= as_of:
            days[purchase.customer_id].append(purchase.day)
            amounts[purchase.customer_id] += purchase.amount
    recency = {customer: (as_of - max(bought)).days for customer, bought in days.items()}
    frequency = {customer: len(bought) for customer, bought in days.items()}
    r_scores = _mid_rank_scores(recency, better_is_lower=True)
    f_scores = _frequency_bands(frequency)
    m_scores = _mid_rank_scores(amounts)
    grid = segment_grid()
    result = {}
    for customer in days:
        fm_score = (f_scores[customer] + m_scores[customer] + 1) // 2
        result[customer] = Rfm(
            recency_days=recency[customer],
            frequency=frequency[customer],
            monetary=amounts[customer],
            avg_order_value=(amounts[customer] / frequency[customer]).quantize(CENT, rounding=ROUND_HALF_UP),
            last_order_date=max(days[customer]),
            r_score=r_scores[customer],
            f_score=f_scores[customer],
            m_score=m_scores[customer],
            rfm_segment=grid[r_scores[customer], fm_score],
        )
    return result
