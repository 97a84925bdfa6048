"""Sync definitions are untrusted input (ARCHITECTURE.md rule 9): sandboxed SQL, parsed filters, relative paths."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from touchpoint.activation import diff, run_sync, sync_audit_tables
from touchpoint.activation.connections import parse_connection_uri
from touchpoint.activation.definitions import SyncDefinitionError, parse_sync_definition
from touchpoint.activation.destinations import DestinationError
from touchpoint.activation.destinations.http import HttpDestination
from touchpoint.activation.diff import SyncSourceError
from touchpoint.activation.testing import FakeAudienceApi, person, write_published_warehouse
from touchpoint.config import RunContext

VALID = {
    "name": "audience",
    "source": {"table": "marts.customer_360"},
    "fields": ["person_id", "email", "first_name"],
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
    with pytest.raises(SyncSourceError, match=reason) as raised:
        run_sync(ctx(home), sync)
    assert "\n" not in str(raised.value) and "'audience'" in str(raised.value)
    [run] = failed_runs(home)
    assert reason in run["message"] and "\n" not in run["message"]
    assert not (home / "activation" / "audience" / "audience.csv").exists()


def test_file_access_is_refused_by_the_sandbox_itself(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # with the parser check switched off, the connection's own configuration must still refuse the file
    monkeypatch.setattr(diff, "check_sync_sql", lambda published, sync: None)
    sync = replace(parse_sync_definition(VALID), source_sql=PASSWD)
    with pytest.raises(SyncSourceError, match="'audience': source query refused: file access is disabled"):
        run_sync(ctx(home), sync)
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
        {**VALID, "filter": "lower(first_name) in ('ann') and coalesce(person_id, '') <> 'P2' -- */ or 1=1"}
    )
    assert sync.filter == "LOWER(first_name) IN ('ann') AND COALESCE(person_id, '') <> 'P2'"
    assert run_sync(ctx(home), sync).sent_upserts == 1


def test_filter_on_a_column_the_source_lacks_fails_the_sync(home: Path) -> None:
    sync = parse_sync_definition({**VALID, "filter": "no_such_column = 1"})
    with pytest.raises(SyncSourceError, match=r"filter references columns not in its source: \['no_such_column'\]"):
        run_sync(ctx(home), sync)
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
