"""Destinations a sync can send to.

Two shapes:
- batch destinations (PostgreSQL, HTTP) receive upserts and deletes by key, batch by batch; a returned
  `BatchResult` acknowledges the batch, naming the records the destination refused and why;
- snapshot destinations (files) receive the whole current audience plus this run's changes at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

# C0 controls but tab and newline, plus DEL: PostgreSQL `text` refuses NUL outright (and a refused value would
# fail the whole batch), and receiving tools mangle or choke on the others. RE2 syntax (Arrow's regex engine).
CONTROL_CHARACTERS = r"[\x00-\x08\x0b-\x1f\x7f]"


@dataclass
class BatchResult:
    """A batch the destination acknowledged; `refused` maps record key -> the destination's reason."""

    refused: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class BatchDestination(Protocol):
    def open(self, schema: pa.Schema) -> None:
        """Connect and make sure the target exists with these fields (called once per run)."""

    def upsert(self, rows: pa.Table) -> BatchResult:
        """Insert or update `rows` (the sync's fields) by primary key; idempotent."""

    def delete(self, keys: list[str]) -> BatchResult:
        """Delete these primary keys; idempotent (absent keys are fine)."""

    def close(self) -> None: ...


@runtime_checkable
class SnapshotDestination(Protocol):
    def write(self, audience: pa.Table, changes: pa.Table, run_id: str) -> list[Path]:
        """Replace the audience snapshot and record this run's changes; returns the files written."""


class DestinationError(RuntimeError):
    """A destination failed in a way retrying the batch now will not fix (the run stops; state is kept).

    Deterministic (a request the destination refuses, a value it has no type for): rerunning the sync unchanged
    fails the same way, so it is not retried (see `touchpoint.activation.failures`).
    """


class DestinationUnavailableError(DestinationError):
    """The destination could not be reached, dropped the connection, or kept answering "try later".

    Transient: the sync stopped with its state kept, and running it again later resumes (it is retried).
    """


def strip_control_characters(rows: pa.Table, key: str) -> tuple[pa.Table, dict[str, list[str]]]:
    """`rows` with control characters removed from text columns, and key -> the columns that were cleaned."""
    cleaned: dict[str, list[str]] = {}
    keys = rows.column(key).cast(pa.string()).to_pylist()
    columns = []
    for name, column in zip(rows.column_names, rows.columns, strict=True):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            dirty = pc.fill_null(pc.match_substring_regex(column, CONTROL_CHARACTERS), False).to_pylist()
            if any(dirty):
                for record_key, flag in zip(keys, dirty, strict=True):
                    if flag:
                        cleaned.setdefault(str(record_key), []).append(name)
                column = pc.replace_substring_regex(column, CONTROL_CHARACTERS, "")
        columns.append(column)
    return pa.table(columns, names=rows.column_names), cleaned
