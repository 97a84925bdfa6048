"""Sync definitions (YAML) and connection lookup: what is accepted, what is refused and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from touchpoint.activation import SyncDefinitionError, load_sync_definitions
from touchpoint.activation.connections import (
    ConnectionNotConfiguredError,
    get_connection,
    parse_connection_uri,
)
from touchpoint.activation.definitions import parse_sync_definition

VALID = {
    "name": "vip",
    "source": {"table": "marts.customer_360"},
    "fields": ["person_id", "email"],
    "personal_fields": {"email": "clear"},
    "purpose": "email_marketing",
    "email_field": "email",
    "destination": {"type": "file"},
}


def test_shipped_definitions_are_valid_and_the_file_one_needs_no_connection() -> None:
    syncs = {s.name: s for s in load_sync_definitions()}
    assert {s.destination.type for s in syncs.values()} == {"file", "postgres", "http"}
    defaults = [s for s in syncs.values() if s.destination.type == "file"]
    assert defaults and all(s.destination.connection is None and s.enabled for s in defaults)
    for sync in syncs.values():
        assert sync.primary_key == "person_id" and sync.consent_purpose == "email_marketing"


def test_defaults_and_source_forms() -> None:
    sync = parse_sync_definition(VALID)
    assert sync.source_sql == 'select * from "marts"."customer_360"'
    assert sync.destination.options["formats"] == ["csv", "parquet"] and sync.batch_size == 100_000
    sql = parse_sync_definition({**VALID, "source": {"sql": "select * from ml.customer_clv;"}})
    assert sql.source_sql == "select * from ml.customer_clv"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "Bad Name"}, "name must match"),
        ({"source": {"table": "raw.crm_contacts"}}, "published schema"),
        ({"source": {"sql": "delete from marts.customer_360"}}, "exactly one SELECT"),
        ({"source": {"sql": "select 1; drop table x"}}, "exactly one SELECT"),
        ({"fields": ["email"]}, "primary_key 'person_id' must be one of the fields"),
        ({"fields": ["person_id", "email", "email"]}, "duplicates"),
        ({"email_field": "mail"}, "email_field 'mail'"),
        ({"destination": {"type": "kafka"}}, "destination.type"),
        ({"destination": {"type": "postgres", "table": "t"}}, "needs a connection"),
        ({"destination": {"type": "http", "connection": "api", "token": "abc"}}, "not allowed here"),
        ({"destination": {"type": "file", "formats": ["xlsx"]}}, "formats"),
        ({"batch_size": 0}, "batch_size"),
        (
            {"destination": {"type": "http", "connection": "api", "timeout": 3}},
            "unknown http destination options",
        ),
        ({"colour": "red"}, "unknown keys"),
        ({"purpose": None}, "a sync without a purpose is refused"),
        ({"consent": "profiling"}, "disagree"),
        ({"purpose": "Email Marketing"}, "purpose"),
        ({"primary_key": "email", "fields": ["email"]}, "must include person_id"),
    ],
)
def test_invalid_definitions_are_refused_with_a_reason(change: dict, message: str) -> None:
    with pytest.raises(SyncDefinitionError, match=message):
        parse_sync_definition({**VALID, **change}, where="x.yml")


def test_consent_is_the_former_name_of_purpose() -> None:
    former = {key: value for key, value in VALID.items() if key != "purpose"}
    assert parse_sync_definition({**former, "consent": "profiling"}).consent_purpose == "profiling"


def test_folder_loading_rejects_duplicate_names_and_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(
        "name: same\nsource: marts.customer_360\nfields: [person_id]\npurpose: profiling\n"
        "destination: {type: file}\n"
    )
    (tmp_path / "b.yaml").write_text((tmp_path / "a.yml").read_text())
    with pytest.raises(SyncDefinitionError, match="defined twice"):
        load_sync_definitions(tmp_path)
    (tmp_path / "b.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SyncDefinitionError, match="not valid YAML"):
        load_sync_definitions(tmp_path)


def test_connections_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOUCHPOINT_CONN_CRM_DB", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_CRM_DB", raising=False)
    with pytest.raises(ConnectionNotConfiguredError, match="TOUCHPOINT_CONN_CRM_DB"):
        get_connection("crm_db")
    monkeypatch.setenv("AIRFLOW_CONN_CRM_DB", "postgresql://u:p%40ss@db.example:5433/crm?sslmode=require")
    conn = get_connection("crm_db")
    assert (conn.conn_type, conn.host, conn.port, conn.login, conn.password, conn.schema) == (
        "postgresql",
        "db.example",
        5433,
        "u",
        "p@ss",
        "crm",
    )
    assert conn.extra == {"sslmode": "require"} and "p@ss" not in repr(conn) + str(conn)
    monkeypatch.setenv(
        "TOUCHPOINT_CONN_CRM_DB", '{"conn_type": "http", "host": "h", "extra": {"token": "t"}}'
    )
    assert get_connection("crm_db").extra == {"token": "t"}  # TOUCHPOINT_ wins over AIRFLOW_
    assert parse_connection_uri("x", "https://api.example.com/v1?token=abc").extra == {"token": "abc"}
