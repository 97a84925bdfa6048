"""The whole pipeline through Airflow (`touchpoint run` -> `dag.test()`), on small real inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_CHECK = PROJECT_ROOT.parent / "shared" / "conformance" / "check.py"


def touchpoint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "touchpoint.cli", *args], capture_output=True, text=True, cwd=PROJECT_ROOT
    )


@pytest.fixture(scope="module")
def conformance_run(tmp_path_factory: pytest.TempPathFactory, ) -> Path:
    from tests.conftest import CONFORMANCE_EXTRACTS

    home = tmp_path_factory.mktemp("conformance_home")
    result = touchpoint("run", "--extracts", str(CONFORMANCE_EXTRACTS), "--as-of", "2026-03-31", "--home", str(home))
    assert result.returncode == 0, result.stdout + result.stderr
    return home


def test_run_prints_a_short_summary_not_log_noise(conformance_run: Path) -> None:
    log = conformance_run / "artifacts" / "2026-03-31" / "airflow.log"
    assert log.exists() and log.stat().st_size > 0


def test_conformance_kit_passes_on_the_published_warehouse(conformance_run: Path) -> None:
    checked = subprocess.run(
        [sys.executable, str(CONFORMANCE_CHECK), str(conformance_run / "warehouse.duckdb")],
        capture_output=True, text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rerun_of_the_same_as_of_changes_nothing(conformance_run: Path) -> None:
    def snapshot() -> dict[str, int]:
        con = duckdb.connect(str(conformance_run / "warehouse.duckdb"), read_only=True)
        try:
            tables = con.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_schema in ('raw', 'audit', 'identity', 'marts') and table_type = 'BASE TABLE' "
                "and table_name not like 'sync_%'"
            ).fetchall()
            return {f"{s}.{t}": con.execute(f'select count(*) from "{s}"."{t}"').fetchone()[0] for s, t in tables}
        finally:
            con.close()

    before = snapshot()
    from tests.conftest import CONFORMANCE_EXTRACTS

    result = touchpoint("run", "--extracts", str(CONFORMANCE_EXTRACTS), "--as-of", "2026-03-31",
                        "--home", str(conformance_run))
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot() == before
