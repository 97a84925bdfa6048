"""Connections to the working and the published warehouse.

One writer: `connect_work` takes an exclusive file lock next to the working database, so two
processes (overlapping DAG runs, a CLI run beside a scheduled one) queue instead of corrupting it.
Readers use `connect_published`, which is read-only and never touches the working file.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from touchpoint.config import Paths


class WarehouseBusyError(RuntimeError):
    """Another process holds the working warehouse for longer than we were willing to wait."""


@contextmanager
def writer_lock(paths: Paths, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold the single-writer lock of the working warehouse (blocks until free or timeout)."""
    paths.work.mkdir(parents=True, exist_ok=True)
    lock_path = paths.work / ".writer.lock"
    deadline = time.monotonic() + timeout_s
    with open(lock_path, "a+") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as busy:
                if time.monotonic() > deadline:
                    raise WarehouseBusyError(f"working warehouse {paths.work_db} is locked by another writer") from busy
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def connect_work(paths: Paths) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the working warehouse for writing, under the single-writer lock."""
    with writer_lock(paths):
        con = duckdb.connect(str(paths.work_db))
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
