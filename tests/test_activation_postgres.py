"""Reverse-ETL to the real local PostgreSQL: upserts, deletes on consent withdrawal, crash and resume."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest

from tests.conftest import PG_SERVER, fresh_postgres_database
from tests.doubles.activation import person, write_published_warehouse
from touchpoint.activation import run_sync, sync_audit_tables
from touchpoint.activation.connections import get_connection
from touchpoint.activation.definitions import parse_sync_definition
from touchpoint.activation.destinations import BatchResult
from touchpoint.activation.destinations.postgres import PostgresDestination
from touchpoint.config import RunContext

pytestmark = pytest.mark.postgres
SERVER = PG_SERVER
CONN_NAME = "touchpoint_test_pg"
FIELDS = (
    "person_id",
    "email",
    "first_name",
    "revenue",
    "last_order_date",
    "has_email_consent",
    "last_visit_at",
    "email_open_rate",
    "orders_count",
)
PERSONAL = {"email": "clear", "first_name": "clear"}


@pytest.fixture
def pg_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database on the local server, dropped afterwards; its URI is the sync's connection."""
    with fresh_postgres_database() as name:
        monkeypatch.setenv(
            f"TOUCHPOINT_CONN_{CONN_NAME.upper()}", f"postgresql://{SERVER['user']}@{SERVER['host']}:5432/{name}"
        )
        yield name


def query(dbname: str, sql: str) -> list[tuple]:
    with psycopg2.connect(dbname=dbname, **SERVER) as con, con.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    con.close()
    return rows


def pg_sync(batch_size: int = 1000):
    return parse_sync_definition(
        {
            "name": "churn_pg",
            "source": {"table": "marts.customer_360"},
            "fields": list(FIELDS),
            "personal_fields": PERSONAL,
            "consent": "email_marketing",
            "email_field": "email",
            "destination": {
                "type": "postgres",
                "connection": CONN_NAME,
                "schema": "crm",
                "table": "audience",
            },
            "batch_size": batch_size,
        }
    )


def ctx(home: Path, run_id: str) -> RunContext:
    return RunContext(as_of=date(2026, 3, 31), home=home, run_id=run_id)


def test_full_noop_incremental_and_consent_withdrawal(tmp_path: Path, pg_database: str) -> None:
    db = tmp_path / "warehouse.duckdb"
    people = [person(f"P{i}") for i in range(5)] + [person("NC", consent=None)]
    write_published_warehouse(db, people)
    sync = pg_sync(batch_size=2)

    first = run_sync(ctx(tmp_path, "r1"), sync)
    assert (first.status, first.sent_upserts, first.skipped) == ("success", 5, 1)
    rows = query(
        pg_database,
        "select person_id, email, first_name, revenue::text, last_order_date::text "
        "from crm.audience order by 1",
    )
    assert rows == [(f"P{i}", f"p{i}@example.com", "Ann", "300.00", "2026-03-01") for i in range(5)]
    types = query(
        pg_database,
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'crm' and table_name = 'audience'",
    )
    assert dict(types) == {
        "person_id": "text",
        "email": "text",
        "first_name": "text",
        "revenue": "numeric",
        "last_order_date": "date",
        "has_email_consent": "boolean",
        "last_visit_at": "timestamp without time zone",
        "email_open_rate": "numeric",
        "orders_count": "bigint",
        "_synced_at": "timestamp with time zone",
        "_sync_run_id": "text",
    }
    assert query(
        pg_database,
        "select last_visit_at::text, email_open_rate::float, orders_count, "
        "has_email_consent from crm.audience where person_id = 'P0'",
    ) == [("2026-03-30 10:00:00", 0.5, 3, True)]

    second = run_sync(ctx(tmp_path, "r2"), sync)
    assert (second.plan.changes, second.sent) == (0, 0)
    assert query(pg_database, "select count(*) from crm.audience where _sync_run_id = 'r2'") == [(0,)]

    people[1]["first_name"] = "Bea"  # update
    people[2]["consent"] = False  # consent withdrawn -> delete
    people[3]["email"] = "broken@"  # email became invalid -> delete
    people.append(person("P9"))  # insert
    write_published_warehouse(db, people)
    third = run_sync(ctx(tmp_path, "r3"), sync)
    assert (third.plan.inserts, third.plan.updates, third.plan.deletes) == (1, 1, 2)
    assert (third.sent_upserts, third.sent_deletes) == (2, 2)
    rows = query(pg_database, "select person_id, first_name, _sync_run_id from crm.audience order by 1")
    assert rows == [("P0", "Ann", "r1"), ("P1", "Bea", "r3"), ("P4", "Ann", "r1"), ("P9", "Ann", "r3")]


class CrashAfterBatches(PostgresDestination):
    """Crashes right after PostgreSQL committed the n-th batch, before the sync could record it."""

    def __init__(self, *args, crash_after: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crash_after = crash_after
        self.batches = 0

    def upsert(self, rows: pa.Table) -> BatchResult:
        result = super().upsert(rows)
        self.batches += 1
        if self.batches == self.crash_after:
            raise KeyboardInterrupt("simulated crash between commit and checkpoint")
        return result


def test_crash_mid_sync_resumes_with_exactly_once_effect(tmp_path: Path, pg_database: str) -> None:
    people = [person(f"P{i:02d}") for i in range(10)]
    write_published_warehouse(tmp_path / "warehouse.duckdb", people)
    sync = pg_sync(batch_size=3)
    crashing = CrashAfterBatches(
        get_connection(CONN_NAME),
        table="audience",
        schema="crm",
        primary_key="person_id",
        run_id="r1",
        crash_after=2,
    )
    with pytest.raises(KeyboardInterrupt):
        run_sync(ctx(tmp_path, "r1"), sync, destination=crashing)
    # batch 1 acknowledged and checkpointed; batch 2 committed at PostgreSQL but not checkpointed
    assert query(pg_database, "select count(*) from crm.audience") == [(6,)]

    resumed = run_sync(ctx(tmp_path, "r1-retry"), sync)
    assert resumed.plan.inserts == 7  # only what was not acknowledged: batch 2 again + the 4 never sent
    rows = query(pg_database, "select person_id, _sync_run_id from crm.audience order by 1")
    assert [r[0] for r in rows] == [f"P{i:02d}" for i in range(10)]
    assert [r[1] for r in rows[:3]] == ["r1"] * 3 and {r[1] for r in rows[3:]} == {"r1-retry"}
    assert query(pg_database, "select count(*), count(distinct person_id) from crm.audience") == [(10, 10)]
    again = run_sync(ctx(tmp_path, "r2"), sync)
    assert again.sent == 0


class LosesTheServerAfterBatches(PostgresDestination):
    """The server ends this destination's session after the n-th batch (a restart, a failover, an admin)."""

    def __init__(self, *args, lost_after: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lost_after = lost_after
        self.batches = 0

    def upsert(self, rows: pa.Table) -> BatchResult:
        result = super().upsert(rows)
        self.batches += 1
        if self.batches == self.lost_after:
            query(self.connection.schema, f"select pg_terminate_backend({self.con.get_backend_pid()})")
        return result


def test_a_server_lost_mid_sync_is_a_retryable_failure_that_resumes(tmp_path: Path, pg_database: str) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", [person(f"P{i:02d}") for i in range(10)])
    sync = pg_sync(batch_size=3)
    losing = LosesTheServerAfterBatches(
        get_connection(CONN_NAME), table="audience", schema="crm", primary_key="person_id", run_id="r1", lost_after=1
    )
    failed = run_sync(ctx(tmp_path, "r1"), sync, destination=losing)
    assert failed.status == "failed" and failed.message.startswith("DestinationUnavailableError: PostgreSQL ")
    assert failed.retryable and failed.sent_upserts == 3  # the DAG retries it; the first batch is kept
    resumed = run_sync(ctx(tmp_path, "r1"), sync)  # what the retry does
    assert (resumed.status, resumed.plan.inserts) == ("success", 7)
    assert query(pg_database, "select count(*), count(distinct person_id) from crm.audience") == [(10, 10)]


def test_rows_postgres_refuses_are_rejected_with_its_reason(tmp_path: Path, pg_database: str) -> None:
    query_sql = (
        "create schema crm; create table crm.audience (person_id text primary key, email text, "
        "first_name text check (first_name <> 'Mallory'), revenue numeric(18,2), last_order_date date, "
        "has_email_consent boolean, _synced_at timestamptz not null default now(), _sync_run_id text)"
    )
    with psycopg2.connect(dbname=pg_database, **SERVER) as con, con.cursor() as cur:
        cur.execute(query_sql)
    con.close()
    people = [person("P1"), person("P2", first_name="Mallory"), person("P3")]
    write_published_warehouse(tmp_path / "warehouse.duckdb", people)
    result = run_sync(ctx(tmp_path, "r1"), pg_sync())
    assert (result.sent_upserts, result.failed) == (2, 1)
    assert query(pg_database, "select person_id from crm.audience order by 1") == [("P1",), ("P3",)]
    refused = [
        r
        for r in sync_audit_tables(tmp_path)["sync_rejections"].to_pylist()
        if r["reason"] == "destination_refused"
    ]
    assert [r["record_key"] for r in refused] == ["P2"] and "check constraint" in refused[0]["detail"]
    # unchanged, the refused row is not resent; once fixed it goes through
    assert run_sync(ctx(tmp_path, "r2"), pg_sync()).sent == 0
    people[1]["first_name"] = "Mal"
    write_published_warehouse(tmp_path / "warehouse.duckdb", people)
    assert run_sync(ctx(tmp_path, "r3"), pg_sync()).sent_upserts == 1
    assert query(pg_database, "select count(*) from crm.audience") == [(3,)]


def test_pointing_a_sync_at_another_table_resyncs_it_in_full(tmp_path: Path, pg_database: str) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", [person("P1"), person("P2")])
    assert run_sync(ctx(tmp_path, "r1"), pg_sync()).sent_upserts == 2
    moved = pg_sync()
    moved = replace(moved, destination=replace(moved.destination, options={"schema": "crm", "table": "v2"}))
    assert run_sync(ctx(tmp_path, "r2"), moved).sent_upserts == 2
    assert query(pg_database, "select count(*) from crm.v2") == [(2,)]


HARD_CRASH_SCRIPT = """
import json, os, sys
from datetime import date
from pathlib import Path
from touchpoint.activation.connections import get_connection
from touchpoint.activation.definitions import parse_sync_definition
from touchpoint.activation.destinations.postgres import PostgresDestination
from touchpoint.activation.runner import run_sync
from touchpoint.config import RunContext

class DieAfterTwoBatches(PostgresDestination):
    calls = 0
    def upsert(self, rows):
        result = super().upsert(rows)
        DieAfterTwoBatches.calls += 1
        if DieAfterTwoBatches.calls == 2:
            os._exit(17)  # no cleanup at all: like kill -9 right after PostgreSQL committed
        return result

sync = parse_sync_definition({
    "name": "churn_pg", "source": {"table": "marts.customer_360"},
    "fields": json.loads(sys.argv[3]), "personal_fields": {"email": "clear", "first_name": "clear"},
    "consent": "email_marketing", "email_field": "email", "batch_size": 3,
    "destination": {"type": "postgres", "connection": sys.argv[2], "schema": "crm", "table": "audience"},
})
destination = DieAfterTwoBatches(get_connection(sys.argv[2]), table="audience", schema="crm",
                                 primary_key="person_id", run_id="r1")
ctx = RunContext(as_of=date(2026, 3, 31), home=Path(sys.argv[1]), run_id="r1")
run_sync(ctx, sync, destination=destination)
"""


def test_hard_killed_process_resumes_with_exactly_once_effect(tmp_path: Path, pg_database: str) -> None:
    import json
    import subprocess
    import sys

    write_published_warehouse(tmp_path / "warehouse.duckdb", [person(f"P{i:02d}") for i in range(8)])
    script = tmp_path / "crash.py"
    script.write_text(HARD_CRASH_SCRIPT)
    crashed = subprocess.run(
        [sys.executable, str(script), str(tmp_path), CONN_NAME, json.dumps(FIELDS)], capture_output=True
    )
    assert crashed.returncode == 17, crashed.stderr.decode()[-2000:]
    assert query(pg_database, "select count(*) from crm.audience") == [(6,)]
    resumed = run_sync(ctx(tmp_path, "r1-retry"), pg_sync(batch_size=3))
    assert (resumed.plan.inserts, resumed.sent_upserts) == (5, 5)  # batch 2 again + the 2 never sent
    rows = query(pg_database, "select person_id, _sync_run_id from crm.audience order by 1")
    assert [r[0] for r in rows] == [f"P{i:02d}" for i in range(8)]
    assert [r[1] for r in rows] == ["r1"] * 3 + ["r1-retry"] * 5


def test_control_characters_are_removed_and_audited_without_failing_the_sync(
    tmp_path: Path, pg_database: str
) -> None:
    # PostgreSQL text cannot hold NUL: sent as is, it failed the whole sync
    write_published_warehouse(
        tmp_path / "warehouse.duckdb",
        [person("P0"), person("P1", first_name="A\x00nn\x07"), person("P2", first_name="Tab\tkept")],
    )
    result = run_sync(ctx(tmp_path, "r1"), pg_sync())
    assert (result.status, result.sent_upserts, result.failed) == ("success", 3, 0)
    assert query(pg_database, "select person_id, first_name from crm.audience order by 1") == [
        ("P0", "Ann"),
        ("P1", "Ann"),
        ("P2", "Tab\tkept"),
    ]
    rejections = sync_audit_tables(tmp_path)["sync_rejections"].to_pylist()
    assert [(r["record_key"], r["reason"], r["detail"]) for r in rejections] == [
        ("P1", "text_cleaned", "removed control characters from first_name")
    ]
