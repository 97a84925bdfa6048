"""A mart dropped into `models/marts/` is built, tested and published by the DAG with no DAG edit; dbt docs.

One `touchpoint run` (through Airflow) on a copy of the dbt project with an extra mart, pointed at by
`TOUCHPOINT_DBT_PROJECT_DIR`; the failing variant and the docs site reuse the warehouse that run built.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from touchpoint.config import DBT_PROJECT_DIR, RunContext

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2026-03-31"

FIRST_ORDERS_SQL = """\
-- One row per person who ordered: the date of their first order (any channel, any status).

with

orders as (

    select * from {{ ref('fct_orders') }}

),

first_orders as (

    select
        person_id,
        min(order_date) as first_order_date,
        count(*) as order_count,
    from orders
    group by person_id

)

select * from first_orders
"""

# The failing variant: one row per order, so `unique` on person_id fails for anyone with two orders.
EVERY_ORDER_SQL = """\
select
    person_id,
    order_date as first_order_date,
    1 as order_count,
from {{ ref('fct_orders') }}
"""

FIRST_ORDERS_YML = """\
  - name: customer_first_orders
    description: One row per person who ordered, with the date of their first order (test fixture mart).
    columns:
      - name: person_id
        description: The person (identity.persons).
        data_tests: [unique, not_null]
      - name: first_order_date
        description: The UTC date of the person's first order.
      - name: order_count
        description: Orders of the person up to the as-of date.
"""


def project_with_mart(folder: Path, sql: str) -> Path:
    """A copy of the dbt project with `customer_first_orders` added to the marts folder and its yml."""
    project = folder / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    marts = project / "models" / "marts"
    (marts / "customer_first_orders.sql").write_text(sql)
    models_yml = marts / "_marts__models.yml"
    text = models_yml.read_text()
    assert "\nmodels:\n" in text
    models_yml.write_text(text.replace("\nmodels:\n", "\nmodels:\n" + FIRST_ORDERS_YML, 1))
    return project


def touchpoint(*args: str, project: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOUCHPOINT_DBT_PROJECT_DIR": str(project)}
    return subprocess.run(
        [sys.executable, "-m", "touchpoint.cli", *args], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env
    )


@pytest.fixture(scope="module")
def new_mart_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(home, project): the conformance extracts run through the DAG with the extra mart in the project."""
    from tests.conftest import require_conformance

    project = project_with_mart(tmp_path_factory.mktemp("project"), FIRST_ORDERS_SQL)
    home = tmp_path_factory.mktemp("new_mart_home")
    result = touchpoint(
        "run", "--extracts", str(require_conformance()), "--as-of", AS_OF, "--home", str(home), project=project
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return home, project


def test_a_new_mart_is_built_tested_and_published_without_a_dag_edit(new_mart_run: tuple[Path, Path]) -> None:
    home, _ = new_mart_run
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "select person_id, first_order_date, order_count from marts.customer_first_orders"
        ).fetchall()
        person_of = dict(
            con.execute(
                "select source_record_id, person_id from identity.person_map "
                "where source_entity in ('shop_orders', 'pos_transactions')"
            ).fetchall()
        )
    finally:
        con.close()
    # conformance orders up to the as-of: S-100 O-1 (01-05), O-2, O-3; S-300 O-4 (03-01; O-7's amount is
    # quarantined); S-999 O-5 (03-20); the POS sale P-1 (03-15). O-6 (04-02) is after the as-of date.
    expected: dict[str, tuple[date, int]] = {}
    for order_id, day in [
        ("O-1", "2026-01-05"),
        ("O-2", "2026-02-10"),
        ("O-3", "2026-03-30"),
        ("O-4", "2026-03-01"),
        ("O-5", "2026-03-20"),
        ("P-1", "2026-03-15"),
    ]:
        first, count = expected.get(person_of[order_id], (date.max, 0))
        expected[person_of[order_id]] = (min(first, date.fromisoformat(day)), count + 1)
    assert {person: (first, count) for person, first, count in rows} == expected
    assert len(rows) == len(expected)
    assert expected[person_of["O-1"]] == (date(2026, 1, 5), 3)

    # the marts layer built the model and ran its tests (dbt build --select path:models/marts)
    results = json.loads((home / "work" / "dbt_target" / "marts" / "run_results.json").read_text())["results"]
    status = {item["unique_id"]: item["status"] for item in results}
    assert status["model.touchpoint.customer_first_orders"] == "success"
    new_mart_tests = {uid: s for uid, s in status.items() if uid.startswith("test.") and "customer_first_orders" in uid}
    assert sorted(uid.split(".")[2] for uid in new_mart_tests) == [
        "not_null_customer_first_orders_person_id",
        "unique_customer_first_orders_person_id",
    ], new_mart_tests
    assert set(new_mart_tests.values()) == {"pass"}


def test_a_failing_test_on_a_new_mart_fails_its_layer(
    new_mart_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A duplicate key in the new mart stops the marts layer, so the DAG never reaches its gate or publish."""
    from touchpoint.dbt import DbtLayerFailed, _full_refresh_reason, run_layer

    home, _ = new_mart_run
    project = project_with_mart(tmp_path, EVERY_ORDER_SQL)
    scratch = tmp_path / "home"
    (scratch / "work").mkdir(parents=True)
    shutil.copyfile(home / "work" / "warehouse.duckdb", scratch / "work" / "warehouse.duckdb")
    monkeypatch.setenv("TOUCHPOINT_DBT_PROJECT_DIR", str(project))
    ctx = RunContext(as_of=date.fromisoformat(AS_OF), home=scratch, run_id=AS_OF)
    environment, cwd = dict(os.environ), Path.cwd()
    with pytest.raises(DbtLayerFailed, match=r"test\.touchpoint\.unique_customer_first_orders_person_id\S*: fail"):
        run_layer(ctx, "marts")
    # dbt ran in this process: its console lines are in the artifacts, and it left nothing behind it, neither its
    # variables and working directory nor its DuckDB database (a second configuration of an open file is refused)
    assert "unique_customer_first_orders_person_id" in (ctx.run_artifacts / "dbt" / "marts.out").read_text()
    assert (dict(os.environ), Path.cwd()) == (environment, cwd)
    duckdb.connect(str(ctx.paths.work_db), config={"memory_limit": "123MB"}).close()

    # a model dbt cannot even parse stops the command before any node runs: no node results, so the error names
    # the model from dbt's own lines and carries dbt's exception; the failed build before it still counts as the
    # layer's last (the next build is a full one)
    (project / "models" / "marts" / "customer_first_orders.sql").write_text("select {{ unclosed")
    with pytest.raises(DbtLayerFailed, match=r"(?s)\(0 failing nodes\).*customer_first_orders") as failed:
        run_layer(ctx, "marts")
    assert failed.value.__cause__ is not None  # dbt's own exception, with its traceback, for the task log
    assert _full_refresh_reason(ctx, "marts") == "last build failed"
    assert (dict(os.environ), Path.cwd()) == (environment, cwd)


def test_docs_build_a_static_site_for_the_latest_run(new_mart_run: tuple[Path, Path]) -> None:
    home, project = new_mart_run
    result = touchpoint("docs", "--home", str(home), project=project)
    assert result.returncode == 0, result.stdout + result.stderr
    site = home / "artifacts" / AS_OF / "docs" / "index.html"
    assert str(site) in result.stdout
    html = site.read_text()
    # the page embeds manifest and catalog: models, their descriptions and the warehouse's columns
    assert "customer_rfm" in html and "customer_first_orders" in html
    assert "first_order_date" in html
