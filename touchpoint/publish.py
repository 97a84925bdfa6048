"""Write-audit-publish: the working warehouse becomes the published one only after every gate passed.

`publish(ctx)` holds the single-writer lock, checkpoints the working DuckDB (so the file alone holds
every change), refuses unless this run's gates are recorded in `audit.gate_results` with no critical
failure, copies the file to a temp file beside the published one, checks the copy opens, and swaps it in
with `os.replace` (atomic on one filesystem). Analysts hold read-only connections to the published
file: an open connection keeps reading the snapshot it opened (the old inode), a new one opens the new
snapshot; nobody waits for a lock or sees a half-written file. A run that fails a gate never reaches
`publish`, so the previous snapshot stays served.

The analyst shell over the published file (`touchpoint sql`) is `touchpoint.shell`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from touchpoint.config import RunContext
from touchpoint.warehouse import writer_lock

REQUIRED_GATES = ("raw", "marts")


class PublishRefused(RuntimeError):
    """This run's gates did not all pass (or never ran): the published warehouse is left as it was."""


@dataclass(frozen=True)
class PublishResult:
    run_id: str
    published_db: Path
    bytes: int
    tables: int
    gates: tuple[str, ...]  # layers whose gate passed in this run
    seconds: float


def publish(ctx: RunContext, required_gates: Iterable[str] = REQUIRED_GATES) -> PublishResult:
    """Atomically replace the published warehouse with this run's working warehouse.

    Call it outside any `connect_work` block (it takes the writer lock itself). Raises
    `PublishRefused` when a gate of this run failed or a required layer's gate has no recorded result.
    """
    started = time.perf_counter()
    paths = ctx.paths
    target = paths.published_db
    target.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(paths):
        if not paths.work_db.exists():
            raise FileNotFoundError(f"no working warehouse at {paths.work_db}")
        con = duckdb.connect(str(paths.work_db))
        try:
            gates = _passed_gates(con, ctx.run_id, tuple(required_gates))
            con.execute("checkpoint")
        finally:
            con.close()
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            shutil.copyfile(paths.work_db, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            check = duckdb.connect(str(tmp), read_only=True)
            try:
                tables = check.execute("select count(*) from duckdb_tables()").fetchall()[0][0]
            finally:
                check.close()
            size = tmp.stat().st_size
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _fsync_dir(target.parent)
    seconds = round(time.perf_counter() - started, 3)
    return PublishResult(ctx.run_id, target, size, int(tables), gates, seconds)


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
