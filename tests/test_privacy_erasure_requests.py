"""Recording an erasure request: normalised like staging, kept as suppression-key hashes only, and confirmed
when it touches more than one person."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from touchpoint import cli
from touchpoint.config import Paths
from touchpoint.privacy.erasure_requests import load_requests, normalise, suppression_hashes
from touchpoint.privacy.keys import pseudonym_key
from touchpoint.privacy.pseudonyms import pseudonym


def write_pii(home: Path, rows: list[tuple[str, str, str, str | None, str | None]]) -> None:
    """A published pii file with `source_records` (entity, record id, person, email, phone) and `persons`."""
    home.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(Paths(home).pii_db))
    try:
        con.execute("create table source_records (source_entity varchar, source_record_id varchar, "
                    "person_id varchar, email varchar, phone_e164 varchar)")
        con.executemany("insert into source_records values (?, ?, ?, ?, ?)", rows)
        con.execute("create table persons as select distinct person_id from source_records")
    finally:
        con.close()


def test_identifiers_are_normalised_as_staging_normalises_them() -> None:
    assert normalise("email", [" Ann.Lee@Example.COM ", "", "a b@x.de", "n/a"]) == [
        "ann.lee@example.com", None, "ab@x.de", None]  # junk is no identifier: it can never match a staged email
    # a national number gets the default country (DE) and loses its trunk 0, as in the staging macro
    assert normalise("phone", ["030 1234567", "+44 20 7946 0958", "0049 30 1234567", "0"]) == [
        "+49301234567", "+442079460958", "+49301234567", None]
    assert normalise("shop_customer", ["  S-100 "]) == ["S-100"]


def test_suppression_hashes_are_keyed_per_kind_and_never_an_analytics_pseudonym() -> None:
    email_hash, customer_hash = suppression_hashes([("email", "ann@example.com"), ("shop_customer", "ann@example.com")])
    assert len(email_hash) == 64 and email_hash != customer_hash
    assert email_hash != pseudonym("ann@example.com", pseudonym_key())
    assert email_hash != pseudonym("email:ann@example.com", pseudonym_key())


def test_a_request_keeps_only_hashes(tmp_path: Path, capsys) -> None:
    home = tmp_path / "home"
    write_pii(home, [("crm_contacts", "C-1", "p1", "ann@example.com", "+49301234567")])
    assert cli.main(["erase", "--email", "ANN@example.com", "--home", str(home)]) == 0
    [request] = load_requests(Paths(home))
    assert request.status == "pending" and request.persons_at_request == 1
    stored = (Paths(home).state / "privacy" / "requests" / f"{request.request_id}.json").read_text()
    assert "ann@example.com" not in stored.lower() and "recorded" in capsys.readouterr().out
    [identifier] = request.identifiers
    assert identifier == {"kind": "email", "hash": suppression_hashes([("email", "ann@example.com")])[0]}


def test_a_person_id_is_kept_as_the_person_not_as_their_shared_identifiers(tmp_path: Path) -> None:
    """A person id is not expanded into the person's emails and phones (a household may share them): the run
    takes the person's records from the identity graph and suppresses only what no one else carries."""
    home = tmp_path / "home"
    write_pii(home, [("crm_contacts", "C-1", "p1", "ann@example.com", "+49301234567"),
                     ("crm_contacts", "C-2", "p2", "ben@example.com", "+49301234567")])
    assert cli.main(["erase", "--person-id", "p1", "--home", str(home)]) == 0
    [request] = load_requests(Paths(home))
    assert request.identifiers == [{"kind": "person_id", "hash": suppression_hashes([("person_id", "p1")])[0]}]
    assert request.persons_at_request == 1
    assert cli.main(["erase", "--person-id", "p404", "--home", str(home)]) == 2  # unknown: refused, said why


def test_a_request_touching_two_persons_needs_confirmation(tmp_path: Path, monkeypatch, capsys) -> None:
    home = tmp_path / "home"
    write_pii(home, [("crm_contacts", "C-1", "p1", "family@example.com", None),
                     ("crm_contacts", "C-2", "p2", "family@example.com", None)])
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert cli.main(["erase", "--email", "family@example.com", "--home", str(home)]) == 3
    assert "2 persons" in capsys.readouterr().err and load_requests(Paths(home)) == []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: "n")
    assert cli.main(["erase", "--email", "family@example.com", "--home", str(home)]) == 3
    assert load_requests(Paths(home)) == []
    assert cli.main(["erase", "--email", "family@example.com", "--yes", "--home", str(home)]) == 0
    assert [r.persons_at_request for r in load_requests(Paths(home))] == [2]


def test_a_request_file_makes_one_request_a_row_and_bad_input_is_named(tmp_path: Path, capsys) -> None:
    home = tmp_path / "home"
    requests = tmp_path / "requests.csv"
    requests.write_text("email,phone\nann@example.com,\n,+49 30 1234567\n", encoding="utf-8")
    assert cli.main(["erase", "--file", str(requests), "--home", str(home)]) == 0
    assert len(load_requests(Paths(home))) == 2
    assert cli.main(["erase", "--email", "   ", "--home", str(home)]) == 2
    assert "not a usable identifier" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("name\nAnn\n", encoding="utf-8")
    assert cli.main(["erase", "--file", str(bad), "--home", str(home)]) == 2
    assert cli.main(["erase", "--list", "--home", str(home)]) == 0
    assert capsys.readouterr().out.count("pending") == 2


@pytest.mark.parametrize("argv", [["erase"], ["erase", "--yes"]])
def test_a_request_must_name_someone(tmp_path: Path, argv: list[str], capsys) -> None:
    assert cli.main([*argv, "--home", str(tmp_path)]) == 2
    assert "name the person" in capsys.readouterr().err
