"""Raw suite: what the loader wrote to `raw.<entity>` (contracts.md §4) is complete and plausible.

- every entity's table exists and its required (*) fields are never null;
- volume: for event entities, the latest extract day's batch holds a similar number of rows to the previous
  day's (tolerance `TOUCHPOINT_GATE_VOLUME_TOLERANCE`, default 0.8: between x0.2 and x5). An entity's first
  batch is never the reference (a first shop extract is the whole history), so the comparison starts with
  the third batch;
- formats: at least `TOUCHPOINT_GATE_EMAIL_VALID_SHARE` (default 0.9) of the non-null emails look like
  emails (the staging layer flags the rest individually);
- event times are not after the as-of date. Two tiers: rows dated after the as-of day are a warning (an
  extract may legitimately hold later rows, which staging ignores), rows dated more than
  `TOUCHPOINT_GATE_FUTURE_HORIZON_DAYS` (default 2) days after it are an error (a broken clock or parser).
  Only batches extracted by the end of the as-of day are judged, so a backfill over newer loads passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import duckdb

from touchpoint.config import RunContext

from .. import checks
from ..checks import Check

REQUIRED = {
    "crm_contacts": ["contact_id"],
    "shop_customers": ["customer_id"],
    "shop_orders": ["order_id", "customer_id", "ordered_at", "total_amount"],
    "shop_order_items": ["order_id", "line_number", "product_id"],
    "shop_products": ["product_id"],
    "web_events": ["event_id", "occurred_at", "event_type"],
    "email_events": ["event_id", "occurred_at", "email", "event_type"],
    "pos_transactions": ["transaction_id", "purchased_at", "total_amount"],
}
EMAILS = {"crm_contacts": "email", "shop_customers": "email", "email_events": "email",
          "pos_transactions": "email"}
EVENT_TIMES = {"shop_orders": "ordered_at", "web_events": "occurred_at", "email_events": "occurred_at",
               "pos_transactions": "purchased_at"}
VOLUME_ENTITIES = ("shop_orders", "web_events", "email_events", "pos_transactions")
# Deliberately loose: staging validates each address; this catches a shifted column or a broken export.
EMAIL_REGEX = r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"
ROW_LABEL = "_source_file || ':' || _row_number"


@dataclass(frozen=True)
class RawSuiteConfig:
    volume_tolerance: float = 0.8
    email_valid_share: float = 0.9
    future_horizon_days: int = 2
    # Below this many rows a day, a ratio is noise (4 rows instead of 9), not an outage.
    volume_min_rows: int = 20

    @classmethod
    def from_env(cls) -> RawSuiteConfig:
        return cls(
            volume_tolerance=float(os.environ.get("TOUCHPOINT_GATE_VOLUME_TOLERANCE", cls.volume_tolerance)),
            email_valid_share=float(os.environ.get("TOUCHPOINT_GATE_EMAIL_VALID_SHARE",
                                                   cls.email_valid_share)),
            future_horizon_days=int(os.environ.get("TOUCHPOINT_GATE_FUTURE_HORIZON_DAYS",
                                                   cls.future_horizon_days)),
            volume_min_rows=int(os.environ.get("TOUCHPOINT_GATE_VOLUME_MIN_ROWS", cls.volume_min_rows)),
        )


def build_suite(ctx: RunContext, con: duckdb.DuckDBPyConnection,
                config: RawSuiteConfig | None = None) -> list[Check]:
    config = config or RawSuiteConfig.from_env()
    judged = f"_extracted_at <= '{ctx.as_of_end.isoformat(sep=' ')}'::timestamp"
    suite: list[Check] = []
    for entity, columns in REQUIRED.items():
        table = f"raw.{entity}"
        suite += [checks.not_null(table, column, label=ROW_LABEL) for column in columns]
        if entity in EMAILS:
            suite.append(checks.matches(table, EMAILS[entity], EMAIL_REGEX, mostly=config.email_valid_share,
                                        description="emails look like emails (share)"))
        if entity in EVENT_TIMES:
            column = EVENT_TIMES[entity]
            suite.append(checks.not_after(table, column, ctx.as_of_end, scope=judged, severity=checks.WARNING,
                                          name="not_after_as_of",
                                          description=f"{column} not after the as-of day (staging drops it)"))
            horizon = ctx.as_of_end + timedelta(days=config.future_horizon_days)
            suite.append(checks.not_after(
                table, column, horizon, scope=judged, name="not_after_horizon",
                description=f"{column} not more than {config.future_horizon_days} days after the as-of day",
            ))
        if entity in VOLUME_ENTITIES:
            suite.append(checks.volume_vs_previous_batch(table, config.volume_tolerance, until=ctx.as_of_end,
                                                         min_rows=config.volume_min_rows))
    return suite
