"""Beyond the embedded default: Airflow's metadata in the local PostgreSQL server, with the LocalExecutor and
with the CeleryExecutor (Redis broker, a Celery worker), each running the scheduled customer_360 run of a
small demo world to a published warehouse."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from tests.conftest import PG_SERVER, demo_world_ending_yesterday, fresh_postgres_database, wait_for_scheduled_run
from touchpoint.airflow_server import AirflowDeployment, AirflowServices, free_port
from touchpoint.config import Paths

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
REDIS_URL = os.environ.get("TOUCHPOINT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _require_redis() -> None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.flushdb()  # a database of its own (15): leftovers of an earlier run must not be consumed
    except redis.RedisError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required in CI but unreachable: {error}")
        pytest.skip(f"local Redis unreachable ({error}); start it to run this test")


@pytest.mark.parametrize("executor", ["LocalExecutor", "CeleryExecutor"])
def test_customer_360_on_postgres_metadata(executor: str, tmp_path: Path) -> None:
    if executor == "CeleryExecutor":
        _require_redis()
    with fresh_postgres_database("touchpoint_airflow") as database:
        paths = Paths(tmp_path / "home").ensure()
        yesterday = demo_world_ending_yesterday(paths, customers=200, days=30)
        deployment = AirflowDeployment(
            paths,
            port=free_port(),
            executor=executor,
            sql_alchemy_conn=f"postgresql+psycopg2://{PG_SERVER['user']}@{PG_SERVER['host']}:5432/{database}",
            celery_broker_url=REDIS_URL if executor == "CeleryExecutor" else None,
            parallelism=4,
        )
        with AirflowServices(deployment) as services:
            client = services.wait_ready()
            run_id = wait_for_scheduled_run(client)
            run = client.wait_for_run("customer_360", run_id, 900, services)
            states = {ti["task_id"]: ti["state"] for ti in client.task_instances("customer_360", run_id)}
            assert run["state"] == "success", states
        assert not (paths.airflow_home / "airflow.db").exists(), "the metadata went to SQLite, not PostgreSQL"
        if executor == "CeleryExecutor":
            worker_log = (deployment.logs / "celery-worker.log").read_text(errors="replace")
            assert "execute_workload" in worker_log or "succeeded" in worker_log, worker_log[-2000:]

    con = duckdb.connect(str(paths.published_db), read_only=True)
    try:
        assert con.execute("select max(as_of) from marts.customer_rfm").fetchone()[0] == yesterday
        assert con.execute("select count(*) from identity.persons").fetchone()[0] > 0
        assert (
            con.execute(
                "select count(*) from audit.gate_results where not success and severity = 'critical'"
            ).fetchone()[0]
            == 0
        )
    finally:
        con.close()
