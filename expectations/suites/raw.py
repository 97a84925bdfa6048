"""Raw suite: what the loader wrote to `raw.<entity>` (contracts.md §4) is complete and plausible.

- every entity's table exists and its required (*) fields are never null;
- volume: for event entities, the latest extract day's batch holds a similar number of rows to the previous
  day's (tolerance `TOUCHPOINT_GATE_VOLUME_TOLERANCE`, default 0.8: between x0.2 and x5). An entity's first
  batch is never the reference (a first shop extract is the whole history), so the comparison starts with
  the third batch;
- formats: at least `TOUCHPOINT_GATE_EMAIL_VALID_SHARE` (default 0.9) of the non-null emails look like
  emails (the staging layer flags the rest individually);
- nothing about event times: rows dated after the as-of day are "not yet" (a full export holds them; staging
  leaves them out of this run and a later run uses them), and a broken clock or an implausible date is judged
  per row at load, against the time of extraction (ingest/plausibility.py), where it is quarantined.
A batch this gate fails on is held out of raw (ingest/batches.py), so it never blocks later runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
VOLUME_ENTITIES = ("shop_orders", "web_events", "email_events", "pos_transactions")
# Deliberately loose: staging validates each address; this catches a shifted column or a broken export.
EMAIL_REGEX = r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"
ROW_LABEL = "_source_file || ':' || _row_number"


@dataclass(frozen=True)
class RawSuiteConfig:
    volume_tolerance: float = 0.8
    email_valid_share: float = 0.9
    # Below this many rows a day, a ratio is noise (4 rows instead of 9), not an outage.
    volume_min_rows: int = 20

    @classmethod
    def from_env(cls) -> RawSuiteConfig:
        return cls(
            volume_tolerance=float(os.environ.get("TOUCHPOINT_GATE_VOLUME_TOLERANCE", cls.volume_tolerance)),
            email_valid_share=float(os.environ.get("TOUCHPOINT_GATE_EMAIL_VALID_SHARE",
                                                   cls.email_valid_share)),
            volume_min_rows=int(os.environ.get("TOUCHPOINT_GATE_VOLUME_MIN_ROWS", cls.volume_min_rows)),
        )


def build_suite(ctx: RunContext, con: duckdb.DuckDBPyConnection,
                config: RawSuiteConfig | None = None) -> list[Check]:
    config = config or RawSuiteConfig.from_env()
    suite: list[Check] = []
    for entity, columns in REQUIRED.items():
        table = f"raw.{entity}"
        suite += [checks.not_null(table, column, label=ROW_LABEL) for column in columns]
        if entity in EMAILS:
            suite.append(checks.matches(table, EMAILS[entity], EMAIL_REGEX, mostly=config.email_valid_share,
                                        description="emails look like emails (share)"))
        if entity in VOLUME_ENTITIES:
            suite.append(checks.volume_vs_previous_batch(table, config.volume_tolerance, until=ctx.as_of_end,
                                                         min_rows=config.volume_min_rows))
    return suite
