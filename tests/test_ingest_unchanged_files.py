"""A daily extract does not read again the files it already landed, unless something wrote to them since
(ingest/state.py `file_stamp`, `EntityWatermark.landed_unchanged`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from touchpoint.config import RunContext
from touchpoint.ingest import SOURCES, extract_source
from touchpoint.ingest import extract as extract_module
from touchpoint.ingest import state as state_module
from touchpoint.ingest.state import watermark_file

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def extracts(tmp_path: Path) -> Path:
    folder = tmp_path / "extracts"
    shutil.copytree(FIXTURES / "extracts_conformance", folder)
    return folder


@pytest.fixture
def reads(monkeypatch) -> Counter:
    """File name -> how many times the extractor read it whole (to hash it)."""
    counted: Counter = Counter()

    def counting(read):
        def wrapper(path, *args, **kwargs):
            counted[Path(path).name] += 1
            return read(path, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(extract_module, "scan_file", counting(extract_module.scan_file))
    monkeypatch.setattr(extract_module, "file_sha256", counting(extract_module.file_sha256))
    return counted


def extract_all(tmp_path: Path, extracts: Path, run_id: str) -> list[str]:
    """Every source extracted once; the entities that landed a batch."""
    ctx = RunContext(as_of=date(2026, 3, 31), home=tmp_path / "home", run_id=run_id, extracts_dir=extracts)
    return sorted(batch.entity for source in SOURCES for batch in extract_source(ctx, source).batches)


def settle(monkeypatch) -> None:
    """Make the files just written count as settled: the racy window shrunk to 10 ms, and 50 ms waited."""
    monkeypatch.setattr(state_module, "RACY_NS", 10_000_000)
    time.sleep(0.05)


def test_a_landed_file_nobody_wrote_to_is_not_read_again(tmp_path, extracts, reads, monkeypatch):
    settle(monkeypatch)
    landed = extract_all(tmp_path, extracts, "run-1")
    assert "pos_transactions" in landed
    assert reads["pos_transactions.csv"] >= 1
    reads.clear()
    assert extract_all(tmp_path, extracts, "run-2") == []
    assert not reads


def test_a_rewrite_that_keeps_size_and_mtime_still_lands(tmp_path, extracts, reads, monkeypatch):
    settle(monkeypatch)
    extract_all(tmp_path, extracts, "run-1")
    time.sleep(1.1)  # past a coarse filesystem's timestamp tick (1 s), so the rewrite gets a ctime of its own
    path = extracts / "pos_transactions.csv"
    before = os.stat(path)
    text = path.read_text()
    changed = text.replace("P-1", "P-9", 1)
    assert changed != text and len(changed) == len(text)
    path.write_text(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the size and mtime a copy tool would keep
    time.sleep(0.05)
    reads.clear()
    assert extract_all(tmp_path, extracts, "run-2") == ["pos_transactions"]  # the ctime moved: read again
    assert set(reads) == {"pos_transactions.csv"}


def test_a_file_landed_moments_after_its_last_write_is_hashed_again_but_not_landed(
    tmp_path, extracts, reads, monkeypatch
):
    # a window of 10 minutes, so that "moments after" holds on any machine: the fixtures were copied just now
    monkeypatch.setattr(state_module, "RACY_NS", 600 * 10**9)
    extract_all(tmp_path, extracts, "run-1")
    reads.clear()
    assert extract_all(tmp_path, extracts, "run-2") == []
    assert reads["pos_transactions.csv"] == 1


def test_watermarks_kept_before_stamps_existed_still_skip_landed_files(tmp_path, extracts, reads, monkeypatch):
    settle(monkeypatch)
    extract_all(tmp_path, extracts, "run-1")
    paths = RunContext(as_of=date(2026, 3, 31), home=tmp_path / "home", run_id="x").paths
    for source in SOURCES:
        marks = watermark_file(paths, source)
        if marks.exists():  # as an older Touchpoint wrote it: no stamps
            payload = json.loads(marks.read_text())
            for entity in payload["entities"].values():
                entity.pop("stamps", None)
            marks.write_text(json.dumps(payload))
    reads.clear()
    assert extract_all(tmp_path, extracts, "run-2") == []  # hashed once, found landed
    assert reads["pos_transactions.csv"] == 1
    reads.clear()
    assert extract_all(tmp_path, extracts, "run-3") == []
    assert not reads
