"""Deterministic writers: daily CSV / JSONL files, the shop SQLite database and Parquet truth files.

Same input, same bytes: rows are written in a fixed order, CSV and JSONL are built by pyarrow without
locale or clock dependence, SQLite is created fresh with fixed page settings and no journal, Parquet is
written uncompressed-dictionary-free with fixed options.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq


def timestamps(start: date, t_days: np.ndarray) -> np.ndarray:
    """Days-after-start floats -> '2024-07-01T10:00:00Z' strings (object array)."""
    seconds = np.round(np.asarray(t_days, dtype=float) * 86400).astype(np.int64)
    stamps = np.datetime64(start, "s") + seconds.astype("timedelta64[s]")
    return np.char.add(np.datetime_as_string(stamps, unit="s"), "Z").astype(object)


def day_tags(start: date, day_index: np.ndarray) -> np.ndarray:
    """Day indices -> 'YYYYMMDD' strings, for ids that stay stable when more days are generated."""
    days = np.datetime64(start, "D") + np.asarray(day_index, dtype=np.int64).astype("timedelta64[D]")
    text = np.datetime_as_string(days, unit="D")
    return np.char.replace(text, "-", "") if text.size else text.astype("<U8")


def zero_padded(numbers: np.ndarray, width: int) -> np.ndarray:
    """Numbers as text, left-padded with zeros; np.char.zfill cannot size an empty array (a small world can
    have no web events, POS purchases or email campaign yet)."""
    text = np.asarray(numbers).astype(str)
    return np.char.zfill(text, width) if text.size else text


def prefixed(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    return np.char.add(prefix, zero_padded(numbers, width)).astype(object)


def money(values: np.ndarray) -> np.ndarray:
    return np.char.mod("%.2f", np.asarray(values, dtype=float)).astype(object)


def to_table(columns: dict[str, np.ndarray]) -> pa.Table:
    return pa.table(
        {
            k: pa.array(np.asarray(v, dtype=object), type=pa.string(), from_pandas=True)
            for k, v in columns.items()
        }
    )


def jsonl_lines(table: pa.Table) -> pa.Array:
    """One JSON object per row, every value a string or null (values never contain quotes)."""
    parts: list[object] = []
    for i, name in enumerate(table.column_names):
        col = table.column(name).combine_chunks()
        quoted = pc.if_else(
            pc.is_null(col), pa.scalar("null"), pc.binary_join_element_wise('"', col, '"', "")
        )
        parts += [("{" if i == 0 else ",") + f'"{name}":', quoted]
    parts.append("}")
    if table.num_rows == 0:
        return pa.array([], type=pa.string())
    return pc.binary_join_element_wise(*parts, "")


def day_bounds(day_index: np.ndarray, days: Iterable[int]) -> Iterable[tuple[int, int, int]]:
    """(day, lo, hi) row ranges of a day-sorted index for each requested day."""
    for d in days:
        lo, hi = np.searchsorted(day_index, [d, d + 1])
        yield d, int(lo), int(hi)


def write_daily_csv(
    folder: Path,
    stem: str,
    start: date,
    table: pa.Table,
    day_index: np.ndarray,
    days: Iterable[int],
    append: bool = False,
) -> int:
    """One CSV per day (header included); `append`: add the rows to the day's file without a header (the
    later chunks of a world, whose first chunk wrote the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = 0
    options = pacsv.WriteOptions(include_header=not append)
    for d, lo, hi in day_bounds(day_index, days):
        path = folder / f"{stem}_{(start + timedelta(days=d)).isoformat()}.csv"
        if append:
            if hi > lo:
                with path.open("ab") as sink:
                    pacsv.write_csv(table.slice(lo, hi - lo), sink, write_options=options)
        else:
            pacsv.write_csv(table.slice(lo, hi - lo), str(path), write_options=options)
        rows += hi - lo
    return rows


def write_daily_jsonl(
    folder: Path,
    stem: str,
    start: date,
    lines: pa.Array,
    day_index: np.ndarray,
    days: Iterable[int],
    append: bool = False,
) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    rows = 0
    for d, lo, hi in day_bounds(day_index, days):
        path = folder / f"{stem}_{(start + timedelta(days=d)).isoformat()}.jsonl"
        chunk = lines.slice(lo, hi - lo).to_pylist()
        with path.open("a" if append else "w", encoding="utf-8") as sink:
            sink.write("".join(line + "\n" for line in chunk))
        rows += hi - lo
    return rows


SHOP_SCHEMA = {
    "customers": "customer_id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, last_name TEXT, phone TEXT, "
    "address_line1 TEXT, address_line2 TEXT, city TEXT, postcode TEXT, region TEXT, country TEXT, "
    "birth_date TEXT, created_at TEXT, updated_at TEXT",
    "orders": "order_id INTEGER PRIMARY KEY, customer_id INTEGER, ordered_at TEXT, total_amount REAL, "
    "status TEXT, currency TEXT, updated_at TEXT",
    "order_items": "order_id INTEGER, line_number INTEGER, product_id INTEGER, quantity INTEGER, "
    "unit_price REAL, PRIMARY KEY (order_id, line_number)",
    "products": "product_id INTEGER PRIMARY KEY, name TEXT, category TEXT, price REAL, updated_at TEXT",
}


def write_sqlite(path: Path, tables: dict[str, list[tuple]]) -> None:
    """Create the database from scratch (same rows in the same order give the same file bytes)."""
    shop = ShopDatabase(path)
    shop.add(tables)
    shop.close()


class ShopDatabase:
    """The shop database written in parts (a world's chunks): created fresh at the first `add`, each table
    created just before its first rows (the order `write_sqlite` always had, so one part gives its bytes),
    moved into place by `close`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.with_suffix(".sqlite.tmp")
        self._tmp.unlink(missing_ok=True)
        self._con = sqlite3.connect(self._tmp)
        self._con.execute("PRAGMA page_size = 4096")
        self._con.execute("PRAGMA journal_mode = OFF")
        self._con.execute("PRAGMA synchronous = OFF")
        self._created: set[str] = set()

    def add(self, tables: dict[str, list[tuple]]) -> None:
        for name, ddl in SHOP_SCHEMA.items():
            if name not in self._created:
                self._con.execute(f"CREATE TABLE {name} ({ddl})")
                self._created.add(name)
            rows = tables[name]
            if rows:
                marks = ",".join("?" * len(rows[0]))
                self._con.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)
        self._con.commit()

    def close(self) -> None:
        self._con.close()
        self._tmp.replace(self.path)

    def abandon(self) -> None:
        self._con.close()
        self._tmp.unlink(missing_ok=True)


def write_parquet(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", use_dictionary=True, write_statistics=True)


class ParquetParts:
    """Parquet files written a part at a time (one row group per part, same options as `write_parquet`, so a
    file of one part has its bytes). A later part is cast to the first part's schema: a chunk whose column is
    all null has no type of its own."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write(self, name: str, table: pa.Table) -> None:
        writer = self._writers.get(name)
        if writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(
                self.folder / name, table.schema, compression="zstd", use_dictionary=True, write_statistics=True
            )
            self._writers[name] = writer
        elif not table.schema.equals(writer.schema, check_metadata=False):
            table = table.cast(writer.schema)
        writer.write_table(table)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
