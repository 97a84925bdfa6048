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
    """A destination failed in a way retrying the batch now will not fix (the run stops; state is kept)."""
