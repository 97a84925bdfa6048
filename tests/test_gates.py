"""Gates: raw and marts suites on small hand-made warehouses, reports, audit rows, the suite registry."""

from __future__ import annotations

import json
from datetime import date

import duckdb
import pytest

from touchpoint.config import RunContext
from touchpoint.expectations import (
    GateFailed,
    UnknownSuiteError,
    register_suite,
    run_gate,
    suite_for,
    unregister_suite,
)
from touchpoint.expectations import checks as gx_checks
from touchpoint.ingest import ensure_tables

AS_OF = date(2026, 3, 31)
LOAD_1 = "2026-03-31 00:00:00"  # logical extraction time of the previous run (as of 2026-03-30)
LOAD_2 = "2026-04-01 00:00:00"  # this run's (end of the as-of day)



def make_raw(con: duckdb.DuckDBPyConnection) -> None:
    """A clean raw schema: three daily order batches of 20, valid emails, nothing after the as-of day."""
    ensure_tables(con)  # the loader's own raw schema (contracts.md §4), empty
    con.execute(f"""
        insert into raw.shop_orders
        select 'O-' || i, 'S-' || (i % 7), timestamp '2026-03-01' + to_hours(i), 10.00, 'completed', 'EUR',
               timestamp '2026-03-01' + to_hours(i), null,
               'shop_orders-2026-03-' || (29 + i % 3) || '-abc', 'orders.csv', i,
               case when i % 3 = 2 then timestamp '{LOAD_2}' else timestamp '{LOAD_1}' end
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
    assert "raw.shop_orders.order_id.not_null" in ids
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
    con.execute("delete from raw.shop_orders where _batch_id = 'shop_orders-2026-03-31-abc' "
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
    with pytest.raises(GateFailed, match=r"raw\.web_events\.event_id\.not_null: could not run"):
        run_gate(RunContext(as_of=AS_OF, home=tmp_path, run_id="r"), "raw", con)


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
    """The ML suite wraps touchpoint.ml.checks: with no ml tables the gate stops the run and says why."""
    expected = r"ml\.model_runs\.ml_tables_exist: 1 of 1 unexpected.*has not written"
    with pytest.raises(GateFailed, match=expected):
        run_gate(RunContext(as_of=AS_OF, home=tmp_path, run_id="r"), "ml", duckdb.connect())
