"""Immutable landing files and the batch manifests that tell the loader what is pending.

`<home>/landing/<source>/<entity>/extract_date=YYYY-MM-DD/<batch_id>.parquet` (docs/contracts.md §3):
every column as text exactly as pulled (a column whose name starts with "_" under `_extra.<name>`, see
`contract.landed_name`), plus `_source_file`, `_row_number`, `_reject_reason`, `_raw_line`.
A batch id is derived from content (`<entity>-<extract_date>-<sha256[:12]>`), so the same input always
lands as the same batch and an existing landing file is never rewritten.

Each landed batch also gets a manifest `<home>/state/ingest/batches/<batch_id>.json`; the loader loads
every manifest whose batch is not yet in `audit.load_batches`, so a lost working warehouse can be
rebuilt from landing alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from touchpoint.config import Paths
from touchpoint.sql_text import quote_ident, sql_literal

LANDING_METADATA = ("_source_file", "_row_number", "_reject_reason", "_raw_line")


@dataclass(frozen=True)
class BatchManifest:
    """One landed batch: what it is, where it came from and where its landing file is."""

    batch_id: str
    source: str
    entity: str
    source_file: str
    extract_date: str  # YYYY-MM-DD
    as_of: str  # the as-of date of the run that extracted it
    extracted_at: str  # ISO timestamp: the run's logical extraction time, not the wall clock
    landing_file: str  # relative to the home
    rows: int
    rows_rejected_by_reader: int
    # ISO timestamp, UTC: the wall clock when the file was read. Later than this (plus slack) no value in it can
    # be (a broken clock, see plausibility.py). None in manifests written before it was recorded.
    pulled_at: str | None = None
    # Rows an erasure removed from the landing file (privacy/erasure.py); `rows` counts what the file holds now.
    rows_erased: int = 0

    def landing_path(self, paths: Paths) -> Path:
        return paths.home / self.landing_file


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_batch_id(entity: str, extract_date: date, content_key: str) -> str:
    """Deterministic batch id: the same entity, day and content always give the same id."""
    digest = hashlib.sha256(f"{entity}\n{content_key}".encode()).hexdigest()
    return f"{entity}-{extract_date.isoformat()}-{digest[:12]}"


def landing_file(paths: Paths, source: str, entity: str, extract_date: date, batch_id: str) -> Path:
    return (
        paths.landing / source / entity / f"extract_date={extract_date.isoformat()}" / f"{batch_id}.parquet"
    )


def manifests_dir(paths: Paths) -> Path:
    return paths.state / "ingest" / "batches"


def write_json_atomic(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_landing(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: list[tuple[str, str]],
    target: Path,
    source_file: str,
) -> None:
    """Write `table` (landing shape, rows in row-number order) to `target` unless it already exists
    (landing is immutable). DuckDB keeps insertion order when writing, so no sort is needed.

    `columns` are (column in `table`, landing name) pairs: names are conformed to the contract's
    spelling, values stay exactly as pulled.
    """
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    selected = ", ".join(f"{quote_ident(c)} as {quote_ident(alias)}" for c, alias in columns)
    prefix = f"{selected}, " if selected else ""
    con.execute(
        f"copy (select {prefix}{sql_literal(source_file)} as _source_file, _row_number, _reject_reason, "
        f"_raw_line from {table}) to {sql_literal(str(tmp))} (format parquet)"
    )
    os.replace(tmp, target)


def record_manifest(paths: Paths, manifest: BatchManifest) -> Path:
    path = manifests_dir(paths) / f"{manifest.batch_id}.json"
    write_json_atomic(path, asdict(manifest))
    return path


def read_manifests(paths: Paths) -> list[BatchManifest]:
    """Every landed batch, oldest extract first (stable order so loads are reproducible)."""
    folder = manifests_dir(paths)
    if not folder.exists():
        return []
    manifests = [
        BatchManifest(**json.loads(path.read_text(encoding="utf-8"))) for path in folder.glob("*.json")
    ]
    return sorted(manifests, key=lambda m: (m.extract_date, m.entity, m.source_file, m.batch_id))


def logical_extraction_time(as_of_end: datetime) -> str:
    return as_of_end.isoformat(sep=" ")


def wall_clock_time() -> str:
    """Now, UTC, naive like every timestamp in raw (to the second)."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
