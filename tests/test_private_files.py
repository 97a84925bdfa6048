"""Whatever Touchpoint creates under the home is its owner's only: files 0600, folders 0700."""

from __future__ import annotations

import os
import shutil
import stat
from datetime import date
from pathlib import Path

import pytest

from touchpoint import cli, pipeline
from touchpoint.config import Paths, RunContext

FIXTURES = Path(__file__).parent / "fixtures"


def _open_modes(home: Path) -> dict[str, str]:
    """Everything under `home` (and `home` itself) that group or others may access, with its mode."""
    entries = [home, *home.rglob("*")]
    return {
        str(path.relative_to(home)): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in entries
        if path.lstat().st_mode & 0o077
    }


def test_ensure_creates_owner_only_folders_and_closes_old_ones(tmp_path: Path) -> None:
    os.umask(0o022)  # a usual login umask: folders would be 0755
    paths = Paths(tmp_path / "home")
    paths.ensure()
    assert _open_modes(paths.home) == {}
    paths.landing.chmod(0o755)  # left open by an older version
    paths.ensure()
    assert stat.S_IMODE(paths.landing.stat().st_mode) == 0o700


def test_cli_entry_point_sets_a_private_umask(tmp_path: Path) -> None:
    os.umask(0o022)
    assert cli.main(["sql", "--home", str(tmp_path / "home"), "select 1"]) == 2  # no warehouse yet
    assert os.umask(0o022) == 0o077


def test_airflow_task_entry_sets_a_private_umask(tmp_path: Path) -> None:
    os.umask(0o022)
    ctx = pipeline.context_from_airflow({"params": {"home": str(tmp_path / "home"), "as_of": "2026-03-31"}})
    assert ctx.as_of == date(2026, 3, 31)
    assert os.umask(0o022) == 0o077


@pytest.mark.parametrize("entry", ["cli", "airflow"])
def test_extract_and_load_write_only_private_files(tmp_path: Path, entry: str) -> None:
    """Landing Parquet, manifests, watermarks, extract errors and the working DuckDB, under each entry's umask."""
    os.umask(0o022)
    home = tmp_path / "home"
    if entry == "cli":
        cli.main(["sql", "--home", str(home), "select 1"])
    else:
        pipeline.context_from_airflow({"params": {"home": str(home), "as_of": "2026-03-31"}})
    extracts = tmp_path / "extracts"
    shutil.copytree(FIXTURES / "extracts_conformance", extracts)
    (extracts / "pos_transactions.xlsx").write_text("an unknown layout, so an extract error is recorded too")
    ctx = RunContext(as_of=date(2026, 3, 31), home=home, run_id="run-1", extracts_dir=extracts)
    for source in ("shop", "web", "pos"):
        pipeline.extract(ctx, source)
    pipeline.load(ctx)
    assert list(ctx.paths.landing.rglob("*.parquet")) and ctx.paths.work_db.exists()
    assert _open_modes(home) == {}
