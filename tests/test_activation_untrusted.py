"""Sync definitions and connections are untrusted input (ARCHITECTURE.md rule 9).

Sandboxed SQL, parsed filters, relative HTTP paths, and malformed connections reported without their secrets.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from tests.doubles.activation import FakeAudienceApi, person, write_published_warehouse
from touchpoint.activation import SyncsFailedError, diff, run_sync, run_syncs, sync_audit_tables
from touchpoint.activation.connections import parse_connection_uri
from touchpoint.activation.definitions import SyncDefinitionError, parse_sync_definition
from touchpoint.activation.destinations import DestinationError
from touchpoint.activation.destinations.http import HttpDestination
from touchpoint.config import RunContext

VALID = {
    "name": "audience",
    "source": {"table": "marts.customer_360"},
    "fields": ["person_id", "email", "first_name"],
    "personal_fields": {"email": "clear", "first_name": "clear"},
    "purpose": "email_marketing",
    "destination": {"type": "file", "formats": ["csv"]},
}
PASSWD = "select person_id, email, content as first_name from read_text('/etc/passwd'), marts.customer_360"


def ctx(home: Path) -> RunContext:
    return RunContext(as_of=date(2026, 3, 31), home=home, run_id="r1")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A published warehouse that, like the real one, also holds a schema syncs must not read."""
    db = tmp_path / "warehouse.duckdb"
    write_published_warehouse(db, [person("P1"), person("P2")])
    con = duckdb.connect(str(db))
    con.execute("create schema raw; create table raw.secrets as select 'P1' as person_id, 'x' as email")
    con.close()
    return tmp_path


def failed_runs(home: Path) -> list[dict]:
    return [r for r in sync_audit_tables(home)["sync_runs"].to_pylist() if r["status"] == "failed"]


# -- 1. sync SQL runs sandboxed, over the published analyst schemas only ----------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "select * from raw.secrets",
        "select * from marts.customer_360 where person_id in (select person_id from audit.sync_runs)",
        "select * from intermediate.x union all select * from staging.y",
        "select * from read_csv('/etc/passwd')",
        "select * from glob('/etc/*')",
        "select * from query_table('raw.secrets')",
        "select * from customer_360",
        PASSWD,
    ],
)
def test_source_sql_outside_the_published_schemas_is_refused_at_load(sql: str) -> None:
    with pytest.raises(SyncDefinitionError, match="x.yml: source.sql may"):
        parse_sync_definition({**VALID, "source": {"sql": sql}}, where="x.yml")


def test_identity_schema_is_readable() -> None:
    sync = parse_sync_definition({**VALID, "source": {"sql": "select * from identity.persons"}})
    assert sync.source_sql == "select * from identity.persons"


@pytest.mark.parametrize(
    ("sql", "reason"),
    [(PASSWD, "table functions"), ("select person_id, email, email as first_name from raw.secrets", "raw.secrets")],
)
def test_a_forbidden_source_fails_the_sync_on_one_line_and_writes_nothing(home: Path, sql: str, reason: str) -> None:
    # built past the loader (as `replace` or embedding code can): the run re-checks
    sync = replace(parse_sync_definition(VALID), source_sql=sql)
    result = run_sync(ctx(home), sync)
    assert result.status == "failed" and result.message.startswith("SyncSourceError: ")
    assert reason in result.message and "\n" not in result.message and "'audience'" in result.message
    [run] = failed_runs(home)
    assert run["message"] == result.message
    assert not (home / "activation" / "audience" / "audience.csv").exists()


def test_file_access_is_refused_by_the_sandbox_itself(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # with the parser check switched off, the connection's own configuration must still refuse the file
    monkeypatch.setattr(diff, "check_sync_sql", lambda published, sync: None)
    sync = replace(parse_sync_definition(VALID), source_sql=PASSWD)
    result = run_sync(ctx(home), sync)
    assert "'audience': source query refused: file access is disabled" in result.message
    assert len(failed_runs(home)) == 1
    assert not (home / "activation" / "audience" / "audience.csv").exists()


# -- 2. a filter is one boolean expression, checked by a parser ------------------------------------------


@pytest.mark.parametrize(
    ("row_filter", "message"),
    [
        ("1=1 union all select * from raw.secrets", "without subqueries or set operations"),
        ("x) or (1=1", "does not parse"),
        ("read_text('/etc/passwd') is not null", r"may not call read_text\(\)"),
        ("person_id in (select person_id from raw.secrets)", "without subqueries"),
        ("exists (select 1)", "without subqueries"),
        ("email = 'a'; drop table x", "single expression"),
        ("audience.email is null", "unqualified"),
        ("getvariable('x') = 1", r"may not call getvariable\(\)"),
        ("email = ?", "may not contain"),
    ],
)
def test_filter_injections_are_refused(row_filter: str, message: str) -> None:
    with pytest.raises(SyncDefinitionError, match=message):
        parse_sync_definition({**VALID, "filter": row_filter})


def test_allowed_filter_is_rerendered_without_comments(home: Path) -> None:
    sync = parse_sync_definition(
        {**VALID, "filter": "lower(rfm_segment) in ('champions') and coalesce(person_id, '') <> 'P2' -- */ or 1=1"}
    )
    assert sync.filter == "LOWER(rfm_segment) IN ('champions') AND COALESCE(person_id, '') <> 'P2'"
    assert run_sync(ctx(home), sync).sent_upserts == 1


def test_filter_on_a_column_the_source_lacks_fails_the_sync(home: Path) -> None:
    sync = parse_sync_definition({**VALID, "filter": "no_such_column = 1"})
    result = run_sync(ctx(home), sync)
    assert result.status == "failed"
    assert "filter references columns not in its source: ['no_such_column']" in result.message
    assert len(failed_runs(home)) == 1


# -- 3. HTTP paths are relative to the connection's base URL ---------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["https://evil.example/steal", "//evil.example/steal", "../../admin", "records/%2e%2e/../x", "evil.example:80/x"],
)
def test_absolute_or_escaping_http_paths_are_refused_at_load(path: str) -> None:
    destination = {"type": "http", "connection": "api", "upsert_path": path}
    with pytest.raises(SyncDefinitionError, match="destination.upsert_path must"):
        parse_sync_definition({**VALID, "destination": destination})


def test_the_token_is_only_sent_to_the_configured_host() -> None:
    with FakeAudienceApi("tok") as configured, FakeAudienceApi("tok") as other:
        conn = parse_connection_uri("api", configured.url.replace("http://", "http://:tok@") + "/v1")
        with pytest.raises(DestinationError, match="must be relative"):
            HttpDestination(conn, sync_name="s", primary_key="person_id", upsert_path=other.url + "/records")
        destination = HttpDestination(conn, sync_name="s", primary_key="person_id")
        destination.open(pa.schema([("person_id", pa.string())]))
        destination.upsert_path = other.url + "/records"  # past the constructor's check, as a last line
        with pytest.raises(DestinationError, match="refusing to send"):
            destination.upsert(pa.table({"person_id": ["P1"]}))
        destination.close()
        assert other.log == [] and configured.log == []


# -- 4. a connection is untrusted input too: a malformed one fails its sync, audited, and names no secret ----

SECRET = "S3cretPw"
CRM = {"type": "postgres", "connection": "crm", "table": "audience"}
API = {"type": "http", "connection": "crm"}


@pytest.mark.parametrize(
    ("destination", "value", "reason"),
    [
        (CRM, f"postgresql://user:{SECRET}@host:notaport/db", "has a port that is not a number"),
        (CRM, f"postgresql://user:{SECRET}/x@host/db", "must be percent-encoded"),  # a '/' in the password
        (API, f"http://:{SECRET}@[::1", "is not a valid URI"),
        (CRM, f"mysql://user:{SECRET}@host/db", "has type 'mysql'; a postgres destination needs postgres://"),
        (API, f"user:{SECRET}@host", "is not a URI of the form"),
        (API, "", "is empty"),
        (API, f'{{"conn_type": "http", "host": "h", "password": "{SECRET}", "port": "x"}}', "has a port"),
        (API, f'{{"conn_type": "http", "password": "{SECRET}"', "is not a valid JSON object"),
    ],
)
def test_a_malformed_connection_fails_its_sync_with_an_audit_row_and_the_others_go_on(
    home: Path, monkeypatch: pytest.MonkeyPatch, destination: dict, value: str, reason: str
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CRM", raising=False)
    monkeypatch.setenv("TOUCHPOINT_CONN_CRM", value)
    broken = parse_sync_definition({**VALID, "name": "crm_audience", "destination": destination})
    files = parse_sync_definition(VALID)
    with pytest.raises(SyncsFailedError) as raised:
        run_syncs(ctx(home), [broken, files])
    results = {r.sync_name: r for r in raised.value.results}
    assert {name: r.status for name, r in results.items()} == {"crm_audience": "failed", "audience": "success"}
    message = results["crm_audience"].message
    assert message.startswith("sync 'crm_audience': connection 'crm' (TOUCHPOINT_CONN_CRM) ")
    assert reason in message and "\n" not in message
    [run] = failed_runs(home)
    assert (run["sync_name"], run["message"]) == ("crm_audience", message)
    assert SECRET not in str(raised.value) + message + repr(results)
    assert (home / "activation" / "audience" / "audience.csv").exists()  # the other sync went on


def test_a_malformed_connection_is_planned_as_failing_not_a_crash(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_CONN_CRM", f"postgresql://user:{SECRET}@host:notaport/db")
    with pytest.raises(SyncsFailedError) as raised:
        run_syncs(ctx(home), [parse_sync_definition({**VALID, "destination": CRM})], dry_run=True)
    [result] = raised.value.results
    assert result.status == "failed" and result.message.startswith("sync 'audience': connection 'crm'")
    assert not result.retryable  # fixing the connection is a person's job: no retry would help
    assert SECRET not in str(raised.value) + repr(result)
    assert not (home / "state").exists()  # a dry run writes nothing, not even for a failure


def test_the_cli_reports_a_malformed_connection_and_runs_the_other_syncs(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from touchpoint import cli

    for variable in ("AIRFLOW_CONN_TOUCHPOINT_CRM_POSTGRES", "TOUCHPOINT_CONN_TOUCHPOINT_SEGMENTS_API",
                     "AIRFLOW_CONN_TOUCHPOINT_SEGMENTS_API"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TOUCHPOINT_CONN_TOUCHPOINT_CRM_POSTGRES", f"postgresql://crm:{SECRET}@crm-db:54x32/crm")
    assert cli.main(["sync", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    status = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert status == {"churn_risk_audience": "failed", "high_clv_audience": "success", "segments_api": "skipped"}
    assert "connection 'touchpoint_crm_postgres' (TOUCHPOINT_CONN_TOUCHPOINT_CRM_POSTGRES)" in out
    assert SECRET not in out


def test_a_malformed_connection_fails_the_airflow_task_with_the_message(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from touchpoint import activation, pipeline

    monkeypatch.setenv("TOUCHPOINT_CONN_CRM", f"http://:{SECRET}@[::1")
    sync = parse_sync_definition({**VALID, "destination": API})
    monkeypatch.setattr(activation, "load_sync_definitions", lambda: [sync])
    expected = r"sync 'audience': connection 'crm' \(TOUCHPOINT_CONN_CRM\) is not a valid URI"
    with pytest.raises(RuntimeError, match=expected) as raised:
        pipeline.sync(ctx(home), "audience")
    assert SECRET not in str(raised.value)
    assert [r["sync_name"] for r in failed_runs(home)] == ["audience"]


def test_a_secret_quoted_by_a_destination_error_is_redacted(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPOINT_CONN_CRM", f"https://api.example.com/v1?token={SECRET}")

    def open_and_complain(self, schema) -> None:
        raise DestinationError(f"the API refused token {SECRET}")

    monkeypatch.setattr(HttpDestination, "open", open_and_complain)
    result = run_sync(ctx(home), parse_sync_definition({**VALID, "destination": API}))
    [run] = failed_runs(home)
    assert result.message == run["message"] == "DestinationError: the API refused token ***"
    assert SECRET not in repr(result)
