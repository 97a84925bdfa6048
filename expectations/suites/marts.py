"""Marts suite: the analyst tables (contracts.md §7) are keyed, connected to identity.persons and sane.

- keys unique and not null: fct_orders.order_id, customer_rfm.person_id, customer_360.person_id,
  customer_rfm_history (person_id, as_of), dim_consents (person_id, purpose), fct_web_sessions.session_id,
  fct_email_engagement.email_engagement_id;
- referential integrity: every person_id of the marts exists in identity.persons;
- every order in fct_orders is attributed to a person (person_id not null);
- ranges: recency_days >= 0, frequency >= 1, r/f/m scores in 1..5, segments from the grid (the seed
  marts.rfm_segments, the only list of segments),
  customer_rfm is as of the run's date, customer_360 has exactly one row per identity.persons row.
"""

from __future__ import annotations

import duckdb

from touchpoint.config import RunContext

from .. import checks
from ..checks import Check

PERSONS = ("identity.persons", "person_id")
SEGMENT_GRID = ("marts.rfm_segments", "rfm_segment")  # the dbt seed: the one list of RFM segments
KEYS = {
    "marts.fct_orders": ["order_id"],
    "marts.customer_rfm": ["person_id"],
    "marts.customer_rfm_history": ["person_id", "as_of"],
    "marts.customer_360": ["person_id"],
    "marts.dim_consents": ["person_id", "purpose"],
    "marts.fct_web_sessions": ["session_id"],
    "marts.fct_email_engagement": ["email_engagement_id"],
}
PERSON_TABLES = ("marts.fct_orders", "marts.customer_rfm", "marts.customer_360", "marts.dim_consents",
                 "marts.fct_web_sessions", "marts.fct_email_engagement")


def build_suite(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> list[Check]:
    suite: list[Check] = []
    for table, key in KEYS.items():
        suite += [checks.not_null(table, column) for column in key]
        suite.append(checks.unique(table, key))
    suite += [checks.references(table, "person_id", *PERSONS) for table in PERSON_TABLES]
    suite += [
        checks.not_null("marts.fct_orders", "person_id", label="order_id",
                        description="every order is attributed to a person"),
        checks.in_set("marts.fct_orders", "channel", ["online", "store"]),
        checks.between("marts.customer_rfm", "recency_days", min_value=0),
        checks.between("marts.customer_rfm", "frequency", min_value=1),
        *(checks.not_null("marts.customer_rfm", score, label="person_id")
          for score in ("r_score", "f_score", "m_score", "rfm_segment")),
        *(checks.between("marts.customer_rfm", score, min_value=1, max_value=5)
          for score in ("r_score", "f_score", "m_score")),
        checks.references("marts.customer_rfm", "rfm_segment", *SEGMENT_GRID),
        checks.in_set("marts.customer_rfm", "as_of", [ctx.as_of.isoformat()],
                      description="customer_rfm is as of the run's date"),
        checks.same_row_count("marts.customer_360", "identity.persons"),
        checks.between("marts.customer_360", "orders_count", min_value=0),
    ]
    return suite
