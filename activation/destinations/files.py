"""File destination: the audience as CSV and/or Parquet under `<home>/activation/<sync>/`.

- `audience.csv`, `audience.parquet`: the full current audience (replaced each run that changes it);
- `changes/<run_id>.csv|.parquet`: this run's diff, a `_change` column (insert | update | delete) + fields.
Every file is written to a temporary name in the same folder and renamed, so readers never see half a file.
CSV cells that a spreadsheet would run as a formula (starting with = + - @ tab or CR) get a leading `'`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMULA_PREFIX = r"^[=+\-@\t\r]"


def neutralise_formulas(table: pa.Table) -> pa.Table:
    """Prefix a `'` to string cells a spreadsheet would evaluate (CSV formula injection, OWASP)."""
    columns = []
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            risky = pc.match_substring_regex(column, FORMULA_PREFIX)
            column = pc.if_else(risky, pc.binary_join_element_wise("'", column, ""), column)
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def write_csv_atomically(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pacsv.write_csv(neutralise_formulas(table), tmp)
    _fsync_replace(tmp, path)


def write_parquet_atomically(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    _fsync_replace(tmp, path)


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _safe_run_id(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


class FileDestination:
    """Writes audience snapshots and per-run diffs; `formats` is a subset of ('csv', 'parquet')."""

    def __init__(self, folder: Path, formats: list[str]) -> None:
        self.folder = folder
        self.formats = list(formats)

    def audience_files(self) -> list[Path]:
        return [self.folder / f"audience.{fmt}" for fmt in self.formats]

    def write(self, audience: pa.Table, changes: pa.Table, run_id: str) -> list[Path]:
        (self.folder / "changes").mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        targets = [(audience, self.folder / "audience")]
        if changes.num_rows:
            targets.append((changes, self.folder / "changes" / _safe_run_id(run_id)))
        for table, stem in targets:
            for fmt in self.formats:
                path = stem.with_name(f"{stem.name}.{fmt}")
                if fmt == "csv":
                    write_csv_atomically(table, path)
                else:
                    write_parquet_atomically(table, path)
                written.append(path)
        return written
