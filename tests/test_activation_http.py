"""Reverse-ETL to an HTTP API: a local threaded server injects 429 + Retry-After, 5xx, timeouts, refusals."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.doubles.activation import FakeAudienceApi, person, write_published_warehouse
from touchpoint.activation import run_sync, sync_audit_tables
from touchpoint.activation.connections import parse_connection_uri
from touchpoint.activation.definitions import parse_sync_definition
from touchpoint.activation.destinations.http import HttpDestination, retry_after_seconds
from touchpoint.config import RunContext

TOKEN = "s3cret-token"
CONN = "touchpoint_test_api"


def api_sync(batch_size: int = 2, **options):
    destination = {"type": "http", "connection": CONN, "timeout_s": 0.3, "max_attempts": 4, "backoff_s": 0.01}
    destination.update(options)
    return parse_sync_definition(
        {
            "name": "segments_http",
            "source": {"table": "marts.customer_360"},
            "fields": ["person_id", "email", "first_name", "revenue", "last_order_date"],
            "personal_fields": {"email": "clear", "first_name": "clear"},
            "consent": "email_marketing",
            "email_field": "email",
            "destination": destination,
            "batch_size": batch_size,
        }
    )


def ctx(home: Path, run_id: str) -> RunContext:
    return RunContext(as_of=date(2026, 3, 31), home=home, run_id=run_id)


def connect(monkeypatch: pytest.MonkeyPatch, api: FakeAudienceApi, token: str = TOKEN) -> None:
    monkeypatch.setenv(
        f"TOUCHPOINT_CONN_{CONN.upper()}", api.url.replace("http://", f"http://:{token}@") + "/v1"
    )


def test_sync_survives_429_5xx_timeouts_and_partial_refusals(tmp_path: Path, monkeypatch) -> None:
    people = [
        person("P1"),
        person("P2", email="p2@refused.example"),
        person("P3"),
        person("P4"),
        person("P5"),
        person("NC", consent=False),
    ]
    db = tmp_path / "warehouse.duckdb"
    write_published_warehouse(db, people)
    # batches (of 2, by key): [P1, P2] gets 429 then ok; [P3, P4] gets 500, 503, a timeout, then ok; [P5] ok
    faults = ["429:1", "ok", "500", "503", "timeout:0.6", "ok", "ok"]
    with FakeAudienceApi(TOKEN, faults) as api:
        connect(monkeypatch, api)
        result = run_sync(ctx(tmp_path, "r1"), api_sync())
        assert (result.status, result.sent_upserts, result.failed, result.skipped) == ("success", 4, 1, 1)
        assert sorted(api.records) == ["P1", "P3", "P4", "P5"]
        assert api.records["P1"] == {
            "person_id": "P1",
            "email": "p1@example.com",
            "first_name": "Ann",
            "revenue": 300.0,
            "last_order_date": "2026-03-01",
        }
        statuses = [status for _, _, status, _ in api.log]
        assert statuses[:5] == [429, 200, 500, 503, 200]
        keys = api.idempotency_keys  # a retried batch keeps its key; another batch has another one
        assert keys[0] == keys[1] and keys[2] == keys[3] == keys[4] == keys[5] and keys[1] != keys[2]
        # Retry-After: 1 was honoured before the retry of the first batch
        assert api.log[1][3] - api.log[0][3] >= 0.95
        # the timed-out request was applied by the server and retried: same effect, no duplicate
        assert api.applied["P3"] == api.applied["P4"] == 2 and api.applied["P5"] == 1
        assert len(api.records) == 4
        refused = [
            r
            for r in sync_audit_tables(tmp_path)["sync_rejections"].to_pylist()
            if r["reason"] == "destination_refused"
        ]
        assert [(r["record_key"], r["detail"]) for r in refused] == [("P2", "email domain is blocked")]

        requests_before = len(api.log)
        assert run_sync(ctx(tmp_path, "r2"), api_sync()).sent == 0  # no-op rerun: refused P2 not resent
        assert len(api.log) == requests_before

        people[0]["consent"] = False  # withdrawn: P1 must disappear from the API
        people[2]["first_name"] = "Cy"
        write_published_warehouse(db, people)
        third = run_sync(ctx(tmp_path, "r3"), api_sync())
        assert (third.sent_deletes, third.sent_upserts) == (1, 1)
        assert sorted(api.records) == ["P3", "P4", "P5"] and api.records["P3"]["first_name"] == "Cy"
        assert [p for p, *_ in api.log[requests_before:]] == ["/v1/records/delete", "/v1/records"]


def test_failed_run_resumes_without_resending_acknowledged_batches(tmp_path: Path, monkeypatch) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", [person(f"P{i}") for i in range(6)])
    # batch 1 ok, then batch 2 fails on every attempt: the run stops
    with FakeAudienceApi(TOKEN, ["ok", "500", "500", "500", "500"]) as api:
        connect(monkeypatch, api)
        failed = run_sync(ctx(tmp_path, "r1"), api_sync())
        assert failed.status == "failed" and "gave up after 4 attempts" in failed.message
        assert failed.message.startswith("HttpRetriesExhaustedError: ")
        assert failed.retryable  # the API was away: the DAG retries the task, and the retry resumes
        assert sorted(api.records) == ["P0", "P1"]
        resumed = run_sync(ctx(tmp_path, "r1"), api_sync())
        assert resumed.plan.inserts == 4 and resumed.sent_upserts == 4
        assert sorted(api.records) == [f"P{i}" for i in range(6)]
        assert set(api.applied.values()) == {1}  # every record applied exactly once
    runs = sorted(sync_audit_tables(tmp_path)["sync_runs"].to_pylist(), key=lambda r: r["started_at"])
    assert [(r["status"], r["sent"]) for r in runs] == [
        ("failed", 2),
        ("success", 4),
    ]  # the failed run audits its acknowledged batch
    assert "gave up" in runs[0]["message"]


def test_wrong_token_stops_the_run_without_retrying(tmp_path: Path, monkeypatch) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", [person("P1")])
    with FakeAudienceApi(TOKEN) as api:
        connect(monkeypatch, api, token="wrong")
        failed = run_sync(ctx(tmp_path, "r1"), api_sync())
        assert failed.status == "failed" and "401" in failed.message
        assert not failed.retryable  # a wrong token stays wrong: the DAG fails the task without retrying
        assert len(api.log) == 1 and api.records == {}


def test_retry_after_parsing_and_backoff_bounds() -> None:
    now = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert retry_after_seconds("garbage") is None and retry_after_seconds(None) is None
    destination = HttpDestination(
        parse_connection_uri("x", "https://:t@api.example.com/v1"),
        sync_name="s",
        primary_key="person_id",
        backoff_s=1.0,
        max_backoff_s=8.0,
        rng=random.Random(1),
    )
    assert destination.base == "https://api.example.com/v1" and destination.token == "t"
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 8.0)]:
        delays = [destination._backoff(attempt, None) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling and len(set(delays)) > 100  # jittered
    assert destination._backoff(0, 20.0) == 20.0  # Retry-After wins over a shorter backoff
