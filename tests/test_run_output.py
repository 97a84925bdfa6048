"""`touchpoint run` prints its tasks in DAG order and ends with the run's wall time (no pipeline run here)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from touchpoint import orchestration
from touchpoint.orchestration import DagRunOutcome, TaskOutcome, in_dag_order

# as the metadata DB hands them over: alphabetical, mapped syncs included
ALPHABETICAL = [
    TaskOutcome("ml.gate_ml", "success", 1.0),
    TaskOutcome("ml.score", "success", 9.0),
    TaskOutcome("publish", "success", 1.0),
    TaskOutcome("release_warehouse", "success", 0.1),
    TaskOutcome("scored.dbt", "success", 3.0),
    TaskOutcome("scored.gate_marts", "success", 0.5),
    TaskOutcome("sync.definitions", "success", 0.1),
    TaskOutcome("sync.run[segments_api]", "skipped", 0.2),
    TaskOutcome("sync.run[high_clv_audience]", "success", 0.5),
    TaskOutcome("sync.run[churn_risk_audience]", "running", 0.0),
]
DAG_ORDER = [
    "ml.score",
    "ml.gate_ml",
    "scored.dbt",
    "scored.gate_marts",
    "publish",
    "sync.definitions",
    "sync.run[churn_risk_audience]",
    "sync.run[high_clv_audience]",
    "sync.run[segments_api]",
    "release_warehouse",
]


@pytest.fixture(scope="module")
def order() -> list[str]:
    from airflow.dag_processing.dagbag import DagBag

    return orchestration.dag_task_order(DagBag(str(orchestration.DAGS_FOLDER)).dags[orchestration.DAG_ID])


def test_the_dag_order_puts_every_task_after_its_upstreams(order: list[str]) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(str(orchestration.DAGS_FOLDER)).dags[orchestration.DAG_ID]
    assert sorted(order) == sorted(dag.task_ids)
    position = {task_id: index for index, task_id in enumerate(order)}
    for task in dag.tasks:
        assert all(position[upstream] < position[task.task_id] for upstream in task.upstream_task_ids), task.task_id
    assert order[0] == "claim_warehouse" and order[-1] == "release_warehouse"
    assert position["ml.score"] < position["ml.gate_ml"] < position["publish"]
    # customer_360 is built from the ML stage's outputs, and the marts gate judges it before publish
    assert position["ml.gate_ml"] < position["scored.dbt"] < position["scored.gate_marts"] < position["publish"]


def test_outcomes_are_sorted_in_dag_order_with_mapped_syncs_by_name(order: list[str]) -> None:
    assert [o.task_id for o in in_dag_order(ALPHABETICAL, order)] == DAG_ORDER


def test_the_watcher_reports_finished_tasks_of_one_poll_in_dag_order(
    order: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    polls = iter([ALPHABETICAL[:2], ALPHABETICAL])
    monkeypatch.setattr(orchestration, "_task_outcomes", lambda logical_date: next(polls))
    monkeypatch.setattr(threading.Event, "wait", lambda self, timeout=None: self.is_set())
    reported: list[str] = []
    stop = threading.Event()

    def report(outcome: TaskOutcome) -> None:
        reported.append(outcome.task_id)
        if len(reported) == 2:
            stop.set()  # the run ends: one last poll

    orchestration._watch_tasks(datetime(2026, 4, 1, tzinfo=UTC), stop, report, order)
    # each task once, in DAG order within a poll; a task still running is not reported
    assert reported == [t for t in DAG_ORDER if t != "sync.run[churn_risk_audience]"]


def test_run_prints_tasks_as_they_finish_and_ends_with_the_wall_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], order: list[str]
) -> None:
    from touchpoint import cli

    finished = [outcome for outcome in ALPHABETICAL if outcome.state != "running"]
    shown = [t for t in DAG_ORDER if "churn" not in t]

    def run_dag(paths, as_of, conf, log_file, on_task_done=None) -> DagRunOutcome:
        tasks = in_dag_order(finished, order)
        for task in tasks:
            on_task_done(task)
        return DagRunOutcome("success", orchestration.logical_date_for(as_of), tasks, log_file)

    monkeypatch.setattr(orchestration, "run_dag", run_dag)
    monkeypatch.setattr(cli, "_print_warehouse_summary", lambda paths: print("\n  persons   12"))
    extracts = tmp_path / "extracts"
    extracts.mkdir()
    status = cli.main(
        ["run", "--home", str(tmp_path / "home"), "--extracts", str(extracts), "--as-of", "2026-03-31"]
    )
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[1 : 1 + len(shown)]] == shown
    skipped = 1 + shown.index("sync.run[segments_api]")
    assert lines[1].split()[0] == "ok" and lines[skipped].split()[0] == "--"  # the skipped sync
    assert lines[-1].startswith("done in ") and lines[-1].endswith("s (wall time)")


def test_wall_time_reads_in_minutes_and_seconds() -> None:
    from touchpoint.cli import _wall_time

    assert [_wall_time(s) for s in (7.4, 59.6, 125.2, 3600)] == ["7s", "1m 00s", "2m 05s", "60m 00s"]
