"""Synthetic marts simulated from known BG/NBD + Gamma-Gamma parameters (tests and benchmarks).

Not used by the pipeline: it writes the marts the ML stage reads, `marts.fct_orders`, `marts.customer_rfm` and
`marts.customer_activity`, with the contract columns (docs/contracts.md §7), so the ML stage can be exercised
without dbt. (Not `marts.customer_360`: dbt builds it after the ML stage, from the ML stage's outputs.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

CATEGORIES = ("apparel", "home", "electronics", "beauty")


@dataclass(frozen=True)
class SimulationParams:
    r: float = 0.6
    alpha: float = 40.0  # purchase rate lambda ~ Gamma(r, rate=alpha), per day
    a: float = 0.8
    b: float = 4.0  # dropout after each purchase p ~ Beta(a, b)
    p: float = 6.0
    q: float = 4.0
    gamma: float = 15.0  # spend per purchase ~ Gamma(p, rate=nu), nu ~ Gamma(q, rate=gamma)


def simulate_purchases(
    n_customers: int,
    start: date,
    end: date,
    params: SimulationParams = SimulationParams(),
    seed: int = 0,
    horizon_after_end_days: int = 0,
) -> pd.DataFrame:
    """Continuous-time BG/NBD purchases: person_id, t (days since `start`, float), amount.

    Each customer's first purchase (acquisition) is uniform over the first half of [start, end]; purchases
    run until the customer drops out or `end + horizon_after_end_days`.
    """
    rng = np.random.default_rng(seed)
    span = (end - start).days
    stop = span + horizon_after_end_days
    lam = rng.gamma(params.r, 1.0 / params.alpha, n_customers)
    drop = rng.beta(params.a, params.b, n_customers)
    nu = rng.gamma(params.q, 1.0 / params.gamma, n_customers)
    birth = rng.uniform(0, span / 2, n_customers)
    ids = np.array([f"p{i:07d}" for i in range(n_customers)], dtype=object)
    person_rows = [np.arange(n_customers)]
    times = [birth]
    current = birth.copy()
    alive = np.ones(n_customers, dtype=bool)
    active = np.arange(n_customers)
    first = True
    while active.size:
        # dropout happens right after each repeat purchase with probability p (not after the first one:
        # BG/NBD customers are alive until their first repeat purchase)
        if not first:
            alive[active] = rng.uniform(size=active.size) >= drop[active]
            active = active[alive[active]]
        first = False
        current[active] += rng.exponential(1.0 / lam[active])
        active = active[current[active] <= stop]
        person_rows.append(active.copy())
        times.append(current[active].copy())
    index = np.concatenate(person_rows)
    t = np.concatenate(times)
    amount = rng.gamma(params.p, 1.0 / nu[index])
    frame = pd.DataFrame({"person_id": ids[index], "t": t, "amount": amount})
    return frame.sort_values(["person_id", "t"], kind="stable").reset_index(drop=True)


def orders_from_purchases(purchases: pd.DataFrame, start: date, seed: int = 0) -> pd.DataFrame:
    """`marts.fct_orders` rows from simulated purchases (a few extra cancelled orders mixed in)."""
    rng = np.random.default_rng(seed + 1)
    ordered_at = pd.Timestamp(start) + pd.to_timedelta(purchases["t"].to_numpy(), unit="D")
    n = len(purchases)
    online_affinity = {pid: rng.uniform() for pid in purchases["person_id"].unique()}
    channel = np.where(
        rng.uniform(size=n) < purchases["person_id"].map(online_affinity).to_numpy(dtype="float64"),
        "online",
        "store",
    )
    orders = pd.DataFrame(
        {
            "order_id": [f"shop:{i}" for i in range(n)],
            "person_id": purchases["person_id"].to_numpy(),
            "channel": channel,
            "ordered_at": ordered_at.floor("s"),
            "status": "completed",
            "gross_amount": purchases["amount"].round(2).to_numpy(),
        }
    )
    orders["net_amount"] = orders["gross_amount"]
    orders["is_purchase"] = True
    cancelled = orders.sample(frac=0.03, random_state=seed).copy()
    cancelled["order_id"] = [f"shop:c{i}" for i in range(len(cancelled))]
    cancelled["status"] = "cancelled"
    cancelled["net_amount"] = 0.0
    cancelled["is_purchase"] = False
    orders = pd.concat([orders, cancelled], ignore_index=True)
    orders["order_date"] = orders["ordered_at"].dt.date
    return orders[
        [
            "order_id",
            "person_id",
            "channel",
            "ordered_at",
            "order_date",
            "status",
            "gross_amount",
            "net_amount",
            "is_purchase",
        ]
    ]


def write_marts(con: duckdb.DuckDBPyConnection, orders: pd.DataFrame, as_of: date, seed: int = 0) -> None:
    """Create marts.fct_orders / customer_rfm / customer_activity from order rows (only orders up to as_of)."""
    rng = np.random.default_rng(seed + 2)
    con.execute("create schema if not exists marts")
    frame = orders[pd.to_datetime(orders["order_date"]) <= pd.Timestamp(as_of)].copy()
    con.register("_orders_frame", frame)
    con.execute(
        """
        create or replace table marts.fct_orders as
        select order_id::varchar as order_id, person_id::varchar as person_id, channel::varchar as channel,
               ordered_at::timestamp as ordered_at, order_date::date as order_date, status::varchar as status,
               gross_amount::decimal(18, 2) as gross_amount, net_amount::decimal(18, 2) as net_amount,
               is_purchase::boolean as is_purchase
        from _orders_frame
        """
    )
    con.unregister("_orders_frame")
    con.execute(
        f"""
        create or replace table marts.customer_rfm as
        with per_person as (
            select person_id, max(order_date) as last_order_date, count(*) as frequency,
                   sum(net_amount) as monetary
            from marts.fct_orders where is_purchase group by person_id
        )
        select person_id, date '{as_of}' as as_of,
               date_diff('day', last_order_date, date '{as_of}') as recency_days,
               frequency, monetary, monetary / frequency as avg_order_value,
               ntile(5) over (order by date_diff('day', last_order_date, date '{as_of}') desc) as r_score,
               ntile(5) over (order by frequency) as f_score, ntile(5) over (order by monetary) as m_score,
               'segment' as rfm_segment
        from per_person
        """
    )
    people = con.execute("select person_id from marts.customer_rfm order by person_id").df()
    n = len(people)
    engagement = rng.beta(2, 5, n)
    extras = pd.DataFrame(
        {
            "person_id": people["person_id"],
            "web_sessions": rng.poisson(1 + 30 * engagement),
            "email_open_rate": np.clip(engagement + rng.normal(0, 0.05, n), 0, 1),
            "email_click_rate": np.clip(engagement / 3 + rng.normal(0, 0.02, n), 0, 1),
            "preferred_category": rng.choice(CATEGORIES, n),
        }
    )
    con.register("_extras", extras)
    # customer_activity's columns the ML stage reads (ml/features.py), for the buyers; the order measures are
    # computed from fct_orders as dbt computes them, the web and email ones drawn
    con.execute(
        f"""
        create or replace table marts.customer_activity as
        with per_person as (
            select person_id,
                   min(order_date) filter (where is_purchase) as first_order_date,
                   max(order_date) filter (where is_purchase) as last_order_date,
                   count(*) filter (where is_purchase) as orders_count,
                   sum(net_amount) as revenue,
                   mode(channel) filter (where is_purchase) as preferred_channel,
                   max(ordered_at) as last_ordered_at
            from marts.fct_orders group by person_id
        )
        select per_person.person_id, per_person.first_order_date, per_person.last_order_date,
               per_person.orders_count, per_person.revenue,
               per_person.revenue / per_person.orders_count as avg_order_value,
               per_person.preferred_channel, extras.preferred_category,
               extras.web_sessions::integer as web_sessions, per_person.last_ordered_at as last_visit_at,
               extras.email_open_rate, extras.email_click_rate, date '{as_of}' as as_of
        from per_person
        inner join _extras as extras on extras.person_id = per_person.person_id
        """
    )
    con.unregister("_extras")


def build_synthetic_marts(
    con: duckdb.DuckDBPyConnection,
    n_customers: int,
    as_of: date,
    history_days: int = 730,
    params: SimulationParams = SimulationParams(),
    seed: int = 0,
) -> pd.DataFrame:
    """Simulate, write the marts as of `as_of` and return all simulated orders (including later ones)."""
    start = as_of - timedelta(days=history_days)
    purchases = simulate_purchases(n_customers, start, as_of, params, seed, horizon_after_end_days=120)
    orders = orders_from_purchases(purchases, start, seed)
    write_marts(con, orders, as_of, seed)
    return orders
