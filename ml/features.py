"""Reading the marts and building model features, point in time.

Everything is computed from `marts.fct_orders` (and, for segments, `marts.customer_activity`) as of a cut-off:
an order counts when `ordered_at < cutoff`. Labels for propensity come from the window after the cut-off
only, so no feature sees anything at or after it.

Not from `marts.customer_360`: that table carries this stage's scores, so dbt builds it after this stage
(the layer 'scored'); `marts.customer_activity` holds its behavioural columns and is built before.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import duckdb
import numpy as np
import pandas as pd

from touchpoint.warehouse import relation_exists

# Orders that count as purchases: marts.fct_orders.is_purchase, the warehouse's one definition (cancelled,
# refunded, returned and negative orders are not purchases; zero-value orders are). Deciding it again here
# left 86 demo buyers and 68 CDNOW buyers in customer_rfm without a propensity or CLV row.
PURCHASE_FILTER = "is_purchase and person_id is not null"

# Persons who did not grant profiling (marts.dim_consents, one row per person and purpose) are neither trained
# on nor scored: their orders are left out of every frame the models see. The ML gate checks no score of theirs
# is written (expectations/suites/ml.py).
NOT_PROFILED = "select person_id from marts.dim_consents where purpose = 'profiling' and not is_granted"

# When an order happened (a row with only a date counts from the start of that day).
ORDER_TIME = "coalesce(ordered_at::timestamp, order_date::timestamp)"

PROPENSITY_FEATURES = [
    "recency_days",
    "tenure_days",
    "orders_total",
    "orders_30d",
    "orders_90d",
    "orders_365d",
    "net_total",
    "net_90d",
    "avg_order_value",
    "online_share",
    "days_per_order",
]

SEGMENT_NUMERIC_SKEWED = [
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "tenure_days",
    "web_sessions",
]
SEGMENT_NUMERIC_RATES = ["email_open_rate", "email_click_rate", "online_share"]
SEGMENT_CATEGORICAL = ["preferred_category"]


def day_end(day: date) -> datetime:
    """First instant after `day` (UTC, naive): the cut-off for data as of that day."""
    return datetime.combine(day + timedelta(days=1), time.min)


def profiled_orders(con: duckdb.DuckDBPyConnection) -> str:
    """SQL condition on marts.fct_orders rows: a purchase of a person the ML stage may profile. Without
    marts.dim_consents (marts built for the ML stage alone) everyone may."""
    if not relation_exists(con, "marts", "dim_consents"):
        return PURCHASE_FILTER
    return f"{PURCHASE_FILTER} and person_id not in ({NOT_PROFILED})"


def load_purchases(con: duckdb.DuckDBPyConnection, as_of: date) -> pd.DataFrame:
    """Purchase orders on or before as_of of the persons the stage may profile: person_id, ordered_at,
    purchase_date, channel, amount."""
    frame = con.execute(
        f"""
        select person_id::varchar as person_id,
               {ORDER_TIME} as ordered_at,
               order_date::date as purchase_date, channel, net_amount::double as amount
        from marts.fct_orders
        where {profiled_orders(con)} and {ORDER_TIME} < ?
        order by person_id, ordered_at, order_id
        """,
        [day_end(as_of)],
    ).df()
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"])
    frame["purchase_date"] = pd.to_datetime(frame["purchase_date"])
    return frame


def propensity_features(purchases: pd.DataFrame, cutoff: datetime) -> pd.DataFrame:
    """Features per person from purchases strictly before `cutoff` (persons with >= 1 such purchase)."""
    cut = pd.Timestamp(cutoff)
    past = purchases[purchases["ordered_at"] < cut]
    if past.empty:
        return pd.DataFrame(columns=["person_id", *PROPENSITY_FEATURES])
    age_days = (cut - past["ordered_at"]).dt.total_seconds() / 86400.0
    past = past.assign(
        age_days=age_days,
        in_30=(age_days <= 30).astype("float64"),
        in_90=(age_days <= 90).astype("float64"),
        in_365=(age_days <= 365).astype("float64"),
        net_in_90=np.where(age_days <= 90, past["amount"], 0.0),
        is_online=(past["channel"] == "online").astype("float64"),
    )
    grouped = past.groupby("person_id", sort=True)
    features = pd.DataFrame(
        {
            "recency_days": grouped["age_days"].min(),
            "tenure_days": grouped["age_days"].max(),
            "orders_total": grouped["age_days"].size().astype("float64"),
            "orders_30d": grouped["in_30"].sum(),
            "orders_90d": grouped["in_90"].sum(),
            "orders_365d": grouped["in_365"].sum(),
            "net_total": grouped["amount"].sum(),
            "net_90d": grouped["net_in_90"].sum(),
            "online_share": grouped["is_online"].mean(),
        }
    )
    features["avg_order_value"] = features["net_total"] / features["orders_total"]
    features["days_per_order"] = features["tenure_days"] / features["orders_total"]
    return features.reset_index()[["person_id", *PROPENSITY_FEATURES]]


def purchased_in_window(purchases: pd.DataFrame, start: datetime, days: int) -> pd.Series:
    """Persons with a purchase in [start, start + days): a boolean Series indexed by person_id."""
    begin = pd.Timestamp(start)
    end = begin + pd.Timedelta(days=days)
    window = purchases[(purchases["ordered_at"] >= begin) & (purchases["ordered_at"] < end)]
    return pd.Series(True, index=pd.Index(window["person_id"].unique(), name="person_id"))


def labelled_snapshot(purchases: pd.DataFrame, cutoff: datetime, horizon_days: int) -> pd.DataFrame:
    """Features as of `cutoff` plus `label` = purchased in [cutoff, cutoff + horizon)."""
    features = propensity_features(purchases, cutoff)
    bought = purchased_in_window(purchases, cutoff, horizon_days)
    features["label"] = features["person_id"].isin(bought.index).astype("int64")
    features["cutoff"] = pd.Timestamp(cutoff)
    return features


# The mart the segment features are read from: (schema, table), one row per person, built before the ML stage.
SEGMENT_SOURCE = ("marts", "customer_activity")


def segment_features(con: duckdb.DuckDBPyConnection, as_of: date) -> pd.DataFrame:
    """Behavioural features per person with >= 1 purchase, from marts.customer_activity and fct_orders.

    recency, frequency, monetary and average order value are customer_rfm's (customer_activity's
    last_order_date, orders_count, revenue and avg_order_value are the same measures of the same orders).
    """
    frame = con.execute(
        f"""
        with channel_mix as (
            select person_id, avg(case when channel = 'online' then 1.0 else 0.0 end) as online_share
            from marts.fct_orders
            where {profiled_orders(con)} and {ORDER_TIME} < $cutoff
            group by person_id
        )
        select a.person_id::varchar as person_id,
               date_diff('day', a.last_order_date, $as_of)::double as recency_days,
               a.orders_count::double as frequency,
               a.revenue::double as monetary,
               a.avg_order_value::double as avg_order_value,
               date_diff('day', a.first_order_date, $as_of)::double as tenure_days,
               a.web_sessions::double as web_sessions,
               coalesce(a.email_open_rate, 0)::double as email_open_rate,
               coalesce(a.email_click_rate, 0)::double as email_click_rate,
               m.online_share,
               coalesce(a.preferred_category, 'unknown') as preferred_category
        from {".".join(SEGMENT_SOURCE)} as a
        inner join channel_mix as m on m.person_id = a.person_id
        order by a.person_id
        """,
        {"cutoff": day_end(as_of), "as_of": as_of},
    ).df()
    numeric = SEGMENT_NUMERIC_SKEWED + SEGMENT_NUMERIC_RATES
    frame[numeric] = frame[numeric].astype("float64").fillna(0.0)
    # negative values (a refund larger than the purchases) would break the log transform
    frame[SEGMENT_NUMERIC_SKEWED] = frame[SEGMENT_NUMERIC_SKEWED].clip(lower=0.0)
    frame["preferred_category"] = frame["preferred_category"].astype("object")
    return frame
