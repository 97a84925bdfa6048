"""Marts on the conformance extracts: the RFM numbers the kit expects, one customer_360 row per person with its
windows, consent and ML columns, idempotent history reruns, and the marts gate passing on them and failing on
broken marts.

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
from touchpoint.dbt import LAYERS, READS_ML
from touchpoint.expectations import GateFailed, run_gate
from touchpoint.ml.stage import run_ml

AS_OF = "2026-03-31"
# As a run builds them: staging, identity and marts, the ML stage, then the models that read its outputs
# (customer_360), which the marts layer leaves out.
BEFORE_ML = " ".join(selector for layer in ("staging", "identity", "marts") for selector in LAYERS[layer].select)


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
    """Build every layer on the conformance extracts as of 2026-03-31 (running the marts unit tests), with the
    ML stage before customer_360, keep a copy, then rerun the RFM models for 2026-03-20 twice to exercise the
    history table."""
    folder = tmp_path_factory.mktemp("marts")
    db = make_raw_db(folder / "warehouse.duckdb")
    dbt_build(db, AS_OF, BEFORE_ML, "--exclude", READS_ML)
    con = duckdb.connect(str(db))
    try:
        run_ml(RunContext(as_of=date.fromisoformat(AS_OF), home=folder, run_id="marts"), con)
    finally:
        con.close()
    dbt_build(db, AS_OF, READS_ML)
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


def test_customer_360_windows_end_on_the_as_of_and_consent_is_dim_consents(built):
    """Anna ordered on 2026-01-05, 02-10 and 03-30 (50, 20, 30) and browsed on 03-28 and 03-29: one order in
    the 30 days to 2026-03-31, all three in 90. Her email consent is granted, Ben's is not; every person's
    consent columns are dim_consents' email_marketing row as it is."""
    db = built["db"]
    anna = person_of(db, "shop_customers", "S-100")
    ben = person_of(db, "crm_contacts", "C-003")
    windows = rows(db, f"""
        select orders_30d, orders_90d, orders_365d, revenue_30d, revenue_90d, revenue_365d, web_sessions_30d,
               web_sessions_90d, web_sessions_365d, email_clicks_30d, email_clicks_90d, email_clicks_365d
        from marts.customer_360 where person_id = '{anna}'""")
    assert windows == [(1, 3, 3, 30, 100, 100, 2, 2, 2, 0, 0, 0)]
    consent = dict(rows(db, "select person_id, has_email_consent from marts.customer_360"))
    assert consent[anna] is True and consent[ben] is False
    assert rows(db, """
        select count(*) filter (where (c.has_email_consent, c.email_consent_state, c.email_consent_source,
                                       c.email_consent_updated_at)
                                      is distinct from (d.is_granted, d.consent_state, d.source, d.updated_at))
        from marts.customer_360 as c
        left join marts.dim_consents as d on d.person_id = c.person_id and d.purpose = 'email_marketing'""") == [(0,)]


def test_customer_360_has_customer_activity_as_it_is(built):
    """customer_activity is the part of customer_360 built before the ML stage: same persons, same values."""
    db = built["db"]
    columns = [c for (c,) in rows(db, "select column_name from information_schema.columns where "
                                      "table_schema = 'marts' and table_name = 'customer_activity'")]
    differing = ", ".join(f"count(*) filter (where c.{c} is distinct from a.{c})" for c in columns)
    assert rows(db, f"select count(*), {differing} from marts.customer_360 as c "
                    "full join marts.customer_activity as a using (person_id)") == [
        (rows(db, "select count(*) from identity.persons")[0][0], *[0] * len(columns))
    ]


def test_customer_360_ml_columns_are_null_where_a_model_was_skipped(built):
    """Five persons are too few to train any model (ml.model_runs says why): no ML value for anybody, rather
    than an earlier run's. That a scored person gets every ML column is the dbt unit test
    test_customer_360_carries_this_runs_scores_consent_and_clv_tier and the end-to-end demo run."""
    db = built["db"]
    assert rows(db, "select distinct status from ml.model_runs") == [("skipped",)]
    ml_columns = ("segment_id", "segment_name", "purchase_30d_probability", "purchase_30d_decile",
                  "churn_90d_probability", "churn_90d_decile", "clv", "clv_decile", "clv_tier", "probability_alive")
    filled = ", ".join(f"count({column})" for column in ml_columns)
    assert rows(db, f"select {filled} from marts.customer_360") == [(0,) * len(ml_columns)]


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
        # what the gate checks beyond the dbt tests (keys, codes and relationships fail the dbt layers first)
        con.execute("update marts.customer_rfm set recency_days = -1 "
                    "where person_id = (select min(person_id) from marts.customer_rfm)")
        con.execute("update marts.customer_360 set orders_count = -1 "
                    "where person_id = (select min(person_id) from marts.customer_360)")
        con.execute("update marts.customer_360 set person_id = 'p_ghost' "
                    "where person_id = (select max(person_id) from marts.customer_360)")
        with pytest.raises(GateFailed) as failed:
            run_gate(ctx, "marts", con)
        failures = {r.check_id: r for r in failed.value.result.failures}
        assert set(failures) == {
            "marts.customer_rfm.recency_days.between", "marts.customer_360.orders_count.between",
            "marts.customer_360.person_id.references",
        }
        assert failures["marts.customer_360.person_id.references"].sample == ["p_ghost"]
        assert rows_in(con, "select count(*) from audit.gate_results where run_id = 'run-marts' "
                            "and layer = 'marts' and not success") == 3
    finally:
        con.close()


def rows_in(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return con.execute(sql).fetchall()[0][0]


def test_every_mart_and_column_is_documented(built):
    import yaml

    models = []  # every properties file of the marts folder and its subfolders (journeys); seeds are marts tables too
    for path in sorted((DBT_DIR / "models" / "marts").rglob("_*__models.yml")):
        properties = yaml.safe_load(path.read_text())
        models += properties.get("models", []) + properties.get("seeds", [])
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
