"""Purchase and buyer have one meaning, marts.fct_orders.is_purchase. RFM, customer_360 and the ML stage
read it, so they agree on who bought, and every buyer gets a propensity, a CLV and a segment row.

A small world built through the real dbt layers (not the ML stage's synthetic marts): 240 shop customers with a
year and a half of orders, so every model trains, plus one customer per way an order can fail to be a purchase
(refunded, cancelled, a negative amount) and one whose only order is worth $0. Before the one definition,
customer_rfm counted refunded orders and the ML stage dropped $0 orders, so RFM buyers went unscored.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tests.conftest_identity import dbt_build, insert_rows, make_raw_db
from touchpoint.config import RunContext
from touchpoint.ml.stage import run_ml

AS_OF = date(2026, 3, 31)
ALL_LAYERS = "path:models/staging path:models/intermediate path:models/identity path:seeds/marts path:models/marts"
# customer id -> (status, amount) of its only order, a week before the as-of
SPECIAL = {
    "refunded_only": ("refunded", "40.00"),
    "cancelled_only": ("cancelled", "40.00"),
    "negative_only": ("completed", "-25.00"),
    "zero_value_only": ("completed", "0.00"),
}
NOT_BUYERS = {"refunded_only", "cancelled_only", "negative_only"}


def _regular_orders(customers: int, seed: int = 3) -> list[dict[str, str]]:
    """Repeat-purchase histories: each customer joins in the first year and buys at its own rate until it lapses."""
    rng = np.random.default_rng(seed)
    start = datetime.combine(AS_OF, datetime.min.time()) - timedelta(days=540)
    orders = []
    for number in range(customers):
        customer = f"C{number:04d}"
        day = float(rng.uniform(0, 365))
        gap = float(rng.gamma(2.0, 25.0))  # mean days between orders
        lapse = float(rng.uniform(60, 700))  # how long the customer stays
        first = day
        while day <= 540 and day - first <= lapse:
            ordered_at = start + timedelta(days=day, hours=float(rng.uniform(8, 20)))
            amount = f"{rng.gamma(4.0, 12.0):.2f}"
            orders.append({"order_id": f"{customer}-{len(orders)}", "customer_id": customer,
                           "ordered_at": ordered_at.isoformat(sep=" "), "total_amount": amount,
                           "status": "completed", "currency": "EUR"})
            day += float(rng.exponential(gap))
    return orders


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    folder = tmp_path_factory.mktemp("buyers")
    db = make_raw_db(folder / "warehouse.duckdb", folder=None)
    orders = _regular_orders(240)
    week_before = datetime.combine(AS_OF - timedelta(days=7), datetime.min.time()) + timedelta(hours=12)
    for customer, (status, amount) in SPECIAL.items():
        orders.append({"order_id": f"{customer}-1", "customer_id": customer, "ordered_at": str(week_before),
                       "total_amount": amount, "status": status, "currency": "EUR"})
    # a buyer whose second order was refunded: one purchase, not two
    orders.append({"order_id": "C0000-refunded", "customer_id": "C0000", "ordered_at": str(week_before),
                   "total_amount": "99.00", "status": "refunded", "currency": "EUR"})
    customers = sorted({order["customer_id"] for order in orders})
    con = duckdb.connect(str(db))
    try:
        insert_rows(con, "shop_customers", [{"customer_id": customer} for customer in customers])
        insert_rows(con, "shop_orders", orders)
    finally:
        con.close()
    # as the pipeline runs them: the marts, the ML stage, then what reads the ML outputs (customer_360)
    dbt_build(db, AS_OF.isoformat(), ALL_LAYERS, "--exclude", "source:ml+")
    con = duckdb.connect(str(db))
    with threadpool_limits(1):
        run_ml(RunContext(as_of=AS_OF, home=folder, run_id="buyers"), con)
    con.close()
    dbt_build(db, AS_OF.isoformat(), "source:ml+")
    con = duckdb.connect(str(db))
    yield con
    con.close()


def _people(con: duckdb.DuckDBPyConnection, sql: str) -> set[str]:
    return {row[0] for row in con.execute(sql).fetchall()}


def _customer_of(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute("select person_id, source_record_id from identity.person_map "
                       "where source_entity = 'shop_customers'").fetchall()
    return dict(rows)


def test_rfm_customer_360_and_ml_agree_on_the_buyers(world: duckdb.DuckDBPyConnection) -> None:
    purchases = _people(world, "select distinct person_id from marts.fct_orders where is_purchase")
    rfm = _people(world, "select person_id from marts.customer_rfm")
    customer_360 = _people(world, "select person_id from marts.customer_360 where orders_count > 0")
    propensity = _people(world, f"select person_id from ml.customer_propensity where as_of = '{AS_OF}'")
    clv = _people(world, f"select person_id from ml.customer_clv where as_of = '{AS_OF}'")
    segments = _people(world, f"select person_id from ml.customer_segments where as_of = '{AS_OF}'")
    assert len(rfm) == 241  # 240 regular customers and the $0 one
    assert purchases == rfm == customer_360 == propensity == clv == segments


def test_which_orders_are_purchases(world: duckdb.DuckDBPyConnection) -> None:
    customer_of = _customer_of(world)
    buyers = {customer_of[person] for person in _people(world, "select person_id from marts.customer_rfm")}
    assert not buyers & NOT_BUYERS
    assert "zero_value_only" in buyers
    refunded_second = world.execute(
        "select frequency, monetary from marts.customer_rfm as rfm inner join identity.person_map as map "
        "on rfm.person_id = map.person_id and map.source_entity = 'shop_customers' "
        "where map.source_record_id = 'C0000'").fetchone()
    kept = world.execute("select count(*), sum(total_amount) from raw.shop_orders "
                         "where customer_id = 'C0000' and status = 'completed'").fetchone()
    assert refunded_second == kept  # the refunded order adds neither a purchase nor value


def test_every_buyer_has_a_score_even_at_zero_value(world: duckdb.DuckDBPyConnection) -> None:
    runs = dict(world.execute("select model_name, status from ml.model_runs").fetchall())
    assert set(runs.values()) == {"trained"}, runs
    unscored = world.execute(
        f"""select count(*) from marts.customer_rfm as rfm
        left join ml.customer_propensity as propensity
            on rfm.person_id = propensity.person_id and propensity.as_of = '{AS_OF}'
        left join ml.customer_clv as clv on rfm.person_id = clv.person_id and clv.as_of = '{AS_OF}'
        where propensity.purchase_30d_probability is null or propensity.churn_90d_probability is null
            or clv.clv is null""").fetchone()[0]
    assert unscored == 0
    zero = world.execute(
        """select rfm.monetary, clv.clv, propensity.purchase_30d_probability
        from marts.customer_rfm as rfm
        inner join identity.person_map as map
            on rfm.person_id = map.person_id and map.source_entity = 'shop_customers'
        inner join ml.customer_clv as clv on rfm.person_id = clv.person_id
        inner join ml.customer_propensity as propensity on rfm.person_id = propensity.person_id
        where map.source_record_id = 'zero_value_only'""").fetchone()
    assert zero[0] == 0 and zero[1] >= 0 and 0 <= zero[2] <= 1
