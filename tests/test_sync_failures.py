"""Syncs report every result: a failing sync is audited and shown, the others still run, the run fails at the end.

Covers the failures that used to escape `run_sync` unaudited (a busy lock, an unreadable state file, a
destination its constructor refuses), the three callers: `run_syncs`, `touchpoint sync` (and its dry run) and
the DAG's mapped `sync.run` task, and which failures are retryable (a destination away, a busy lock) and which
are not (anything that fails the same way again).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from tests.doubles.activation import person, write_published_warehouse
from touchpoint.activation import SyncFailedError, SyncsFailedError, run_sync, run_syncs, sync_audit_tables
from touchpoint.activation import runner as runner_module
from touchpoint.activation.definitions import SyncDefinition, parse_sync_definition
from touchpoint.activation.state import state_db_path, sync_folder, sync_lock
from touchpoint.config import RunContext

FILES = {"type": "file", "formats": ["csv"]}


def definition(name: str, destination: dict | None = None) -> SyncDefinition:
    return parse_sync_definition(
        {
            "name": name,
            "source": {"table": "marts.customer_360"},
            "fields": ["person_id", "email", "first_name"],
            "personal_fields": {"email": "clear", "first_name": "clear"},
            "purpose": "email_marketing",
            "destination": destination or FILES,
        }
    )


def ctx(home: Path) -> RunContext:
    return RunContext(as_of=date(2026, 3, 31), home=home, run_id="r1")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    write_published_warehouse(tmp_path / "warehouse.duckdb", [person("P1"), person("P2")])
    return tmp_path


def audit_rows(home: Path) -> dict[str, tuple[str, str]]:
    return {r["sync_name"]: (r["status"], r["message"]) for r in sync_audit_tables(home)["sync_runs"].to_pylist()}


def corrupt_state(home: Path, name: str) -> None:
    path = state_db_path(home / "state", name)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a duckdb file" * 100)


def unbuildable(name: str) -> SyncDefinition:
    """An HTTP sync whose path the destination's constructor refuses (built past the loader's own check)."""
    sync = definition(name, {"type": "http", "connection": "api"})
    options = {**sync.destination.options, "upsert_path": "https://evil.example/x"}
    return replace(sync, destination=replace(sync.destination, options=options))


def test_a_busy_lock_is_a_failed_audited_result(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "sync_lock", functools.partial(sync_lock, timeout_s=0.2))
    with sync_lock(sync_folder(home / "state", "busy")):  # another run of the same sync holds it
        result = run_sync(ctx(home), definition("busy"))
    assert (result.status, result.attempt_id != "") == ("failed", True)
    assert result.message.startswith("SyncBusyError: sync state ") and "locked by another run" in result.message
    assert audit_rows(home) == {"busy": ("failed", result.message)}
    assert result.retryable  # the other run ends: a later attempt gets the lock


def test_an_unreadable_state_file_is_a_failed_audited_result(home: Path) -> None:
    corrupt_state(home, "broken_state")
    result = run_sync(ctx(home), definition("broken_state"))
    assert result.status == "failed" and "\n" not in result.message and result.message
    assert audit_rows(home) == {"broken_state": ("failed", result.message)}
    assert not result.retryable


def test_a_destination_its_constructor_refuses_is_a_failed_audited_result(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOUCHPOINT_CONN_API", "https://api.example.com/v1")
    result = run_sync(ctx(home), unbuildable("bad_path"))
    assert result.status == "failed" and result.message.startswith("DestinationError: HTTP destination upsert_path")
    assert audit_rows(home) == {"bad_path": ("failed", result.message)}
    assert not result.retryable


def test_run_syncs_runs_every_sync_and_fails_at_the_end(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_CONN_API", "https://api.example.com/v1")
    corrupt_state(home, "second")
    syncs = [unbuildable("first"), definition("second"), definition("third")]
    seen: list[str] = []
    with pytest.raises(SyncsFailedError) as raised:
        run_syncs(ctx(home), syncs, on_result=lambda r: seen.append(r.sync_name))
    assert seen == ["first", "second", "third"]  # reported as each ends, in order
    assert [r.status for r in raised.value.results] == ["failed", "failed", "success"]
    assert str(raised.value).startswith("2 sync(s) failed: first: DestinationError")
    assert {name: status for name, (status, _) in audit_rows(home).items()} == {
        "first": "failed",
        "second": "failed",
        "third": "success",
    }
    assert (home / "activation" / "third" / "audience.csv").exists()


def test_touchpoint_sync_prints_each_result_and_exits_non_zero_at_the_end(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from touchpoint import activation, cli

    corrupt_state(home, "middle")
    syncs = [definition("first"), definition("middle"), definition("last")]
    monkeypatch.setattr(activation, "load_sync_definitions", lambda: syncs)
    assert cli.main(["sync", "--home", str(home)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split()[:2] for line in lines] == [["first", "success"], ["middle", "failed"], ["last", "success"]]
    assert audit_rows(home)["middle"][1] in lines[1]  # the line shows the audited message
    assert "Traceback" not in captured.out + captured.err
    assert captured.err.strip() == "1 of 3 syncs failed: middle"


def test_the_airflow_task_of_a_failed_sync_fails_with_its_audited_message(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from touchpoint import activation, pipeline

    corrupt_state(home, "broken")
    monkeypatch.setattr(activation, "load_sync_definitions", lambda: [definition("broken")])
    with pytest.raises(RuntimeError, match=r"^sync 'broken' failed: ") as raised:
        pipeline.sync(ctx(home), "broken")
    assert str(raised.value).endswith(audit_rows(home)["broken"][1])


def test_in_the_dag_a_failed_sync_stops_no_other_and_fails_the_run() -> None:
    """Each sync is one mapped instance of `sync.run`: nothing downstream of it but the lease's teardown, so
    the other instances run whatever one does, and Airflow counts it when it decides the run's state."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun

    dag = DagBag(str(Path(__file__).resolve().parent.parent / "dags")).dags["customer_360"]
    run = dag.get_task("sync.run")
    assert run.trigger_rule == "all_success" and run.upstream_task_ids == {"sync.definitions"}
    assert all(dag.get_task(t).is_teardown for t in run.downstream_task_ids)
    tis = [type("TI", (), {"task_id": task.task_id, "state": None})() for task in dag.tasks]
    # the tasks whose failure fails a run, as the scheduler computes them (teardowns are left out)
    deciding = {ti.task_id for ti in DagRun._tis_for_dagrun_state(None, dag=dag, tis=tis)}
    assert deciding == {"sync.run"}


def test_touchpoint_sync_dry_run_plans_every_sync_and_exits_non_zero_at_the_end(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from touchpoint import activation, cli

    refused = replace(definition("middle"), source_sql="select * from marts.no_such_table")
    syncs = [definition("first"), refused, definition("last")]
    monkeypatch.setattr(activation, "load_sync_definitions", lambda: syncs)
    assert cli.main(["sync", "--dry-run", "--home", str(home)]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if not line.startswith(" ")]  # not the sample keys
    assert [line.split()[:2] for line in lines] == [["first", "planned"], ["middle", "failed"], ["last", "planned"]]
    assert "insert       2" in lines[2]  # the sync after the failing one was planned in full
    assert "sync 'middle': its source query failed on the published warehouse" in lines[1]
    assert "Traceback" not in captured.out + captured.err
    assert captured.err.strip() == "1 of 3 sync plans failed: middle"
    assert not (home / "state").exists() and not (home / "activation").exists()  # a dry run writes nothing


def test_a_dry_run_where_every_plan_succeeds_exits_zero(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from touchpoint import activation, cli

    monkeypatch.setattr(activation, "load_sync_definitions", lambda: [definition("only")])
    assert cli.main(["sync", "--dry-run", "--home", str(home)]) == 0
    assert capsys.readouterr().out.split()[:2] == ["only", "planned"]


def test_a_destination_that_cannot_be_reached_is_a_retryable_failure(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOUCHPOINT_CONN_CRM", "postgresql://crm:pw@127.0.0.1:1/crm")  # nothing listens on port 1
    result = run_sync(ctx(home), definition("crm", {"type": "postgres", "connection": "crm", "table": "audience"}))
    assert result.status == "failed" and result.message.startswith("DestinationUnavailableError: cannot connect")
    assert result.retryable


def test_a_failed_result_raises_an_error_that_says_whether_to_retry(home: Path) -> None:
    corrupt_state(home, "broken")
    result = run_sync(ctx(home), definition("broken"))
    with pytest.raises(SyncFailedError, match=r"^sync 'broken' failed: ") as raised:
        result.raise_if_failed()
    assert raised.value.result is result and raised.value.retryable is False
    assert str(raised.value).endswith(audit_rows(home)["broken"][1])
    ok = run_sync(ctx(home), definition("fine"))
    assert ok.raise_if_failed() is ok


def test_a_run_of_syncs_is_retryable_only_when_every_failure_is(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "sync_lock", functools.partial(sync_lock, timeout_s=0.2))
    with sync_lock(sync_folder(home / "state", "busy")):
        with pytest.raises(SyncsFailedError) as only_busy:
            run_syncs(ctx(home), [definition("busy"), definition("fine")])
        corrupt_state(home, "broken")
        with pytest.raises(SyncsFailedError) as busy_and_broken:
            run_syncs(ctx(home), [definition("busy"), definition("broken")])
    assert only_busy.value.retryable is True
    assert busy_and_broken.value.retryable is False


def test_a_purpose_the_warehouse_has_no_consents_for_fails_and_is_not_retried(home: Path) -> None:
    sync = replace(definition("sms_audience"), consent_purpose="sms_marketing")  # not in marts.consent_purposes
    result = run_sync(ctx(home), sync)
    assert result.status == "failed" and not result.retryable
    assert "purpose 'sms_marketing' is not one of marts.consent_purposes (email_marketing, profiling)" in result.message
    without = replace(definition("no_purpose"), consent_purpose="")  # built past the loader's own check
    refused = run_sync(ctx(home), without)
    assert refused.status == "failed" and "a sync without a purpose is refused" in refused.message
