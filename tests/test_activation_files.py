"""Reverse-ETL to files: diffing, consent, formula injection, audit log (no external systems needed)."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.doubles.activation import person, write_published_warehouse
from touchpoint.activation import (
    load_sync_definitions,
    plan_sync,
    run_sync,
    run_syncs,
    sync_audit_tables,
)
from touchpoint.activation.definitions import parse_sync_definition
from touchpoint.activation.destinations.files import neutralise_formulas
from touchpoint.config import RunContext

AS_OF = date(2026, 3, 31)


def make_ctx(home: Path, run_id: str) -> RunContext:
    return RunContext(as_of=AS_OF, home=home, run_id=run_id)


def file_sync(**overrides):
    raw = {
        "name": "vip_file",
        "source": {"table": "marts.customer_360"},
        "primary_key": "person_id",
        "fields": ["person_id", "email", "first_name"],
        "personal_fields": {"email": "clear", "first_name": "clear"},
        "consent": "email_marketing",
        "email_field": "email",
        "destination": {"type": "file", "formats": ["csv", "parquet"]},
    }
    raw.update(overrides)
    return parse_sync_definition(raw)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_full_then_noop_then_incremental_with_consent_withdrawal(tmp_path: Path) -> None:
    sync = file_sync()
    db = tmp_path / "warehouse.duckdb"
    people = [
        person("P1"),
        person("P2"),
        person("P3", consent=False),
        person("P4", consent=None),
        person("P5", email="not-an-email"),
    ]
    write_published_warehouse(db, people)

    first = run_sync(make_ctx(tmp_path, "run-1"), sync)
    assert first.status == "success"
    assert (first.plan.inserts, first.plan.updates, first.plan.deletes) == (2, 0, 0)
    assert first.plan.ineligible == {"invalid_email": 1, "missing_consent": 2}
    audience = pq.read_table(tmp_path / "activation" / "vip_file" / "audience.parquet").to_pylist()
    assert sorted(r["person_id"] for r in audience) == ["P1", "P2"]
    assert sorted(
        r["person_id"] for r in read_csv(tmp_path / "activation" / "vip_file" / "audience.csv")
    ) == ["P1", "P2"]
    changes = pq.read_table(tmp_path / "activation" / "vip_file" / "changes" / "run-1.parquet").to_pylist()
    assert sorted((r["_change"], r["person_id"]) for r in changes) == [("insert", "P1"), ("insert", "P2")]

    # the same warehouse again: nothing planned, nothing written
    audience_mtime = (tmp_path / "activation" / "vip_file" / "audience.csv").stat().st_mtime_ns
    second = run_sync(make_ctx(tmp_path, "run-2"), sync)
    assert (second.plan.changes, second.sent) == (0, 0)
    assert not (tmp_path / "activation" / "vip_file" / "changes" / "run-2.csv").exists()
    assert (tmp_path / "activation" / "vip_file" / "audience.csv").stat().st_mtime_ns == audience_mtime

    # P1 withdraws consent, P2 changes name, P3 grants consent
    people[0]["consent"] = False
    people[1]["first_name"] = "Bea"
    people[2]["consent"] = True
    write_published_warehouse(db, people)
    plan = plan_sync(make_ctx(tmp_path, "run-3"), sync)
    assert (plan.inserts, plan.updates, plan.deletes) == (1, 1, 1)
    assert plan.sample_keys == {"insert": ["P3"], "update": ["P2"], "delete": ["P1"]}
    third = run_sync(make_ctx(tmp_path, "run-3"), sync)
    assert third.sent == 3
    audience = pq.read_table(tmp_path / "activation" / "vip_file" / "audience.parquet").to_pylist()
    assert sorted((r["person_id"], r["first_name"]) for r in audience) == [("P2", "Bea"), ("P3", "Ann")]
    changes = read_csv(tmp_path / "activation" / "vip_file" / "changes" / "run-3.csv")
    assert sorted((r["_change"], r["person_id"]) for r in changes) == [
        ("delete", "P1"),
        ("insert", "P3"),
        ("update", "P2"),
    ]


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", [person("P1")])
    result = run_sync(make_ctx(tmp_path, "dry"), file_sync(), dry_run=True)
    assert result.status == "dry_run" and result.plan.inserts == 1 and result.sent == 0
    assert not (tmp_path / "activation").exists()
    assert not (tmp_path / "state").exists()


def test_csv_cells_that_look_like_formulas_are_neutralised(tmp_path: Path) -> None:
    evil = ['=HYPERLINK("http://x")', "+1+1", "-2", "@SUM(A1)", "\tx", "\rx", "plain", "a=b"]
    people = [person(f"P{i}", first_name=name) for i, name in enumerate(evil)]
    write_published_warehouse(tmp_path / "warehouse.duckdb", people)
    run_sync(make_ctx(tmp_path, "r"), file_sync())
    rows = {
        r["person_id"]: r["first_name"]
        for r in read_csv(tmp_path / "activation" / "vip_file" / "audience.csv")
    }
    assert [rows[f"P{i}"] for i in range(len(evil))] == ["'" + v for v in evil[:6]] + ["plain", "a=b"]
    # Parquet keeps the exact values (it is not opened by spreadsheets as formulas)
    parquet = pq.read_table(tmp_path / "activation" / "vip_file" / "audience.parquet").to_pylist()
    assert sorted(r["first_name"] for r in parquet) == sorted(evil)


def test_neutralise_formulas_leaves_nulls_and_numbers() -> None:
    import pyarrow as pa

    table = pa.table({"s": ["=1", None, "ok"], "n": [-1, 2, 3]})
    assert neutralise_formulas(table).to_pydict() == {"s": ["'=1", None, "ok"], "n": [-1, 2, 3]}


def test_audit_tables_record_runs_and_rejections(tmp_path: Path) -> None:
    write_published_warehouse(
        tmp_path / "warehouse.duckdb", [person("P1"), person("P2", consent=False), person("P3", email="x@")]
    )
    run_sync(make_ctx(tmp_path, "r1"), file_sync())
    run_sync(make_ctx(tmp_path, "r2"), file_sync())
    tables = sync_audit_tables(tmp_path)
    runs = sorted(tables["sync_runs"].to_pylist(), key=lambda r: r["run_id"])
    assert [(r["run_id"], r["status"], r["planned_inserts"], r["sent"], r["skipped"]) for r in runs] == [
        ("r1", "success", 1, 1, 2),
        ("r2", "success", 0, 0, 2),
    ]
    assert all(r["duration_s"] >= 0 and r["as_of"] == AS_OF for r in runs)
    rejections = {(r["run_id"], r["record_key"], r["reason"]) for r in tables["sync_rejections"].to_pylist()}
    assert rejections == {
        ("r1", "P2", "missing_consent"),
        ("r1", "P3", "invalid_email"),
        ("r2", "P2", "missing_consent"),
        ("r2", "P3", "invalid_email"),
    }


def test_duplicate_primary_key_is_a_clear_error(tmp_path: Path) -> None:
    from touchpoint.activation import SyncSourceError

    write_published_warehouse(tmp_path / "warehouse.duckdb", [person("P1")])
    sync = file_sync(
        source={"sql": "select * from marts.customer_360 union all select * from marts.customer_360"}
    )
    result = run_sync(make_ctx(tmp_path, "r"), sync)
    assert result.status == "failed" and result.message.startswith(f"{SyncSourceError.__name__}: ")
    assert "not unique" in result.message
    runs = sync_audit_tables(tmp_path)["sync_runs"].to_pylist()
    assert [(r["status"], r["message"]) for r in runs] == [("failed", result.message)]


def test_shipped_syncs_run_on_a_published_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TOUCHPOINT_CONN_TOUCHPOINT_CRM_POSTGRES",
        "AIRFLOW_CONN_TOUCHPOINT_CRM_POSTGRES",
        "TOUCHPOINT_CONN_TOUCHPOINT_SEGMENTS_API",
        "AIRFLOW_CONN_TOUCHPOINT_SEGMENTS_API",
    ):
        monkeypatch.delenv(name, raising=False)
    people = [person(f"P{i:02d}", clv=float(i), churn_90d_decile=i % 10 + 1) for i in range(20)]
    write_published_warehouse(tmp_path / "warehouse.duckdb", people)
    syncs = load_sync_definitions()
    results = {s.name: run_sync(make_ctx(tmp_path, "r"), s) for s in syncs}
    assert {n: r.status for n, r in results.items()} == {
        "churn_risk_audience": "skipped",
        "high_clv_audience": "success",
        "segments_api": "skipped",
    }
    assert "TOUCHPOINT_CONN_TOUCHPOINT_CRM_POSTGRES" in results["churn_risk_audience"].message
    audience = pq.read_table(tmp_path / "activation" / "high_clv_audience" / "audience.parquet").to_pylist()
    assert sorted(r["person_id"] for r in audience) == ["P18", "P19"]  # top decile of 20 by CLV
    # the skipped ones still plan fine against the same warehouse (their SQL is valid)
    planned = {r.sync_name: r for r in run_syncs(make_ctx(tmp_path, "r2"), syncs, dry_run=True)}
    assert planned["high_clv_audience"].status == "dry_run" and planned["high_clv_audience"].plan.changes == 0
    for name in ("churn_risk_audience", "segments_api"):
        assert planned[name].status == "skipped" and planned[name].message == planned[name].plan.skipped_reason
        assert planned[name].plan.inserts > 0


def test_audit_log_loads_into_a_warehouse_idempotently(tmp_path: Path) -> None:
    import duckdb

    from touchpoint.activation import load_sync_audit

    write_published_warehouse(tmp_path / "warehouse.duckdb", [person("P1"), person("P2", consent=False)])
    run_sync(make_ctx(tmp_path, "r1"), file_sync())
    con = duckdb.connect()
    counts = {"sync_runs": 1, "sync_rejections": 1, "experiment_assignments": 0}
    assert load_sync_audit(con, tmp_path) == counts
    assert load_sync_audit(con, tmp_path) == counts
    assert con.execute("select sync_name, status, sent from audit.sync_runs").fetchall() == [
        ("vip_file", "success", 1)
    ]
    assert con.execute("select record_key, reason from audit.sync_rejections").fetchall() == [
        ("P2", "missing_consent")
    ]
