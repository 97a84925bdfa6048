"""Demo source systems: incremental cursors, daily files, as-of bounds, advancing a day."""

from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

import duckdb
import pytest

from touchpoint.config import RunContext
from touchpoint.ingest import SOURCES, extract_source, load_pending


def _build_systems(systems: Path) -> None:
    """A tiny shop database and daily files for 2026-03-01 .. 2026-03-03."""
    systems.mkdir(parents=True)
    shop = sqlite3.connect(systems / "shop.sqlite")
    shop.executescript(
        """
        create table customers (customer_id integer primary key, email text, first_name text, last_name text,
            created_at text, updated_at text);
        create table orders (order_id integer primary key, customer_id integer, ordered_at text,
            total_amount real, status text, currency text, updated_at text);
        create table order_items (order_id integer, line_number integer, product_id text, quantity integer,
            unit_price real);
        create table products (product_id text primary key, name text, category text, price real);
        insert into customers values
            (1, 'a@example.com', 'Anna', 'A', '2026-03-01T09:00:00Z', '2026-03-01T09:00:00Z'),
            (2, 'b@example.com', 'Ben', 'B', '2026-03-01T10:00:00Z', '2026-03-02T08:00:00Z'),
            (3, 'c@example.com', 'Cem', 'C', '2026-03-02T10:00:00Z', '2026-03-02T10:00:00Z'),
            (4, 'd@example.com', 'Dora', 'D', '2026-03-03T10:00:00Z', '2026-03-03T10:00:00Z');
        insert into orders values
            (10, 1, '2026-03-01T12:00:00Z', 20.0, 'refunded', 'EUR', '2026-03-02T09:00:00Z'),
            (11, 2, '2026-03-01T23:30:00-01:00', 5.5, 'completed', 'EUR', '2026-03-01T23:30:00-01:00'),
            (12, 3, '2026-03-02T11:00:00Z', 7.0, 'completed', 'EUR', '2026-03-02T11:00:00Z'),
            (13, 4, '2026-03-03T11:00:00Z', 9.0, 'completed', 'EUR', '2026-03-03T11:00:00Z');
        insert into order_items values (10, 1, 'P1', 2, 10.0), (11, 1, 'P2', 1, 5.5), (12, 1, 'P1', 1, 7.0),
            (13, 1, 'P2', 1, 9.0);
        insert into products values ('P1', 'Mug', 'kitchen', 10.0), ('P2', 'Pen', 'office', 5.5);
        """
    )
    shop.commit()
    shop.close()
    for folder in ("crm", "web", "email", "pos"):
        (systems / folder).mkdir()
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        n = day[-1]
        (systems / "crm" / f"contacts_{day}.csv").write_text(
            "contact_id,first_name,last_name,email,email_opt_in,updated_at\n"
            f"C-{n},Name{n},Last,c{n}@example.com,true,{day}T08:00:00Z\n"
        )
        (systems / "web" / f"events_{day}.jsonl").write_text(
            f'{{"event_id": "W-{n}a", "occurred_at": "{day}T10:00:00Z", "event_type": "page_view"}}\n'
            f'{{"event_id": "W-{n}b", "occurred_at": "{day}T11:00:00Z", "event_type": "login", '
            '"customer_id": "1"}\n'
        )
        (systems / "email" / f"events_{day}.csv").write_text(
            f"event_id,occurred_at,email,event_type,campaign_id\nE-{n},{day}T07:00:00Z,a@example.com,sent,c\n"
        )
        (systems / "pos" / f"transactions_{day}.csv").write_text(
            f"transaction_id,purchased_at,total_amount,store_id,loyalty_id,phone,email\nT-{n},{day}T15:00:00Z,"
            "12.00,S1,,,\n"
        )


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    _build_systems(RunContext(as_of=date(2026, 3, 1), home=home, run_id="x").source_systems)
    return home


def _day(home: Path, con, day: date):
    ctx = RunContext(as_of=day, home=home, run_id=f"run-{day}")
    extracts = {source: extract_source(ctx, source) for source in SOURCES}
    return extracts, load_pending(ctx, con)


def _ids(con, table: str, column: str) -> list:
    return sorted(r[0] for r in con.execute(f"select {column} from raw.{table}").fetchall())


def test_incremental_days(home, tmp_path):
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    extracts, loaded = _day(home, con, date(2026, 3, 1))
    assert all(not r.errors for r in extracts.values())
    # nothing dated after the as-of day: customer 2 (last changed on 03-02) is not pulled yet, nor
    # order 11 (23:30 at -01:00 is 03-02 00:30 UTC), nor any file dated after 03-01
    assert _ids(con, "shop_customers", "customer_id") == ["1"]
    assert _ids(con, "shop_orders", "order_id") == []
    assert _ids(con, "crm_contacts", "contact_id") == ["C-1"]
    assert _ids(con, "web_events", "event_id") == ["W-1a", "W-1b"]
    assert _ids(con, "shop_products", "product_id") == ["P1", "P2"]
    assert loaded.rows_quarantined == 0

    # the same as-of again: no new batch, nothing changes
    again, reloaded = _day(home, con, date(2026, 3, 1))
    assert all(not r.batches for r in again.values()) and reloaded.batches == []

    # the shop changes customer 1 during 03-02
    shop = sqlite3.connect(
        RunContext(as_of=date(2026, 3, 1), home=home, run_id="x").source_systems / "shop.sqlite"
    )
    shop.execute(
        "update customers set email = 'anna@example.com', updated_at = '2026-03-02T12:00:00Z' "
        "where customer_id = 1"
    )
    shop.commit()
    shop.close()

    # the next day brings only new and changed rows
    extracts, loaded = _day(home, con, date(2026, 3, 2))
    shop = {b.entity: b.rows for b in extracts["shop"].batches}
    assert shop == {"shop_customers": 3, "shop_orders": 3, "shop_order_items": 3}  # products unchanged
    assert _ids(con, "shop_customers", "customer_id") == ["1", "1", "2", "3"]
    versions = con.execute("select email from raw.shop_customers where customer_id = '1' order by updated_at")
    assert [r[0] for r in versions.fetchall()] == ["a@example.com", "anna@example.com"]
    assert _ids(con, "shop_orders", "order_id") == ["10", "11", "12"]
    refunded = con.execute(
        "select status, updated_at, _extracted_at from raw.shop_orders where order_id = '10'"
    ).fetchall()
    assert [tuple(map(str, r)) for r in refunded] == [
        ("refunded", "2026-03-02 09:00:00", "2026-03-03 00:00:00")
    ]
    ordered = con.execute("select ordered_at from raw.shop_orders where order_id = '11'").fetchone()[0]
    assert str(ordered) == "2026-03-02 00:30:00"
    assert _ids(con, "shop_order_items", "order_id") == ["10", "11", "12"]
    assert _ids(con, "crm_contacts", "contact_id") == ["C-1", "C-2"]
    assert _ids(con, "pos_transactions", "transaction_id") == ["T-1", "T-2"]
    assert [e.entity for e in extracts["crm"].batches] == ["crm_contacts"]

    batches = con.execute("select count(*), sum(rows_read) from audit.load_batches").fetchone()
    assert batches[0] == len(
        set(r[0] for r in con.execute("select batch_id from audit.load_batches").fetchall())
    )
    bad = con.execute(
        "select count(*) from audit.load_batches where rows_read <> rows_loaded + rows_quarantined"
    ).fetchone()[0]
    assert bad == 0
    con.close()


def test_changed_daily_file_and_lost_warehouse(home, tmp_path):
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    _day(home, con, date(2026, 3, 2))
    systems = RunContext(as_of=date(2026, 3, 2), home=home, run_id="x").source_systems
    # a re-exported daily file (same name, new content) lands again as a new batch
    with open(systems / "pos" / "transactions_2026-03-02.csv", "a") as handle:
        handle.write("T-2b,2026-03-02T16:00:00Z,oops,S1,,,\n")
    extracts, loaded = _day(home, con, date(2026, 3, 2))
    assert [b.source_file for b in extracts["pos"].batches] == ["pos/transactions_2026-03-02.csv"]
    assert loaded.counts("pos_transactions").rows_quarantined == 1
    con.close()

    # the working warehouse is lost: every landed batch is loaded again from landing
    fresh = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    rebuilt = load_pending(RunContext(as_of=date(2026, 3, 2), home=home, run_id="rebuild"), fresh)
    assert rebuilt.counts("pos_transactions").batches == 3
    assert _ids(fresh, "shop_orders", "order_id") == ["10", "11", "12"]
    fresh.close()


def test_against_the_demo_generator(tmp_path):
    from touchpoint.sources.generator import advance, generate, last_day

    home = tmp_path / "home"
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    written = generate(home / "sources", customers=300, days=10, seed=3, start=date(2026, 3, 1))
    _, loaded = _day(home, con, last_day(home / "sources"))
    # every row the generator wrote is read once, and loaded or quarantined
    assert {e: c.rows_read for e, c in loaded.entities.items() if c.rows_read} == {
        e: n for e, n in written.rows.items() if n
    }
    assert loaded.rows_read == loaded.rows_loaded + loaded.rows_quarantined

    added = advance(home / "sources", 1)
    extracts, loaded = _day(home, con, last_day(home / "sources"))
    for entity in ("crm_contacts", "web_events", "email_events", "pos_transactions"):
        assert loaded.counts(entity).rows_read == added.rows[entity]  # only the new day's file
    for entity, key in (("shop_customers", "customer_id"), ("shop_orders", "order_id")):
        distinct = con.execute(f"select count(distinct {key}) from raw.{entity}").fetchone()[0]
        assert distinct == added.rows[entity]
    assert loaded.counts("shop_products").rows_read == 0  # unchanged since the first extract
    con.close()
