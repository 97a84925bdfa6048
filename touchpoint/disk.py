"""A full disk, recognised whichever library ran into it, told in one line.

A full disk reaches us in many shapes: an OSError with errno ENOSPC or EDQUOT (Python, pyarrow), DuckDB's
IOException quoting the OS ("No space left on device"), SQLite's SQLITE_FULL through SQLAlchemy ("database or
disk is full", Airflow's metadata), dbt's output when dbt's own DuckDB write failed. Each would end in its
own traceback; `disk_full_error` turns any of them into one `DiskFullError` with the one thing to do.

Only local writers count: a destination whose server reports its own disk full (PostgreSQL's "could not
extend file ... No space left on device") is that server's problem, not space under the home.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How the libraries say it: the OS texts (DuckDB and dbt quote strerror) and SQLite's SQLITE_FULL.
DISK_FULL_TEXTS = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), "database or disk is full")
# Modules whose errors are about writes on this machine (DuckDB is `_duckdb` since 1.1, `duckdb` before).
# Not SQLAlchemy's own errors: they wrap a remote PostgreSQL's as well; their driver error (`orig`) decides.
_LOCAL_WRITER_MODULES = ("_duckdb", "duckdb", "sqlite3", "touchpoint.dbt")
_QUOTED_PATH = re.compile(r"""["'](/[^"']+)["']""")


class DiskFullError(RuntimeError):
    """The disk (or the user's quota) under the home is full: nothing more can be written until space is freed."""

    def __init__(self, home: Path, written: str | None = None, outcome: str = "nothing was published") -> None:
        self.home = home
        self.written = written
        super().__init__(
            f"disk full writing {written or 'the home'}: free space under {home} and rerun; {outcome}"
        )


def disk_full_error(
    error: BaseException, home: Path, outcome: str = "nothing was published"
) -> DiskFullError | None:
    """`error` as a DiskFullError if it (or what caused it) is a full local disk, else None."""
    for link in _causes(error):
        if isinstance(link, DiskFullError):
            return link
        if _is_local_disk_full(link):
            return DiskFullError(home, _written_path(link), outcome)
    return None


def _causes(error: BaseException) -> list[BaseException]:
    """The error, what it was raised from or during, and a SQLAlchemy error's driver error (`orig`)."""
    chain: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        link = pending.pop(0)
        if link is None or any(link is seen for seen in chain):
            continue
        chain.append(link)
        orig = getattr(link, "orig", None)
        pending.extend([link.__cause__, link.__context__, orig if isinstance(orig, BaseException) else None])
    return chain


def _is_local_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    local = isinstance(error, OSError) or type(error).__module__ in _LOCAL_WRITER_MODULES
    return local and any(text in str(error) for text in DISK_FULL_TEXTS)


def _written_path(error: BaseException) -> str | None:
    """The file being written, when the error says: OSError's filename, or the first quoted absolute path."""
    filename = getattr(error, "filename", None) if isinstance(error, OSError) else None
    if isinstance(filename, str):
        return filename
    quoted = _QUOTED_PATH.search(str(error))
    return quoted.group(1) if quoted else None
