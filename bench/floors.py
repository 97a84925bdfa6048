"""Floors for the marts: per mart, one hand-written DuckDB query from raw at the mart's grain, timed on a working
warehouse beside the seconds dbt reported for the model (bench/harness.py). A floor skips identity stitching,
tests and dbt's bookkeeping, so it bounds what the model could cost; it is not an equivalent. The email floor's
grain is (campaign, address), the mart's (person, campaign)."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import duckdb
from marts import HAND_WRITTEN_RFM, SEGMENT_GRID

FLOORS = {
    "fct_orders": """
        select trim(order_id) as order_id, trim(customer_id) as customer_id, cast(ordered_at as date) as order_date,
               total_amount, lower(trim(status)) as status
        from raw.shop_orders where ordered_at < $as_of_end
        qualify row_number() over (partition by trim(order_id) order by updated_at desc nulls last) = 1
        union all
        select trim(transaction_id), loyalty_id, cast(purchased_at as date), total_amount, 'completed'
        from raw.pos_transactions where purchased_at < $as_of_end
    """,
    "fct_web_sessions": """
        select session_id, min(occurred_at) as started_at, max(occurred_at) as ended_at, count(*) as events,
               count(*) filter (where event_type = 'page_view') as page_views,
               count(*) filter (where event_type = 'product_view') as product_views,
               count(*) filter (where event_type = 'add_to_cart') as adds_to_cart,
               arg_min(channel, occurred_at) as channel, arg_min(page_url, occurred_at) as landing_page
        from (select distinct on (trim(event_id)) * from raw.web_events where occurred_at < $as_of_end)
        group by session_id
    """,
    "fct_email_engagement": """
        select campaign_id, lower(trim(email)) as email,
               count(*) filter (where event_type in ('sent', 'delivered')) as sends,
               count(*) filter (where event_type = 'open') as opens,
               count(*) filter (where event_type = 'click') as clicks
        from (select distinct on (trim(event_id)) * from raw.email_events where occurred_at < $as_of_end)
        group by all
    """,
    "customer_rfm": HAND_WRITTEN_RFM,
}


def model_seconds(home: Path) -> dict[str, float]:
    """Seconds dbt reported per model in the last run's marts and scored layers."""
    seconds: dict[str, float] = {}
    for layer in ("marts", "scored"):
        results = home / "work" / "dbt_target" / layer / "run_results.json"
        if results.exists():
            for node in json.loads(results.read_text())["results"]:
                if node["unique_id"].startswith("model."):
                    seconds[node["unique_id"].split(".")[-1]] = node["execution_time"]
    return seconds


def run_floors(home: Path, as_of: date) -> list[str]:
    """Markdown rows: mart, dbt's seconds, the floor's seconds and rows, and the ratio."""
    dbt_seconds = model_seconds(home)
    con = duckdb.connect(str(home / "work" / "warehouse.duckdb"), read_only=True)
    rows = ["| mart | dbt model s | floor s | floor rows | model / floor |", "|---|---|---|---|---|"]
    try:
        for mart, sql in FLOORS.items():
            query = (
                sql.replace("$as_of_end", f"(timestamp '{as_of.isoformat()}' + interval 1 day)")
                .replace("$as_of", f"date '{as_of.isoformat()}'")
                .replace("$segment_grid", str(SEGMENT_GRID))
            )
            # every column is consumed (hashed), or DuckDB prunes the floor to a scan of its keys
            started = time.perf_counter()
            count = con.execute(f"select count(*), sum(hash(columns(*))) from ({query})").fetchall()[0][0]
            floor = time.perf_counter() - started
            model = dbt_seconds.get(mart, float("nan"))
            rows.append(f"| {mart} | {model:.2f} | {floor:.2f} | {count:,} | {model / floor:.1f} |")
    finally:
        con.close()
    return rows
