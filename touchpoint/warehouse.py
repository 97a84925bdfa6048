"""Connections to the working and the published warehouse, and who may write the working one.

One writer: `connect_work` takes an exclusive file lock next to the working database, so two
processes (a DAG task, a CLI command) queue instead of corrupting it; `WarehouseLease` keeps whole
runs apart, so overlapping DAG runs (backfills included) never interleave their stages.
Readers use `connect_published`, which is read-only and never touches the working file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from touchpoint.config import Paths, duckdb_memory_limit
from touchpoint.locks import LockBusyError, file_lock
from touchpoint.sql_text import sql_literal


class WarehouseBusyError(LockBusyError):
    """Another process holds the working warehouse for longer than we were willing to wait."""


def relation_exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    """Whether a table or view `schema.name` exists on the connection (any attached database)."""
    return bool(con.execute(
        "select 1 from information_schema.tables where table_schema = ? and table_name = ?", [schema, name]
    ).fetchall())


@contextmanager
def writer_lock(paths: Paths, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold the single-writer lock of the working warehouse (blocks until free or timeout)."""

    def busy() -> WarehouseBusyError:
        return WarehouseBusyError(f"working warehouse {paths.work_db} is locked by another writer")

    with file_lock(paths.work / ".writer.lock", timeout_s=timeout_s, busy=busy):
        yield


@contextmanager
def connect_work(paths: Paths) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the working warehouse for writing, under the single-writer lock."""
    with writer_lock(paths):
        con = duckdb.connect(str(paths.work_db), config={"memory_limit": duckdb_memory_limit()})
        try:
            con.execute("set timezone = 'UTC'")
            yield con
        finally:
            con.close()


def connect_published(path: Path) -> duckdb.DuckDBPyConnection:
    """Open the published warehouse read-only (what analysts and syncs use)."""
    if not path.exists():
        raise FileNotFoundError(f"no published warehouse at {path}: run `touchpoint run` first")
    con = duckdb.connect(str(path), read_only=True)
    con.execute("set timezone = 'UTC'")
    return con


class LeaseNotHeldError(RuntimeError):
    """A stage of one run found the working warehouse leased to another run (deterministic: not retried)."""


@dataclass(frozen=True)
class LeaseHolder:
    """The pipeline run that owns the working warehouse, and since when."""

    run_key: str
    as_of: str
    claimed_at: str


class WarehouseLease:
    """Which pipeline run owns the working warehouse, from its first extract to its last sync.

    The writer lock serialises single stages; a run, though, is a transaction over many stages (extract
    cursors, raw, dbt layers, gates, publish, sync state), and two runs whose stages interleave would gate
    and publish a mix of both. Airflow's `max_active_runs` does not cover it: backfill runs are counted apart
    from other runs and default to ten at once. So a run claims this lease first, every stage checks it,
    and the run releases it at the end, whatever happened in between (an Airflow teardown task).

    The lease is a small JSON file changed only under its own file lock; a holder whose run is over
    (`is_stale`) is taken over, so a crashed run cannot block the warehouse for ever.
    """

    def __init__(self, paths: Paths) -> None:
        self.path = paths.work / "lease.json"
        self._lock_path = paths.work / ".lease.lock"

    def _locked(self) -> AbstractContextManager[None]:
        return file_lock(self._lock_path)  # held for a read or a write of a small file: wait for it

    def _read(self) -> LeaseHolder | None:
        if not self.path.exists():
            return None
        return LeaseHolder(**json.loads(self.path.read_text()))

    def holder(self) -> LeaseHolder | None:
        with self._locked():
            return self._read()

    def try_claim(self, run_key: str, as_of: str, is_stale: Callable[[LeaseHolder], bool]) -> LeaseHolder | None:
        """Claim the lease for `run_key`; None when it is now ours, else the run that holds it."""
        with self._locked():
            current = self._read()
            if current is not None and current.run_key != run_key and not is_stale(current):
                return current
            claimed = LeaseHolder(run_key, as_of, datetime.now(UTC).isoformat(timespec="seconds"))
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps(asdict(claimed)))
            os.replace(temporary, self.path)
            return None

    def release(self, run_key: str) -> bool:
        """Give the lease up if `run_key` holds it; True when it did."""
        with self._locked():
            current = self._read()
            if current is None or current.run_key != run_key:
                return False
            self.path.unlink()
            return True

    def release_abandoned(self) -> LeaseHolder | None:
        """Drop whatever lease is held, for a caller that knows no run can be live; return what it dropped."""
        with self._locked():
            current = self._read()
            self.path.unlink(missing_ok=True)
            return current

    def check(self, run_key: str) -> None:
        """Raise LeaseNotHeldError unless `run_key` holds the lease."""
        current = self.holder()
        if current is None or current.run_key != run_key:
            held_by = f"run {current.run_key} (as of {current.as_of})" if current else "no run"
            raise LeaseNotHeldError(
                f"the working warehouse {self.path.parent} is leased to {held_by}, not to {run_key}: "
                "a stage may only run inside the run that claimed the warehouse"
            )


def compact_database(path: Path) -> dict[str, int]:
    """Rewrite a DuckDB file into a fresh one holding only its live rows, and swap it in.

    DuckDB leaves deleted rows in their row groups and dropped tables in free blocks; `COPY FROM DATABASE` into a
    new file writes live rows only. Returns the free blocks before and after and the new size. A fresh file
    always has no free block, so that figure alone proves little: tests/test_privacy_erasure.py searches the
    file's bytes and every table for the erased person.
    """
    tmp = path.with_name(f".{path.name}.compact.tmp")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect()
    try:
        con.execute(f"attach {sql_literal(str(path))} as old_db")
        con.execute("checkpoint old_db")
        before = _free_blocks(con, "old_db")
        con.execute(f"attach {sql_literal(str(tmp))} as new_db")
        con.execute("copy from database old_db to new_db")
        con.execute("checkpoint new_db")
        after = _free_blocks(con, "new_db")
        con.execute("detach new_db")
        con.execute("detach old_db")
    except BaseException:
        con.close()
        tmp.unlink(missing_ok=True)
        raise
    con.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    Path(f"{path}.wal").unlink(missing_ok=True)
    return {"free_blocks_before": before, "free_blocks_after": after, "bytes": path.stat().st_size}


def _free_blocks(con: duckdb.DuckDBPyConnection, database: str) -> int:
    rows = con.execute("select database_name, free_blocks from pragma_database_size()").fetchall()
    return int(next(free for name, free in rows if name == database))
