"""From a sync with a holdout to marts.experiment_readouts: the sync's assignment files enter the warehouse through
`load_sync_audit` (the load stage) and dbt builds the experiment marts over them, on a first run (no
assignments yet) too."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb

from tests.conftest_identity import dbt_build
from tests.doubles.activation import person, write_published_warehouse
from touchpoint.activation import load_sync_audit, run_sync
from touchpoint.activation.definitions import parse_sync_definition
from touchpoint.activation.experiments import arm_of
from touchpoint.config import RunContext

SELECT = "path:models/staging/audit path:models/marts/experiments"
ASSIGNED = date(2026, 3, 1)


def work_db(path: Path, with_audit_from: Path | None) -> Path:
    con = duckdb.connect(str(path))
    try:
        if with_audit_from is not None:
            load_sync_audit(con, with_audit_from)
        con.execute("create schema if not exists marts")
        # every person buys 10 days after the assignment; the treated twice
        con.execute(
            """
            create table marts.fct_orders as
            select person_id, cast(? as date) + 10 as order_date, 20.00::decimal(18, 2) as net_amount,
                   true as is_purchase
            from (select unnest(?) as person_id, unnest(?) as copies), range(copies)
            """,
            [ASSIGNED, *_orders()],
        )
    finally:
        con.close()
    return path


def _orders() -> tuple[list[str], list[int]]:
    ids = [f"P{i:03d}" for i in range(300)]
    return ids, [2 if arm_of(i, "winback", 0.2) == "treatment" else 1 for i in ids]


def test_assignments_and_readouts_in_the_warehouse(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_published_warehouse(home / "warehouse.duckdb", [person(f"P{i:03d}") for i in range(300)])
    sync = parse_sync_definition({
        "name": "winback", "source": {"table": "marts.customer_360"}, "fields": ["person_id"],
        "purpose": "email_marketing", "destination": {"type": "file"}, "holdout": "20%",
    })
    assert run_sync(RunContext(as_of=ASSIGNED, home=home, run_id="r1"), sync).status == "success"
    db = work_db(tmp_path / "warehouse.duckdb", home)
    as_of = (ASSIGNED + timedelta(days=120)).isoformat()
    dbt_build(db, as_of, SELECT)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assigned = dict(con.execute("select person_id, arm from marts.experiment_assignments").fetchall())
        assert assigned == {f"P{i:03d}": arm_of(f"P{i:03d}", "winback", 0.2) for i in range(300)}
        assert con.execute("select distinct first_assigned_date, sync_name from marts.experiment_assignments"
                           ).fetchall() == [(ASSIGNED, "winback")]
        rows = {r[0]: r[1:] for r in con.execute(
            "select metric, treatment_value, control_value, absolute_lift, has_sample_ratio_mismatch, as_of "
            "from marts.experiment_readouts where experiment = 'winback'").fetchall()}
    finally:
        con.close()
    assert rows["conversion_30d"][:3] == (1.0, 1.0, 0.0)
    assert rows["revenue_per_person_30d"][:3] == (40.0, 20.0, 20.0)
    assert rows["churn_90d"][:3] == (0.0, 0.0, 0.0)
    assert {r[3] for r in rows.values()} == {False} and {r[4] for r in rows.values()} == {date.fromisoformat(as_of)}


def test_the_marts_exist_empty_on_a_first_run(tmp_path: Path) -> None:
    # a first run's load stage creates an empty audit table; a warehouse without one builds empty marts too
    for case, audit_home in (("first_run", tmp_path / "empty_home"), ("no_audit", None)):
        folder = tmp_path / case
        folder.mkdir()
        db = work_db(folder / "warehouse.duckdb", audit_home)
        dbt_build(db, "2026-03-31", SELECT)
        con = duckdb.connect(str(db), read_only=True)
        try:
            for table in ("experiment_assignments", "experiment_readouts"):
                assert con.execute(f"select count(*) from marts.{table}").fetchall() == [(0,)], (case, table)
        finally:
            con.close()
