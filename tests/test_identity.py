"""Identity stitching: the conformance expectations, the probabilistic step on a synthetic population with
known truth, the guardrails (shared family email, birth dates a generation apart) and stable person ids."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from datetime import date, timedelta
from math import comb
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.conftest_identity import create_raw_schema, dbt_build, insert_rows, make_raw_db, query

AS_OF = "2026-03-31"


def pair_scores(assignments: list[tuple[str, str]]) -> tuple[float, float, float]:
    """Pairwise precision, recall, F1 of (predicted cluster, true cluster) per record."""
    predicted = Counter(p for p, _ in assignments)
    true = Counter(t for _, t in assignments)
    both = Counter(assignments)
    true_positive = sum(comb(n, 2) for n in both.values())
    predicted_pairs = sum(comb(n, 2) for n in predicted.values())
    true_pairs = sum(comb(n, 2) for n in true.values())
    precision = true_positive / predicted_pairs if predicted_pairs else 1.0
    recall = true_positive / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def generations(key: tuple[str, str]) -> bool:
    """A senior or junior of the same name and street: the data's call, tested on its own
    (test_birth_dates_a_generation_apart_are_learned_evidence_not_a_veto), not counted in accuracy."""
    return key[1].startswith("G-")


def person_of(db: Path) -> dict[tuple[str, str], str]:
    return {
        (e, r): p
        for e, r, p in query(db, "select source_entity, source_record_id, person_id from identity.person_map")
    }


# --- conformance ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conformance_db(tmp_path_factory) -> Path:
    db = make_raw_db(tmp_path_factory.mktemp("identity_conformance") / "warehouse.duckdb")
    dbt_build(db, AS_OF)
    return db


def test_conformance_people(conformance_db):
    pm = person_of(conformance_db)
    anna = pm[("crm_contacts", "C-001")]
    assert pm[("crm_contacts", "C-002")] == pm[("shop_customers", "S-100")] == anna
    assert pm[("crm_contacts", "C-003")] != anna and pm[("crm_contacts", "C-004")] != anna
    assert pm[("crm_contacts", "C-003")] != pm[("crm_contacts", "C-004")]
    # Carla's till purchase found through her phone written another way
    assert pm[("pos_transactions", "P-1")] == pm[("crm_contacts", "C-004")]
    # orders, web events (before and after login on the same device) and emails reach Anna
    assert {pm[("shop_orders", o)] for o in ("O-1", "O-2", "O-3")} == {anna}
    assert {pm[("web_events", w)] for w in ("W-1", "W-2", "W-3")} == {anna}
    assert pm[("email_events", "E-1")] == pm[("email_events", "E-2")] == anna
    assert pm[("email_events", "E-3")] == pm[("crm_contacts", "C-003")]
    # a customer id seen only on an order is still a person of its own
    assert pm[("shop_orders", "O-5")] not in {anna, pm[("shop_customers", "S-300")]}
    assert ("shop_orders", "O-6") not in pm
    persons = query(conformance_db, "select count(*) from identity.persons")[0][0]
    assert persons == 5  # Anna, Ben, Carla, Dev, customer S-999


def test_every_staged_record_mapped_once(conformance_db):
    staged = query(
        conformance_db,
        """
        select count(*) from (
            select contact_id from staging.stg_crm__contacts union all
            select customer_id from staging.stg_shop__customers union all
            select order_id from staging.stg_shop__orders union all
            select event_id from staging.stg_web__events union all
            select event_id from staging.stg_email__events union all
            select transaction_id from staging.stg_pos__transactions)
    """,
    )[0][0]
    mapped, distinct = query(
        conformance_db,
        """
        select count(*), count(distinct (source_entity, source_record_id)) from identity.person_map
    """,
    )[0]
    assert staged == mapped == distinct == 18


def test_person_map_completeness_test_names_a_swapped_record(conformance_db, tmp_path):
    """The dbt test checks per source entity by count and checksum, then names the records of an entity that
    differs: a record missing and another mapped twice keep the count, and must still fail."""
    db = tmp_path / "warehouse.duckdb"
    shutil.copyfile(conformance_db, db)
    test_name = "assert_person_map_has_every_staged_record_once"
    assert dbt_build(db, AS_OF, test_name, command="test").returncode == 0
    con = duckdb.connect(str(db))
    try:
        con.execute("delete from identity.person_map where source_entity = 'web_events' and source_record_id = ("
                    "select min(source_record_id) from identity.person_map where source_entity = 'web_events')")
        con.execute("insert into identity.person_map select * from identity.person_map "
                    "where source_entity = 'web_events' and source_record_id = ("
                    "select max(source_record_id) from identity.person_map where source_entity = 'web_events')")
        missing, doubled = con.execute(
            "select min(event_id), max(event_id) from staging.stg_web__events").fetchall()[0]
    finally:
        con.close()
    assert person_map_completeness_failures(db, tmp_path) == {("web_events", missing, 0), ("web_events", doubled, 2)}


def test_person_map_completeness_test_sees_ids_whose_hashes_collide(conformance_db, tmp_path):
    """DuckDB's hash() collides for ids that differ in the last byte of two 8-byte chunks: a staged event whose
    person_map row names such a twin keeps the count and the plain hash sum, and must still fail."""
    staged, twin = query(conformance_db, """
        select min(id), max(id) from (
            select 'W' || (20240101 + (i % 9000))::varchar || '-' || lpad((i // 9000)::varchar, 6, '0') as id
            from range(300000) as ids(i))
        group by hash(id) having count(*) > 1 order by 1 limit 1""")[0]  # the pinned DuckDB has such pairs
    db = tmp_path / "warehouse.duckdb"
    shutil.copyfile(conformance_db, db)
    con = duckdb.connect(str(db))
    try:
        assert con.execute("select hash(?) = hash(?)", [staged, twin]).fetchall() == [(True,)]
        con.execute("insert into staging.stg_web__events select * replace (? as event_id) "
                    "from staging.stg_web__events limit 1", [staged])
        con.execute("insert into identity.person_map select * replace (? as source_record_id) "
                    "from identity.person_map where source_entity = 'web_events' limit 1", [twin])
    finally:
        con.close()
    assert person_map_completeness_failures(db, tmp_path) == {("web_events", staged, 0), ("web_events", twin, 1)}


def person_map_completeness_failures(db: Path, tmp_path: Path) -> set[tuple]:
    """Run assert_person_map_has_every_staged_record_once on `db` (it must fail), and return its rows."""
    test_name = "assert_person_map_has_every_staged_record_once"
    failed = dbt_build(db, AS_OF, test_name, command="test", check=False)
    assert failed.returncode != 0 and "Got 2 results" in failed.stdout, failed.stdout[-2000:]
    compiled = next((tmp_path / "dbt_target" / "compiled").rglob(f"{test_name}.sql")).read_text()
    return set(query(db, compiled))


def test_survivorship(conformance_db):
    pm = person_of(conformance_db)
    row = query(
        conformance_db,
        """
        select first_name, last_name, email, phone_e164, address, city, postcode, birth_date, is_known,
               crm_contacts_count, shop_customers_count, shop_orders_count
        from identity.persons where person_id = ?""",
        [pm[("crm_contacts", "C-001")]],
    )[0]
    # C-002 is the most recently updated record: its street spelling wins
    assert row[:7] == (
        "Anna",
        "Schmidt",
        "anna.schmidt@example.com",
        "+49301234567",
        "Hauptstrasse 5",
        "Berlin",
        "10115",
    )
    assert row[7] == date(1985, 4, 12) and row[8] is True and row[9:] == (2, 1, 3)


def test_rerun_gives_identical_ids(conformance_db, tmp_path):
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(conformance_db, copy)
    before = person_of(copy)
    dbt_build(copy, AS_OF, "path:models/staging path:models/intermediate path:models/identity", command="run")
    assert person_of(copy) == before
    assert query(copy, "select count(*) from identity.person_id_history")[0][0] == 0


# --- synthetic population ---------------------------------------------------------------------------------

FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "Dieter",
    "Eva",
    "Felix",
    "Greta",
    "Hans",
    "Ines",
    "Jonas",
    "Klara",
    "Lukas",
    "Marie",
    "Niklas",
    "Olga",
    "Paul",
    "Quirin",
    "Rosa",
    "Stefan",
    "Tanja",
    "Uwe",
    "Vera",
    "Walter",
    "Yvonne",
    "Zoe",
    "Jürgen",
    "Sören",
    "Mehmet",
    "Aylin",
    "Chloé",
]
LAST = [
    "Schmidt",
    "Müller",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
    "Schwarz",
    "Zimmermann",
    "Braun",
    "Krüger",
    "Hofmann",
    "Hartmann",
    "Lange",
    "Werner",
    "Krause",
    "Lehmann",
    "Köhler",
    "Yilmaz",
    "Özdemir",
    "Nguyen",
]
STREETS = [
    "Hauptstraße",
    "Bahnhofstraße",
    "Gartenstraße",
    "Schulstraße",
    "Dorfstraße",
    "Lindenweg",
    "Bergstraße",
    "Kirchplatz",
    "Waldweg",
    "Am Markt",
    "Ringstraße",
    "Mühlenweg",
]
CITIES = [
    ("Berlin", "10115"),
    ("Hamburg", "22763"),
    ("München", "80802"),
    ("Köln", "50667"),
    ("Frankfurt", "60311"),
    ("Stuttgart", "70173"),
    ("Leipzig", "04109"),
    ("Dresden", "01067"),
]


def _typo(text: str, rng: random.Random) -> str:
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def synthetic_population(seed: int = 7, people: int = 220):
    """Raw rows per entity and the true person of every CRM contact and shop customer."""
    rng = random.Random(seed)
    crm, shop, truth = [], [], {}
    used = set()
    for i in range(people):
        while True:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            born = date(1950, 1, 1) + timedelta(days=rng.randrange(18000))
            if (first, last, born) not in used:
                used.add((first, last, born))
                break
        street = rng.choice(STREETS) + f" {rng.randrange(1, 120)}"
        city, postcode = rng.choice(CITIES)
        email = (
            f"{first}.{last}.{i}@example.com".lower().replace("ü", "ue").replace("ö", "oe").replace("é", "e")
        )
        base = {
            "first_name": first,
            "last_name": last,
            "address_line1": street,
            "city": city,
            "postcode": postcode,
            "country": "DE",
            "birth_date": born.isoformat(),
            "updated_at": "2026-01-10T10:00:00Z",
        }
        crm.append({**base, "contact_id": f"C-{i}", "email": email if rng.random() < 0.7 else None})
        truth[("crm_contacts", f"C-{i}")] = f"T{i}"
        if rng.random() < 0.35:  # a CRM duplicate typed again by someone else, no email
            dup = {**base, "contact_id": f"D-{i}", "updated_at": "2026-02-10T10:00:00Z"}
            change = rng.choice(
                ["typo_last", "typo_first", "swap", "abbrev", "case", "no_birth", "no_postcode"]
            )
            if change == "typo_last":
                dup["last_name"] = _typo(last, rng)
            elif change == "typo_first":
                dup["first_name"] = _typo(first, rng)
            elif change == "swap":
                dup["first_name"], dup["last_name"] = last, first
            elif change == "abbrev":
                dup["address_line1"] = street.replace("straße", "str.")
            elif change == "case":
                dup["first_name"], dup["last_name"] = first.upper(), f"  {last.lower()} "
            elif change == "no_birth":
                dup["birth_date"] = None
            else:
                dup["postcode"] = None
            crm.append(dup)
            truth[("crm_contacts", f"D-{i}")] = f"T{i}"
        if rng.random() < 0.5:  # a shop account, often with another email and without birth date
            customer = {
                **base,
                "customer_id": f"S-{i}",
                "created_at": "2026-01-15T10:00:00Z",
                "email": email if rng.random() < 0.4 else f"shop{i}@mail.example",
                "birth_date": base["birth_date"] if rng.random() < 0.5 else None,
            }
            if rng.random() < 0.2:
                customer["first_name"] = _typo(first, rng)
            shop.append(customer)
            truth[("shop_customers", f"S-{i}")] = f"T{i}"
    # a family mailbox used by 30 different people
    for j in range(30):
        crm.append(
            {
                "contact_id": f"F-{j}",
                "first_name": FIRST[j],
                "last_name": LAST[(j * 7) % len(LAST)],
                "email": "familie@example.com",
                "address_line1": f"Familienweg {j + 1}",
                "city": "Bonn",
                "postcode": "53111",
                "country": "DE",
                "birth_date": f"{1940 + j}-0{1 + j % 9}-1{j % 10}",
                "updated_at": "2026-01-10T10:00:00Z",
            }
        )
        truth[("crm_contacts", f"F-{j}")] = f"F{j}"
    # fathers and sons: same name and address, birth dates a generation apart
    for k in range(6):
        for who, born in (("senior", f"{1950 + k}-03-0{k + 1}"), ("junior", f"{1980 + k}-11-1{k}")):
            crm.append(
                {
                    "contact_id": f"G-{k}-{who}",
                    "first_name": "Karl",
                    "last_name": LAST[k],
                    "address_line1": f"Generationenweg {k + 1}",
                    "city": "Kassel",
                    "postcode": "34117",
                    "country": "DE",
                    "birth_date": born,
                    "updated_at": "2026-01-10T10:00:00Z",
                }
            )
            truth[("crm_contacts", f"G-{k}-{who}")] = f"G{k}{who}"
    return crm, shop, truth


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    db = tmp_path_factory.mktemp("identity_population") / "warehouse.duckdb"
    crm, shop, truth = synthetic_population()
    con = duckdb.connect(str(db))
    create_raw_schema(con)
    insert_rows(con, "crm_contacts", crm)
    insert_rows(con, "shop_customers", shop)
    insert_rows(
        con,
        "email_events",
        [
            {
                "event_id": "E-fam",
                "occurred_at": "2026-03-01T10:00:00Z",
                "email": "familie@example.com",
                "event_type": "open",
            }
        ],
    )
    insert_rows(
        con,
        "shop_orders",
        [
            {
                "order_id": f"O-{c['customer_id']}",
                "customer_id": c["customer_id"],
                "ordered_at": "2026-03-01T10:00:00Z",
                "total_amount": "10.00",
                "status": "completed",
            }
            for c in shop
        ],
    )
    con.close()
    dbt_build(db, AS_OF)
    return db, truth


def test_probabilistic_linking_accuracy(population):
    db, truth = population
    pm = person_of(db)
    assert set(truth) <= set(pm)
    precision, recall, f1 = pair_scores([(pm[key], true) for key, true in truth.items() if not generations(key)])
    # Measured 1.000 / 1.000 on populations seeded 7 (this one), 8 and 9 (243, 221 and 206 true pairs). The
    # margin is a few pairs of seed noise: 0.98 recall allows ~4 missed pairs (two records left unlinked), 0.99
    # precision two false ones; a model that vetoes on one mistyped field misses far more.
    assert precision >= 0.99, (precision, recall)
    assert recall >= 0.98, (precision, recall)
    iterations = query(db, "select max(em_iterations) from intermediate.int_person_pairs_scored")[0][0]
    assert iterations > 0  # the m-probabilities were estimated, not the priors


def test_links_work_on_names_address_and_birth_date_alone(population):
    db, truth = population
    pm = person_of(db)
    rules = dict(
        ((e, r), rule)
        for e, r, rule in query(
            db,
            """
        select source_entity, source_record_id, match_rule from identity.person_map
        where source_entity = 'crm_contacts' and source_record_id like 'D-%'""",
        )
    )
    assert rules and set(rules.values()) == {"probabilistic"}
    for _, record_id in rules:
        assert pm[("crm_contacts", record_id)] == pm[("crm_contacts", "C-" + record_id[2:])], record_id


def test_family_email_does_not_fuse_thirty_people(population):
    db, _ = population
    pm = person_of(db)
    family = {pm[("crm_contacts", f"F-{j}")] for j in range(30)}
    assert len(family) == 30
    # the mailbox's own events go to none of them
    assert pm[("email_events", "E-fam")] not in family
    blocked = query(
        db,
        """
        select count(*) from identity.match_evidence
        where right_node = 'email:familie@example.com' and not is_linked
            and blocked_by = 'identifier_cardinality'""",
    )
    assert blocked[0][0] == 30


def test_birth_dates_a_generation_apart_are_learned_evidence_not_a_veto(population):
    """Same name and street, birth dates 30 years apart (a senior and a junior, or a duplicate whose birth date
    was replaced, as FEBRL makes them): the disagreement is a learned level with a clearly negative weight, so
    such a pair scores far below the same pair with its birth dates agreeing; it is no veto.

    Whether it links is the data's call, not a rule's: in this small population no other two different people
    share a name and a street, so the model links the six pairs (docs/identity_engine.md, "Juniors and
    seniors"); the accuracy tests count them apart from the rest."""
    db, _ = population
    pairs = query(
        db,
        """
        select birth_date, birth_date_weight, match_weight, contact, first_name
        from intermediate.int_person_pairs_scored
        where left_node like 'crm:G-%-junior' and right_node like 'crm:G-%-senior'
            and split_part(left_node, '-', 2) = split_part(right_node, '-', 2)""",
    )
    assert len(pairs) == 6
    for level, weight, _, _, _ in pairs:
        assert level == 0 and -20 < weight < -3
    agreeing = query(
        db,
        """
        select min(match_weight) from intermediate.int_person_pairs_scored
        where birth_date = 1 and first_name = 1 and contact = ?""",
        [pairs[0][3]],
    )[0][0]
    # the same evidence with the birth date agreeing scores higher by at least the two levels' difference
    assert all(agreeing - match_weight > 3 for _, _, match_weight, _, _ in pairs)


def test_the_match_threshold_is_the_measured_one():
    """identity_match_threshold was chosen on FEBRL 1-4 and the demo at 10k and 100k (docs/identity_engine.md,
    "What moved the numbers"); a change has to be measured there again, not made here."""
    settings = yaml.safe_load((Path(__file__).resolve().parent.parent / "dbt_project" / "dbt_project.yml").read_text())
    assert settings["vars"]["identity_match_threshold"] == 0.8


def test_new_day_keeps_ids_and_records_a_merge(population, tmp_path):
    db, truth = population
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(db, copy)
    before = person_of(copy)
    (first, first_email), (second, second_email) = query(
        copy,
        """
        select contact_id, email from staging.stg_crm__contacts
        where contact_id like 'C-%' and email is not null order by contact_id limit 2""",
    )
    anna, ben = before[("crm_contacts", first)], before[("crm_contacts", second)]
    assert anna != ben
    con = duckdb.connect(str(copy))
    insert_rows(
        con,
        "crm_contacts",
        [
            {
                "contact_id": "N-1",
                "first_name": "Neu",
                "last_name": "Person",
                "email": "neu@example.com",
                "updated_at": "2026-04-01T09:00:00Z",
            }
        ],
        batch_id="batch-2",
        extracted_at="2026-04-01 23:00:00",
    )
    # a POS purchase that proves C-0 and C-1 share a loyalty card: they are one person after all
    insert_rows(
        con,
        "pos_transactions",
        [
            {
                "transaction_id": "P-1",
                "purchased_at": "2026-04-01T12:00:00Z",
                "total_amount": "5.00",
                "loyalty_id": "L-9",
                "email": first_email,
            },
            {
                "transaction_id": "P-2",
                "purchased_at": "2026-04-01T13:00:00Z",
                "total_amount": "5.00",
                "loyalty_id": "L-9",
                "email": second_email,
            },
        ],
        batch_id="batch-2",
        extracted_at="2026-04-01 23:00:00",
    )
    con.close()
    dbt_build(
        copy, "2026-04-01", "path:models/staging path:models/intermediate path:models/identity", command="run"
    )
    after = person_of(copy)
    merged = {anna, ben}
    for key, person in before.items():
        if person not in merged:
            assert after[key] == person, key
    assert after[("crm_contacts", first)] == after[("crm_contacts", second)] in merged
    assert after[("crm_contacts", "N-1")] not in set(before.values())
    history = query(copy, "select previous_person_id, person_id, change_type from identity.person_id_history")
    survivor = after[("crm_contacts", first)]
    assert history == [((merged - {survivor}).pop(), survivor, "merge")]
