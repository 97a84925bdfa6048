"""Untrusted rows in extracts: reserved column names, implausible values, oversize fields, odd file shapes.

Each bad row is quarantined on its own with a reason naming the column (and the value, when short), the rest
of its file loads, and the row accounting holds. Extract and load are called directly, as in test_ingest_byo.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from tests import test_ingest_byo
from tests.test_ingest_byo import _ctx, _quarantine, _run
from touchpoint.config import RunContext
from touchpoint.ingest import extract_source, load_pending, readers
from touchpoint.ingest.plausibility import Plausibility, latest_plausible, plausibility_from_env
from touchpoint.ingest.readers import duckdb_error_text

con = test_ingest_byo.con  # the warehouse fixture of test_ingest_byo, shared rather than copied
ORDERS_HEADER = "order_id,customer_id,ordered_at,total_amount,status"
RESERVED = {
    "_batch_id": "evil-batch",
    "_landing_file": "/etc/passwd",
    "_batch_extracted_at": "1999-01-01",
    "_extracted_at": "1999-01-02",
    "_extract_date": "1999-01-03",
    "_row_number": "7",
    "_extra": "{}",
    "_extra.x": "nested",
    "_source_file": "elsewhere.csv",
    "_reject_reason": "none",
    "_raw_line": "line",
}


def _orders(*rows: str, header: str = ORDERS_HEADER) -> str:
    return header + "\n" + "".join(row + "\n" for row in rows)


def _extracts(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    extracts = tmp_path / "extracts"
    for name, content in files.items():
        path = extracts / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return extracts


def _accounting_holds(con: duckdb.DuckDBPyConnection) -> None:
    bad = con.execute(
        "select count(*) from audit.load_batches where rows_read <> rows_loaded + rows_quarantined"
    ).fetchone()[0]
    assert bad == 0


def _reasons(con: duckdb.DuckDBPyConnection, entity: str) -> dict[int, tuple[str, str]]:
    return {row: (column, reason) for row, column, reason, _ in _quarantine(con, entity)}


# --- 1. reserved column names -----------------------------------------------------------------------------


def _write_reserved(extracts: Path, suffix: str) -> None:
    """Two shop orders carrying every reserved name as an extra column."""
    rows = [
        {"order_id": f"O-{i}", "customer_id": "S-1", "ordered_at": "2026-03-01T10:00:00Z", "total_amount": "1.50"}
        | RESERVED
        for i in (1, 2)
    ]
    extracts.mkdir(parents=True, exist_ok=True)
    path = extracts / f"shop_orders{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif suffix == ".csv":
        path.write_text(",".join(rows[0]) + "\n" + "".join(",".join(row.values()) + "\n" for row in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reserved_column_names_land_in_extra_and_never_overwrite_load_metadata(tmp_path, con, suffix):
    extracts = tmp_path / "extracts"
    _write_reserved(extracts, suffix)
    ctx = _ctx(tmp_path, extracts)
    result, loaded = _run(ctx, con, sources=("shop",))
    assert not result["shop"].errors
    assert loaded.counts("shop_orders").rows_loaded == 2 and loaded.rows_quarantined == 0
    (batch_id,) = [b.batch_id for b in loaded.batches]

    rows = con.execute(
        "select order_id, _batch_id, _source_file, _row_number, _extracted_at, _extract_date, _extra "
        "from raw.shop_orders order by order_id"
    ).fetchall()
    assert [r[:6] for r in rows] == [
        ("O-1", batch_id, f"shop_orders{suffix}", 1, datetime(2026, 4, 1), date(2026, 3, 31)),
        ("O-2", batch_id, f"shop_orders{suffix}", 2, datetime(2026, 4, 1), date(2026, 3, 31)),
    ]
    assert all(json.loads(r[6]) == RESERVED for r in rows)  # every value under the file's own name
    _accounting_holds(con)


def test_reserved_column_names_from_the_shop_database(tmp_path, con):
    ctx = RunContext(as_of=date(2026, 3, 31), home=tmp_path / "home", run_id="run-1")
    ctx.source_systems.mkdir(parents=True)
    shop = sqlite3.connect(ctx.source_systems / "shop.sqlite")
    shop.executescript(
        """
        create table orders (order_id integer primary key, customer_id integer, ordered_at text,
            total_amount real, updated_at text, _row_number text, _batch_id text);
        insert into orders values (1, 7, '2026-03-01T10:00:00Z', 5.0, '2026-03-01T10:00:00Z', 'x', 'evil'),
            (2, 7, '2026-03-02T10:00:00Z', 6.0, '2026-03-02T10:00:00Z', 'y', 'evil');
        """
    )
    shop.commit()
    shop.close()
    extracted = extract_source(ctx, "shop")
    assert not extracted.errors
    load_pending(ctx, con)
    rows = con.execute("select order_id, _batch_id, _row_number, _extra from raw.shop_orders order by 1").fetchall()
    assert [(r[0], r[2]) for r in rows] == [("1", 1), ("2", 2)]
    assert all(r[1].startswith("shop_orders-2026-03-31-") for r in rows)
    assert [json.loads(r[3]) for r in rows] == [
        {"_row_number": "x", "_batch_id": "evil"},
        {"_row_number": "y", "_batch_id": "evil"},
    ]


def test_columns_named_like_duckdb_row_ids_are_data(tmp_path, con):
    """`rowid` hides DuckDB's row id, `file_row_number` collides with read_parquet's option of that name."""
    csv_text = _orders("O-1,S-1,2026-03-01,1.00,placed,r1", header=ORDERS_HEADER + ",RowId")
    extracts = _extracts(tmp_path, {"shop_orders/a.csv": csv_text})
    duckdb.execute(
        "copy (select 'O-2' as order_id, 'S-1' as customer_id, '2026-03-01' as ordered_at, '2.00' as total_amount, "
        f"5 as file_row_number, 'r2' as rowid) to '{extracts / 'shop_orders' / 'b.parquet'}' (format parquet)"
    )
    result, loaded = _run(_ctx(tmp_path, extracts), con, sources=("shop",))
    assert not result["shop"].errors and loaded.counts("shop_orders").rows_loaded == 2
    extras = con.execute("select order_id, _row_number, _extra from raw.shop_orders order by 1").fetchall()
    assert [(o, n, json.loads(e)) for o, n, e in extras] == [
        ("O-1", 1, {"RowId": "r1"}),
        ("O-2", 1, {"file_row_number": "5", "rowid": "r2"}),
    ]


# --- 2. plausibility ----------------------------------------------------------------------------------------


def test_implausible_values_are_quarantined_per_row_naming_column_and_value(tmp_path, con):
    extracts = _extracts(
        tmp_path,
        {
            "shop_orders.csv": _orders(
                "O-1,S-1,2026-03-01T10:00:00Z,12.00,completed",
                "O-2,S-1,0001-01-01T00:00:00Z,12.00,completed",
                "O-3,S-1,2999-01-01T00:00:00Z,12.00,completed",
                "O-4,S-1,1899-12-31T23:59:59Z,12.00,completed",
                "O-5,S-1,2026-03-01T10:00:00Z,1000000000.01,completed",
                "O-6,S-1,2026-03-01T10:00:00Z,-1000000000.01,refunded",
                "O-7,S-1,2026-03-01T10:00:00Z,-999999999.99,refunded",  # a refund within the bound
                "O-8,S-1,1900-01-01T00:00:00Z,1000000000.00,completed",  # both bounds are inclusive
                "O-9,S-1,2026-04-20T10:00:00Z,12.00,placed",  # after the as-of: "not yet", never an error
            ),
            "crm_contacts.csv": "contact_id,birth_date,updated_at\n"
            "K-1,1850-06-01,2026-03-01T10:00:00Z\n"  # historical registers hold births in the 1800s
            "K-2,1799-12-31,2026-03-01T10:00:00Z\n"
            "K-3,2999-01-01,2026-03-01T10:00:00Z\n"
            "K-4,1985-04-12,0001-01-01T00:00:00Z\n",
        },
    )
    _, loaded = _run(_ctx(tmp_path, extracts), con, sources=("shop", "crm"))

    orders = _reasons(con, "shop_orders")
    assert orders[2] == ("ordered_at", "ordered_at: 0001-01-01 00:00:00 is before 1900-01-01 (implausible)")
    assert orders[3][0] == "ordered_at"
    assert orders[3][1].startswith("ordered_at: 2999-01-01 00:00:00 is after ")
    assert orders[3][1].endswith(", the extraction time plus 1 day (implausible)")
    assert orders[4] == ("ordered_at", "ordered_at: 1899-12-31 23:59:59 is before 1900-01-01 (implausible)")
    assert orders[5] == ("total_amount", "total_amount: 1000000000.01 is beyond ±1000000000.00 (implausible)")
    assert orders[6] == ("total_amount", "total_amount: -1000000000.01 is beyond ±1000000000.00 (implausible)")
    assert set(orders) == {2, 3, 4, 5, 6}
    kept = con.execute("select order_id from raw.shop_orders order by 1").fetchall()
    assert kept == [("O-1",), ("O-7",), ("O-8",), ("O-9",)]

    contacts = _reasons(con, "crm_contacts")
    assert contacts[2] == ("birth_date", "birth_date: 1799-12-31 is before 1800-01-01 (implausible)")
    assert contacts[3][0] == "birth_date" and contacts[3][1].startswith("birth_date: 2999-01-01 is after ")
    assert contacts[4][0] == "updated_at" and "is before 1900-01-01" in contacts[4][1]
    assert set(contacts) == {2, 3, 4}
    assert loaded.rows_read == loaded.rows_loaded + loaded.rows_quarantined == 13
    _accounting_holds(con)


def test_the_broken_clock_bound_is_when_the_file_was_read_not_the_as_of(tmp_path, con):
    """A full export read today holds rows after an old as-of; the bound is the pull time (manifest
    `pulled_at`) plus a day, or the logical extraction time when that is later (a demo world in the future)."""
    extracts = _extracts(
        tmp_path,
        {
            "shop_orders.csv": _orders(
                "O-1,S-1,2019-12-31T10:00:00Z,1.00,completed",
                "O-2,S-1,2024-06-01T10:00:00Z,1.00,completed",  # after the as-of, before today: loads
            )
        },
    )
    ctx = _ctx(tmp_path, extracts, as_of=date(2020, 1, 1))
    extracted, loaded = _run(ctx, con, sources=("shop",))
    assert loaded.counts("shop_orders").rows_loaded == 2
    (manifest,) = extracted["shop"].batches
    pulled = datetime.fromisoformat(manifest.pulled_at)
    assert abs((datetime.now() - pulled).total_seconds()) < 3600 * 24  # wall clock (UTC), not the as-of

    # A manifest written before `pulled_at` existed loads too, bounded by its logical extraction time.
    path = ctx.paths.state / "ingest" / "batches" / f"{manifest.batch_id}.json"
    payload = json.loads(path.read_text())
    del payload["pulled_at"]
    path.write_text(json.dumps(payload))
    load_pending(ctx, con, reload=True)
    ((row, reason),) = [(r, why) for r, _, why, _ in _quarantine(con, "shop_orders")]
    assert row == 2 and reason.startswith("ordered_at: 2024-06-01 10:00:00 is after 2020-01-03 00:00:00, ")
    _accounting_holds(con)


def test_a_world_dated_in_the_future_is_bounded_by_its_logical_extraction_time(tmp_path, con):
    extracts = _extracts(
        tmp_path,
        {
            "shop_orders.csv": _orders(
                "O-1,S-1,2090-01-01T23:00:00Z,1.00,completed",
                "O-2,S-1,2090-01-02T23:59:59Z,1.00,completed",  # within the day of slack
                "O-3,S-1,2090-01-03T00:00:01Z,1.00,completed",
            )
        },
    )
    _run(_ctx(tmp_path, extracts, as_of=date(2090, 1, 1)), con, sources=("shop",))
    assert [r for r, *_ in _quarantine(con, "shop_orders")] == [3]


def test_latest_plausible_takes_the_later_of_pull_and_logical_time():
    limits = Plausibility()
    assert latest_plausible("2026-03-01 08:00:00", "2026-01-01 00:00:00", limits) == datetime(2026, 3, 2, 8)
    assert latest_plausible("2026-03-01 08:00:00", "2090-01-01 00:00:00", limits) == datetime(2090, 1, 2)
    assert latest_plausible(None, "2026-01-01 00:00:00", limits) == datetime(2026, 1, 2)


def test_plausibility_bounds_come_from_the_environment(tmp_path, con, monkeypatch):
    assert plausibility_from_env({}) == Plausibility()
    limits = plausibility_from_env(
        {
            "TOUCHPOINT_PLAUSIBLE_EARLIEST_TIMESTAMP": "1990-01-01",
            "TOUCHPOINT_PLAUSIBLE_EARLIEST_BIRTH_DATE": "1700-01-01",
            "TOUCHPOINT_PLAUSIBLE_CLOCK_SLACK_HOURS": "2",
            "TOUCHPOINT_PLAUSIBLE_MAX_ABS_AMOUNT": "500.00",
            "TOUCHPOINT_PLAUSIBLE_MAX_TEXT_CHARS": "10",
            "TOUCHPOINT_PLAUSIBLE_UNKNOWN": "ignored",
        }
    )
    assert limits == Plausibility(datetime(1990, 1, 1), date(1700, 1, 1), 2, Decimal("500.00"), 10)
    with pytest.raises(ValueError, match="TOUCHPOINT_PLAUSIBLE_MAX_ABS_AMOUNT"):
        plausibility_from_env({"TOUCHPOINT_PLAUSIBLE_MAX_ABS_AMOUNT": "a lot"})
    with pytest.raises(ValueError, match="must not be negative"):
        plausibility_from_env({"TOUCHPOINT_PLAUSIBLE_MAX_TEXT_CHARS": "-1"})

    monkeypatch.setenv("TOUCHPOINT_PLAUSIBLE_MAX_ABS_AMOUNT", "100")
    monkeypatch.setenv("TOUCHPOINT_PLAUSIBLE_MAX_TEXT_CHARS", "10")
    extracts = _extracts(
        tmp_path,
        {
            "shop_orders.csv": _orders(
                "O-1,S-1,2026-03-01,99.00,placed",
                "O-2,S-1,2026-03-01,150.00,placed",
                "O-3,S-1,2026-03-01,1.00,elevenchars",
            )
        },
    )
    _run(_ctx(tmp_path, extracts), con, sources=("shop",))
    assert _reasons(con, "shop_orders") == {
        2: ("total_amount", "total_amount: 150.00 is beyond ±100 (implausible)"),
        3: ("status", "status: text of 11 characters, more than the 10 allowed (implausible; not shown)"),
    }


# --- 3. oversize fields -------------------------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024


def _no_long_value(con: duckdb.DuckDBPyConnection, marker: str) -> None:
    """No reason or error anywhere holds more than a few hundred characters of `marker` repeated."""
    long_run = marker * 300
    reasons = con.execute("select reason from audit.quarantine").fetchall()
    errors = con.execute("select error from audit.extract_errors").fetchall()
    assert all(long_run not in text for (text,) in reasons + errors)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_ten_megabyte_field_quarantines_its_row_and_the_rest_loads(tmp_path, con, suffix):
    rows = [
        {"contact_id": "K-1", "first_name": "Small", "note": "n"},
        {"contact_id": "K-2", "first_name": "x" * TEN_MB, "note": "n"},
        {"contact_id": "K-3", "first_name": "Other", "note": "y" * TEN_MB},  # an extra column is bounded too
        {"contact_id": "K-4", "first_name": "Last", "note": "n"},
    ]
    if suffix == ".csv":
        text = "contact_id,first_name,note\n" + "".join(",".join(r.values()) + "\n" for r in rows)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    extracts = _extracts(tmp_path, {f"crm_contacts{suffix}": text})
    result, loaded = _run(_ctx(tmp_path, extracts), con, sources=("crm",))
    assert not result["crm"].errors
    assert con.execute("select contact_id from raw.crm_contacts order by 1").fetchall() == [("K-1",), ("K-4",)]
    quarantined = _quarantine(con, "crm_contacts")
    assert [(row, column, reason) for row, column, reason, _ in quarantined] == [
        (
            2,
            "first_name",
            f"first_name: text of {TEN_MB} characters, more than the 65536 allowed (implausible; not shown)",
        ),
        (3, "note", f"note: text of {TEN_MB} characters, more than the 65536 allowed (implausible; not shown)"),
    ]
    record = json.loads(quarantined[0][3])
    assert record["contact_id"] == "K-2" and len(record["first_name"]) < 1100
    assert record["first_name"].endswith(f"… [truncated: {TEN_MB} characters]")
    _no_long_value(con, "x")
    assert loaded.rows_read == 4
    _accounting_holds(con)


def test_the_text_bound_is_inclusive(tmp_path, con):
    limit = Plausibility().max_text_chars
    extracts = _extracts(
        tmp_path,
        {
            "shop_orders.csv": _orders(
                f"O-1,S-1,2026-03-01,1.00,{'a' * limit}",
                f"O-2,S-1,2026-03-01,1.00,{'é' * 40_000}",
                f"O-3,S-1,2026-03-01,1.00,{'b' * (limit + 1)}",
            )
        },
    )
    _run(_ctx(tmp_path, extracts), con, sources=("shop",))
    # 40,000 two-byte characters are 80,000 bytes but within the bound, which counts characters
    assert [r for r, *_ in _quarantine(con, "shop_orders")] == [3]


@pytest.mark.parametrize("position", [1, 40])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_line_over_the_readers_maximum_is_one_unreadable_row(tmp_path, con, monkeypatch, suffix, position):
    """Past MAX_LINE_BYTES a line is a reader reject, also within the first rows DuckDB's sniffer samples."""
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 4096)
    rows = [
        {"event_id": f"E-{i}", "occurred_at": "2026-03-01T10:00:00Z", "email": "a@x.io", "event_type": "open"}
        for i in range(1, 51)
    ]
    rows[position]["email"] = "z" * 20_000
    if suffix == ".csv":
        text = ",".join(rows[0]) + "\r\n" + "".join(",".join(r.values()) + "\r\n" for r in rows)
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    extracts = _extracts(tmp_path, {f"email_events{suffix}": text})
    result, loaded = _run(_ctx(tmp_path, extracts), con, sources=("email",))
    assert not result["email"].errors
    ((row, column, reason, record),) = _quarantine(con, "email_events")
    assert row == position + 1 and column is None
    assert reason.startswith("unreadable line (LINE SIZE OVER MAXIMUM")
    assert len(reason) < 300 and len(json.loads(record)["line"]) < 1100
    assert loaded.counts("email_events").rows_loaded == 49
    _accounting_holds(con)


def test_duckdb_errors_are_reported_without_the_line_they_quote(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("a,b\n1," + "s" * 5000 + "\n")
    with pytest.raises(duckdb.Error) as raised:
        duckdb.execute(f"select * from read_csv('{path}', max_line_size = 100)").fetchall()
    assert "s" * 1000 in str(raised.value)  # DuckDB quotes the line...
    text = duckdb_error_text(raised.value)
    assert "Maximum line size" in text and "sss" not in text and len(text) < 300  # ...the report does not


# --- 4. file shapes -----------------------------------------------------------------------------------------

CONTACTS = "contact_id,first_name,last_name,email,updated_at\n"


def test_a_latin1_csv_loses_only_its_non_utf8_lines(tmp_path, con):
    text = CONTACTS + "K-1,Jürgen,Müller,j@x.io,2026-03-01T10:00:00Z\nK-2,Ascii,Only,a@x.io,2026-03-01T10:00:00Z\n"
    _run(_ctx(tmp_path, _extracts(tmp_path, {"crm_contacts.csv": text.encode("latin-1")})), con, sources=("crm",))
    assert con.execute("select contact_id, first_name from raw.crm_contacts").fetchall() == [("K-2", "Ascii")]
    ((row, column, reason, record),) = _quarantine(con, "crm_contacts")
    assert row == 1 and column is None
    assert reason.startswith("unreadable line (INVALID ENCODING in column first_name: Invalid unicode")
    assert "not utf-8 encoded" in reason and "K-1" in json.loads(record)["line"]


@pytest.mark.parametrize(
    "suffix, content, first_name",
    [
        (".csv", ("\ufeff" + CONTACTS + "K-1,Bom,Crlf,b@x.io,2026-03-01T10:00:00Z\n").replace("\n", "\r\n"), "Bom"),
        (".csv", (CONTACTS + "K-1,Semi,Colon,s@x.io,2026-03-01T10:00:00Z\n").replace(",", ";"), "Semi"),
        (".jsonl", '\ufeff{"contact_id": "K-1", "first_name": "Js", "updated_at": "2026-03-01T10:00:00Z"}\r\n', "Js"),
    ],
    ids=["csv-bom-crlf", "csv-semicolon", "jsonl-bom-crlf"],
)
def test_bom_crlf_and_semicolon_files_map_their_header(tmp_path, con, suffix, content, first_name):
    extracts = _extracts(tmp_path, {f"crm_contacts{suffix}": content})
    result, _ = _run(_ctx(tmp_path, extracts), con, sources=("crm",))
    assert not result["crm"].errors
    rows = con.execute("select contact_id, first_name, updated_at, _extra from raw.crm_contacts").fetchall()
    assert rows == [("K-1", first_name, datetime(2026, 3, 1, 10), None)]  # no BOM in a name, no '\r' in a value


def test_a_broken_jsonl_line_in_the_middle_is_quarantined_alone(tmp_path, con):
    lines = [
        '{"event_id": "W-1", "occurred_at": "2026-03-01T10:00:00Z", "event_type": "page_view"}',
        '{"event_id": "W-2", "occurred_at": "2026-03-01T10:01:00Z", "event_type": ',
        '{"event_id": "W-3", "occurred_at": "2026-03-01T10:02:00Z", "event_type": "page_view"}',
    ]
    extracts = _extracts(tmp_path, {"web_events.jsonl": "\n".join(lines) + "\n"})
    _run(_ctx(tmp_path, extracts), con, sources=("web",))
    assert con.execute("select event_id from raw.web_events order by 1").fetchall() == [("W-1",), ("W-3",)]
    assert [(r, c, why) for r, c, why, _ in _quarantine(con, "web_events")] == [(2, None, "malformed JSON line")]


def test_a_parquet_with_wrong_types_is_quarantined_per_row(tmp_path, con):
    extracts = tmp_path / "extracts"
    extracts.mkdir()
    duckdb.execute(
        f"""copy (select * from (values ('O-1', 'S-1', 1772359200, 'abc'), ('O-2', 'S-1', 1772445600, '2.50'))
                 t(order_id, customer_id, ordered_at, total_amount))
            to '{extracts / "shop_orders.parquet"}' (format parquet)"""
    )
    _run(_ctx(tmp_path, extracts), con, sources=("shop",))
    assert _reasons(con, "shop_orders") == {
        1: (
            "ordered_at",
            'ordered_at: cannot read "1772359200" as timestamp; total_amount: cannot read "abc" as decimal amount',
        ),
        2: ("ordered_at", 'ordered_at: cannot read "1772445600" as timestamp'),
    }
    _accounting_holds(con)
