"""Extract many files of one entity with one DuckDB scan, when they can be shown to read cleanly.

The careful readers (readers.py) read one file at a time and keep every unreadable line with its reason. A
two-year demo world is 3,650 daily files, and the statements run per file, not the rows, held extraction to
46k rows/s. Here the files of one entity and one layout are read together by DuckDB's own readers (read_csv
with the dialect given, read_parquet), streamed to Arrow in file order and written file by file to landing.

Nothing is guessed. A file takes this path only when its layout is one the careful reader reads the same way
(`csv_layout`, `jsonl_layout`, `parquet_layout` say which), and it lands from here only when DuckDB rejected
none of its lines and, for JSON lines, every line is an object whose keys are those of the first. Every other
file is left to the caller, which reads it again with the careful reader, alone: a hostile file still gets
exactly the quarantine it got before, and a clean file lands with the same columns, values and row numbers.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from touchpoint.ingest import readers
from touchpoint.ingest.contract import landed_name
from touchpoint.sql_text import quote_ident, sql_literal, sql_literal_list

# What one scan reads at most: bounds the work lost when a scan fails as a whole (each of its files is then read
# carefully) and keeps a group's open landing writers few.
GROUP_BYTES = 256 * 1024 * 1024
GROUP_FILES = 1_000
_HEAD_BYTES = 64 * 1024
_CHUNK = 1 << 20
_BATCH_ROWS = 122_880
# Names DuckDB's multi-file readers give virtual or option columns: a file column so named is left to the careful
# reader rather than shadow one.
_READER_NAMES = {"file_index", "filename", "file_row_number"}
_CSV_DELIMITERS = (",", ";", "\t", "|")
_BOM = b"\xef\xbb\xbf"
# Byte pairs after which DuckDB's CSV sniffer (the careful reader) may read a file differently from RFC 4180 with
# the header's delimiter, found by trying it: a field opening with ' (the sniffer then takes ' as the quote), a
# line opening with # (a comment), a backslash before a quote (backslash escapes). Rare in real exports; such a
# file is read carefully.
_CSV_AMBIGUOUS = {
    b"'": (b"\n'", b"\r'", b",'", b";'", b"\t'", b"|'"),
    b"#": (b"\n#", b"\r#"),
    b"\\": (b'\\"',),
}


@dataclass(frozen=True)
class FileScan:
    """What one pass over a file's bytes tells: its content hash, its first bytes, and whether it holds any of
    the byte pairs that make a CSV dialect ambiguous."""

    sha256: str
    head: bytes
    csv_ambiguous: bool


def scan_file(path: Path, csv_checks: bool) -> FileScan:
    """Hash `path` (what the watermarks compare) and, in the same read, look for ambiguous CSV byte pairs."""
    digest = hashlib.sha256()
    head = b""
    ambiguous = False
    tail = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            if len(head) < _HEAD_BYTES:
                head += chunk[: _HEAD_BYTES - len(head)]
            if csv_checks and not ambiguous:
                ambiguous = _ambiguous(tail + chunk)
                tail = chunk[-1:]
    if csv_checks and head[:1] in (b"#", b"'"):
        ambiguous = True
    return FileScan(digest.hexdigest(), head, ambiguous)


def _ambiguous(window: bytes) -> bool:
    # One pass per rare byte (memchr speed), and the pairs only where that byte occurs: 9 pair searches over
    # every chunk cost 1.8 s on 167 MB of email events.
    return any(byte in window and any(pair in window for pair in pairs) for byte, pairs in _CSV_AMBIGUOUS.items())


@dataclass(frozen=True)
class Layout:
    """How a group of files is read: the reader, the file columns (landed names, in the careful reader's order)
    and what distinguishes the layout (files with equal keys are read in one scan)."""

    reader: str
    columns: tuple[str, ...]
    key: tuple[object, ...]


def _plain_names(names: list[str]) -> bool:
    """Names the careful reader keeps exactly as written, none shadowing a reader's own column."""
    folded = [n.lower() for n in names]
    return (
        bool(names)
        and all(n and n == n.strip() and '"' not in n for n in names)
        and len(set(folded)) == len(folded)
        and not _READER_NAMES & set(folded)
    )


def csv_layout(scan: FileScan) -> Layout | None:
    """The layout of a CSV file the careful reader would read as RFC 4180 with its header's delimiter, or None.

    The header must be UTF-8 without a byte-order mark, hold exactly one kind of delimiter, and name every
    column plainly; the file must hold none of the ambiguous byte pairs.
    """
    if scan.csv_ambiguous or scan.head.startswith(_BOM):
        return None
    first = scan.head.replace(b"\r", b"\n").split(b"\n", 1)
    if len(first) < 2:
        return None  # no complete header line within the first bytes
    try:
        header = first[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    used = [d for d in _CSV_DELIMITERS if d in header]
    delimiter = used[0] if len(used) == 1 else ","
    if len(used) > 1:
        return None
    names = next(csv.reader([header], delimiter=delimiter), [])
    if not _plain_names(names):
        return None
    return Layout("csv", tuple(landed_name(n) for n in names), ("csv", delimiter, tuple(names)))


def jsonl_layout(scan: FileScan) -> Layout | None:
    """The layout of a JSON-lines file whose first non-blank line is an object with plainly named keys, or None.

    Its columns are those keys in sorted order: what the careful reader gives when every line has the keys of
    the first, which the scan checks line by line (same keys, same order: a list comparison costs little, a set
    comparison costs as much as the extraction).
    """
    if scan.head.startswith(_BOM):
        return None
    for raw in scan.head.split(b"\n")[:-1]:  # complete lines only
        if raw.strip():
            break
    else:
        return None
    try:
        first = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(first, dict) or not _plain_names(list(first)):
        return None
    return Layout("jsonl", tuple(landed_name(k) for k in sorted(first)), ("jsonl", tuple(first)))


def parquet_layout(path: Path) -> Layout | None:
    """The layout of a readable Parquet file with plainly named columns, or None."""
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError, pa.ArrowException):
        return None
    if not _plain_names(list(schema.names)):
        return None
    described = tuple((f.name, str(f.type)) for f in schema)
    return Layout("parquet", tuple(landed_name(n) for n in schema.names), ("parquet", described))


@dataclass
class BulkFile:
    """One file for the bulk path: where to read it, what to call it and where its landing file goes."""

    path: Path
    source_file: str
    layout: Layout
    landing_names: tuple[str, ...]  # the layout's columns as landing names them (contract spelling)
    target: Path
    rows: int = 0
    lines: int = 0
    failed: bool = False
    writer: pq.ParquetWriter | None = field(default=None, repr=False)

    @property
    def tmp(self) -> Path:
        return self.target.with_name(f".{self.target.name}.{os.getpid()}.bulk.tmp")


def land_files(con: duckdb.DuckDBPyConnection, files: list[BulkFile]) -> list[BulkFile]:
    """Land every file of `files` that reads cleanly (`.rows` set); return the others, for the careful reader.

    A landing file is written to a temporary name and renamed only when its file read cleanly to the end; an
    existing landing file is never rewritten (landing is immutable, and its name is its content's hash).
    """
    left: list[BulkFile] = []
    for group in _groups(files):
        try:
            _scan_group(con, group)
        except duckdb.Error:
            for item in group:
                item.failed = True  # e.g. a file DuckDB cannot open at all: the careful reader says why
        finally:
            for item in group:
                _close(item)
        for item in group:
            if item.failed:
                item.tmp.unlink(missing_ok=True)
                left.append(item)
            else:
                _publish(item)
    return left


def _groups(files: list[BulkFile]) -> Iterator[list[BulkFile]]:
    by_layout: dict[tuple[object, ...], list[BulkFile]] = {}
    for item in files:
        by_layout.setdefault(item.layout.key, []).append(item)
    for same in by_layout.values():
        group: list[BulkFile] = []
        size = 0
        for item in same:
            if group and (size >= GROUP_BYTES or len(group) >= GROUP_FILES):
                yield group
                group, size = [], 0
            group.append(item)
            with contextlib.suppress(OSError):  # gone since it was hashed: the careful reader will say so
                size += item.path.stat().st_size
        yield group


def _scan_group(con: duckdb.DuckDBPyConnection, group: list[BulkFile]) -> None:
    layout = group[0].layout
    paths = [str(item.path) for item in group]
    query, split = _QUERIES[layout.reader](layout, paths)
    for table in ("_bulk_rejects", "_bulk_scans"):
        con.execute(f"drop table if exists {table}")
    reader = con.sql(query).to_arrow_reader(_BATCH_ROWS)
    last = -1
    for batch in reader:
        indexes = batch.column(0).to_numpy()
        starts = np.flatnonzero(np.diff(indexes)) + 1
        for start, end in zip([0, *starts], [*starts, len(indexes)], strict=True):
            index = int(indexes[start])
            if index < last:
                raise _order_lost()
            if index != last and last >= 0:
                _close(group[last])  # rows come file by file: at most one landing file is open
            last = index
            item = group[index]
            if not item.failed:
                split(item, batch.slice(start, end - start))
    _fail_rejected(con, group)
    for item in group:
        if not item.failed and item.writer is None and item.rows == 0:
            empty = pa.table({name: pa.array([], pa.string()) for name in item.landing_names})
            _write(item, empty, np.arange(0))


def _order_lost() -> duckdb.Error:
    # Row numbers are positions in a file, so rows must arrive file by file; DuckDB keeps that order with
    # preserve_insertion_order (set by extract_source). Should it not, the careful reader numbers every file.
    return duckdb.InvalidInputException("bulk scan returned files out of order")


def _fail_rejected(con: duckdb.DuckDBPyConnection, group: list[BulkFile]) -> None:
    """Files with a line DuckDB's CSV reader rejected go to the careful reader, which says which and why."""
    if group[0].layout.reader == "parquet":
        return  # read_parquet has no line to reject: a file it cannot read fails the scan
    rejected = {
        row[0]
        for row in con.execute(
            "select distinct scans.file_path from _bulk_rejects as rejects "
            "join _bulk_scans as scans using (scan_id, file_id)"
        ).fetchall()
    }
    by_path = {str(item.path): item for item in group}
    for path in rejected:
        if path in by_path:
            by_path[path].failed = True
    if rejected - set(by_path):
        for item in group:
            item.failed = True  # a reject we cannot place: trust no file of the scan


def _csv_query(layout: Layout, paths: list[str]) -> tuple[str, Callable[[BulkFile, pa.RecordBatch], None]]:
    _, delimiter, names = layout.key
    columns = ", ".join(f"{sql_literal(n)}: 'VARCHAR'" for n in names)  # type: ignore[union-attr]
    query = (
        f"select file_index, * from read_csv({sql_literal_list(paths)}, auto_detect = false, "
        f"delim = {sql_literal(str(delimiter))}, quote = '\"', escape = '\"', header = true, "
        f"columns = {{{columns}}}, max_line_size = {readers.MAX_LINE_BYTES}, store_rejects = true, "
        "rejects_table = '_bulk_rejects', rejects_scan = '_bulk_scans')"
    )

    def split(item: BulkFile, batch: pa.RecordBatch) -> None:
        data = pa.Table.from_batches([batch]).drop_columns([batch.schema.names[0]])
        _write(item, data.rename_columns(list(item.landing_names)), np.arange(item.rows + 1, item.rows + 1 + len(data)))

    return query, split


def _jsonl_query(layout: Layout, paths: list[str]) -> tuple[str, Callable[[BulkFile, pa.RecordBatch], None]]:
    _, keys = layout.key
    in_order = list(keys)  # type: ignore[call-overload]
    json_paths = "[" + ", ".join(sql_literal("$." + quote_ident(k)) for k in sorted(in_order)) + "]"
    values = ", ".join(f"_values[{i + 1}]" for i in range(len(in_order)))
    # The careful reader's tests, in its words: blank lines are no records; a line is an object when it is valid
    # JSON starting with '{'. A record is usable here when its keys are the first line's, in the same order. The
    # JSON functions get NULL for a line that is no object (json_keys would fail on it).
    query = f"""
        select file_index, _blank, coalesce(json_keys(_object) = {sql_literal_list(in_order)}, false),
            {values}
        from (
            select *, json_extract_string(_object, {json_paths}) as _values
            from (
                select file_index, not coalesce(regexp_matches(line, '\\S'), false) as _blank,
                    case when json_valid(line) and starts_with(ltrim(line), '{{') then line end as _object
                from read_csv({sql_literal_list(paths)}, columns = {{'line': 'VARCHAR'}},
                    delim = {sql_literal(readers.LINE_DELIMITER)}, quote = '', escape = '', header = false,
                    auto_detect = false, max_line_size = {readers.MAX_LINE_BYTES}, store_rejects = true,
                    rejects_table = '_bulk_rejects', rejects_scan = '_bulk_scans')
            )
        )
    """

    def split(item: BulkFile, batch: pa.RecordBatch) -> None:
        blank = batch.column(1).to_numpy(zero_copy_only=False)
        usable = batch.column(2).to_numpy(zero_copy_only=False)
        records = ~blank
        line_numbers = np.arange(item.lines + 1, item.lines + 1 + len(blank))
        item.lines += len(blank)
        if (records & ~usable).any():
            item.failed = True
            return
        data = pa.Table.from_batches([batch]).select(list(range(3, 3 + len(in_order))))
        if not records.all():
            data, line_numbers = data.filter(pa.array(records)), line_numbers[records]
        _write(item, data.rename_columns(list(item.landing_names)), line_numbers)

    return query, split


def _parquet_query(layout: Layout, paths: list[str]) -> tuple[str, Callable[[BulkFile, pa.RecordBatch], None]]:
    _, described = layout.key
    selected = ", ".join(f"cast({quote_ident(name)} as varchar)" for name, _ in described)  # type: ignore[union-attr]
    query = (
        f"select file_index, file_row_number + 1, {selected} from read_parquet({sql_literal_list(paths)}, "
        "hive_partitioning = false, file_row_number = true)"
    )

    def split(item: BulkFile, batch: pa.RecordBatch) -> None:
        data = pa.Table.from_batches([batch])
        numbers = data.column(1).to_numpy()
        _write(item, data.drop_columns(data.schema.names[:2]).rename_columns(list(item.landing_names)), numbers)

    return query, split


_QUERIES = {"csv": _csv_query, "jsonl": _jsonl_query, "parquet": _parquet_query}


def _write(item: BulkFile, data: pa.Table, row_numbers: np.ndarray) -> None:
    """Append rows to the file's landing file (temporary name), in the landing shape of readers.py."""
    n = len(data)
    text = pa.schema([(name, pa.string()) for name in data.column_names])
    landed = (data if data.schema.equals(text) else data.cast(text)).append_column(
        "_source_file", pa.repeat(pa.scalar(item.source_file, pa.string()), n)
    )
    landed = landed.append_column("_row_number", pa.array(row_numbers, pa.int64()))
    landed = landed.append_column("_reject_reason", pa.nulls(n, pa.string()))
    landed = landed.append_column("_raw_line", pa.nulls(n, pa.string()))
    if item.writer is None:
        item.tmp.parent.mkdir(parents=True, exist_ok=True)
        item.writer = pq.ParquetWriter(item.tmp, landed.schema, compression="snappy")
    item.writer.write_table(landed)
    item.rows += n


def _close(item: BulkFile) -> None:
    if item.writer is not None:
        item.writer.close()
        item.writer = None


def _publish(item: BulkFile) -> None:
    if item.target.exists():
        item.tmp.unlink(missing_ok=True)  # landed before: the same content, never rewritten
    else:
        os.replace(item.tmp, item.target)
