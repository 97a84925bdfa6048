"""A DAG run is judged by the work its tasks did, not only by Airflow's run state: a run for a date before the
DAG's start_date used to run no task and still come back 'success'."""

from __future__ import annotations

from datetime import UTC, datetime

from touchpoint.orchestration import DagRunOutcome, TaskOutcome

LOGICAL_DATE = datetime(1998, 1, 1, tzinfo=UTC)


def test_a_run_in_which_no_task_ran_is_not_a_success():
    assert not DagRunOutcome("success", LOGICAL_DATE, tasks=[]).succeeded
    assert not DagRunOutcome("success", LOGICAL_DATE, tasks=[TaskOutcome("extract.shop", "skipped", 0.0)]).succeeded
    assert DagRunOutcome("success", LOGICAL_DATE, tasks=[TaskOutcome("extract.shop", "success", 1.0)]).succeeded
    assert not DagRunOutcome("failed", LOGICAL_DATE, tasks=[TaskOutcome("extract.shop", "success", 1.0)]).succeeded

