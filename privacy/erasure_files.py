"""The files an erasure rewrites: landing Parquet, sync output and rejection files, and DuckDB files themselves.

Every rewrite goes to a temporary file beside the original and replaces it with `os.replace`, so a reader sees
the old file or the new one, and no erased byte is left in the original's place under the home.
"""

from __future__ import annotations

import csv
import json
import os
import re
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from touchpoint.config import RunContext
from touchpoint.ingest.landing import BatchManifest, manifests_dir, record_manifest
from touchpoint.locks import SYNC_LOCK_FILE, file_lock
from touchpoint.sql_text import sql_literal

_LOCATORS = (
    "select batch_id, row_number from _doomed union select batch_id, row_number from _doomed_quarantine"
)


def rewrite_landing(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Rewrite each landing file holding a doomed row without it; update its manifest and `audit.load_batches`.

    Returns (files rewritten, rows removed).
    """
    con.execute("alter table audit.load_batches add column if not exists rows_erased bigint default 0")
    batches = [row[0] for row in con.execute(f"select distinct batch_id from ({_LOCATORS}) order by 1").fetchall()]
    files = rows = 0
    for batch_id in batches:
        path = manifests_dir(ctx.paths) / f"{batch_id}.json"
        if not path.exists():
            continue  # a batch whose landing file retention already expired
        manifest = BatchManifest(**json.loads(path.read_text(encoding="utf-8")))
        landing = manifest.landing_path(ctx.paths)
        if not landing.exists():
            continue
        removed, rejected = _rewrite_one(con, landing, batch_id)
        if not removed:
            continue
        record_manifest(ctx.paths, replace(
            manifest, rows=manifest.rows - removed, rows_erased=manifest.rows_erased + removed,
            rows_rejected_by_reader=manifest.rows_rejected_by_reader - rejected))
        con.execute(
            "update audit.load_batches set rows_erased = coalesce(rows_erased, 0) + ? where batch_id = ?",
            [removed, batch_id])
        files, rows = files + 1, rows + removed
    return files, rows


def _rewrite_one(con: duckdb.DuckDBPyConnection, landing: Path, batch_id: str) -> tuple[int, int]:
    # not hive-partitioned: the `extract_date=` folder must not come back as a column of the rewritten file
    source = f"{sql_literal(str(landing))}, hive_partitioning = false"
    keep = f"_row_number not in (select row_number from ({_LOCATORS}) where batch_id = {sql_literal(batch_id)})"
    removed, rejected = con.execute(
        f"select count(*) filter (where not ({keep})), count(*) filter (where not ({keep}) and _reject_reason "
        f"is not null) from read_parquet({source})").fetchall()[0]
    if removed:
        tmp = landing.with_name(f".{landing.name}.{os.getpid()}.tmp")
        con.execute(f"copy (select * from read_parquet({source}) where {keep} order by _row_number) "
                    f"to {sql_literal(str(tmp))} (format parquet)")
        _fsync_replace(tmp, landing)
    return int(removed), int(rejected)


def scrub_activation_files(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> int:
    """Drop the rows of erased people from the files syncs wrote: audiences and change files under
    `<home>/activation`, rejection files under `<home>/state/syncs`. A row goes when its person id or key
    column holds an erased person id, or a column named like an email or phone holds an erased one; nothing else
    is compared (a count that equals a customer id is not a match). Each sync's folder is scrubbed under its lock.
    Returns files rewritten."""
    persons = {row[0] for row in con.execute(
        "select value from _erased_values where identifier_kind = 'person_id'").fetchall()}
    contacts = {row[0].lower() for row in con.execute(
        "select value from _erased_values where identifier_kind in ('email', 'phone')").fetchall()}
    if not persons and not contacts:
        return 0
    rewritten = 0
    for root in (ctx.paths.home / "activation", ctx.paths.state / "syncs"):
        for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
            # the sync's own lock (activation.state.sync_lock), so a sync running now cannot interleave
            lock = file_lock(folder / SYNC_LOCK_FILE, timeout_s=600.0) if root.name == "syncs" else nullcontext()
            with lock:
                for path in sorted(folder.rglob("*")):
                    if path.suffix in (".parquet", ".csv") and path.is_file():
                        rewritten += _scrub_table_file(path, persons, contacts)
    return rewritten


_KEY_COLUMNS = ("person_id", "key", "_key", "record_key")


def _scrub_table_file(path: Path, persons: set[str], contacts: set[str]) -> int:
    from touchpoint.privacy.pii_columns import looks_like_pii

    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        with open(path, newline="", encoding="utf-8") as handle:  # every cell as the text it is
            rows = list(csv.DictReader(handle))
    if not rows:
        return 0
    keys = [c for c in rows[0] if c in _KEY_COLUMNS]
    personal = [c for c in rows[0] if looks_like_pii(c)]

    def erased(row: dict) -> bool:
        return any(str(row[c]) in persons for c in keys if row[c] is not None) or any(
            str(row[c]).strip().lower().lstrip("'") in contacts for c in personal if row[c] is not None)

    kept = [row for row in rows if not erased(row)]
    if len(kept) == len(rows):
        return 0
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(kept, schema=pq.read_schema(path)), tmp)
    else:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), quoting=csv.QUOTE_NONNUMERIC)
            writer.writeheader()
            writer.writerows(kept)
    _fsync_replace(tmp, path)
    return 1


TEXT_SUFFIXES = (".log", ".out", ".json", ".md", ".html", ".txt", ".jsonl")


def scrub_text_files(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> int:
    """Replace erased emails, phones and person ids by `[erased]` in the run logs and reports under
    `<home>/artifacts` and Airflow's task logs (a gate report quoting an invalid email, a log line naming a
    person). Whole values only (not inside a longer word or number), so JSON stays JSON. Returns files rewritten."""
    values = sorted({row[0] for row in con.execute(
        "select value from _erased_values where identifier_kind in ('email', 'phone', 'person_id')").fetchall()},
        key=len, reverse=True)
    if not values:
        return 0
    pattern = re.compile(
        rb"(?<![\w.@+-])(?:" + b"|".join(re.escape(v.encode()) for v in values) + rb")(?![\w@-])", re.IGNORECASE)
    rewritten = 0
    for root in (ctx.paths.artifacts, ctx.paths.airflow_home / "logs"):
        for path in sorted(root.rglob("*")) if root.exists() else []:
            if path.suffix not in TEXT_SUFFIXES or not path.is_file():
                continue
            data = path.read_bytes()
            scrubbed = pattern.sub(b"[erased]", data)
            if scrubbed != data:
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(scrubbed)
                _fsync_replace(tmp, path)
                rewritten += 1
    return rewritten


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)

