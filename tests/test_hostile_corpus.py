"""The hostile-input corpus (tests/fixtures/hostile/, README there) through the real `touchpoint run`.

Four runs on one home: a clean run; every hostile file at once (it must succeed: each case is quarantined
per row or refused per file with a clear message, and the row accounting adds up); a run with a poisoned batch
(it must fail, show the failing expectation in the terminal, hold the batch and leave the published warehouse
byte for byte as it was); and the next clean run, which must succeed without the held batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from tests.test_end_to_end import touchpoint

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).parent / "fixtures"
HOSTILE = FIXTURES / "hostile"
SECRET = "TOP-SECRET-SHADOW-LINE"
OVERSIZE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """What one hostile file must give: its batch's row accounting and reasons, or a per-file error."""

    entity: str
    suffix: str
    read: int = 0
    loaded: int = 0
    quarantined: dict[int, str] = field(default_factory=dict)  # row number -> part of the reason
    error: str | None = None  # part of the extract error for a file refused as a whole

    def source_file(self, name: str) -> str:
        return f"{self.entity}/{name}{self.suffix}"


CASES: dict[str, Case] = {
    "order_dated_9999": Case("shop_orders", ".csv", 2, 1, {2: "ordered_at: 9999-12-31"}),
    "order_dated_0001": Case("shop_orders", ".csv", 2, 1, {1: "ordered_at: 0001-01-01"}),
    "amount_out_of_bounds": Case(
        "shop_orders", ".csv", 3, 1, {1: "total_amount: 9999999999999999.99", 2: "total_amount: -9999999999999999.99"}
    ),
    "order_not_yet": Case("shop_orders", ".csv", 1, 1),
    "reserved_columns": Case("shop_customers", ".csv", 1, 1),
    "nul_in_name": Case("crm_contacts", ".csv", 2, 2),
    "latin1": Case("crm_contacts", ".csv", 2, 1, {1: "unreadable line"}),
    "bom_crlf": Case("crm_contacts", ".csv", 2, 2),
    "semicolon": Case("crm_contacts", ".csv", 2, 2),
    "broken_jsonl": Case("web_events", ".jsonl", 3, 2, {2: "malformed JSON line"}),
    "wrong_types": Case("shop_orders", ".parquet", 2, 0, {1: "ordered_at: cannot read", 2: "ordered_at: cannot read"}),
    "empty_file": Case("shop_orders", ".csv", error="empty file (0 bytes)"),
    # built by the test: a 10 MB first name, a symbolic link to a secret file, a FIFO
    "oversize_field": Case("crm_contacts", ".csv", 3, 2, {2: "first_name"}),
    "symlink": Case("web_events", ".jsonl", error="a symbolic link, not read"),
    "fifo": Case("pos_transactions", ".csv", error="a FIFO, not read"),
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _build_hostile_extracts(target: Path, secret: Path) -> None:
    """The clean extracts plus every case, each as `<entity>/<case><suffix>` (the landing contract's folders)."""
    for name, case in CASES.items():
        folder = target / case.entity
        folder.mkdir(exist_ok=True)
        stored = HOSTILE / name / f"{case.entity}{case.suffix}"
        if stored.exists():
            shutil.copyfile(stored, folder / f"{name}{case.suffix}")
    header = "contact_id,first_name,last_name,email,updated_at\n"
    with open(target / "crm_contacts" / "oversize_field.csv", "w", encoding="utf-8") as handle:
        handle.write(header + "HO-1,Small,Row,small.row@example.com,2026-03-10T10:00:00Z\n")
        handle.write(f"HO-2,{'x' * OVERSIZE_BYTES},Huge,huge@example.com,2026-03-10T10:00:00Z\n")
        handle.write("HO-3,Other,Small,other.small@example.com,2026-03-10T10:00:00Z\n")
    os.symlink(secret, target / "web_events" / "symlink.jsonl")
    os.mkfifo(target / "pos_transactions" / "fifo.csv")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    home, extracts = root / "home", root / "extracts"
    secret = root / "shadow"
    secret.write_text(f"root:{SECRET}:19000:0:99999:7:::\n")
    shutil.copytree(FIXTURES / "extracts_conformance", extracts)

    def run(as_of: str) -> dict:
        before = _sha(home / "warehouse.duckdb") if (home / "warehouse.duckdb").exists() else None
        result = touchpoint("run", "--extracts", str(extracts), "--as-of", as_of, "--home", str(home))
        return {"result": result, "before": before, "after": _sha(home / "warehouse.duckdb")}

    outcomes = {"clean": run("2026-03-31")}
    _build_hostile_extracts(extracts, secret)
    outcomes["hostile"] = run("2026-04-01")
    shutil.copyfile(HOSTILE / "poisoned_emails" / "crm_contacts.csv", extracts / "crm_contacts" / "poisoned.csv")
    outcomes["poisoned"] = run("2026-04-02")
    outcomes["next"] = run("2026-04-03")
    return {"home": home, "root": root, **outcomes}


def _query(runs: dict, sql: str, params: list | None = None, db: str = "warehouse.duckdb") -> list[tuple]:
    """`sql` on the published (analytics) warehouse; `db="pii.duckdb"` for the clear quarantine, or
    `db="work/warehouse.duckdb"` for raw, which is never published."""
    con = duckdb.connect(str(runs["home"] / db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_the_clean_and_the_hostile_runs_succeed_and_publish(runs: dict) -> None:
    for name in ("clean", "hostile"):
        result = runs[name]["result"]
        assert result.returncode == 0, (name, result.stdout[-3000:], result.stderr[-3000:])
    assert runs["hostile"]["after"] != runs["hostile"]["before"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_is_accounted_for_with_a_clear_message(runs: dict, name: str) -> None:
    case = CASES[name]
    source_file = case.source_file(name)
    if case.error:
        errors = _query(runs, "select error from audit.extract_errors where source_file = ?", [source_file])
        assert errors and case.error in errors[0][0] and source_file in errors[0][0], errors
        assert not _query(runs, "select 1 from audit.load_batches where source_file = ?", [source_file])
        return
    (read, loaded, quarantined), = _query(
        runs, "select rows_read, rows_loaded, rows_quarantined from audit.load_batches where source_file = ?",
        [source_file])
    assert (read, loaded, quarantined) == (case.read, case.loaded, len(case.quarantined))
    # the reasons as ingest wrote them are in the pii file (the values they name are personal data)
    reasons = dict(_query(runs, "select row_number, reason from quarantine where source_file = ?",
                          [source_file], db="pii.duckdb"))
    assert set(reasons) == set(case.quarantined), reasons
    for row, expected in case.quarantined.items():
        assert expected in reasons[row], (row, reasons[row])
        assert len(reasons[row]) < 600  # a reason names the problem; it never carries a whole record
    published = dict(_query(runs, "select row_number, reason from audit.quarantine where source_file = ?",
                            [source_file]))
    assert published.keys() == reasons.keys()  # analysts see every row and its problem, the values redacted


def test_reserved_column_names_are_kept_under_extra_and_never_overwrite_load_metadata(runs: dict) -> None:
    (batch_id, source_file, extra), = _query(
        runs, "select _batch_id, _source_file, _extra from raw.shop_customers where customer_id = 'S-500'",
        db="work/warehouse.duckdb")
    assert batch_id.startswith("shop_customers-") and source_file == "shop_customers/reserved_columns.csv"
    kept = json.loads(extra)
    assert kept["_batch_id"] == "evil-batch" and kept["_landing_file"] == "/etc/passwd"
    assert kept["_batch_extracted_at"] == "1999-01-01" and kept["_row_number"] == "7"


def test_rows_after_the_as_of_are_loaded_but_not_yet_used(runs: dict) -> None:
    assert _query(runs, "select count(*) from raw.shop_orders where order_id = 'HN-1'", db="work/warehouse.duckdb") \
        == [(1,)]
    assert _query(runs, "select count(*) from marts.fct_orders where order_id = 'HN-1'") == [(0,)]


def test_control_characters_are_removed_before_anything_downstream(runs: dict) -> None:
    # the raw row keeps the extract exactly as it came; staging removes the NUL once, for every mart and sync
    assert _query(runs, "select contains(first_name, chr(0)) from raw.crm_contacts where contact_id = 'HZ-1'",
                  db="work/warehouse.duckdb") == [(True,)]
    assert _query(runs, "select count(*) from persons where contains(first_name, chr(0))", db="pii.duckdb") == [(0,)]
    person = _query(runs, "select person_id from identity.person_map where source_record_id = 'HZ-1'")
    assert _query(runs, "select first_name from persons where person_id = ?", [person[0][0]], db="pii.duckdb") == [
        ("Null",)]


def test_an_oversize_field_is_truncated_in_the_quarantine(runs: dict) -> None:
    (record,), = _query(runs, "select raw_record from quarantine where source_file = ?",
                        ["crm_contacts/oversize_field.csv"], db="pii.duckdb")
    assert len(record) < 20_000


def test_a_linked_secret_reaches_no_table_and_no_file(runs: dict) -> None:
    home = runs["home"]
    for path in home.rglob("*"):
        if path.is_file() and path.stat().st_size < 200 * 1024 * 1024:
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_poisoned_batch_fails_its_run_shows_why_and_leaves_the_published_warehouse_as_it_was(runs: dict) -> None:
    poisoned = runs["poisoned"]
    result = poisoned["result"]
    assert result.returncode == 1, result.stdout[-3000:]
    assert poisoned["after"] == poisoned["before"]  # byte for byte
    err = result.stderr
    assert "gate raw FAILED" in err, err
    assert "FAILED raw.crm_contacts.email.matches_regex: 40 of" in err and '"not an email 0"' in err, err
    assert "held out of raw (1 batch(es))" in err and "crm_contacts/poisoned.csv" in err, err
    assert "touchpoint batches release <batch_id>" in err, err


def test_the_next_clean_run_goes_on_without_the_held_batch(runs: dict) -> None:
    result = runs["next"]["result"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _query(runs, "select status from audit.load_batches where source_file = 'crm_contacts/poisoned.csv'") == [
        ("held",)]
    assert _query(runs, "select count(*) from identity.person_map where source_record_id like 'HP-%'") == [(0,)]
