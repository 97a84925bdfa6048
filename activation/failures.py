"""Which sync failures are worth retrying: the one rule the DAG's retries follow.

Retryable (transient, a later attempt may succeed unchanged): the destination could not be reached, dropped
the connection or kept answering "try later" (`DestinationUnavailableError`: PostgreSQL down or restarting,
an HTTP API that stayed at 429/5xx or timed out through all of its own retries); another run of the same sync
holding its lock (`SyncBusyError`); the operating system's connection and timeout errors.

Everything else is deterministic: the same definition, connection and warehouse fail the same way again, so a
retry only delays the failure. A malformed definition or connection, a source query the guard refuses or
DuckDB rejects, a duplicated primary key, a destination that refuses the request (HTTP 4xx, a value it has no
type for, a path outside its base URL), an unreadable state file, a bug. A person changes something first.
"""

from __future__ import annotations

from touchpoint.activation.destinations import DestinationUnavailableError
from touchpoint.locks import LockBusyError

RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    DestinationUnavailableError,
    LockBusyError,  # SyncBusyError: another run of the same sync is still sending
    ConnectionError,
    TimeoutError,
)


def is_retryable(error: BaseException) -> bool:
    """Whether running the sync again, unchanged, may succeed where `error` stopped it."""
    return isinstance(error, RETRYABLE_ERRORS)
