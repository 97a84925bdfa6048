"""Write-audit-publish: the working warehouse becomes the published files only after every gate passed.

`publish(ctx)` holds the single-writer lock, refuses unless this run's gates are recorded in
`audit.gate_results` with no critical failure, then writes the two published files from the working warehouse
(`touchpoint.privacy.analytics`): the pseudonymised analytics file analysts and syncs read, and the pii file,
the one home of clear identifiers. Each is written to a temp file beside its target, synced, checked to open,
and swapped in with `os.replace` (atomic on one filesystem), the pii file first. Analysts hold read-only
connections to the published files: an open connection keeps reading the snapshot it opened (the old inode),
a new one opens the new snapshot; nobody waits for a lock or sees a half-written file. A run that fails a gate
never reaches `publish`, so the previous snapshot stays served; so does one whose warehouse has a column named
like personal data that nobody classified (`PublishRefused`).

The analyst shell over the published files (`touchpoint sql`, `--pii`) is `touchpoint.shell`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from touchpoint.config import RunContext, duckdb_memory_limit
from touchpoint.dbt import read_manifest
from touchpoint.privacy.analytics import PublishedFiles, UnclassifiedPersonalData, write_published_files
from touchpoint.privacy.keys import PrivacyKey, pseudonym_key
from touchpoint.warehouse import writer_lock

REQUIRED_GATES = ("raw", "marts")


class PublishRefused(RuntimeError):
    """This run's gates did not all pass (or never ran), or a column looks like unclassified personal data:
    the published files are left as they were."""


@dataclass(frozen=True)
class PublishResult:
    run_id: str
    published_db: Path  # the analytics file
    bytes: int
    tables: int
    gates: tuple[str, ...]  # layers whose gate passed in this run
    seconds: float
    pii_db: Path | None = None
    pii_bytes: int = 0
    pii_tables: tuple[str, ...] = ()
    pseudonymised_columns: int = 0  # columns of the analytics file holding pseudonyms or redacted text


def publish(ctx: RunContext, required_gates: Iterable[str] = REQUIRED_GATES) -> PublishResult:
    """Atomically replace the published files (analytics and pii) with this run's working warehouse.

    Call it outside any `connect_work` block (it takes the writer lock itself). Raises `PublishRefused` when a
    gate of this run failed, a required layer's gate has no recorded result, or a published column is named
    like an identifier that neither dbt's yml nor privacy/pii_columns.py classifies.
    """
    started = time.perf_counter()
    paths = ctx.paths
    paths.published_db.parent.mkdir(parents=True, exist_ok=True)
    key = pseudonym_key()  # an unusable key fails here, before anything is written
    with writer_lock(paths):
        if not paths.work_db.exists():
            raise FileNotFoundError(f"no working warehouse at {paths.work_db}")
        temporaries = {target: _temporary(target) for target in (paths.pii_db, paths.published_db)}
        try:
            gates, written = _write(ctx, temporaries[paths.published_db], temporaries[paths.pii_db], key,
                                    tuple(required_gates))
            tables = _synced_and_opened(temporaries[paths.published_db])
            _synced_and_opened(temporaries[paths.pii_db])
            sizes = {target: tmp.stat().st_size for target, tmp in temporaries.items()}
            for target, tmp in temporaries.items():  # pii first: a clear value removed never outlives its run
                os.replace(tmp, target)
        except BaseException:
            for tmp in temporaries.values():
                tmp.unlink(missing_ok=True)
                tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
            raise
    _fsync_dir(paths.published_db.parent)
    return PublishResult(
        ctx.run_id, paths.published_db, sizes[paths.published_db], tables, gates,
        round(time.perf_counter() - started, 3), paths.pii_db, sizes[paths.pii_db], written.pii_tables,
        written.pseudonymised_columns,
    )


def _temporary(target: Path) -> Path:
    """A new file name beside `target` (DuckDB creates the file itself: an empty file is not a database)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


def _write(
    ctx: RunContext, analytics: Path, pii: Path, key: PrivacyKey, required: tuple[str, ...]
) -> tuple[tuple[str, ...], PublishedFiles]:
    """Check the gates, then write both files from the working warehouse (the caller holds the writer lock)."""
    con = duckdb.connect(str(ctx.paths.work_db), config={"memory_limit": duckdb_memory_limit()})
    try:
        gates = _passed_gates(con, ctx.run_id, required)
        try:
            return gates, write_published_files(con, analytics, pii, read_manifest(ctx.paths), key)
        except UnclassifiedPersonalData as unclassified:
            raise PublishRefused(f"run {ctx.run_id}: {unclassified}") from None
    finally:
        con.close()


def _synced_and_opened(path: Path) -> int:
    """fsync a written file and check it opens; its number of tables."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
    check = duckdb.connect(str(path), read_only=True)
    try:
        return int(check.execute("select count(*) from duckdb_tables()").fetchall()[0][0])
    finally:
        check.close()


def _passed_gates(con: duckdb.DuckDBPyConnection, run_id: str, required: tuple[str, ...]) -> tuple[str, ...]:
    try:
        rows = con.execute(
            "select layer, bool_and(success or coalesce(severity, 'critical') <> 'critical'), "
            "count(*) filter (where not success and coalesce(severity, 'critical') = 'critical') "
            "from audit.gate_results where run_id = ? group by layer order by layer", [run_id]).fetchall()
    except duckdb.CatalogException:
        rows = []
    except duckdb.BinderException:  # an audit table without our optional severity column
        rows = con.execute(
            "select layer, bool_and(success), count(*) filter (where not success) from audit.gate_results "
            "where run_id = ? group by layer order by layer", [run_id]).fetchall()
    failed = {layer: n for layer, ok, n in rows if not ok}
    if failed:
        raise PublishRefused(f"run {run_id}: gate(s) failed: "
                             + ", ".join(f"{layer} ({n} expectations)" for layer, n in failed.items()))
    missing = [layer for layer in required if layer not in {r[0] for r in rows}]
    if missing:
        raise PublishRefused(f"run {run_id}: no gate result for {', '.join(missing)}: run the gates first")
    return tuple(r[0] for r in rows)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
