"""The bulk extraction path (ingest/bulk.py) lands a file exactly as the careful reader would, or leaves it to it.

Each case is read both ways: when bulk.py takes a file, its landing rows (columns, values, row numbers) must equal
the careful reader's; the cases the careful reader reads differently from RFC 4180 (a quote other than '"', a
comment line, backslash escapes, duplicate or reserved names, bad bytes) must be declined, and the clean shapes
must be taken, so the fast path is exercised at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from touchpoint.ingest import bulk
from touchpoint.ingest.readers import read_source_file

CSV = {
    "plain": ("a,b\n1,2\n3,4\n", True),
    "quoted": ('"a","b"\n"x, y","z"\n,"w"\n', True),
    "doubled_quote": ('a,b\n"He said ""hi""",z\n', True),
    "newline_in_quotes": ('a,b\n"x\ny",2\n', True),
    "apostrophe_inside": ("a,b\nO'Brien,z\n\"O'Neil\",q\n", True),
    "spaces_and_empty_quotes": ('a,b\n 1 , 2 \n"",4\n', True),
    "blank_line": ("a,b\n1,2\n\n3,4\n", True),
    "crlf": ("a,b\r\n1,2\r\n3,4\r\n", True),
    "semicolon": ("a;b\n1;2\n", True),
    "header_only": ("a,b\n", True),
    "single_quotes": ("a,b\n'x','y'\n'p','q'\n", False),
    "backslash_escape": ('a,b\n"x\\"y",z\n', False),
    "comment_line": ("a,b\n#c\n1,2\n", False),
    "duplicate_names": ("a,A\n1,2\n", False),
    "trailing_delimiter": ("a,b,\n1,2,\n", False),
    "padded_names": (" a , b \n1,2\n", False),
    "reader_name": ("file_index,b\n1,2\n", False),
    "too_many_fields": ("a,b\n1,2,3\n4,5\n", False),
    "mixed_delimiters": ("a,b;c\n1,2;3\n", False),
    "bom": ("\ufeffa,b\n1,2\n", False),
}
JSONL = {
    "plain": ('{"b": "2", "a": 1}\n{"b": "4", "a": 3.50}\n', True),
    "nested_and_null": ('{"a": {"x": [1, 2]}, "b": null}\n{"a": true, "b": "y"}\n', True),
    "blank_lines": ('\n{"a": "x"}\n   \n{"a": "y"}\n', True),
    "unicode_escape": ('{"a": "\\u00e9\\n"}\n', True),
    "malformed_middle": ('{"a": 1}\n{"a": \n{"a": 3}\n', False),
    "not_an_object": ('{"a": 1}\n[1, 2]\n', False),
    "extra_key_later": ('{"a": 1}\n{"a": 2, "b": 3}\n', False),
    "missing_key_later": ('{"a": 1, "b": 2}\n{"a": 2}\n', False),
    "other_key_order": ('{"a": 1, "b": 2}\n{"b": 3, "a": 4}\n', False),
    "duplicate_key": ('{"a": 1, "a": 2}\n', False),
    "keys_differing_in_case": ('{"a": 1, "A": 2}\n', False),
}


def _careful(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[list[str], list[tuple]] | None:
    """The careful reader's landed columns and good rows (with row numbers), or None when it rejects anything."""
    try:
        columns = read_source_file(con, path, "_landed")
    except Exception:  # a file-level failure: bulk.py must have declined it
        return None
    if con.execute("select count(_reject_reason) from _landed").fetchone()[0]:
        return None
    selected = ", ".join(f'"{c}"' for c in [*columns, "_row_number"])
    return columns, con.execute(f"select {selected} from _landed order by _row_number").fetchall()


def _bulk(con: duckdb.DuckDBPyConnection, path: Path, layout: bulk.Layout | None) -> tuple | None:
    if layout is None:
        return None
    target = path.with_name(path.stem + "_landing.parquet")
    item = bulk.BulkFile(path, path.name, layout, layout.columns, target)
    if bulk.land_files(con, [item]):
        assert not target.exists()
        return None
    table = pq.read_table(target)
    columns = [c for c in table.column_names if c not in ("_source_file", "_row_number", "_reject_reason", "_raw_line")]
    assert table.column("_source_file").to_pylist() == [path.name] * item.rows
    assert table.column("_reject_reason").null_count == item.rows
    rows = [tuple(row[c] for c in [*columns, "_row_number"]) for row in table.to_pylist()]
    return columns, rows


@pytest.fixture
def con():
    connection = duckdb.connect()
    connection.execute("set preserve_insertion_order = true")
    yield connection
    connection.close()


def _compare(con, path: Path, layout: bulk.Layout | None, taken: bool) -> None:
    careful = _careful(con, path)
    landed = _bulk(con, path, layout)
    assert (landed is not None) == taken
    if landed is not None:
        assert landed == careful


@pytest.mark.parametrize("case", CSV)
def test_a_csv_file_lands_as_the_careful_reader_lands_it_or_is_left_to_it(tmp_path, con, case):
    text, taken = CSV[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(text.encode("utf-8"))
    _compare(con, path, bulk.csv_layout(bulk.scan_file(path, csv_checks=True)), taken)


def test_a_csv_file_with_bytes_that_are_not_utf8_is_left_to_the_careful_reader(tmp_path, con):
    path = tmp_path / "latin1.csv"
    path.write_bytes("a,b\nJürgen,1\nAscii,2\n".encode("latin-1"))
    _compare(con, path, bulk.csv_layout(bulk.scan_file(path, csv_checks=True)), taken=False)


@pytest.mark.parametrize("case", JSONL)
def test_a_jsonl_file_lands_as_the_careful_reader_lands_it_or_is_left_to_it(tmp_path, con, case):
    text, taken = JSONL[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text(text, encoding="utf-8")
    _compare(con, path, bulk.jsonl_layout(bulk.scan_file(path, csv_checks=False)), taken)


def test_a_parquet_file_lands_as_the_careful_reader_lands_it(tmp_path, con):
    path = tmp_path / "typed.parquet"
    con.execute(
        f"""copy (select * from (values
                ('O-1', timestamp '2026-03-01 10:00:00', 12.50::decimal(18,2), [1, 2]),
                ('O-2', null, -3.00::decimal(18,2), null)
            ) t(order_id, ordered_at, amount, parts)) to '{path}' (format parquet)"""
    )
    _compare(con, path, bulk.parquet_layout(path), taken=True)
    clash = tmp_path / "clash.parquet"
    con.execute(f"copy (select 1 as file_row_number) to '{clash}' (format parquet)")
    assert bulk.parquet_layout(clash) is None


def test_many_files_in_one_scan_keep_their_own_rows_and_row_numbers(tmp_path, con):
    """One scan over files of one layout: each landing file gets its file's rows, numbered from 1; a file
    rejected in the middle of the scan is left to the careful reader and the others still land."""
    files = []
    for day in range(5):
        path = tmp_path / f"events_{day}.jsonl"
        lines = [json.dumps({"event_id": f"E-{day}-{i}", "n": i}) for i in range(day * 3)]
        if day == 2:
            lines.insert(1, '{"event_id": broken')
        path.write_text("\n".join(lines) + "\n" if lines else "", encoding="utf-8")
        files.append(path)
    items = []
    for path in files:
        layout = bulk.jsonl_layout(bulk.scan_file(path, csv_checks=False))
        if layout is not None:
            items.append(bulk.BulkFile(path, path.name, layout, layout.columns, path.with_suffix(".landed")))
    left = bulk.land_files(con, items)
    assert [item.path.name for item in left] == ["events_2.jsonl"]
    for item in items:
        if item in left:
            continue
        day = int(item.path.stem.split("_")[1])
        table = pq.read_table(item.target).to_pylist()
        assert [(row["event_id"], row["n"], row["_row_number"]) for row in table] == [
            (f"E-{day}-{i}", str(i), i + 1) for i in range(day * 3)
        ]


def test_a_column_named_like_duckdbs_file_index_is_data_through_extract_and_load(tmp_path):
    """`file_index` names the position of a file in a DuckDB scan, which the loader looks batch values up by; a
    file column of that name is data (in `_extra`), and its rows still get their own batch and row numbers."""
    from datetime import date

    from touchpoint.config import RunContext
    from touchpoint.ingest import extract_source, load_pending

    extracts = tmp_path / "extracts" / "shop_orders"
    extracts.mkdir(parents=True)
    header = "order_id,customer_id,ordered_at,total_amount"
    (extracts / "a.csv").write_text(f"{header},File_Index\nO-1,S-1,2026-03-01,1.00,9\nO-2,S-1,2026-03-01,2.00,8\n")
    (extracts / "b.csv").write_text(f"{header}\nO-3,S-1,2026-03-01,3.00\n")
    home, folder = tmp_path / "home", tmp_path / "extracts"
    ctx = RunContext(as_of=date(2026, 3, 31), home=home, run_id="run-1", extracts_dir=folder)
    assert not extract_source(ctx, "shop").errors
    with duckdb.connect(str(tmp_path / "work.duckdb")) as con:
        loaded = load_pending(ctx, con)
        rows = con.execute(
            "select order_id, _source_file, _row_number, _extra, _batch_id from raw.shop_orders order by 1"
        ).fetchall()
    assert loaded.rows_loaded == 3 and loaded.rows_quarantined == 0
    assert [(o, f, n, json.loads(e) if e else None) for o, f, n, e, _ in rows] == [
        ("O-1", "shop_orders/a.csv", 1, {"File_Index": "9"}),
        ("O-2", "shop_orders/a.csv", 2, {"File_Index": "8"}),
        ("O-3", "shop_orders/b.csv", 1, None),
    ]
    assert rows[0][4] == rows[1][4] != rows[2][4]
