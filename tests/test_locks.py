"""`file_lock`, the one flock helper, and the four locks built on it keep their behaviour and their messages.

flock belongs to an open file, so a second `open` of the same lock file in this process contends like another
process would.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from touchpoint import orchestration
from touchpoint.activation.state import SyncBusyError, sync_lock
from touchpoint.config import Paths
from touchpoint.locks import LockBusyError, file_lock
from touchpoint.warehouse import WarehouseBusyError, WarehouseLease, writer_lock


def test_a_free_lock_is_taken_and_its_folder_made(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / ".lock"
    with file_lock(path, timeout_s=0):
        assert path.exists()
    with file_lock(path, timeout_s=0):  # released at the end of the block
        pass


def test_a_held_lock_fails_after_the_timeout_with_the_callers_error(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with file_lock(path):
        started = time.monotonic()
        with pytest.raises(LockBusyError, match=r"\.lock is locked by another process$"), file_lock(
            path, timeout_s=0.3, poll_s=0.05
        ):
            pass
        assert 0.3 <= time.monotonic() - started < 2.0
        with pytest.raises(KeyError, match="mine"), file_lock(path, timeout_s=0, busy=lambda: KeyError("mine")):
            pass


def test_without_a_timeout_it_waits_for_the_holder(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    order: list[str] = []
    held = threading.Event()

    def holder() -> None:
        with file_lock(path):
            held.set()
            time.sleep(0.3)
            order.append("holder done")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with file_lock(path):
        order.append("waiter got it")
    thread.join()
    assert order == ["holder done", "waiter got it"]


def test_an_error_in_the_block_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with pytest.raises(ValueError), file_lock(path):
        raise ValueError("boom")
    with file_lock(path, timeout_s=0):
        pass


def test_the_four_locks_keep_their_errors_and_messages(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    with writer_lock(paths), pytest.raises(WarehouseBusyError) as writer, writer_lock(paths, timeout_s=0.1):
        pass
    assert str(writer.value) == f"working warehouse {paths.work_db} is locked by another writer"

    folder = tmp_path / "state" / "syncs" / "s"
    with sync_lock(folder), pytest.raises(SyncBusyError) as sync, sync_lock(folder, timeout_s=0.1):
        pass
    assert str(sync.value) == f"sync state {folder} is locked by another run"
    assert isinstance(writer.value, LockBusyError) and isinstance(sync.value, LockBusyError)

    embedded_run_lock = orchestration._embedded_run_lock
    with embedded_run_lock(paths), pytest.raises(orchestration.HomeServedError) as served, embedded_run_lock(paths):
        pass  # no waiting: a second `touchpoint run` on the home is refused at once
    assert str(served.value) == f"another `touchpoint run` is running on {paths.home}"


def test_the_lease_file_is_read_only_under_its_lock_and_waits_for_it(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    held = threading.Event()

    def change_the_lease_slowly() -> None:
        with file_lock(paths.work / ".lease.lock"):
            held.set()
            time.sleep(0.3)
            WarehouseLease(paths).path.write_text('{"run_key": "k", "as_of": "2026-03-30", "claimed_at": "t"}')

    thread = threading.Thread(target=change_the_lease_slowly)
    thread.start()
    held.wait(5)
    holder = WarehouseLease(paths).holder()  # waits for the writer instead of reading a half-made file
    thread.join()
    assert holder is not None and holder.run_key == "k"


def test_the_embedded_run_lock_releases_a_lease_left_by_a_dead_run(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    lease = WarehouseLease(paths)
    lease.try_claim("customer_360/crashed", "2026-03-30", lambda holder: False)
    with orchestration._embedded_run_lock(paths):
        assert lease.holder() is None
