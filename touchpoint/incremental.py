"""When a dbt layer with incremental models (staging's event tables, identity.person_map, the marts'
fct_web_sessions, fct_funnel_steps and fct_email_engagement;
dbt_project/macros/incremental.sql) is rebuilt in full instead:
`touchpoint run --full-refresh` (TOUCHPOINT_FULL_REFRESH=always), or on a schedule, when the models' last full
build is TOUCHPOINT_FULL_REFRESH_EVERY_DAYS (7) or more days before the run's as-of end. An incremental build
gives the same rows as a rebuild (tests/test_incremental_staging.py, tests/test_incremental_identity.py,
tests/test_incremental_marts.py); the rebuild is the backstop for what the incremental rule cannot see, such
as a raw row edited in place.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import duckdb

from touchpoint.warehouse import relation_exists

FULL_REFRESH_SETTING = "TOUCHPOINT_FULL_REFRESH"
EVERY_DAYS_SETTING = "TOUCHPOINT_FULL_REFRESH_EVERY_DAYS"
DEFAULT_EVERY_DAYS = 7
STATE_TABLE = "audit.staged_batches"
# The staging models dbt materialises incrementally (dbt_project.yml: the events, whose deduplication would
# otherwise run in every model reading them): table -> (the raw entity it stages, its column holding that
# entity's record_id in stg_privacy__record_identifiers).
INCREMENTAL_STAGED_TABLES = {
    "stg_web__events": ("web_events", "event_id"),
    "stg_email__events": ("email_events", "event_id"),
}
# Every staging model dbt materialises as a table, in the same form: the incremental ones and those rebuilt each
# run (the person records, orders, order lines and POS transactions: dbt_project.yml says why). The erasure
# deletes a doomed record from them too (privacy/erasure.py); any other table in `staging` stops the erasure (it
# could not be reached).
STAGED_TABLES = {
    **INCREMENTAL_STAGED_TABLES,
    "stg_crm__contacts": ("crm_contacts", "contact_id"),
    "stg_shop__customers": ("shop_customers", "customer_id"),
    "stg_shop__orders": ("shop_orders", "order_id"),
    "stg_shop__order_items": ("shop_orders", "order_id"),  # a line goes with its order
    "stg_pos__transactions": ("pos_transactions", "transaction_id"),
}
# A staged table whose raw rows carry no record id of their own -> (their raw entity, the identifier kind of
# stg_privacy__record_identifiers that holds the table's STAGED_TABLES column). An order line can arrive without
# its order (the header quarantined, or extracted later): the erasure deletes the staged lines of every doomed raw
# line by this, as well as those of every doomed order.
STAGED_BY_IDENTIFIER = {"stg_shop__order_items": ("shop_order_items", "shop_order")}
# Every model recording the raw batches it was built from in STATE_TABLE -> the raw entity they are of.
# identity.person_map records the event batches under a name per source (macro person_map_event_sources).
RECORDED_MODELS = {
    **{table: entity for table, (entity, _) in INCREMENTAL_STAGED_TABLES.items()},
    "person_map:web_events": "web_events",
    "person_map:email_events": "email_events",
    "fct_web_sessions": "web_events",
    "fct_email_engagement": "email_events",
}
# The dbt layers (touchpoint/dbt.py LAYERS) holding them, which the full refresh applies to.
INCREMENTAL_LAYERS = ("staging", "identity", "marts")


def models_recording(entity: str) -> list[str]:
    """The RECORDED_MODELS names that record `entity`'s batches."""
    return [model for model, recorded in RECORDED_MODELS.items() if recorded == entity]


class FullRefreshSettingError(ValueError):
    """TOUCHPOINT_FULL_REFRESH or TOUCHPOINT_FULL_REFRESH_EVERY_DAYS holds a value that means nothing."""


def every_days() -> int:
    raw = os.environ.get(EVERY_DAYS_SETTING, str(DEFAULT_EVERY_DAYS))
    try:
        days = int(raw)
    except ValueError:
        raise FullRefreshSettingError(f"{EVERY_DAYS_SETTING}={raw!r}: expected a whole number of days") from None
    if days < 1:
        raise FullRefreshSettingError(f"{EVERY_DAYS_SETTING}={raw!r}: expected at least 1")
    return days


def last_full_build_end(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The earliest as-of end of the incremental models' last full builds, or None when none is recorded."""
    if not relation_exists(con, *STATE_TABLE.split(".")):
        return None
    return con.execute(f"select min(full_build_end) from (select max(full_build_end) as full_build_end "
                       f"from {STATE_TABLE} group by model)").fetchone()[0]


def batches_gone_from_raw(con: duckdb.DuckDBPyConnection) -> int:
    """How many batches an incremental model was built from are no longer in raw (held or dropped by
    `touchpoint batches`, a failed gate on a rerun): their rows stay staged until a rebuild, since the rule
    finds the event ids to re-derive through the versions still in raw."""
    gone = 0
    for model, entity in RECORDED_MODELS.items():
        if relation_exists(con, "raw", entity):
            gone += con.execute(
                f"select count(*) from (select batch_id from {STATE_TABLE} where model = ? and batch_id is not null "
                f"except select distinct _batch_id from raw.{entity})",
                [model],
            ).fetchone()[0]
    return gone


def full_refresh_reason(work_db: str, as_of_end: datetime) -> str | None:
    """Why this run rebuilds its incremental models in full, or None: incremental. 'forced' (the setting),
    'schedule' (the last full build is old enough), 'first build' (none recorded: a new warehouse, or one whose
    staging tables predate the record; a create is faster than delete+insert of every event id), 'batches left
    raw' (batches_gone_from_raw)."""
    setting = os.environ.get(FULL_REFRESH_SETTING, "auto").strip().lower()
    if setting not in ("auto", "always"):
        raise FullRefreshSettingError(f"{FULL_REFRESH_SETTING}={setting!r}: expected 'auto' or 'always'")
    if setting == "always":
        return "forced"
    interval = every_days()
    try:
        con = duckdb.connect(work_db, read_only=True)
    except duckdb.IOException:
        return "first build"  # no working warehouse yet
    try:
        last_full = last_full_build_end(con)
        if last_full is None:
            return "first build"
        if as_of_end - last_full >= timedelta(days=interval):
            return "schedule"
        if batches_gone_from_raw(con):
            return "batches left raw"
        return None
    finally:
        con.close()
