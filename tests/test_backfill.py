"""`touchpoint backfill`: consecutive as-of dates through the DAG, each strictly as of its date, idempotent on
rerun; and `touchpoint run` refuses a home that a scheduler serves."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tests.conftest import require_conformance
from tests.test_end_to_end import touchpoint
from touchpoint.config import Paths
from touchpoint.warehouse import WarehouseLease

pytestmark = pytest.mark.slow


def _history(home: Path) -> list[tuple]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(
            "select as_of, count(*), count(distinct person_id), sum(frequency), sum(monetary) "
            "from marts.customer_rfm_history group by 1 order by 1"
        ).fetchall()
    finally:
        con.close()


def _model_runs(home: Path) -> list[tuple]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(
            "select model_name, as_of, count(*) from ml.model_runs group by 1, 2 order by 1, 2"
        ).fetchall()
    finally:
        con.close()


def test_backfill_is_strictly_as_of_each_date_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    # One snapshot of extracts serves every date, so it holds rows after each as-of (order O-6 on 2026-04-02):
    # they are "not yet" for these dates, with no setting: staging leaves them out, nothing fails.
    home = tmp_path / "home"
    args = ("backfill", "--from", "2026-03-29", "--to", "2026-03-30", "--extracts", str(require_conformance()))
    first = touchpoint(*args, "--home", str(home))
    assert first.returncode == 0, first.stdout + first.stderr

    history = _history(home)
    assert [str(as_of) for as_of, *_ in history] == ["2026-03-29", "2026-03-30"]
    assert all(rows == persons for _, rows, persons, _, _ in history)  # one row per buyer and date
    (_, _, _, frequency_29, monetary_29), (_, _, _, frequency_30, monetary_30) = history
    # order O-3 (30.00) was placed on 2026-03-30: the 29th's run must not see it, the 30th's must
    assert (frequency_30 - frequency_29, monetary_30 - monetary_29) == (1, Decimal("30.00"))
    runs = _model_runs(home)
    assert runs and all(count == 1 for *_, count in runs)
    assert {str(as_of) for _, as_of, _ in runs} == {"2026-03-29", "2026-03-30"}
    # The date reaches dbt through the environment, not a var: a new day reuses the day before's parse instead of
    # parsing the whole project again (dbt_project/macros/as_of.sql)
    second_day_log = next((home / "artifacts").glob("*2026-03-30*/dbt/dbt.log")).read_text()
    assert "Unable to do partial parsing" not in second_day_log
    assert "Partial parsing enabled" in second_day_log

    again = touchpoint(*args, "--home", str(home))
    assert again.returncode == 0, again.stdout + again.stderr
    assert _history(home) == history
    assert _model_runs(home) == runs
    assert WarehouseLease(Paths(home)).holder() is None


def test_run_refuses_a_home_a_scheduler_serves(tmp_path: Path) -> None:
    """An embedded run beside a scheduler would share its metadata DB and race its runs for the warehouse."""
    paths = Paths(tmp_path / "home")
    paths.airflow_home.mkdir(parents=True)
    (paths.airflow_home / "services.json").write_text(
        json.dumps({"url": "http://127.0.0.1:8793", "pids": {"scheduler": os.getpid()}})  # a live pid
    )
    extracts = tmp_path / "extracts"  # never read: the run is refused first
    extracts.mkdir()
    refused = touchpoint("run", "--extracts", str(extracts), "--as-of", "2026-03-31", "--home", str(paths.home))
    assert refused.returncode == 2
    assert "scheduler serves" in refused.stderr and "http://127.0.0.1:8793" in refused.stderr
    assert not paths.work_db.exists()
