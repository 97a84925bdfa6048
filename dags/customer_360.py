"""
### customer_360: the Touchpoint warehouse, once a day

Pulls every source incrementally into landing, loads the raw schema (quarantining bad rows), builds dbt
staging -> identity -> marts, writes ML segments / propensity / CLV from the marts, then builds the scored
marts (`customer_360`, which carries this run's scores), gates raw, ML and every mart with Great
Expectations, publishes `<home>/warehouse.duckdb` atomically only when every gate passed, then runs the
reverse-ETL syncs from the published warehouse.

Each run reads strictly as of its logical date: the last complete UTC day before `data_interval_end`
(or the `as_of` param). Rerunning a date replaces its outputs; it never appends twice.

One run at a time owns the working warehouse: `claim_warehouse` waits for its lease (overlapping runs and
backfill runs queue there, holding no worker slot) and the teardown `release_warehouse` gives it back,
after a failure too. Tasks that write the warehouse also share the one-slot pool `touchpoint_warehouse`.

Schedule: `$TOUCHPOINT_SCHEDULE` when the DAG is parsed (a cron expression or preset; default `@daily`;
`none` for triggered runs only).

Params: `home` (Touchpoint home; default `$TOUCHPOINT_HOME` or `./data`), `extracts` (a folder of
bring-your-own extracts in the landing contract instead of the demo source systems), `as_of`.

This file only wires stages: the work lives in `touchpoint.pipeline` and the stage packages.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, PokeReturnValue, chain, dag, get_current_context, task, task_group

PUBLISHED_WAREHOUSE = Asset(name="touchpoint_published_warehouse", uri="file:///touchpoint/warehouse.duckdb")
# Spelled out rather than imported from touchpoint.ingest, which would load duckdb at parse time;
# tests/test_dag_hygiene.py checks the two agree.
SOURCES = ("shop", "crm", "web", "email", "pos")
# e.g. "0 3 * * *" to run after the sources' nightly exports; the run is still as of the day before.
SCHEDULE = os.environ.get("TOUCHPOINT_SCHEDULE", "@daily")
WAREHOUSE_POOL = "touchpoint_warehouse"  # one slot: one writer of the working DuckDB file at a time

# Transient failures (a source or destination briefly unavailable) are retried with backoff;
# deterministic ones (SQL error, failed gate) are not: those tasks set retries=0. A task that may retry fails
# at once when its error says a retry cannot help (`_fail_fast_unless_retryable`).
TRANSIENT_RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True}


def _ctx():
    from touchpoint.pipeline import context_from_airflow

    return context_from_airflow(get_current_context())


@contextmanager
def _fail_fast_unless_retryable():
    """Fail the task without its retries when the error is marked `retryable = False` (a bad definition, a
    refused query: the same attempt fails the same way); anything else keeps the task's retries."""
    try:
        yield
    except Exception as error:
        if getattr(error, "retryable", True):
            raise
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(error)) from error


# The stages, each a task or task group; customer_360() below only wires them.

# A run owns the working warehouse from its first extract to its last sync. The claim waits outside the
# writer pool (rescheduling, holding no worker slot); the release is a teardown, so it runs after a
# failure too and does not decide the run's state.
@task.sensor(task_id="claim_warehouse", poke_interval=15, timeout=12 * 3600, mode="reschedule")
def claim_warehouse() -> PokeReturnValue:
    from touchpoint import pipeline

    ti = get_current_context()["ti"]

    def run_is_over(holder) -> bool:
        dag_id, run_id = pipeline.lease_run_key(holder.run_key)
        try:
            return ti.get_dagrun_state(dag_id=dag_id, run_id=run_id) not in ("queued", "running")
        except Exception:  # a run this Airflow does not know (deleted, or the lease file was copied)
            return True

    claim = pipeline.claim_warehouse(_ctx(), is_stale=run_is_over)
    if not claim["claimed"]:
        print(f"waiting: the working warehouse is leased to {claim['held_by']} (as of {claim['held_as_of']})")
    return PokeReturnValue(is_done=claim["claimed"], xcom_value=claim)

@task(task_id="release_warehouse")
def release_warehouse() -> dict:
    from touchpoint import pipeline

    return pipeline.release_warehouse(_ctx())

@task_group(group_id="extract")
def extract_sources():
    for source in SOURCES:

        @task(task_id=source, **TRANSIENT_RETRIES)
        def extract_one(source_name: str = source) -> dict:
            from touchpoint import pipeline

            return pipeline.extract(_ctx(), source_name)

        extract_one()

def gate(layer: str):
    @task(task_id=f"gate_{layer}", pool=WAREHOUSE_POOL)
    def run_gate() -> dict:
        from touchpoint import pipeline

        return pipeline.gate(_ctx(), layer)

    return run_gate()

def dbt_layer(layer: str, task_id: str | None = None):
    @task(task_id=task_id or layer, pool=WAREHOUSE_POOL)
    def build() -> dict:
        from touchpoint import pipeline

        return pipeline.dbt_layer(_ctx(), layer)

    return build()

@task_group(group_id="load")
def load():
    @task(task_id="raw", pool=WAREHOUSE_POOL)
    def load_raw() -> dict:
        from touchpoint import pipeline

        return pipeline.load(_ctx())

    load_raw() >> gate("raw")

# Erasure requests and the suppression list apply to raw right after staging (whose identifier view it reads)
# and before identity: no later layer ever sees an erased person's rows.
@task(task_id="erase", pool=WAREHOUSE_POOL)
def erase() -> dict:
    from touchpoint import pipeline

    return pipeline.erase(_ctx())

@task_group(group_id="dbt")
def dbt():
    chain(dbt_layer("staging"), erase(), dbt_layer("identity"), dbt_layer("marts"))

@task_group(group_id="ml")
def ml():
    @task(task_id="score", pool=WAREHOUSE_POOL)
    def score() -> dict:
        from touchpoint import pipeline

        return pipeline.ml(_ctx())

    score() >> gate("ml")

# customer_360 carries this run's ML scores, so it is built after the ML stage (which reads the marts):
# the dbt layer "scored" is every model downstream of the ml schema. The marts gate then judges every
# mart, customer_360 included, right before publish.
@task_group(group_id="scored")
def scored():
    dbt_layer("scored", task_id="dbt") >> gate("marts")

@task(pool=WAREHOUSE_POOL, outlets=[PUBLISHED_WAREHOUSE])
def publish() -> dict:
    from touchpoint import pipeline

    return pipeline.publish(_ctx())

@task_group(group_id="sync")
def syncs():
    @task(task_id="definitions")
    def definitions() -> list[str]:
        from touchpoint import pipeline

        return pipeline.sync_names()

    # Syncs read only the published warehouse: they run in parallel, outside the writer pool.
    @task(task_id="run", map_index_template="{{ sync_name }}", **TRANSIENT_RETRIES)
    def run_sync(name: str) -> dict:
        from touchpoint import pipeline

        get_current_context()["sync_name"] = name  # shown as the mapped task's name in the UI
        with _fail_fast_unless_retryable():  # a deterministic sync failure is not retried
            return pipeline.sync(_ctx(), name)

    run_sync.expand(name=definitions())


@dag(
    dag_id="customer_360",
    schedule=None if SCHEDULE.lower() == "none" else SCHEDULE,
    # As early as any as-of a run may have (1970): a run before start_date runs no task at all, so a
    # history from the 1990s or a backfill of old dates would do nothing. catchup=False keeps the scheduler
    # from filling the years in between.
    start_date=pendulum.datetime(1970, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["touchpoint", "customer-360"],
    doc_md=__doc__,
    default_args={"owner": "touchpoint", "retries": 0},
    params={
        "home": Param(None, type=["null", "string"], description="Touchpoint home folder"),
        "extracts": Param(None, type=["null", "string"], description="Bring-your-own extracts folder"),
        "as_of": Param(None, type=["null", "string"], description="Override the as-of date (YYYY-MM-DD)"),
    },
)
def customer_360():
    claim = claim_warehouse()
    release = release_warehouse().as_teardown(setups=claim)
    chain(claim, extract_sources(), load(), dbt(), ml(), scored(), publish(), syncs(), release)


customer_360()
