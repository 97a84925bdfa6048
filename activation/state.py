"""What each destination is known to hold: the last-synced state of a sync, advanced batch by batch.

Layout under `<home>/state/syncs/<sync name>/`:
- `state.duckdb`: table `synced(key, row_hash, status, synced_at, run_id)`, one row per record the
  destination acknowledged (`status = 'synced'`) or refused (`'refused'`, so an unchanged refused record is
  not resent every run). A batch's rows are written in one transaction *after* the destination acknowledged
  it, so a crash loses at most the in-flight batch, which the next run sends again (upserts and deletes by
  key are idempotent at every destination: exactly-once effect).
- `.lock`: one run of a sync at a time.
- `runs/`, `rejections/`: the audit log (see `audit.py`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import duckdb
import pyarrow as pa

from touchpoint.locks import SYNC_LOCK_FILE, LockBusyError, file_lock
from touchpoint.sql_text import sql_literal

SYNCED_DDL = """
create table if not exists synced (
    key varchar not null,
    row_hash varchar not null,
    status varchar not null,
    synced_at timestamp not null,
    run_id varchar not null
)
"""


class SyncBusyError(LockBusyError):
    """Another run of the same sync holds its lock."""


def syncs_root(state_dir: Path) -> Path:
    return state_dir / "syncs"


def sync_folder(state_dir: Path, sync_name: str) -> Path:
    return syncs_root(state_dir) / sync_name


def state_db_path(state_dir: Path, sync_name: str) -> Path:
    return sync_folder(state_dir, sync_name) / "state.duckdb"


def sync_lock(folder: Path, timeout_s: float = 600.0) -> AbstractContextManager[None]:
    """Hold the lock of one sync (blocks until free, then SyncBusyError after `timeout_s`)."""
    return file_lock(
        folder / SYNC_LOCK_FILE,
        timeout_s=timeout_s,
        poll_s=0.1,
        busy=lambda: SyncBusyError(f"sync state {folder} is locked by another run"),
    )


def open_state(
    state_dir: Path, sync_name: str, destination_fingerprint: str, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection where the sync's state is the table `synced`.

    The state belongs to one destination (`destination_fingerprint`: type, connection, table or paths).
    When the definition now points somewhere else, the old state says nothing about the new destination,
    so it is dropped and the next run is a full sync.

    Read-only (plans, dry runs) opens an in-memory database with the state attached read-only, or an empty
    `synced` table when the sync never ran, so planning never creates or changes files.
    """
    path = state_db_path(state_dir, sync_name)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(path))
        con.execute(SYNCED_DDL)
        con.execute("create table if not exists destination (fingerprint varchar not null)")
        stored = con.execute("select fingerprint from destination").fetchall()
        if stored != [(destination_fingerprint,)]:
            con.execute("begin transaction")
            con.execute("delete from synced")
            con.execute("delete from destination")
            con.execute("insert into destination values (?)", [destination_fingerprint])
            con.execute("commit")
        return con
    con = duckdb.connect()
    matches = False
    if path.exists():
        con.execute(f"attach {sql_literal(str(path))} as sync_state (read_only)")
        stored = con.execute("select fingerprint from sync_state.main.destination").fetchall()
        matches = stored == [(destination_fingerprint,)]
    if matches:
        con.execute("create temp view synced as select * from sync_state.main.synced")
    else:
        con.execute(SYNCED_DDL.replace("create table", "create temp table"))
    return con


def record_acknowledged(con: duckdb.DuckDBPyConnection, rows: pa.Table, run_id: str) -> None:
    """Advance the state by one acknowledged batch: rows has key, row_hash, status (one transaction)."""
    if rows.num_rows == 0:
        return
    con.register("acknowledged_batch", rows)
    try:
        con.execute("begin transaction")
        con.execute("delete from synced where key in (select key from acknowledged_batch)")
        con.execute(
            "insert into synced select key, row_hash, status, now()::timestamp, ? from acknowledged_batch",
            [run_id],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.unregister("acknowledged_batch")


def record_deleted(con: duckdb.DuckDBPyConnection, keys: list[str]) -> None:
    """Forget records the destination acknowledged deleting."""
    if not keys:
        return
    con.register("deleted_batch", pa.table({"key": pa.array(keys, pa.string())}))
    try:
        con.execute("delete from synced where key in (select key from deleted_batch)")
    finally:
        con.unregister("deleted_batch")


def replace_state(con: duckdb.DuckDBPyConnection, desired_table: str, run_id: str) -> None:
    """Make the state exactly `desired_table` (_key, _row_hash): for destinations rewritten whole."""
    try:
        con.execute("begin transaction")
        con.execute("delete from synced")
        con.execute(
            f"insert into synced select _key, _row_hash, 'synced', now()::timestamp, ? from {desired_table}",
            [run_id],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def compact_state(state_dir: Path, sync_name: str) -> None:
    """Rewrite a sync's state file into a fresh one, under the sync's lock, so the keys it deleted (an erased
    person, a withdrawn consent) leave no trace in a free block of the file."""
    from touchpoint.warehouse import compact_database

    path = state_db_path(state_dir, sync_name)
    if path.exists():
        with sync_lock(sync_folder(state_dir, sync_name)):
            compact_database(path)
