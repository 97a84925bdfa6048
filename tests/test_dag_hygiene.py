"""The DAG folder parses fast and cleanly, and every DAG follows the team's policies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from touchpoint.config import RunContext
from touchpoint.ingest import SOURCES
from touchpoint.pipeline import stages_in_order

DAGS = Path(__file__).resolve().parent.parent / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    started = time.monotonic()
    bag = DagBag(str(DAGS))
    return bag, time.monotonic() - started


def test_dags_import_without_errors(dagbag) -> None:
    bag, _ = dagbag
    assert bag.import_errors == {}
    assert "customer_360" in bag.dag_ids


def test_dag_file_parses_quickly_without_heavy_imports() -> None:
    """Parse in a fresh interpreter (airflow already imported) and check no heavy module got imported."""
    code = (
        "import time, sys, airflow.sdk, runpy\n"
        "t = time.monotonic()\n"
        f"runpy.run_path({str(DAGS / 'customer_360.py')!r})\n"
        "took = time.monotonic() - t\n"
        "heavy = [m for m in ('duckdb', 'pandas', 'sklearn', 'great_expectations', 'dbt', 'splink')"
        " if m in sys.modules]\n"
        "import json; print(json.dumps({'seconds': took, 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    assert measured["seconds"] < 2.0
    assert measured["heavy"] == []


def test_every_dag_has_tags_owner_docs_and_no_catchup(dagbag) -> None:
    bag, _ = dagbag
    for dag in bag.dags.values():
        assert dag.tags, dag.dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        # any as-of from 1970 runs: a logical date before start_date would run no task at all
        assert dag.start_date.year == 1970, dag.dag_id
        for task in dag.tasks:
            assert task.owner == "touchpoint", task.task_id


def test_only_transient_stages_retry(dagbag) -> None:
    """Extraction and syncs may meet an unavailable system; SQL and gates fail deterministically."""
    bag, _ = dagbag
    dag = bag.dags["customer_360"]
    for task in dag.tasks:
        transient = task.task_id.startswith("extract.") or task.task_id == "sync.run"
        assert (task.retries > 0) == transient, (task.task_id, task.retries)


class _SyncFailed(RuntimeError):
    def __init__(self, retryable: bool) -> None:
        super().__init__(f"sync 'crm' failed: {'destination unavailable' if retryable else 'bad definition'}")
        self.retryable = retryable


@pytest.mark.parametrize("retryable", [True, False])
def test_a_sync_failure_is_retried_only_when_a_retry_can_help(dagbag, monkeypatch, retryable: bool) -> None:
    """`sync.run` keeps its retries for a retryable failure and fails at once (AirflowFailException, which the
    task runner never retries) for a deterministic one, e.g. a bad definition or a refused query."""
    from airflow.sdk.exceptions import AirflowFailException

    from touchpoint import pipeline

    bag, _ = dagbag
    run = bag.dags["customer_360"].get_task("sync.run")
    assert run.partial_kwargs["retries"] > 0
    body = run.python_callable
    monkeypatch.setitem(body.__globals__, "get_current_context", dict)
    monkeypatch.setitem(body.__globals__, "_ctx", lambda: None)

    def failing_sync(ctx, name):
        raise _SyncFailed(retryable)

    monkeypatch.setattr(pipeline, "sync", failing_sync)
    expected = _SyncFailed if retryable else AirflowFailException
    with pytest.raises(expected, match=r"^sync 'crm' failed: ") as raised:
        body("crm")
    assert type(raised.value) is expected
    if not retryable:
        assert isinstance(raised.value.__cause__, _SyncFailed)


LEASE_TASKS = ("claim_warehouse", "release_warehouse")


def test_warehouse_writers_share_a_single_slot_pool(dagbag) -> None:
    bag, _ = dagbag
    dag = bag.dags["customer_360"]
    writers = [t for t in dag.tasks if not t.task_id.startswith(("extract.", "sync.", *LEASE_TASKS))]
    expected = {"load.raw", "dbt.erase", "dbt.identity", "ml.score", "scored.dbt", "publish"}
    assert {t.task_id for t in writers} >= expected
    for task in writers:
        assert task.pool == "touchpoint_warehouse", task.task_id


def test_a_run_holds_the_warehouse_lease_from_first_extract_to_last_sync(dagbag) -> None:
    """The claim waits outside the writer pool (a waiting claim inside it would deadlock the holder) and
    without a worker slot; the release is a teardown: it runs after failures and never decides the run state."""
    bag, _ = dagbag
    dag = bag.dags["customer_360"]
    claim, release = dag.get_task("claim_warehouse"), dag.get_task("release_warehouse")
    assert claim.is_setup and claim.mode == "reschedule" and claim.pool != "touchpoint_warehouse"
    assert release.is_teardown and release.pool != "touchpoint_warehouse"
    assert claim.downstream_task_ids >= {f"extract.{source}" for source in ("shop", "crm", "web", "email", "pos")}
    assert dag.get_task("sync.run").downstream_task_ids == {"release_warehouse"}
    assert release.downstream_task_ids == set()


def test_stages_run_in_pipeline_order(dagbag) -> None:
    bag, _ = dagbag
    dag = bag.dags["customer_360"]
    order = [
        "load.raw",
        "load.gate_raw",
        "dbt.staging",
        "dbt.erase",  # erasure reads staging's identifier view and removes rows before identity reads them
        "dbt.identity",
        "dbt.marts",
        "ml.score",
        "ml.gate_ml",
        "scored.dbt",  # customer_360 reads this run's ML outputs: built after the ML stage and its gate
        "scored.gate_marts",  # every mart, customer_360 included, is gated before publish
        "publish",
        "sync.definitions",
        "sync.run",
        "release_warehouse",
    ]
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    for source in ("shop", "crm", "web", "email", "pos"):
        assert "load.raw" in dag.get_task(f"extract.{source}").downstream_task_ids
    # the in-process runner (benchmarks, tests) runs the same stages in the same order
    ctx = RunContext(as_of=date(2026, 3, 31), home=Path("home"), run_id="order")
    in_process = [task_id for task_id, _ in stages_in_order(ctx, syncs=[])]
    assert [t for t in in_process if not t.startswith("extract.")] == order[: order.index("publish") + 1]
    assert {t for t in in_process if t.startswith("extract.")} == {f"extract.{s}" for s in SOURCES}


def test_each_stage_is_a_task_group(dagbag) -> None:
    bag, _ = dagbag
    groups = {task.task_group.group_id for task in bag.dags["customer_360"].tasks if task.task_group.group_id}
    assert groups == {"extract", "load", "dbt", "ml", "scored", "sync"}


def test_publish_emits_the_published_warehouse_asset(dagbag) -> None:
    bag, _ = dagbag
    outlets = bag.dags["customer_360"].get_task("publish").outlets
    assert [outlet.name for outlet in outlets] == ["touchpoint_published_warehouse"]


def test_one_extract_task_per_ingest_source(dagbag) -> None:
    from touchpoint.ingest import SOURCES

    bag, _ = dagbag
    extract_tasks = {t.task_id for t in bag.dags["customer_360"].tasks if t.task_id.startswith("extract.")}
    assert extract_tasks == {f"extract.{source}" for source in SOURCES}
