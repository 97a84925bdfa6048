"""Extraction watermarks: what each source+entity has already landed.

One JSON file per source (`<home>/state/ingest/watermarks/<source>.json`), so the five sources can be
extracted in parallel processes without sharing a file. Per entity it holds either an `updated_at`
cursor (shop tables), the last full-snapshot hash (tables without `updated_at`), or the content hash
of every landed file (daily files and bring-your-own extracts).
The watermark is advanced only after the batch has landed, so a crash in between re-lands the same
batch id (content-addressed) instead of losing rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from touchpoint.config import Paths
from touchpoint.ingest.landing import write_json_atomic


@dataclass
class EntityWatermark:
    cursor: str | None = None  # highest updated_at landed, 'YYYY-MM-DD HH:MM:SS.SSS' UTC
    snapshot_sha256: str | None = None  # content of the last full snapshot landed
    files: dict[str, str] = field(default_factory=dict)  # source file name -> sha256 of its content


@dataclass
class SourceWatermarks:
    source: str
    entities: dict[str, EntityWatermark] = field(default_factory=dict)

    def entity(self, name: str) -> EntityWatermark:
        return self.entities.setdefault(name, EntityWatermark())


def watermark_file(paths: Paths, source: str) -> Path:
    return paths.state / "ingest" / "watermarks" / f"{source}.json"


def load_watermarks(paths: Paths, source: str) -> SourceWatermarks:
    path = watermark_file(paths, source)
    if not path.exists():
        return SourceWatermarks(source)
    payload = json.loads(path.read_text(encoding="utf-8"))
    return SourceWatermarks(
        source,
        {name: EntityWatermark(**values) for name, values in payload.get("entities", {}).items()},
    )


def save_watermarks(paths: Paths, marks: SourceWatermarks) -> None:
    payload = {
        "source": marks.source,
        "entities": {
            name: {"cursor": mark.cursor, "snapshot_sha256": mark.snapshot_sha256, "files": mark.files}
            for name, mark in sorted(marks.entities.items())
        },
    }
    write_json_atomic(watermark_file(paths, marks.source), payload)
