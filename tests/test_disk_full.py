"""A full disk ends in one clear line, from the CLI and from a failed pipeline task (`touchpoint.disk`)."""

from __future__ import annotations

import errno
import sqlite3
from datetime import date
from pathlib import Path

import duckdb
import pytest
import sqlalchemy.exc

from touchpoint import cli, pipeline
from touchpoint.config import RunContext
from touchpoint.disk import DiskFullError, disk_full_error

AS_OF = date(2026, 3, 31)


def enospc(home: Path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(home / "landing" / "shop" / "orders.parquet"))


def duckdb_full(home: Path) -> duckdb.IOException:
    return duckdb.IOException(
        f'IO Error: Could not write file "{home}/work/warehouse.duckdb.wal": No space left on device'
    )


def sqlite_full(home: Path) -> sqlalchemy.exc.OperationalError:
    # how Airflow's metadata database (SQLite through SQLAlchemy) reports SQLITE_FULL
    driver_error = sqlite3.OperationalError("database or disk is full")
    return sqlalchemy.exc.OperationalError("INSERT INTO task_instance ...", {}, driver_error)


def quota_exceeded(home: Path) -> OSError:
    return OSError(errno.EDQUOT, "Disk quota exceeded", str(home / "state" / "x"))


def expected_line(home: Path, written: str | None) -> str:
    return f"disk full writing {written or 'the home'}: free space under {home} and rerun; nothing was published"


@pytest.mark.parametrize(
    ("make_error", "written"),
    [
        (enospc, "landing/shop/orders.parquet"),
        (duckdb_full, "work/warehouse.duckdb.wal"),
        (sqlite_full, None),
        (quota_exceeded, "state/x"),
    ],
)
def test_the_cli_says_a_full_disk_on_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], make_error, written
) -> None:
    import touchpoint.sources

    def generate(*args, **kwargs):
        raise make_error(tmp_path)

    monkeypatch.setattr(touchpoint.sources, "generate", generate)
    status = cli.main(["generate", "--home", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status != 0
    assert out == ""
    assert err == f"touchpoint: {expected_line(tmp_path, written and str(tmp_path / written))}\n"


def test_a_full_disk_during_touchpoint_run_is_one_line_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import touchpoint.orchestration

    def run_dag(*args, **kwargs):
        try:
            raise duckdb_full(tmp_path)
        except duckdb.Error as error:  # wrapped once more, as a caller up the stack might
            raise RuntimeError("dag.test() failed") from error

    monkeypatch.setattr(touchpoint.orchestration, "run_dag", run_dag)
    status = cli.main(["run", "--home", str(tmp_path), "--as-of", AS_OF.isoformat()])
    err = capsys.readouterr().err
    assert status != 0
    assert err.splitlines() == [f"touchpoint: {expected_line(tmp_path, f'{tmp_path}/work/warehouse.duckdb.wal')}"]


def test_other_errors_keep_their_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import touchpoint.sources

    def generate(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "sources"))

    monkeypatch.setattr(touchpoint.sources, "generate", generate)
    with pytest.raises(PermissionError):
        cli.main(["generate", "--home", str(tmp_path)])


def test_a_stage_on_a_full_disk_raises_disk_full_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = RunContext(as_of=AS_OF, home=tmp_path, run_id=AS_OF.isoformat())
    error = enospc(tmp_path)

    def extract_source(ctx, source):
        raise error

    monkeypatch.setattr("touchpoint.ingest.extract_source", extract_source)
    with pytest.raises(DiskFullError) as raised:
        pipeline.extract(ctx, "shop")
    assert str(raised.value) == expected_line(tmp_path, error.filename)
    assert "\n" not in str(raised.value)
    assert raised.value.__cause__ is error  # the library's error stays in the task log for whoever digs


def test_dbt_running_out_of_space_fails_its_task_with_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from touchpoint import dbt

    def run_layer(ctx, layer):
        raise dbt.DbtLayerFailed(
            f"dbt layer {layer!r} failed (1 failing nodes): model.x: error: IO Error: Could not write file "
            f'"{tmp_path}/work/warehouse.duckdb": No space left on device'
        )

    monkeypatch.setattr(dbt, "run_layer", run_layer)
    ctx = RunContext(as_of=AS_OF, home=tmp_path, run_id=AS_OF.isoformat())
    with pytest.raises(DiskFullError, match=r"^disk full writing .*/work/warehouse.duckdb: free space under"):
        pipeline.dbt_layer(ctx, "staging")


def test_other_stage_errors_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def extract_source(ctx, source):
        raise ValueError("a bad extract")

    monkeypatch.setattr("touchpoint.ingest.extract_source", extract_source)
    with pytest.raises(ValueError, match="a bad extract"):
        pipeline.extract(RunContext(as_of=AS_OF, home=tmp_path, run_id="r"), "shop")


class RemoteDiskFull(Exception):
    """A destination server reporting *its* disk full (psycopg2's errors live in `psycopg2.errors`)."""


RemoteDiskFull.__module__ = "psycopg2.errors"


def test_a_destination_servers_full_disk_is_not_ours(tmp_path: Path) -> None:
    remote = RemoteDiskFull('could not extend file "base/16384/2619": No space left on device')
    assert disk_full_error(remote, tmp_path) is None
    # nor through SQLAlchemy (Airflow's metadata on PostgreSQL): the driver's error decides, not the wrapper's text
    assert disk_full_error(sqlalchemy.exc.OperationalError("INSERT ...", {}, remote), tmp_path) is None
    assert disk_full_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path) is not None
