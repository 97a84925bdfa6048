"""Exclusive file locks between processes: the one place Touchpoint calls `flock`.

Every "one at a time" rule (one writer of the working warehouse, one change of the lease file, one embedded
run per home, one run of a sync) is a lock file held with `file_lock`. An flock belongs to the open file, so
the kernel drops it when the holder dies, however it dies: a crashed process never leaves a lock behind.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SYNC_LOCK_FILE = ".lock"  # in a sync's state folder: held by each run of the sync, and by erasure's scrub of it


class LockBusyError(RuntimeError):
    """Another process held the lock for longer than the caller was willing to wait."""


@contextmanager
def file_lock(
    path: Path,
    *,
    timeout_s: float | None = None,
    poll_s: float = 0.2,
    busy: Callable[[], Exception] | None = None,
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created, with its folder, if missing) for the `with` block.

    `timeout_s=None` waits as long as it takes; `timeout_s=0` tries once; otherwise it retries every `poll_s`
    until `timeout_s` has passed. A lock still held then raises `busy()` (the caller's own error, saying what
    is busy in its terms), or LockBusyError naming the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        if timeout_s is None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        else:
            _acquire_within(handle.fileno(), path, timeout_s, poll_s, busy)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _acquire_within(
    fd: int, path: Path, timeout_s: float, poll_s: float, busy: Callable[[], Exception] | None
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise (busy() if busy else LockBusyError(f"{path} is locked by another process")) from None
            time.sleep(min(poll_s, remaining))
