"""A batch the raw gate fails on is held out of raw, later runs go on, and an operator releases or drops it."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import duckdb
import pytest

from touchpoint import pipeline
from touchpoint.cli import main
from touchpoint.config import RunContext
from touchpoint.expectations import GateFailed
from touchpoint.ingest import SOURCES
from touchpoint.ingest.batches import list_batches

FIXTURES = Path(__file__).parent / "fixtures"
DAY_1, DAY_2, DAY_3 = date(2026, 3, 31), date(2026, 4, 1), date(2026, 4, 2)
HEADER = "contact_id,first_name,last_name,email,updated_at\n"


def _run_until_raw_gate(home: Path, extracts: Path, as_of: date) -> dict:
    ctx = RunContext(as_of=as_of, home=home, run_id=as_of.isoformat(), extracts_dir=extracts)
    for source in SOURCES:
        pipeline.extract(ctx, source)
    pipeline.load(ctx)
    return pipeline.gate(ctx, "raw")


def _poison(extracts: Path) -> None:
    """A second CRM export whose emails are all broken: far more than the 10% the raw gate tolerates."""
    folder = extracts / "crm_contacts"
    folder.mkdir()
    rows = "".join(f"X-{i},Bad,Export,not an email {i},2026-04-01T08:00:00Z\n" for i in range(40))
    (folder / "contacts_2026-04-01.csv").write_text(HEADER + rows)


def _query(home: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(home / "work" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def held_home(tmp_path: Path) -> tuple[Path, Path]:
    """A home whose day-2 run failed the raw gate on a poisoned CRM batch."""
    home, extracts = tmp_path / "home", tmp_path / "extracts"
    shutil.copytree(FIXTURES / "extracts_conformance", extracts)
    assert _run_until_raw_gate(home, extracts, DAY_1)["success"]
    _poison(extracts)
    with pytest.raises(GateFailed) as failed:
        _run_until_raw_gate(home, extracts, DAY_2)
    message = str(failed.value)
    assert "raw.crm_contacts.email.matches_regex" in message
    assert "held crm_contacts-2026-04-01-" in message and "crm_contacts/contacts_2026-04-01.csv" in message
    assert "touchpoint batches release <batch_id>" in message and "touchpoint batches drop <batch_id>" in message
    return home, extracts


def _held_id(home: Path) -> str:
    (batch_id,) = [b[0] for b in _query(home, "select batch_id from audit.load_batches where status = 'held'")]
    return batch_id


def test_a_failed_batch_is_held_and_the_next_run_goes_on(held_home: tuple[Path, Path]) -> None:
    home, extracts = held_home
    batch_id = _held_id(home)
    assert _query(home, f"select count(*) from raw.crm_contacts where _batch_id = '{batch_id}'") == [(0,)]
    assert _query(home, f"select count(*) from held.crm_contacts where _batch_id = '{batch_id}'") == [(40,)]
    (reason, report), = _query(home, f"select held_reason, held_report from audit.load_batches "
                                     f"where batch_id = '{batch_id}'")
    assert "email.matches_regex: 40 of 43 unexpected" in reason and report.endswith("raw.html")
    # the audit keeps the failed judgement of day 2
    assert _query(home, "select count(*) from audit.gate_results where run_id = '2026-04-01' and not success "
                        "and severity = 'critical'") == [(1,)]

    # the next day's run is not blocked by the held batch
    assert _run_until_raw_gate(home, extracts, DAY_3)["success"]


def test_dropping_a_held_batch_quarantines_its_rows_and_keeps_the_accounting(
    held_home: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    home, _ = held_home
    batch_id = _held_id(home)
    assert main(["batches", "list", "--home", str(home)]) == 0
    listed = capsys.readouterr().out
    assert batch_id in listed and "held:" in listed and "email.matches_regex" in listed

    assert main(["batches", "drop", batch_id, "--home", str(home)]) == 0
    assert f"dropped   {batch_id}" in capsys.readouterr().out
    assert _query(home, "select rows_read, rows_loaded, rows_quarantined, status from audit.load_batches "
                        f"where batch_id = '{batch_id}'") == [(40, 0, 40, "dropped")]
    quarantined = _query(home, "select row_number, reason, raw_record from audit.quarantine "
                               f"where batch_id = '{batch_id}' order by row_number")
    assert [row for row, _, _ in quarantined] == list(range(1, 41))
    assert quarantined[0][1].startswith("batch dropped after it was held: raw gate failed")
    assert '"email":"not an email 0"' in quarantined[0][2]
    assert _query(home, f"select count(*) from held.crm_contacts where _batch_id = '{batch_id}'") == [(0,)]

    # a dropped batch is no longer held: a second drop is refused with a clear line
    assert main(["batches", "drop", batch_id, "--home", str(home)]) == 2
    assert f"batch {batch_id} is dropped, not held" in capsys.readouterr().err


def test_a_released_batch_goes_back_to_raw_and_is_judged_again(
    held_home: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    home, extracts = held_home
    batch_id = _held_id(home)
    assert main(["batches", "release", batch_id, "--home", str(home)]) == 0
    assert f"released  {batch_id}" in capsys.readouterr().out
    assert _query(home, f"select count(*) from raw.crm_contacts where _batch_id = '{batch_id}'") == [(40,)]

    # Released data is the operator's call; the gate still judges it. The failure is not in day 3's batches,
    # so nothing of day 3 is held and the message says where the problem is.
    with pytest.raises(GateFailed) as failed:
        _run_until_raw_gate(home, extracts, DAY_3)
    assert "the problem is in data loaded earlier" in str(failed.value)
    assert [b.status for b in _batches(home) if b.batch_id == batch_id] == ["released"]
    assert not [b for b in _batches(home) if b.status == "held"]


def test_unknown_batch_ids_are_refused(held_home: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    home, _ = held_home
    assert main(["batches", "release", "no-such-batch", "--home", str(home)]) == 2
    assert "no batch 'no-such-batch'" in capsys.readouterr().err


def _batches(home: Path) -> list:
    con = duckdb.connect(str(home / "work" / "warehouse.duckdb"))
    try:
        return list_batches(con)
    finally:
        con.close()
