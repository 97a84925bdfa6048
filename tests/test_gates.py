"""Gates: raw, marts and ML suites on small hand-made warehouses, reports, audit rows, the suite registry."""

from __future__ import annotations

import json
import re
from datetime import date

import duckdb
import numpy as np
import pytest
import yaml

from touchpoint.config import RunContext, dbt_project_dir
from touchpoint.expectations import (
    GateFailed,
    UnknownSuiteError,
    register_suite,
    run_gate,
    suite_for,
    unregister_suite,
)
from touchpoint.expectations import checks as gx_checks
from touchpoint.expectations.suites import ml as ml_suite
from touchpoint.ingest import ensure_tables

AS_OF = date(2026, 3, 31)
LOAD_1 = "2026-03-31 00:00:00"  # logical extraction time of the previous run (as of 2026-03-30)
LOAD_2 = "2026-04-01 00:00:00"  # this run's (end of the as-of day)



def make_raw(con: duckdb.DuckDBPyConnection) -> None:
    """A clean raw schema: three daily order batches of 20, valid emails, nothing after the as-of day.

    Batch ids are opaque: the gate reads the extract day from the loader's `_extract_date` column."""
    ensure_tables(con)  # the loader's own raw schema (contracts.md §4), empty
    con.execute(f"""
        insert into raw.shop_orders
        select 'O-' || i, 'S-' || (i % 7), timestamp '2026-03-01' + to_hours(i), 10.00, 'completed', 'EUR',
               timestamp '2026-03-01' + to_hours(i), null, 'batch-' || (i % 3), 'orders.csv', i,
               case when i % 3 = 2 then timestamp '{LOAD_2}' else timestamp '{LOAD_1}' end,
               date '2026-03-29' + (i % 3)::integer
        from range(1, 61) as t(i)""")
    con.execute(f"""
        insert into raw.crm_contacts (contact_id, email, updated_at, _source_file, _row_number, _extracted_at)
        select 'C-' || i, 'person' || i || '@example.com', timestamp '2026-03-01', 'contacts.csv', i,
               timestamp '{LOAD_2}'
        from range(1, 21) as t(i)""")
    con.execute(f"""
        insert into raw.pos_transactions (transaction_id, purchased_at, total_amount, email, _source_file,
                                          _row_number, _extracted_at)
        values ('P-1', '2026-03-15 16:00', 42.50, null, 'pos.csv', 1, '{LOAD_2}')""")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> RunContext:
    return RunContext(as_of=AS_OF, home=tmp_path_factory.mktemp("home"), run_id="run-gates")


@pytest.fixture(scope="module")
def clean_raw():
    con = duckdb.connect()
    make_raw(con)
    yield con
    con.close()


@pytest.fixture(scope="module")
def clean_gate(ctx, clean_raw):
    return run_gate(ctx, "raw", clean_raw)


def test_clean_raw_passes_and_records(ctx, clean_raw, clean_gate):
    assert clean_gate.success, clean_gate.summary()
    assert not clean_gate.failures
    ids = {r.check_id for r in clean_gate.results}
    assert "raw.shop_orders.customer_id.not_null" in ids
    assert "raw.shop_orders.order_id.not_null" not in ids  # a dbt source test holds it (see below)
    assert "raw.shop_orders.columns_exist" in ids
    assert "raw.shop_orders.volume_vs_previous_batch" in ids
    assert "raw.crm_contacts.email.matches_regex" in ids
    rows = clean_raw.execute(
        "select count(*), bool_and(success) from audit.gate_results where run_id = ? and layer = 'raw'",
        [ctx.run_id]).fetchall()
    assert rows == [(len(clean_gate.results), True)]
    volume = next(r for r in clean_gate.results if r.check_id == "raw.shop_orders.volume_vs_previous_batch")
    assert volume.element_count == 1 and volume.unexpected_count == 0


def test_reports_are_readable(clean_gate):
    data = json.loads(clean_gate.reports["json"].read_text())
    assert data["success"] is True and data["layer"] == "raw"
    assert data["gx_validation"]["statistics"]["evaluated_expectations"] == len(clean_gate.results)
    assert "Gate `raw` passed" in clean_gate.reports["md"].read_text()
    assert "<table>" in clean_gate.reports["html"].read_text()


def test_broken_raw_fails_naming_counts_and_samples(ctx, tmp_path):
    con = duckdb.connect()
    make_raw(con)
    # a null key, a flood of bad emails, a date far in the future, and a load far smaller than the last;
    # the date is not the raw gate's business (rows after the as-of are "not yet"; the loader judges clocks)
    con.execute("update raw.shop_orders set customer_id = null where order_id = 'O-3'")
    con.execute("update raw.crm_contacts set email = 'not an email ' || contact_id where contact_id < 'C-2'")
    con.execute("update raw.shop_orders set ordered_at = timestamp '2031-01-01' where order_id = 'O-5'")
    con.execute("delete from raw.shop_orders where _extract_date = date '2026-03-31' "
                "and order_id not in ('O-2', 'O-5', 'O-8')")
    run_ctx = RunContext(as_of=AS_OF, home=tmp_path, run_id="run-broken")
    with pytest.raises(GateFailed) as failed:
        run_gate(run_ctx, "raw", con)
    result = failed.value.result
    message = str(failed.value)
    by_id = {r.check_id: r for r in result.failures}
    assert set(by_id) == {
        "raw.shop_orders.customer_id.not_null",
        "raw.crm_contacts.email.matches_regex",
        "raw.shop_orders.volume_vs_previous_batch",
    }
    assert by_id["raw.shop_orders.customer_id.not_null"].unexpected_count == 1
    assert by_id["raw.shop_orders.customer_id.not_null"].sample == ["orders.csv:3"]
    assert by_id["raw.crm_contacts.email.matches_regex"].unexpected_count == 11  # C-1, C-10..C-19 of 20
    assert "not an email C-1" in by_id["raw.crm_contacts.email.matches_regex"].sample
    assert by_id["raw.shop_orders.volume_vs_previous_batch"].sample == [
        "batch 2026-03-31: 3 rows, reference 2026-03-30..2026-03-30: 20.0"]
    assert not result.warnings
    for check_id in by_id:
        assert check_id in message
    assert "customer_id.not_null: 1 of 43 unexpected" in message
    assert result.reports["md"].exists() and "FAIL" in result.reports["md"].read_text()
    recorded = con.execute("select expectation, \"column\", unexpected_count, sample from audit.gate_results "
                           "where run_id = 'run-broken' and not success and severity = 'critical' "
                           "order by all").fetchall()
    assert len(recorded) == 3
    assert ("not_null", "customer_id", 1, '["orders.csv:3"]') in recorded


def test_email_share_within_tolerance_passes(ctx, tmp_path):
    con = duckdb.connect()
    make_raw(con)
    con.execute("update raw.crm_contacts set email = 'broken' where contact_id = 'C-1'")  # 1 of 20 = 5%
    result = run_gate(RunContext(as_of=AS_OF, home=tmp_path, run_id="r"), "raw", con)
    email = next(r for r in result.results if r.check_id == "raw.crm_contacts.email.matches_regex")
    assert result.success and email.success and email.unexpected_count == 1


def test_a_third_of_bad_emails_fails_the_default_share(ctx, tmp_path):
    """6 of 20 broken (70% valid): under the default 0.9 share, though a gate relaxed to 0.5 would pass it."""
    con = duckdb.connect()
    make_raw(con)
    con.execute("update raw.crm_contacts set email = 'no-at-sign ' || contact_id "
                "where contact_id in ('C-1', 'C-2', 'C-3', 'C-4', 'C-5', 'C-6')")
    with pytest.raises(GateFailed) as failed:
        run_gate(RunContext(as_of=AS_OF, home=tmp_path, run_id="r"), "raw", con)
    failures = {r.check_id: r for r in failed.value.result.failures}
    assert set(failures) == {"raw.crm_contacts.email.matches_regex"}
    assert failures["raw.crm_contacts.email.matches_regex"].unexpected_count == 6


def test_missing_raw_table_fails_clearly(tmp_path):
    con = duckdb.connect()
    make_raw(con)
    con.execute("drop table raw.web_events")
    con.execute("alter table raw.shop_products drop column _extract_date")
    with pytest.raises(GateFailed) as failed:
        run_gate(RunContext(as_of=AS_OF, home=tmp_path, run_id="r"), "raw", con)
    failures = {r.check_id: r for r in failed.value.result.failures}
    assert failures["raw.web_events.columns_exist"].unexpected_count == 16  # 11 contract + 5 load metadata
    assert failures["raw.shop_products.columns_exist"].sample == ["_extract_date"]
    assert "raw.web_events.occurred_at.not_null: could not run" in str(failed.value)


def dbt_tests(kind: str) -> dict[tuple[str, str], set[str]]:
    """(schema.table, column) -> dbt test names, from the project's `_*__<kind>.yml` files (sources or models)."""
    tested: dict[tuple[str, str], set[str]] = {}
    for path in (dbt_project_dir() / "models").rglob(f"_*__{kind}.yml"):
        for node in yaml.safe_load(path.read_text())[kind]:
            tables = [(node.get("schema", node["name"]), t) for t in node.get("tables", [])] if kind == "sources" \
                else [(path.relative_to(dbt_project_dir() / "models").parts[0], node)]  # marts/journeys: marts
            for schema, table in tables:
                for column in table.get("columns") or []:
                    names = {t if isinstance(t, str) else next(iter(t)) for t in column.get("data_tests") or []}
                    tested.setdefault((f"{schema}.{table['name']}", column["name"]), set()).update(names)
    return tested


# A gate check and the dbt tests that assert the same thing.
SAME_AS_DBT = {"not_null": {"not_null"}, "unique": {"unique"}, "references": {"relationships"},
               "in_set": {"accepted_values"}, "between": {"accepted_values"}}


@pytest.mark.parametrize("layer", ["raw", "marts", "ml"])
def test_gates_assert_nothing_a_dbt_test_asserts(ctx, layer):
    """dbt tests own structure (keys, not null, relationships, accepted values); a gate never repeats one."""
    tested = {**dbt_tests("sources"), **dbt_tests("models")}
    assert tested[("raw.shop_orders", "order_id")] == {"not_null"}  # the parser reads the project
    assert tested[("marts.fct_orders", "channel")] == {"not_null", "accepted_values"}
    con = duckdb.connect()
    con.execute("create schema ml")
    for table in ml_suite.TABLES:  # the ML suite lists its checks once the ML stage has written
        con.execute(f"create table ml.{table} (person_id varchar)")
    suite = suite_for(layer)(ctx, con)
    assert len(suite) > 5
    repeated = [c.check_id for c in suite
                if c.column and SAME_AS_DBT.get(c.name, set()) & tested.get((c.table, c.column), set())]
    assert repeated == []


def test_rerun_replaces_audit_rows(ctx, clean_raw, clean_gate):
    run_gate(ctx, "raw", clean_raw)
    n = clean_raw.execute("select count(*) from audit.gate_results where run_id = ?", [ctx.run_id]).fetchall()
    assert n == [(len(clean_gate.results),)]


def test_volume_tolerance_is_symmetric_and_configurable():
    con = duckdb.connect()
    con.execute("create table t as select * from (values (1, 'a'), (2, 'b'), (2, 'c'), (3, 'd')) v(batch, x)")
    tolerant = gx_checks.volume_vs_previous_batch("t", 0.5, batch_key="batch")  # half to double
    strict = gx_checks.volume_vs_previous_batch("t", 0.4, batch_key="batch")
    assert gx_checks.measure(con, tolerant).unexpected_count == 0
    assert gx_checks.measure(con, strict).unexpected_count == 1
    # the first batch is a backlog, never the reference: with two batches there is nothing to compare
    con.execute("delete from t where batch = 3")
    vacuous = gx_checks.measure(con, gx_checks.volume_vs_previous_batch("t", 0.0, batch_key="batch"))
    assert (vacuous.element_count, vacuous.unexpected_count) == (0, 0)
    first_too = gx_checks.volume_vs_previous_batch("t", 0.0, batch_key="batch", skip_first=False)
    assert gx_checks.measure(con, first_too).unexpected_count == 1
    with pytest.raises(ValueError):
        gx_checks.volume_vs_previous_batch("t", 1.0)


def test_volume_reference_is_the_same_weekday():
    """A weekly email campaign: Tuesdays bring thousands of rows, other days a handful. Not an anomaly."""
    con = duckdb.connect()
    con.execute("create table t (batch varchar, n integer)")
    days = [(f"2026-06-{day:02d}", 2500 if day % 7 == 2 else 6) for day in range(1, 31)]  # Tuesdays: 2, 9, ...
    con.execute("create table e as select d.batch from (values " + ", ".join(f"('{b}', {n})" for b, n in days)
                + ") d(batch, n), range(0, 3000) r(i) where r.i < d.n")
    check = gx_checks.volume_vs_previous_batch("e", 0.8, batch_key="batch")
    assert gx_checks.measure(con, check).unexpected_count == 0  # 2026-06-30 is a Tuesday
    con.execute("delete from e where batch = '2026-06-30' and rowid % 10 <> 0")  # the campaign mostly missing
    assert gx_checks.measure(con, check).unexpected_count == 1
    tiny = gx_checks.volume_vs_previous_batch("e", 0.8, batch_key="batch", min_rows=5000)
    assert gx_checks.measure(con, tiny).element_count == 0


def test_ml_layer_extension_point(tmp_path):
    """A layer's suite is found by name; until the ML suite module exists the error says what to add."""
    with pytest.raises(UnknownSuiteError, match=r"add expectations/suites/churn\.py defining build_suite"):
        suite_for("churn")
    assert suite_for("raw").__module__ == "touchpoint.expectations.suites.raw"
    assert suite_for("ml").__module__ == "touchpoint.expectations.suites.ml"
    con = duckdb.connect()
    con.execute("create schema ml; create table ml.customer_clv as select 'p1' as person_id, -5.0 as clv")

    @register_suite("ml_test")
    def build(ctx, con):
        return [gx_checks.not_null("ml.customer_clv", "person_id"),
                gx_checks.between("ml.customer_clv", "clv", min_value=0)]

    try:
        with pytest.raises(GateFailed, match=r"ml\.customer_clv\.clv\.between: 1 of 1 unexpected"):
            run_gate(RunContext(as_of=AS_OF, home=tmp_path, run_id="r"), "ml_test", con)
    finally:
        unregister_suite("ml_test")


def test_gx_stays_quiet(ctx, clean_raw, caplog):
    """GX logs hundreds of INFO lines by default; a gate run must not add any to the pipeline log."""
    import logging

    caplog.set_level(logging.INFO)
    run_gate(ctx, "raw", clean_raw)
    assert [r for r in caplog.records if r.name.startswith("great_expectations")
            and r.levelno < logging.WARNING] == []


def test_ml_gate_fails_before_the_ml_stage_wrote(tmp_path):
    """With no ml tables the ML gate stops the run, says why, and runs nothing that could not run."""
    expected = r"ml\.tables_exist: 4 of 4 unexpected; e\.g\. \"ml\.customer_clv is missing: the ML stage has not"
    with pytest.raises(GateFailed, match=expected) as failed:
        run_gate(RunContext(as_of=AS_OF, home=tmp_path, run_id="r"), "ml", duckdb.connect())
    assert [r.check_id for r in failed.value.result.results] == ["ml.tables_exist"]


def psi_reference(previous: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """Population stability index as numpy computes it: bins at the previous values' quantiles, outer bins
    open-ended, empty bins as a share of 1e-4."""
    edges = np.unique(np.quantile(previous, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return 0.0 if np.allclose(current, previous[0]) else float("inf")
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.clip(np.histogram(previous, edges)[0] / len(previous), 1e-4, None)
    actual = np.clip(np.histogram(current, edges)[0] / len(current), 1e-4, None)
    return float(((actual - expected) * np.log(actual / expected)).sum())


def ml_scores(con: duckdb.DuckDBPyConnection, day: str, purchase: list[float], clv: list[float]) -> None:
    con.execute("create schema if not exists ml")
    con.execute("create table if not exists ml.customer_propensity (person_id varchar, as_of date, "
                "purchase_30d_probability double, churn_90d_probability double)")
    con.execute("create table if not exists ml.customer_clv (person_id varchar, as_of date, clv double)")
    con.executemany("insert into ml.customer_propensity values (?, ?, ?, 0.5)",
                    [[f"p{i}", day, v] for i, v in enumerate(purchase)])
    con.executemany("insert into ml.customer_clv values (?, ?, ?)", [[f"p{i}", day, v] for i, v in enumerate(clv)])


def drift(con: duckdb.DuckDBPyConnection, column: str, day: date, max_psi: float = 0.25) -> tuple[int, int, float]:
    """(compared, drifted, psi) of the ML suite's drift check on `column` as of `day`."""
    table = "ml.customer_clv" if column == "clv" else "ml.customer_propensity"
    check = ml_suite.drift_psi(table, column, f"date '{day}'", max_psi)
    measured = gx_checks.measure(con, check)
    shown = con.execute(check.sample_sql).fetchall()
    psi = float(re.match(r"psi (\S+)", shown[0][0]).group(1)) if shown else float("nan")
    return measured.element_count, measured.unexpected_count, psi


def test_ml_drift_is_the_population_stability_index_against_the_previous_as_of():
    rng = np.random.default_rng(7)
    before, same, shifted = rng.beta(2, 5, 400), rng.beta(2, 5, 300), rng.beta(5, 2, 300)
    con = duckdb.connect()
    ml_scores(con, "2026-05-31", list(before), [10.0] * 400)  # CLV all alike before
    ml_scores(con, "2026-06-30", list(same), [10.0] * 299 + [11.0])
    assert drift(con, "purchase_30d_probability", date(2026, 5, 31))[:2] == (0, 0)  # nothing earlier to compare
    compared, drifted, psi = drift(con, "purchase_30d_probability", date(2026, 6, 30))
    assert (compared, drifted) == (1, 0) and psi == pytest.approx(psi_reference(before, same), abs=1e-4)
    assert drift(con, "churn_90d_probability", date(2026, 6, 30)) == (1, 0, 0.0)
    assert drift(con, "clv", date(2026, 6, 30))[:2] == (1, 1)  # all equal before, one differs now: infinite
    ml_scores(con, "2026-07-31", list(shifted), [10.0] * 300)
    compared, drifted, psi = drift(con, "purchase_30d_probability", date(2026, 7, 31))
    assert (compared, drifted) == (1, 1) and psi > 1
    assert psi == pytest.approx(psi_reference(same, shifted), abs=1e-4)  # against 06-30, not 05-31
