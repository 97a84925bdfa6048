"""Marts suite: what the marts gate asserts beyond the dbt tests of the marts layer.

The gate runs once every mart is built, customer_360 included (the 'scored' dbt layer, after the ML stage),
right before publish. dbt tests own structure and run with their layers, before this gate, in the same run:
keys unique and not null, every person_id of the other marts in customer_activity (relationships), scores
and codes in their accepted values, segments in the seed grid marts.rfm_segments
(`dbt_project/models/marts/_marts__models.yml`). This suite asserts nothing they assert; it checks what they
cannot or do not:
- customer_360 and customer_activity hold every person of identity.persons exactly once (same row count,
  every person_id known): a dbt test touching an identity model would run, and fail, when the identity layer
  is built before the marts;
- ranges: recency_days >= 0, frequency >= 1 in customer_rfm, orders_count >= 0 in customer_360; the journeys'
  shares and rates in [0, 1] (attribution conversion and revenue shares, Markov removal effects, funnel step
  conversion), which a wrong credit rule or a growing funnel would break;
- freshness: customer_rfm and customer_360 are as of the run's date.
"""

from __future__ import annotations

import duckdb

from touchpoint.config import RunContext

from .. import checks
from ..checks import Check


def build_suite(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> list[Check]:
    return [
        checks.same_row_count("marts.customer_360", "identity.persons"),
        checks.references("marts.customer_360", "person_id", "identity.persons", "person_id"),
        checks.between("marts.customer_rfm", "recency_days", min_value=0),
        checks.between("marts.customer_rfm", "frequency", min_value=1),
        checks.in_set("marts.customer_rfm", "as_of", [ctx.as_of.isoformat()],
                      description="customer_rfm is as of the run's date"),
        checks.between("marts.customer_360", "orders_count", min_value=0),
        checks.in_set("marts.customer_360", "as_of", [ctx.as_of.isoformat()],
                      description="customer_360 is as of the run's date"),
        checks.same_row_count("marts.customer_activity", "identity.persons"),
        checks.between("marts.attribution_channel_summary", "conversion_share", min_value=0, max_value=1),
        checks.between("marts.attribution_channel_summary", "revenue_share", min_value=0, max_value=1),
        checks.between("marts.attribution_markov_removal_effects", "removal_effect", min_value=0, max_value=1),
        checks.between("marts.funnel_daily", "conversion_rate_from_previous_step", min_value=0, max_value=1),
    ]
