"""Extraction watermarks: what each source+entity has already landed.

One JSON file per source (`<home>/state/ingest/watermarks/<source>.json`), so the five sources can be
extracted in parallel processes without sharing a file. Per entity it holds either an `updated_at`
cursor (shop tables), the last full-snapshot hash (tables without `updated_at`), or the content hash
of every landed file (daily files and bring-your-own extracts), with the file's stamp when it was hashed.
The watermark is advanced only after the batch has landed, so a crash in between re-lands the same
batch id (content-addressed) instead of losing rows.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from touchpoint.config import Paths
from touchpoint.ingest.landing import write_json_atomic

# A file changed less than this before its stamp was taken may change again within the same timestamp tick
# (filesystems with coarse timestamps) and keep its stamp: it is hashed again until it is older (git's "racily
# clean" rule).
RACY_NS = 2_000_000_000


def file_stamp(path: Path) -> list[int]:
    """What a write to `path` changes (size, inode, mtime and ctime, which no user can set back), then when the
    stamp was taken; all times in ns. Take it before reading the file: a write during the read changes it."""
    taken_ns = time.time_ns()
    status = os.stat(path, follow_symlinks=False)
    return [status.st_size, status.st_ino, status.st_mtime_ns, status.st_ctime_ns, taken_ns]


@dataclass
class EntityWatermark:
    cursor: str | None = None  # highest updated_at landed, 'YYYY-MM-DD HH:MM:SS.SSS' UTC
    snapshot_sha256: str | None = None  # content of the last full snapshot landed
    files: dict[str, str] = field(default_factory=dict)  # source file name -> sha256 of its content
    stamps: dict[str, list[int]] = field(default_factory=dict)  # source file name -> file_stamp before hashing

    def landed_unchanged(self, name: str, stamp: list[int]) -> bool:
        """The file has landed, and nothing wrote to it since it was hashed: no need to read it again. Hashing
        every file ever landed, every day, was 20 s of a daily web extract at 1M customers (11 GB)."""
        kept = self.stamps.get(name)
        return (
            name in self.files
            and kept is not None
            and kept[:4] == stamp[:4]
            and kept[4] - max(kept[2], kept[3]) > RACY_NS
        )

    def remember(self, name: str, sha256: str, stamp: list[int]) -> None:
        """`name` landed (or had landed before) with this content; `stamp` was taken before it was read."""
        self.files[name] = sha256
        self.stamps[name] = stamp


_FIELDS = frozenset(f.name for f in fields(EntityWatermark))


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
        # fields this version does not know (a watermark written by a later one) are left out, not fatal
        {name: EntityWatermark(**{k: v for k, v in values.items() if k in _FIELDS})
         for name, values in payload.get("entities", {}).items()},
    )


def save_watermarks(paths: Paths, marks: SourceWatermarks) -> None:
    payload = {
        "source": marks.source,
        "entities": {
            name: {
                "cursor": mark.cursor,
                "snapshot_sha256": mark.snapshot_sha256,
                "files": mark.files,
                "stamps": mark.stamps,
            }
            for name, mark in sorted(marks.entities.items())
        },
    }
    write_json_atomic(watermark_file(paths, marks.source), payload)
