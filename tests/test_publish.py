"""Write-audit-publish: readers in other processes never fail nor see a partial snapshot, a failed gate
leaves the previous snapshot served, and the SQL shell reads the published file."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time
from datetime import date

import duckdb
import pytest

from touchpoint import cli
from touchpoint.config import RunContext
from touchpoint.expectations import GateFailed, register_suite, run_gate, unregister_suite
from touchpoint.expectations import checks as gx_checks
from touchpoint.publish import PublishRefused, publish
from touchpoint.warehouse import connect_work

READER = textwrap.dedent("""
    import json, sys, time, duckdb
    from pathlib import Path
    path, stop = sys.argv[1], Path(sys.argv[2])
    stats = {"reads": 0, "errors": [], "partial": 0, "versions": []}
    while not stop.exists():
        try:
            con = duckdb.connect(path, read_only=True)
            try:
                version, expected = con.execute(
                    "select version, expected_rows from marts.snapshot_info").fetchall()[0]
                rows, distinct_versions = con.execute(
                    "select count(*), count(distinct version) from marts.snapshot").fetchall()[0]
                stats["partial"] += rows != expected or distinct_versions != 1
                if version not in stats["versions"]:
                    stats["versions"].append(version)
                stats["reads"] += 1
            finally:
                con.close()
        except Exception as exc:
            stats["errors"].append(repr(exc))
    print(json.dumps(stats))
""")


def write_version(ctx: RunContext, version: int) -> None:
    rows = 100_000 * version
    with connect_work(ctx.paths) as con:
        con.execute("create schema if not exists marts")
        con.execute(f"create or replace table marts.snapshot as select {version} as version, range as i, "
                    f"md5(range::varchar) as payload from range({rows})")
        con.execute(f"create or replace table marts.snapshot_info as select {version} as version, "
                    f"{rows} as expected_rows")


@pytest.fixture()
def suites():
    """Tiny raw/marts suites over the snapshot table, so the real gate runner records real results."""
    state = {"marts_ok": True}

    @register_suite("raw")
    def raw_suite(ctx, con):
        return [gx_checks.not_null("marts.snapshot", "version")]

    @register_suite("marts")
    def marts_suite(ctx, con):
        if state["marts_ok"]:
            return [gx_checks.unique("marts.snapshot_info", "version")]
        return [gx_checks.between("marts.snapshot", "version", min_value=1, max_value=2)]  # v3 fails

    yield state
    unregister_suite("raw")
    unregister_suite("marts")


def run_pipeline(ctx: RunContext, version: int) -> None:
    write_version(ctx, version)
    with connect_work(ctx.paths) as con:
        run_gate(ctx, "raw", con)
        run_gate(ctx, "marts", con)
    publish(ctx)


def published_version(ctx: RunContext) -> int:
    con = duckdb.connect(str(ctx.paths.published_db), read_only=True)
    try:
        return con.execute("select version from marts.snapshot_info").fetchall()[0][0]
    finally:
        con.close()


def test_readers_never_blocked_and_failed_gate_keeps_snapshot(tmp_path, suites):
    home = tmp_path / "home"
    run_pipeline(RunContext(as_of=date(2026, 3, 29), home=home, run_id="run-1"), 1)
    published = RunContext(as_of=date(2026, 3, 29), home=home, run_id="x").paths.published_db
    stop = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(published), str(stop)],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        time.sleep(1.0)
        ctx2 = RunContext(as_of=date(2026, 3, 30), home=home, run_id="run-2")
        run_pipeline(ctx2, 2)
        assert published_version(ctx2) == 2
        time.sleep(0.5)
        suites["marts_ok"] = False
        ctx3 = RunContext(as_of=date(2026, 3, 31), home=home, run_id="run-3")
        with pytest.raises(GateFailed, match=r"marts\.snapshot\.version\.between"):
            run_pipeline(ctx3, 3)
        with pytest.raises(PublishRefused, match="marts"):  # even if someone calls it anyway
            publish(ctx3)
        time.sleep(0.5)
    finally:
        stop.touch()
        outputs = [json.loads(r.communicate(timeout=60)[0]) for r in readers]
    assert published_version(ctx3) == 2
    for stats in outputs:
        assert stats["errors"] == []
        assert stats["partial"] == 0
        assert stats["reads"] > 5
        assert set(stats["versions"]) <= {1, 2} and 2 in stats["versions"]
    assert not list(published.parent.glob(".*.tmp"))


def test_publish_refuses_without_gate_results(tmp_path):
    ctx = RunContext(as_of=date(2026, 3, 31), home=tmp_path, run_id="no-gates")
    write_version(ctx, 1)
    with pytest.raises(PublishRefused, match="no gate result for raw, marts"):
        publish(ctx)
    assert not ctx.paths.published_db.exists()


def test_publish_writes_the_analytics_and_the_pii_file_and_leaves_internal_schemas_out(tmp_path, suites):
    ctx = RunContext(as_of=date(2026, 3, 31), home=tmp_path, run_id="run-files")
    write_version(ctx, 1)
    with connect_work(ctx.paths) as con:
        con.execute("create schema raw; create table raw.crm_contacts as select 'C-1' as contact_id")
        con.execute("create view marts.snapshot_view as select version from marts.snapshot_info")
        run_gate(ctx, "raw", con)
        run_gate(ctx, "marts", con)
    result = publish(ctx)
    assert (result.published_db, result.pii_db) == (ctx.paths.published_db, ctx.paths.pii_db)
    assert ctx.paths.pii_db.exists() and not list(tmp_path.glob(".*.tmp*"))
    con = duckdb.connect(str(ctx.paths.published_db), read_only=True)
    try:
        assert {r[0] for r in con.execute("select distinct schema_name from duckdb_tables()").fetchall()} == {
            "audit", "marts"}
        assert con.execute("select count(*) from duckdb_views() where not internal").fetchone()[0] == 0
        assert con.execute("select version from marts.snapshot_view").fetchall() == [(1,)]  # now a table
    finally:
        con.close()


def test_publish_refuses_a_column_named_like_personal_data_nobody_classified(tmp_path, suites):
    ctx = RunContext(as_of=date(2026, 3, 31), home=tmp_path, run_id="run-unclassified")
    write_version(ctx, 1)
    with connect_work(ctx.paths) as con:
        con.execute("create table marts.contacts as select 'p_1' as person_id, 'ann@example.com' as billing_email")
        run_gate(ctx, "raw", con)
        run_gate(ctx, "marts", con)
    with pytest.raises(PublishRefused, match=r"marts\.contacts\.billing_email"):
        publish(ctx)
    assert not ctx.paths.published_db.exists() and not ctx.paths.pii_db.exists()
    assert not list(tmp_path.glob(".*.tmp*"))


def test_sql_shell_reads_published_read_only(tmp_path, suites, monkeypatch, capsys):
    ctx = RunContext(as_of=date(2026, 3, 31), home=tmp_path, run_id="run-shell")
    run_pipeline(ctx, 1)
    script = ".tables\nselect version,\n  expected_rows from marts.snapshot_info;\ncreate table x (a int);\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    assert cli.main(["sql", "--home", str(tmp_path)]) == 1  # the create was refused
    out, err = capsys.readouterr()
    assert "marts.snapshot_info" in out
    assert "| 1       | 100000        |" in out and "1 row" in out
    assert err == "touchpoint sql: refused: the analyst shell is read-only: CREATE statements are not allowed\n"
    assert cli.main(["sql", "--home", str(tmp_path), "select count(*) as n from marts.snapshot"]) == 0
    assert "| 100000 |" in capsys.readouterr().out
    assert cli.main(["sql", "--home", str(tmp_path), "select nope"]) == 1
    assert "Binder Error" in capsys.readouterr().err
