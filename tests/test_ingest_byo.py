"""Bring-your-own extracts: conformance set, bad input, row accounting, idempotent reruns."""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from datetime import date
from pathlib import Path

import duckdb
import pytest

from touchpoint.config import RunContext
from touchpoint.ingest import ENTITIES, SOURCES, RowAccountingError, extract_source, load_pending
from touchpoint.ingest.batches import ensure_batch_tables

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


def test_raw_rows_carry_their_extract_date(tmp_path, con):
    """`_extract_date` is the batch's extract date (audit.load_batches); a raw or held table written before the
    column existed gets it, filled from the batch records, the next time the loader opens the warehouse."""
    ctx = _ctx(tmp_path, FIXTURES / "extracts_conformance")
    _run(ctx, con)
    mismatched = (
        "select count(*) from raw.{entity} as loaded left join audit.load_batches as batches "
        "on batches.batch_id = loaded._batch_id where loaded._extract_date is distinct from batches.extract_date"
    )
    on_the_day = "select count(*) from {table} where _extract_date = date '2026-03-31'"
    assert con.execute(on_the_day.format(table="raw.shop_orders")).fetchone() == (6,)
    for entity in ENTITIES:
        assert con.execute(mismatched.format(entity=entity)).fetchone()[0] == 0

    con.execute("create schema held")
    con.execute("create table held.shop_orders as select * from raw.shop_orders")
    before = _snapshot(con)
    for table in ("raw.shop_orders", "raw.crm_contacts", "held.shop_orders"):
        con.execute(f"alter table {table} drop column _extract_date")
    ensure_batch_tables(con)
    assert _snapshot(con) == before
    assert [row[0] for row in con.execute("describe held.shop_orders").fetchall()][-1] == "_extract_date"
    assert con.execute(on_the_day.format(table="held.shop_orders")).fetchone() == (6,)


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


def _mentions(con: duckdb.DuckDBPyConnection, text: str, relation: str) -> int:
    """Rows of `relation` (a table or a table function) with `text` in any column."""
    query = f"select count(*) from {relation} as r where contains(cast(r as varchar), ?)"
    return con.execute(query, [text]).fetchone()[0]


def _feed_fifo(fifo: Path, line: str, stop: threading.Event) -> threading.Thread:
    """Write `line` into `fifo` each time a reader opens it, until `stop`: a regression that reads the FIFO
    gets the secret (and fails the test) instead of hanging."""

    def feed() -> None:
        while not stop.is_set():
            try:
                with open(fifo, "w") as handle:  # blocks until a reader opens the FIFO
                    handle.write(line)
            except BrokenPipeError:  # the reader closed first: nothing was read
                pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    return writer


def test_links_and_special_files_are_refused_not_read(tmp_path, con):
    secret = f"SECRET-{uuid.uuid4().hex}"
    outside = tmp_path / "outside"
    (outside / "email").mkdir(parents=True)
    event = {"event_id": secret, "occurred_at": "2026-03-01T10:00:00Z", "event_type": "page_view", "page_url": secret}
    (outside / "events.jsonl").write_text(json.dumps(event) + "\n")
    (outside / "email" / "part-1.csv").write_text(
        f"event_id,occurred_at,email,event_type\n{secret},2026-03-01,{secret}@x.io,open\n"
    )
    extracts = tmp_path / "extracts"
    shutil.copytree(FIXTURES / "extracts_conformance", extracts)
    (extracts / "web_events.jsonl").unlink()
    (extracts / "web_events.jsonl").symlink_to(outside / "events.jsonl")  # a file outside the extracts
    (extracts / "email_events").symlink_to(outside / "email")  # a folder outside
    (extracts / "pos_transactions").mkdir()
    (extracts / "pos_transactions" / "copy.csv").symlink_to(extracts / "pos_transactions.csv")  # even inside
    (extracts / "crm_contacts").mkdir()
    os.mkfifo(extracts / "crm_contacts" / "feed.csv")
    stop = threading.Event()
    writer = _feed_fifo(extracts / "crm_contacts" / "feed.csv", f"contact_id,email\n{secret},{secret}@x.io\n", stop)
    try:
        ctx = _ctx(tmp_path, extracts)
        extracts_run, loaded = _run(ctx, con)
    finally:  # release the writer waiting for a reader
        stop.set()
        os.close(os.open(extracts / "crm_contacts" / "feed.csv", os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=5)

    refused = {e.source_file: e.error for result in extracts_run.values() for e in result.errors}
    assert set(refused) == {"web_events.jsonl", "email_events", "pos_transactions/copy.csv", "crm_contacts/feed.csv"}
    assert refused["web_events.jsonl"].startswith("web_events.jsonl: a symbolic link, not read")
    assert refused["email_events"].startswith("email_events: a symbolic link, not read")
    assert refused["pos_transactions/copy.csv"].startswith("pos_transactions/copy.csv: a symbolic link, not read")
    assert refused["crm_contacts/feed.csv"].startswith("crm_contacts/feed.csv: a FIFO, not read")
    recorded = con.execute("select entity, source_file from audit.extract_errors order by 1").fetchall()
    assert recorded == [
        ("crm_contacts", "crm_contacts/feed.csv"),
        ("email_events", "email_events"),
        ("pos_transactions", "pos_transactions/copy.csv"),
        ("web_events", "web_events.jsonl"),
    ]
    # the entities' regular files and the other entities go on
    assert {b.source_file for b in loaded.batches} == {
        "crm_contacts.csv", "email_events.csv", "pos_transactions.csv", "shop_customers.csv", "shop_orders.csv"
    }
    assert loaded.counts("pos_transactions").rows_read == 1

    # the secret reached neither landing, nor state, nor any warehouse table
    for path in ctx.paths.home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    landed = [str(p) for p in ctx.paths.landing.rglob("*.parquet")]
    assert _mentions(con, secret, f"read_parquet({landed!r}, union_by_name = true)") == 0
    for schema, table in con.execute("select schema_name, table_name from duckdb_tables()").fetchall():
        assert _mentions(con, secret, f'"{schema}"."{table}"') == 0, f"{schema}.{table}"


def test_empty_files_are_reported_as_empty(tmp_path, con):
    extracts = tmp_path / "extracts"
    extracts.mkdir()
    (extracts / "crm_contacts.csv").write_bytes(b"")
    (extracts / "shop_customers.csv").write_bytes(b"\n")
    (extracts / "shop_orders.parquet").write_bytes(b"")
    (extracts / "web_events.jsonl").write_bytes(b"")  # JSON lines: no line is no record, not an error
    shutil.copy(FIXTURES / "extracts_conformance" / "pos_transactions.csv", extracts)
    extracts_run, loaded = _run(_ctx(tmp_path, extracts), con)

    errors = {e.source_file: e.error for result in extracts_run.values() for e in result.errors}
    assert errors == {
        "crm_contacts.csv": "crm_contacts.csv: empty file (0 bytes), expected a header row",
        "shop_customers.csv": "shop_customers.csv: empty file (1 bytes), expected a header row",
        "shop_orders.parquet": "shop_orders.parquet: empty file (0 bytes), expected Parquet data",
    }
    assert con.execute("select count(*) from audit.extract_errors where error like '%empty file%'").fetchone()[0] == 3
    assert loaded.counts("web_events").rows_read == 0 and loaded.counts("pos_transactions").rows_loaded == 1
