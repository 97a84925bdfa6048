"""RFM on a public purchase history nobody here produced: a slice of CDNOW (tests/fixtures/cdnow, 119 customers,
787 transactions from 1997-01-01 to 1998-06-30) through `touchpoint run` as of 1997-03-31 and `touchpoint
backfill` over the next two days (incremental builds on the first run's warehouse), each time given the whole
slice: transactions after the as-of are "not yet" (loaded, never quarantined, not counted). customer_rfm must
equal, customer by customer, RFM computed from the slice's original lines in plain Python (tests/rfm_expected.py)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.rfm_expected import Purchase, Rfm, expected_rfm, read_cdnow
from tests.test_end_to_end import touchpoint

pytestmark = pytest.mark.slow
FIXTURE = Path(__file__).parent / "fixtures" / "cdnow"
EXTRACTS = FIXTURE / "extracts"
AS_OF = date(1997, 3, 31)
# The two days after the first run: 1997-04-01 and 1997-04-02 (a day's run costs about 40 s of the suite).
BACKFILL = [date(1997, 4, 1) + timedelta(days=offset) for offset in range(2)]
RFM_COLUMNS = ", ".join(Rfm.__dataclass_fields__)


@pytest.fixture(scope="module")
def purchases() -> list[Purchase]:
    return read_cdnow((FIXTURE / "CDNOW_slice.txt").read_text())


def _query(home: Path, sql: str, db: str = "warehouse.duckdb") -> list[tuple]:
    """`sql` on the published warehouse, or with `db="work/warehouse.duckdb"` on the working one (raw)."""
    con = duckdb.connect(str(home / db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _persons(home: Path) -> dict[str, str]:
    """CDNOW customer id -> person id (identity.person_map, shop_customers records)."""
    rows = _query(
        home, "select source_record_id, person_id from identity.person_map where source_entity = 'shop_customers'"
    )
    return dict(rows)


def _rfm_by_customer(home: Path, persons: dict[str, str], table: str, as_of: date) -> dict[str, Rfm]:
    customer_of = {person: customer for customer, person in persons.items()}
    rows = _query(home, f"select person_id, {RFM_COLUMNS} from {table} where as_of = '{as_of}'")
    return {customer_of.get(person, f"person {person}"): Rfm(*values) for person, *values in rows}


def _assert_rfm_equal(actual: dict[str, Rfm], expected: dict[str, Rfm], label: str) -> None:
    assert actual.keys() == expected.keys(), (
        f"{label}: buyers missing {sorted(expected.keys() - actual.keys())[:5]}, "
        f"extra {sorted(actual.keys() - expected.keys())[:5]}"
    )
    wrong = {customer: (actual[customer], expected[customer]) for customer in expected
             if actual[customer] != expected[customer]}
    assert not wrong, f"{label}: {len(wrong)} customers differ (actual, expected), e.g. {list(wrong.items())[:3]}"


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cdnow_home")
    result = touchpoint("run", "--extracts", str(EXTRACTS), "--as-of", AS_OF.isoformat(), "--home", str(home))
    assert result.returncode == 0, result.stdout + result.stderr
    return home


def test_run_as_of_1997_03_31_gives_the_expected_rfm_and_keeps_later_rows_as_not_yet(
    first_run: Path, purchases: list[Purchase]
) -> None:
    persons = _persons(first_run)
    customers = {purchase.customer_id for purchase in purchases}
    # CDNOW carries no name or contact: each customer is a person of its own, and its orders are its own
    assert persons.keys() == customers
    assert len(set(persons.values())) == len(customers)
    misattributed = _query(first_run, "select customer_id, person_id from marts.fct_orders")
    assert [(c, p) for c, p in misattributed if persons[c] != p] == []

    # every line of the slice is in raw, 1998 included; only those up to the as-of day are orders of this run
    assert _query(first_run, "select count(*) from raw.shop_orders", "work/warehouse.duckdb") == [(len(purchases),)]
    assert _query(first_run, "select count(*) from audit.quarantine") == [(0,)]
    counted = [purchase for purchase in purchases if purchase.day <= AS_OF]
    assert _query(first_run, "select count(*), max(order_date) from marts.fct_orders") == [
        (len(counted), max(purchase.day for purchase in counted))
    ]

    _assert_rfm_equal(
        _rfm_by_customer(first_run, persons, "marts.customer_rfm", AS_OF),
        expected_rfm(purchases, AS_OF),
        f"customer_rfm as of {AS_OF}",
    )


def test_backfill_of_the_next_days_gives_the_expected_rfm_for_each_day(
    first_run: Path, purchases: list[Purchase]
) -> None:
    result = touchpoint(
        "backfill", "--from", BACKFILL[0].isoformat(), "--to", BACKFILL[-1].isoformat(),
        "--extracts", str(EXTRACTS), "--home", str(first_run),
    )
    assert result.returncode == 0, result.stdout + result.stderr

    persons = _persons(first_run)
    assert _query(first_run, "select distinct as_of from marts.customer_rfm") == [(BACKFILL[-1],)]
    _assert_rfm_equal(
        _rfm_by_customer(first_run, persons, "marts.customer_rfm", BACKFILL[-1]),
        expected_rfm(purchases, BACKFILL[-1]),
        f"customer_rfm as of {BACKFILL[-1]}",
    )
    history_dates = _query(first_run, "select distinct as_of from marts.customer_rfm_history order by 1")
    assert [as_of for (as_of,) in history_dates] == [AS_OF, *BACKFILL]
    for as_of in [AS_OF, *BACKFILL]:
        _assert_rfm_equal(
            _rfm_by_customer(first_run, persons, "marts.customer_rfm_history", as_of),
            expected_rfm(purchases, as_of),
            f"customer_rfm_history as of {as_of}",
        )
