"""The analyst shell (`touchpoint sql`) is read-only for real: no file, extension, setting or write escapes.

Each escape is tried twice: through the shell (refused with one clear line), and straight on the analyst
connection, past the statement check, where DuckDB's own configuration must stop it on its own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest

from touchpoint import cli
from touchpoint.config import Paths
from touchpoint.shell import ShellRefused, check_statements, open_analyst_connection, run_query

SECRET = "TOP-SECRET-d41d8cd98f00"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with a tiny published and working warehouse, and a secret file outside both."""
    paths = Paths(tmp_path / "home").ensure()
    for db, version in ((paths.published_db, 1), (paths.work_db, 2)):
        con = duckdb.connect(str(db))
        con.execute("create schema marts")
        con.execute(f"create table marts.customer_rfm as select range as person_id, {version} as version, "
                    "'champions' as rfm_segment from range(3)")
        con.close()
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    return paths.home


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _escapes(home: Path) -> dict[str, str]:
    """Each escape: SQL -> the start of the refusal the analyst reads."""
    secret = home.parent / "secret.txt"
    work = Paths(home).work_db
    return {
        f"attach '{work}' as w (read_write)": "ATTACH and DETACH are disabled",
        f"attach '{work}' as w": "ATTACH and DETACH are disabled",
        f"attach '{home / 'new.duckdb'}' as n": "ATTACH and DETACH are disabled",
        f"copy marts.customer_rfm to '{home / 'out.csv'}'": "file access is disabled",
        f"copy (select 1) to '{home / 'out.parquet'}' (format parquet)": "file access is disabled",
        f"export database '{home / 'export'}'": "file access is disabled",
        f"import database '{home / 'export'}'": "file access is disabled",
        "install httpfs": "extensions cannot be installed or loaded",
        "load httpfs": "extensions cannot be installed or loaded",
        "select * from read_text('/etc/passwd')": "file access is disabled",
        f"select * from read_text('{secret}')": "file access is disabled",
        f"select * from read_blob('{secret}')": "file access is disabled",
        f"select * from read_csv('{secret}')": "file access is disabled",
        f"from read_csv_auto('{secret}')": "file access is disabled",
        "select * from glob('/root/*')": "file access is disabled",
        f"select * from read_parquet('{home / 'landing' / '*.parquet'}')": "file access is disabled",
        f"select * from query('select * from read_text(''{secret}'')')": "file access is disabled",
        "set enable_external_access = true": "settings are locked",
        "reset lock_configuration": "settings are locked",
        "set threads = 1": "settings are locked",
        "pragma threads = 1": "settings are locked",
        "pragma enable_profiling": "PRAGMA enable_profiling is not allowed",
        "create table marts.x (a int)": "the analyst shell is read-only: CREATE",
        "create temp table x as select 1": "the analyst shell is read-only: CREATE",
        "drop table marts.customer_rfm": "the analyst shell is read-only: DROP",
        "insert into marts.customer_rfm values (9, 9, 'x')": "the analyst shell is read-only: INSERT",
        "update marts.customer_rfm set version = 9": "the analyst shell is read-only: UPDATE",
        "explain analyze create temp table x as select 1": "the analyst shell is read-only: CREATE",
        "select 1; attach ':memory:' as m": "ATTACH and DETACH are disabled",
        "/* a comment first */ install httpfs": "extensions cannot be installed or loaded",
        "checkpoint": "the analyst shell is read-only: CHECKPOINT",
    }


# The escapes DuckDB itself must stop, without the statement check (the sandbox is the real barrier).
SANDBOXED = ("attach", "copy", "export", "import", "install", "load", "select", "from", "set", "reset", "pragma",
             "create table", "drop", "insert", "update")


def test_every_escape_is_refused_and_no_warehouse_file_changes(home: Path) -> None:
    paths = Paths(home)
    before = {path: _sha256(path) for path in (paths.published_db, paths.work_db)}
    files_before = sorted(home.rglob("*"))
    con = open_analyst_connection(paths.published_db)
    try:
        for sql, reason in _escapes(home).items():
            with pytest.raises(ShellRefused) as refused:
                run_query(con, sql)
            assert str(refused.value).startswith(reason), sql
            assert "\n" not in str(refused.value)
            if sql.lower().startswith(SANDBOXED):
                with pytest.raises(duckdb.Error):
                    con.execute(sql).fetchall()  # past the statement check: DuckDB's config must hold alone
        assert run_query(con, "select count(*) from marts.customer_rfm").rows == [(3,)]
    finally:
        con.close()
    assert {path: _sha256(path) for path in before} == before
    assert sorted(home.rglob("*")) == files_before  # nothing written, not even a temp or export file


def test_queries_still_work(home: Path) -> None:
    con = open_analyst_connection(Paths(home).published_db)
    try:
        result = run_query(con, "select rfm_segment, count(*) as n from marts.customer_rfm group by 1")
        assert (result.columns, result.rows, result.truncated) == (["rfm_segment", "n"], [("champions", 3)], False)
        assert run_query(con, "from marts.customer_rfm select max(version)").rows == [(1,)]  # the published file
        assert run_query(con, "select * from range(10)", max_rows=4).truncated
        for sql in ("describe marts.customer_rfm", "summarize marts.customer_rfm", "show tables",
                    "pivot marts.customer_rfm on rfm_segment using count(*)", "explain select 1",
                    "explain analyze select 1", "pragma table_info('marts.customer_rfm')", "-- nothing"):
            check_statements(con, sql)
            run_query(con, sql)
        assert run_query(con, "select current_setting('TimeZone')").rows == [("UTC",)]
    finally:
        con.close()


def test_cli_refuses_in_one_line_and_exits_non_zero(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sql", "--home", str(home), f"select * from read_text('{home.parent / 'secret.txt'}')"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "touchpoint sql: refused: file access is disabled in the analyst shell\n"
    assert SECRET not in out + err

    assert cli.main(["sql", "--home", str(home), "select count(*) as n from marts.customer_rfm"]) == 0
    out, err = capsys.readouterr()
    assert "| 3 |" in out and err == ""


def test_cli_without_a_published_warehouse_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sql", "--home", str(tmp_path), "select 1"]) == 2
    assert "no published warehouse" in capsys.readouterr().err
