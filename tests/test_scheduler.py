"""customer_360 under a real Airflow 3 deployment (api-server, scheduler, dag-processor, triggerer; SQLite
metadata; LocalExecutor) on a free port, driven through the REST API as an operator would drive it.

One deployment serves a small demo world whose last day is yesterday, so unpausing the DAG makes the
scheduler start a real scheduled run as of yesterday. Then runs overlap (a manual rerun and an Airflow
backfill at once), and a broken extract fails the raw gate.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import duckdb
import pytest

from tests.conftest import demo_world_ending_yesterday, wait_for_scheduled_run
from tests.test_end_to_end import touchpoint
from touchpoint.airflow_server import AirflowClient, AirflowDeployment, AirflowServices, free_port
from touchpoint.config import Paths
from touchpoint.warehouse import WarehouseLease

pytestmark = pytest.mark.slow
DAG_ID = "customer_360"
RUN_TIMEOUT_S = 900


@dataclass
class Deployment:
    paths: Paths
    services: AirflowServices
    client: AirflowClient
    yesterday: date

    def wait(self, run_id: str) -> dict:
        return self.client.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_S, self.services)

    def states(self, run_id: str) -> dict[str, str]:
        return {_label(ti): ti["state"] for ti in self.client.task_instances(DAG_ID, run_id)}

    def published(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.paths.published_db), read_only=True)


def _label(ti: dict) -> str:
    return ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    paths = Paths(tmp_path_factory.mktemp("scheduler_home")).ensure()
    yesterday = demo_world_ending_yesterday(paths)
    services = AirflowServices(AirflowDeployment(paths, port=free_port()))
    services.start()
    try:
        yield Deployment(paths, services, services.wait_ready(), yesterday)
    finally:
        services.stop()


def _rfm_digest(con: duckdb.DuckDBPyConnection, as_of: date) -> str:
    rows = con.execute(
        "select * exclude (as_of) from marts.customer_rfm_history where as_of = ? order by all", [as_of]
    ).fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def test_unpausing_starts_a_scheduled_run_that_publishes_and_syncs(airflow: Deployment) -> None:
    run = airflow.wait(wait_for_scheduled_run(airflow.client))
    states = airflow.states(run["dag_run_id"])
    assert run["state"] == "success", states
    assert set(states.values()) == {"success"}, states
    assert {"claim_warehouse", "load.raw", "dbt.identity", "ml.score", "publish", "release_warehouse"} <= set(states)
    assert sum(label.startswith("sync.run[") for label in states) == 3

    con = airflow.published()
    try:
        # the last complete UTC day before the run's data interval ends, and nothing after it
        assert con.execute("select max(as_of) from marts.customer_rfm").fetchone()[0] == airflow.yesterday
        last_order = con.execute("select max(ordered_at) from marts.fct_orders").fetchone()[0]
        assert last_order.date() <= airflow.yesterday
        assert con.execute("select count(*) from identity.persons").fetchone()[0] > 0
        (airflow.paths.home / "rfm_yesterday.sha256").write_text(_rfm_digest(con, airflow.yesterday))
    finally:
        con.close()
    audiences = list((airflow.paths.home / "activation").rglob("audience.csv"))
    assert audiences, "the file sync wrote no audience"
    events = airflow.client.asset_events("touchpoint_published_warehouse")
    assert [event["source_run_id"] for event in events] == [run["dag_run_id"]]
    assert WarehouseLease(airflow.paths).holder() is None


def test_overlapping_runs_take_the_warehouse_one_at_a_time(airflow: Deployment) -> None:
    """A manual rerun of yesterday and a two-at-a-time Airflow backfill of the two days before start together:
    every run succeeds, no two runs' stages interleave, and each date is in the history once."""
    day_1, day_2 = airflow.yesterday - timedelta(days=1), airflow.yesterday - timedelta(days=2)
    rerun = airflow.client.trigger(DAG_ID, as_of=airflow.yesterday)
    backfill = airflow.client.create_backfill(DAG_ID, day_2, day_1, max_active_runs=2)
    # until Airflow marks the backfill complete (the next one may only start then)
    backfill_runs = airflow.client.wait_for_backfill(backfill, RUN_TIMEOUT_S)
    assert len(backfill_runs) == 2, backfill_runs
    runs = [airflow.wait(rerun), *backfill_runs]
    failed = {run["dag_run_id"]: airflow.states(run["dag_run_id"]) for run in runs if run["state"] != "success"}
    assert not failed, failed

    # The runs were active at the same time ...
    starts = [datetime.fromisoformat(run["start_date"]) for run in runs]
    ends = [datetime.fromisoformat(run["end_date"]) for run in runs]
    assert max(starts) < min(ends), "the runs did not overlap: nothing was tested"
    # ... but each run's work (first extract to last sync) happened while no other run's did.
    windows = []
    for run in runs:
        work = [
            ti
            for ti in airflow.client.task_instances(DAG_ID, run["dag_run_id"])
            if ti["task_id"] not in ("claim_warehouse", "release_warehouse")
        ]
        windows.append(
            (
                min(datetime.fromisoformat(ti["start_date"]) for ti in work),
                max(datetime.fromisoformat(ti["end_date"]) for ti in work),
            )
        )
    windows.sort()
    for (_, first_end), (second_start, _) in zip(windows, windows[1:], strict=False):
        assert first_end <= second_start, windows

    con = airflow.published()
    try:
        per_date = con.execute(
            "select as_of, count(*), count(distinct person_id) from marts.customer_rfm_history group by 1 order by 1"
        ).fetchall()
        assert [row[0] for row in per_date] == [day_2, day_1, airflow.yesterday]
        assert all(rows == persons for _, rows, persons in per_date), per_date
        duplicated = con.execute(
            "select model_name, as_of, count(*) from ml.model_runs group by 1, 2 having count(*) > 1"
        ).fetchall()
        assert duplicated == []
        assert {as_of for (as_of,) in con.execute("select distinct as_of from ml.model_runs").fetchall()} == {
            day_2,
            day_1,
            airflow.yesterday,
        }
        # the rerun of yesterday, after or between the backfill's runs, rebuilt the same snapshot
        assert _rfm_digest(con, airflow.yesterday) == (airflow.paths.home / "rfm_yesterday.sha256").read_text()
    finally:
        con.close()
    assert WarehouseLease(airflow.paths).holder() is None


def test_touchpoint_backfill_hands_the_dates_to_the_serving_airflow(airflow: Deployment) -> None:
    day_3 = airflow.yesterday - timedelta(days=3)
    result = touchpoint("backfill", "--from", str(day_3), "--to", str(day_3), "--home", str(airflow.paths.home))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Airflow backfill" in result.stdout and f"success  as of {day_3}" in result.stdout, result.stdout
    con = airflow.published()
    try:
        dates = [as_of for (as_of,) in con.execute("select distinct as_of from marts.customer_rfm_history").fetchall()]
        assert day_3 in dates
    finally:
        con.close()


def test_a_failed_gate_fails_the_run_holds_the_batch_and_the_next_run_goes_on(airflow: Deployment) -> None:
    """Today's CRM export is broken (a thousand contacts whose emails are not emails): the raw gate fails,
    nothing after it runs, the run is failed, the published warehouse is byte-for-byte the previous one, and
    the batch is held out of raw so that tomorrow's run succeeds without it."""
    published_before = hashlib.sha256(airflow.paths.published_db.read_bytes()).hexdigest()
    today = airflow.yesterday + timedelta(days=1)
    broken = [f"HOLD-{index},,,not an email {index},,,,,,,,,,{today}T08:00:00Z" for index in range(1000)]
    crm = airflow.paths.demo_sources / "systems" / "crm"
    header = (crm / f"contacts_{airflow.yesterday}.csv").read_text().splitlines()[0]
    (crm / f"contacts_{today}.csv").write_text("\n".join([header, *broken]) + "\n")

    run = airflow.wait(airflow.client.trigger(DAG_ID, as_of=today))
    states = airflow.states(run["dag_run_id"])
    assert run["state"] == "failed", states
    assert states["load.gate_raw"] == "failed"
    for downstream in ("dbt.staging", "dbt.marts", "ml.score", "publish", "sync.definitions"):
        assert states[downstream] == "upstream_failed", (downstream, states)
    assert states["release_warehouse"] == "success"  # the teardown ran and did not hide the failure
    assert WarehouseLease(airflow.paths).holder() is None
    assert hashlib.sha256(airflow.paths.published_db.read_bytes()).hexdigest() == published_before

    report = json.loads((airflow.paths.artifacts / today.isoformat() / "gates" / "raw.json").read_text())
    failed = [item for item in report["results"] if not item["success"] and item["severity"] == "critical"]
    assert [(item["table"], item["expectation"]) for item in failed] == [
        ("raw.crm_contacts", "matches_regex")], failed
    con = duckdb.connect(str(airflow.paths.work_db), read_only=True)
    try:
        held = con.execute("select entity, rows_loaded from audit.load_batches where status = 'held'").fetchall()
    finally:
        con.close()
    assert held == [("crm_contacts", len(broken))]

    tomorrow = today + timedelta(days=1)
    run = airflow.wait(airflow.client.trigger(DAG_ID, as_of=tomorrow))
    assert run["state"] == "success", airflow.states(run["dag_run_id"])
