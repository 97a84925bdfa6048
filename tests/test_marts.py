"""Marts on the conformance extracts: the RFM numbers the kit expects, one customer_360 row per person,
idempotent history reruns, and the marts gate passing on them and failing on broken marts.

The RFM scoring edge cases (ties at quintile edges, one-order buyers, refunds to zero or below, a single
buyer) are dbt unit tests in dbt_project/models/marts/_marts__models.yml, run by the build below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import date
from pathlib import Path

import duckdb
import pytest

from tests.conftest_identity import DBT, DBT_DIR, dbt_build, make_raw_db
from touchpoint.config import RunContext
from touchpoint.expectations import GateFailed, run_gate

AS_OF = "2026-03-31"
ALL_LAYERS = "path:models/staging path:models/intermediate path:models/identity path:seeds/marts path:models/marts"


def dbt_run(db: Path, as_of: str, select: str) -> None:
    env = {**os.environ, "TOUCHPOINT_WORK_DB": str(db), "DBT_PROFILES_DIR": str(DBT_DIR)}
    result = subprocess.run(
        [str(DBT), "run", "--project-dir", str(DBT_DIR), "--target-path", str(db.parent / "dbt_target"),
         "--log-path", str(db.parent / "dbt_logs"), "--vars", json.dumps({"as_of": as_of}),
         "--select", select],
        env=env, capture_output=True, text=True, cwd=DBT_DIR)
    assert result.returncode == 0, result.stdout[-4000:]


def rows(db: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """Build every layer on the conformance extracts as of 2026-03-31 (running the marts unit tests), keep a
    copy, then rerun the RFM models for 2026-03-20 twice to exercise the history table."""
    folder = tmp_path_factory.mktemp("marts")
    db = make_raw_db(folder / "warehouse.duckdb")
    dbt_build(db, AS_OF, ALL_LAYERS)
    snapshot = folder / "as_of_2026-03-31.duckdb"
    shutil.copyfile(db, snapshot)
    history_select = "fct_orders customer_rfm customer_rfm_history"
    dbt_run(db, "2026-03-20", history_select)
    after_first = rows(db, "select as_of, count(*) from marts.customer_rfm_history group by 1 order by 1")
    dbt_run(db, "2026-03-20", history_select)
    return {"db": snapshot, "rerun_db": db, "history_after_first": after_first}


def person_of(db: Path, entity: str, record: str) -> str:
    return rows(db, f"select person_id from identity.person_map where source_entity = '{entity}' "
                    f"and source_record_id = '{record}'")[0][0]


def test_conformance_rfm(built):
    db = built["db"]
    rfm = {p: (r, f, float(m)) for p, r, f, m in
           rows(db, "select person_id, recency_days, frequency, monetary from marts.customer_rfm")}
    assert len(rfm) == 4
    assert rfm[person_of(db, "shop_customers", "S-100")] == (1, 3, 100.0)  # Anna, order after as-of ignored
    assert rfm[person_of(db, "shop_customers", "S-300")] == (30, 1, 100.0)  # Dev, malformed order quarantined
    assert rfm[person_of(db, "crm_contacts", "C-004")] == (16, 1, 42.5)  # Carla, through the POS phone
    assert person_of(db, "shop_orders", "O-5") in rfm  # unknown customer S-999 is a buyer
    scores = rows(db, "select min(r_score), max(r_score), count(distinct rfm_segment), min(as_of), "
                      "max(as_of) "
                      "from marts.customer_rfm")
    assert scores == [(1, 5, 4, date(2026, 3, 31), date(2026, 3, 31))]


def test_fct_orders_attributes_every_order(built):
    db = built["db"]
    orders = rows(db, "select order_id, channel, net_amount from marts.fct_orders order by order_id")
    assert [o[0] for o in orders] == ["pos:P-1", "shop:O-1", "shop:O-2", "shop:O-3", "shop:O-4", "shop:O-5"]
    assert rows(db, "select count(*) from marts.fct_orders where person_id is null") == [(0,)]
    assert rows(db, "select sum(net_amount) from marts.fct_orders") == [(rows(db, (
        "select sum(monetary) from marts.customer_rfm"))[0][0],)]


def test_customer_360_one_row_per_person(built):
    db = built["db"]
    persons = rows(db, "select count(*) from identity.persons")
    assert rows(db, "select count(*) from marts.customer_360") == persons
    anna = person_of(db, "shop_customers", "S-100")
    ben = person_of(db, "crm_contacts", "C-003")
    profile = rows(db, f"""
        select person_id, orders_count, revenue, preferred_channel, web_sessions, email_open_rate,
               has_email_consent, rfm_segment
        from marts.customer_360 where person_id in ('{anna}', '{ben}') order by orders_count desc""")
    assert profile[0][1:7] == (3, 100, "online", 2, 1.0, True)
    assert profile[1][1:] == (0, 0, None, 0, 0.0, False, None)  # Ben: no orders, sent not opened, opted out


def test_history_rerun_replaces(built):
    db = built["rerun_db"]
    expected = [(date(2026, 3, 20), 4), (date(2026, 3, 31), 4)]
    assert built["history_after_first"] == expected
    history = rows(db, "select as_of, count(*) from marts.customer_rfm_history group by 1 order by 1")
    assert history == expected
    anna = person_of(db, "shop_customers", "S-100")
    assert rows(db, f"select recency_days, frequency, monetary from marts.customer_rfm_history "
                    f"where person_id = '{anna}' and as_of = '2026-03-20'") == [(38, 2, 70)]


def test_marts_gate_passes_then_fails_on_broken_marts(built, tmp_path):
    ctx = RunContext(as_of=date(2026, 3, 31), home=tmp_path, run_id="run-marts")
    broken = tmp_path / "broken.duckdb"
    shutil.copyfile(built["db"], broken)
    con = duckdb.connect(str(broken))
    try:
        assert run_gate(ctx, "marts", con).success
        con.execute("insert into marts.fct_orders (order_id, person_id, channel, order_date, net_amount) "
                    "select order_id, null, 'online', order_date, net_amount from marts.fct_orders "
                    "where order_id = 'shop:O-1'")
        con.execute("update marts.customer_rfm set r_score = 6, recency_days = -1 "
                    "where person_id = (select min(person_id) from marts.customer_rfm)")
        con.execute("update marts.customer_360 set person_id = 'p_ghost' "
                    "where person_id = (select max(person_id) from marts.customer_360)")
        with pytest.raises(GateFailed) as failed:
            run_gate(ctx, "marts", con)
        failures = {r.check_id: r for r in failed.value.result.failures}
        assert set(failures) == {
            "marts.fct_orders.order_id.unique", "marts.fct_orders.person_id.not_null",
            "marts.customer_rfm.r_score.between", "marts.customer_rfm.recency_days.between",
            "marts.customer_360.person_id.references",
        }
        assert failures["marts.fct_orders.order_id.unique"].sample == ["shop:O-1"]
        assert failures["marts.fct_orders.person_id.not_null"].sample == ["shop:O-1"]
        assert failures["marts.customer_360.person_id.references"].sample == ["p_ghost"]
        assert rows_in(con, "select count(*) from audit.gate_results where run_id = 'run-marts' "
                            "and layer = 'marts' and not success") == 5
    finally:
        con.close()


def rows_in(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return con.execute(sql).fetchall()[0][0]


def test_every_mart_and_column_is_documented(built):
    import yaml

    properties = yaml.safe_load((DBT_DIR / "models" / "marts" / "_marts__models.yml").read_text())
    models = properties["models"] + properties["seeds"]  # the seed rfm_segments is a marts table too
    built_tables = {t for (t,) in rows(built["db"], "select table_name from information_schema.tables "
                                                     "where table_schema = 'marts'")}
    assert {m["name"] for m in models} == built_tables
    for model in models:
        assert model.get("description"), model["name"]
        columns = [c for (c,) in rows(built["db"], "select column_name from information_schema.columns "
                                                   f"where table_schema = 'marts' "
                                                   f"and table_name = '{model['name']}'")]
        described = {c["name"] for c in model["columns"] if c.get("description")}
        assert set(columns) == described, model["name"]
