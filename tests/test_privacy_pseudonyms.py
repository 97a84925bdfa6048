"""Pseudonyms: one keyed hash, the same in Python and in dbt, with its key from outside the warehouse."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess

import pytest

from tests.conftest import PROJECT_ROOT
from tests.conftest_identity import DBT
from touchpoint.privacy.keys import (
    DEMO_KEYS,
    PSEUDONYM_KEY_NAME,
    SUPPRESSION_KEY_NAME,
    PrivacyKey,
    PrivacyKeyError,
    privacy_key,
    pseudonym_key,
    suppression_key,
)
from touchpoint.privacy.pseudonyms import pseudonym
from touchpoint.sql_text import sql_literal

VALUES = ["ann@example.com", "", "Zoë O'Brien", "+44 20 7946 0958", "x" * 500]


def test_pseudonym_is_rfc2104_hmac_sha256() -> None:
    key = PrivacyKey("test", b"0123456789abcdef-long-enough", "test")
    for value in VALUES:
        assert pseudonym(value, key) == hmac.new(key.secret, value.encode(), hashlib.sha256).hexdigest()
    assert pseudonym(None, key) is None
    other = PrivacyKey("test", b"another key, also long enough", "test")
    assert pseudonym("ann@example.com", key) != pseudonym("ann@example.com", other)


def test_keys_come_from_the_environment_and_the_two_keys_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PSEUDONYM_KEY_NAME, raising=False)
    monkeypatch.delenv(SUPPRESSION_KEY_NAME, raising=False)
    demo = pseudonym_key()
    assert demo.is_demo and demo.secret == DEMO_KEYS[PSEUDONYM_KEY_NAME].encode()
    assert suppression_key().secret != demo.secret  # knowing one key says nothing about the other

    monkeypatch.setenv(PSEUDONYM_KEY_NAME, "a real key from the secret store")
    key = pseudonym_key()
    assert not key.is_demo and key.secret == b"a real key from the secret store"
    assert PSEUDONYM_KEY_NAME in key.source
    assert "a real key" not in repr(key)  # never printed

    monkeypatch.setenv(PSEUDONYM_KEY_NAME, "short-secret")
    with pytest.raises(PrivacyKeyError) as error:
        pseudonym_key()
    assert "short-secret" not in str(error.value) and PSEUDONYM_KEY_NAME in str(error.value)
    with pytest.raises(ValueError):
        privacy_key("TOUCHPOINT_SOMETHING_ELSE")


def _dbt_show(sql: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    project = PROJECT_ROOT / "dbt_project"
    return subprocess.run(
        [str(DBT), "show", "--inline", sql, "--limit", "100", "--output", "json", "--log-format", "json",
         "--project-dir", str(project), "--profiles-dir", str(project), "--target-path", env["TARGET"],
         "--log-path", env["TARGET"]],
        env=env, capture_output=True, text=True, cwd=project, timeout=300,
    )


def test_dbt_macro_gives_the_python_pseudonym_and_the_key_stays_out_of_dbt_files(tmp_path) -> None:
    secret = "key-for-this-test-only-0f3a9c"
    env = {**os.environ, PSEUDONYM_KEY_NAME: secret, "TOUCHPOINT_HOME": str(tmp_path),
           "TOUCHPOINT_WORK_DB": str(tmp_path / "work.duckdb"), "TARGET": str(tmp_path / "target"),
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    rows = " union all ".join(f"select {i} as i, {sql_literal(value)} as v" for i, value in enumerate(VALUES))
    sql = "select i, {{ pseudonym('v') }} as p from (" + rows + " union all select 99, null)"
    completed = _dbt_show(sql, env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    shown = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    preview = next(line["data"]["preview"] for line in shown if "preview" in line.get("data", {}))
    got = {row["i"]: row["p"] for row in json.loads(preview)}
    key = PrivacyKey(PSEUDONYM_KEY_NAME, secret.encode(), "test")
    assert got == {**{i: pseudonym(value, key) for i, value in enumerate(VALUES)}, 99: None}

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written, "dbt wrote its artifacts"
    for path in written:  # the key, and the pads derived from it, appear nowhere dbt writes
        assert secret.encode() not in path.read_bytes(), path


def _macro_sql(expression: str) -> str:
    """The SQL dbt's pseudonym() macro renders for `expression` (plain Jinja: the macro uses no dbt context)."""
    import jinja2

    macro = (PROJECT_ROOT / "dbt_project" / "macros" / "pseudonym.sql").read_text()
    call = "{{ pseudonym(" + repr(expression) + ") }}"
    return jinja2.Environment().from_string(macro + call).render().strip()


def test_the_macro_needs_the_key_on_its_connection_and_then_matches_python() -> None:
    import duckdb

    from touchpoint.privacy.pseudonyms import connection_setup

    sql = _macro_sql("v")
    con = duckdb.connect()
    con.execute("create table t as select * from (values ('ann@example.com'), (null)) as t(v)")
    with pytest.raises(duckdb.Error, match="no pseudonymisation key"):  # no plugin: no silent nulls
        con.execute(f"select {sql} from t").fetchall()
    key = PrivacyKey(PSEUDONYM_KEY_NAME, b"a key for the macro test only", "test")
    for statement in connection_setup(key):
        con.execute(statement)
    assert sorted(con.execute(f"select {sql} from t").fetchall(), key=str) == sorted(
        [(pseudonym("ann@example.com", key),), (None,)], key=str
    )


def test_pii_name_check_tells_identifiers_from_measures_about_them() -> None:
    from touchpoint.privacy.pii_columns import looks_like_pii

    for name in ["email", "subject_email", "phone_e164", "first_name", "last_name_key", "address_line1",
                 "postcode", "birth_date", "loyalty_id", "Street", "date_of_birth", "ip_address"]:
        assert looks_like_pii(name), name
    for name in ["email_open_rate", "has_email_consent", "is_email_valid", "email_clicks_30d", "segment_name",
                 "product_name", "model_name", "email_consent_state", "email_events_count", "city", "person_id"]:
        assert not looks_like_pii(name), name
