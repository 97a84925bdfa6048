"""Bring-your-own extracts: conformance set, bad input, row accounting, idempotent reruns."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

from touchpoint.config import RunContext
from touchpoint.ingest import ENTITIES, SOURCES, RowAccountingError, extract_source, load_pending

FIXTURES = Path(__file__).parent / "fixtures"


def _run(ctx: RunContext, con: duckdb.DuckDBPyConnection, sources=SOURCES):
    extracts = {source: extract_source(ctx, source) for source in sources}
    return extracts, load_pending(ctx, con)


def _ctx(
    tmp_path: Path, extracts: Path, as_of: date = date(2026, 3, 31), run_id: str = "run-1"
) -> RunContext:
    return RunContext(as_of=as_of, home=tmp_path / "home", run_id=run_id, extracts_dir=extracts)


@pytest.fixture
def con(tmp_path):
    connection = duckdb.connect(str(tmp_path / "work.duckdb"))
    yield connection
    connection.close()


def _quarantine(con, entity):
    return con.execute(
        "select row_number, column_name, reason, raw_record from audit.quarantine where entity = ? "
        "order by source_file, row_number",
        [entity],
    ).fetchall()


def test_conformance_extracts(tmp_path, con):
    ctx = _ctx(tmp_path, FIXTURES / "extracts_conformance")
    extracts, loaded = _run(ctx, con)
    assert all(not r.errors for r in extracts.values())

    # every contract entity has a raw table, even those absent from the extracts
    for entity in ENTITIES:
        con.execute(f"select * from raw.{entity} limit 0")
    assert con.execute("select count(*) from raw.shop_order_items").fetchone()[0] == 0

    contacts = _quarantine(con, "crm_contacts")
    assert [(row, col) for row, col, _, _ in contacts] == [(5, "contact_id")]
    assert json.loads(contacts[0][3])["last_name"] == "Withoutid"
    orders = _quarantine(con, "shop_orders")
    assert [(row, col) for row, col, _, _ in orders] == [(7, "total_amount")]
    assert "abc" in orders[0][2]

    # staging applies the as-of date for bring-your-own files: the later order is still in raw
    later = con.execute(
        "select ordered_at, total_amount from raw.shop_orders where order_id = 'O-6'"
    ).fetchone()
    assert str(later[0]) == "2026-04-02 09:00:00" and str(later[1]) == "999.00"
    assert loaded.counts("shop_orders").rows_loaded == 6
    assert loaded.rows_read == loaded.rows_loaded + loaded.rows_quarantined == 21

    # BYO files land under the source names of their entities
    landed = sorted(p.relative_to(ctx.paths.landing).parts[:2] for p in ctx.paths.landing.rglob("*.parquet"))
    assert ("shop", "shop_orders") in landed and ("web", "web_events") in landed
    assert all(part[0] != "byo" for part in landed)


def _tricky(tmp_path: Path) -> Path:
    """The hand-made tricky extracts plus a Parquet file built here (typed columns, an extra column)."""
    extracts = tmp_path / "extracts"
    shutil.copytree(FIXTURES / "extracts_tricky", extracts)
    duckdb.execute(
        f"""copy (select * from (values
                ('O-1', 'S-1', timestamp '2026-03-01 10:00:00', 12.50::decimal(18,2), 'completed', 'web'),
                ('O-2', 'S-1', timestamp '2026-03-02 11:00:00', -3.00::decimal(18,2), 'refunded', 'app'),
                ('O-3', null, timestamp '2026-03-03 12:00:00', 1.00::decimal(18,2), 'placed', 'app')
            ) t(order_id, customer_id, ordered_at, total_amount, status, app_channel))
            to '{extracts / "shop_orders.parquet"}' (format parquet)"""
    )
    return extracts


def test_tricky_extracts(tmp_path, con):
    ctx = _ctx(tmp_path, _tricky(tmp_path))
    extracts, loaded = _run(ctx, con)

    # a missing required column fails that entity only, naming the file and the column
    shop_errors = extracts["shop"].errors
    assert len(shop_errors) == 1 and shop_errors[0].entity == "shop_customers"
    assert "shop_customers.csv" in shop_errors[0].error and "customer_id" in shop_errors[0].error
    # an unknown layout fails that entity only
    assert [e.source_file for e in extracts["pos"].errors] == ["pos_transactions.xlsx"]
    recorded = con.execute(
        "select source, entity, source_file from audit.extract_errors order by 1"
    ).fetchall()
    assert recorded == [
        ("pos", "pos_transactions", "pos_transactions.xlsx"),
        ("shop", "shop_customers", "shop_customers.csv"),
    ]
    assert con.execute("select count(*) from raw.shop_customers").fetchone()[0] == 0

    contacts = {row: (col, reason) for row, col, reason, _ in _quarantine(con, "crm_contacts")}
    assert set(contacts) == {2, 3, 4, 5, 6}
    assert "INVALID ENCODING" in contacts[2][1]
    assert contacts[3][0] == "birth_date" and "1990-13-45" in contacts[3][1]
    assert contacts[4][0] == "email_opt_in"
    assert contacts[5][0] == "contact_id" and "first seen at row 1" in contacts[5][1]
    assert contacts[6][0] == "updated_at" and "yesterday" in contacts[6][1]
    anna = con.execute("select email_opt_in, updated_at, _extra from raw.crm_contacts").fetchall()
    assert anna == [(True, __import__("datetime").datetime(2026, 1, 2, 7, 0), '{"loyalty_tier":"gold"}')]

    items = {row: (col, reason) for row, col, reason, _ in _quarantine(con, "shop_order_items")}
    assert items[2][0] == "quantity"
    assert items[3][0] == "order_id" and "order_id=O-1, line_number=1" in items[3][1]
    assert "TOO MANY COLUMNS" in items[4][1]
    assert set(items) == {2, 3, 4}
    assert con.execute("select count(*) from raw.shop_order_items").fetchone()[0] == 2

    events = {row: (col, reason) for row, col, reason, _ in _quarantine(con, "web_events")}
    assert events[2][1] == "malformed JSON line" and events[4][1] == "JSON line is not an object"
    assert events[5][0] == "occurred_at"
    assert set(events) == {2, 4, 5}  # the blank line 3 is not a record
    web = con.execute(
        "select event_id, occurred_at, customer_id, _extra, _row_number from raw.web_events order by 1"
    ).fetchall()
    assert [(w[0], str(w[1]), w[2], w[4]) for w in web] == [
        ("W-1", "2026-03-01 10:00:00", None, 1),
        ("W-5", "2026-03-01 17:00:00", "42", 6),
    ]
    assert json.loads(web[0][3]) == {"utm": '{"source":"x"}'}

    # folder of files: each file is a batch; header names are matched ignoring case and spaces
    email = con.execute("select event_id, _source_file from raw.email_events order by 1").fetchall()
    assert email == [("E-1", "email_events/part-1.csv"), ("E-3", "email_events/part-2.csv")]
    assert [(c, r) for _, c, r, _ in _quarantine(con, "email_events")] == [
        ("email", "email: empty required value")
    ]

    # parquet input: typed values are read back as text and re-typed; extra columns kept
    orders = con.execute("select order_id, total_amount, _extra from raw.shop_orders order by 1").fetchall()
    assert [(o[0], str(o[1])) for o in orders] == [("O-1", "12.50"), ("O-2", "-3.00")]
    assert json.loads(orders[0][2]) == {"app_channel": "web"}
    assert [(r, c) for r, c, _, _ in _quarantine(con, "shop_orders")] == [(3, "customer_id")]

    # nothing lost: per batch and in total, read = loaded + quarantined
    bad = con.execute(
        "select count(*) from audit.load_batches where rows_read <> rows_loaded + rows_quarantined"
    ).fetchone()[0]
    assert bad == 0
    raw_rows = sum(con.execute(f"select count(*) from raw.{e}").fetchone()[0] for e in ENTITIES)
    quarantined = con.execute("select count(*) from audit.quarantine").fetchone()[0]
    assert loaded.rows_loaded == raw_rows and loaded.rows_quarantined == quarantined
    assert loaded.rows_read == raw_rows + quarantined == sum(r.rows for r in extracts.values())


def _snapshot(con) -> dict[str, list]:
    tables = [f"raw.{e}" for e in ENTITIES] + ["audit.quarantine", "audit.load_batches"]
    return {t: sorted(map(repr, con.execute(f"select * from {t}").fetchall())) for t in tables}


def test_rerun_is_idempotent(tmp_path, con):
    ctx = _ctx(tmp_path, _tricky(tmp_path))
    _run(ctx, con)
    first = _snapshot(con)
    extracts, loaded = _run(ctx, con)
    assert all(not r.batches for r in extracts.values())
    assert loaded.batches == []
    assert _snapshot(con) == first

    # reloading every batch replaces rows instead of appending them
    reloaded = load_pending(ctx, con, reload=True)
    assert len(reloaded.batches) == len(first["audit.load_batches"])
    assert _snapshot(con) == first

    # a second home with the same inputs and as-of date gives identical contents (no wall clock)
    other = duckdb.connect(str(tmp_path / "other.duckdb"))
    _run(
        RunContext(as_of=ctx.as_of, home=tmp_path / "home2", run_id="run-x", extracts_dir=ctx.extracts_dir),
        other,
    )
    assert _snapshot(other) == first
    other.close()


def test_changed_file_lands_as_new_batch(tmp_path, con):
    extracts = tmp_path / "extracts"
    shutil.copytree(FIXTURES / "extracts_conformance", extracts)
    ctx = _ctx(tmp_path, extracts)
    _run(ctx, con)
    with open(extracts / "pos_transactions.csv", "a") as handle:
        handle.write("P-2,2026-03-31T10:00:00Z,-5.00,MUC-1,,,\n")
    extracts_2, loaded = _run(_ctx(tmp_path, extracts, run_id="run-2"), con)
    assert [b.entity for r in extracts_2.values() for b in r.batches] == ["pos_transactions"]
    assert loaded.counts("pos_transactions").rows_loaded == 2
    rows = con.execute(
        "select transaction_id, count(*) from raw.pos_transactions group by 1 order by 1"
    ).fetchall()
    assert rows == [("P-1", 2), ("P-2", 1)]  # raw keeps versions per batch; staging keeps the latest


def test_single_entity_only(tmp_path, con):
    extracts = tmp_path / "extracts"
    extracts.mkdir()
    shutil.copy(FIXTURES / "extracts_conformance" / "shop_orders.csv", extracts)
    _, loaded = _run(_ctx(tmp_path, extracts), con)
    assert set(loaded.entities) == {"shop_orders"}
    for entity in ENTITIES:
        count = con.execute(f"select count(*) from raw.{entity}").fetchone()[0]
        assert (count > 0) == (entity == "shop_orders")


def test_unknown_source_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown source"):
        extract_source(_ctx(tmp_path, FIXTURES / "extracts_conformance"), "byo")


def test_row_accounting_mismatch_raises_and_rolls_back(tmp_path, con):
    ctx = _ctx(tmp_path, FIXTURES / "extracts_conformance")
    _run(ctx, con)
    before = _snapshot(con)
    manifest = next((ctx.paths.state / "ingest" / "batches").glob("shop_orders-*.json"))
    payload = json.loads(manifest.read_text())
    payload["rows"] += 1  # the landing file no longer matches what extraction counted
    manifest.write_text(json.dumps(payload))
    with pytest.raises(RowAccountingError, match="shop_orders"):
        load_pending(ctx, con, reload=True)
    assert _snapshot(con)["raw.shop_orders"] == before["raw.shop_orders"]
