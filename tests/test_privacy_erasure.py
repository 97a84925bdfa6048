"""Erasure that reaches every copy, and consent withdrawal that reaches exactly the syncs of its purpose.

One small demo world is run in-process (every stage of the DAG in order), synced to a file, a real PostgreSQL
database and an HTTP API double. Then one person is erased by email and the world runs again: every file under
the home (the demo source systems aside: they stand for the company's own systems, which Touchpoint reads and
does not own), every table of every DuckDB file and every destination is searched for the person's email, phone,
name and their analytics pseudonyms.
"""

from __future__ import annotations

import csv
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import joblib
import psycopg2
import pytest

from tests.conftest import PG_SERVER, fresh_postgres_database
from tests.doubles.activation import FakeAudienceApi
from touchpoint import cli, pipeline
from touchpoint.activation.definitions import SyncDefinition, parse_sync_definition
from touchpoint.config import RunContext
from touchpoint.privacy.erasure_requests import load_requests, read_suppression
from touchpoint.privacy.keys import pseudonym_key
from touchpoint.privacy.pseudonyms import pseudonym

pytestmark = pytest.mark.postgres
AS_OF = date(2026, 3, 31)
TOKEN = "erasure-test-token"
AUDIENCE_SQL = "select person_id, rfm_segment from marts.customer_360"


def sync_definitions(pg_uri_name: str | None, api_name: str | None) -> list[SyncDefinition]:
    """Everyone with a consent for the purpose, with clear email and name: what a CRM or ESP receives."""

    def definition(name: str, purpose: str, destination: dict) -> SyncDefinition:
        return parse_sync_definition({
            "name": name,
            "source": {"sql": AUDIENCE_SQL},
            "primary_key": "person_id",
            "fields": ["person_id", "email", "first_name", "last_name", "rfm_segment"],
            "personal_fields": {"email": "clear", "first_name": "clear", "last_name": "clear"},
            "purpose": purpose,
            "email_field": "email",
            "destination": destination,
            "batch_size": 50,
        })

    definitions = [
        definition("email_file", "email_marketing", {"type": "file", "formats": ["csv", "parquet"]}),
        definition("personalisation_file", "personalisation", {"type": "file", "formats": ["csv"]}),
    ]
    if pg_uri_name:
        definitions.append(definition("email_pg", "email_marketing", {
            "type": "postgres", "connection": pg_uri_name, "schema": "crm", "table": "audience"}))
    if api_name:
        definitions.append(definition("email_api", "email_marketing", {
            "type": "http", "connection": api_name, "timeout_s": 5, "max_attempts": 2, "backoff_s": 0.01}))
    return definitions


def run_everything(home: Path, as_of: date, run_id: str, syncs: list[SyncDefinition]) -> dict:
    return pipeline.run_in_process(RunContext(as_of=as_of, home=home, run_id=run_id), syncs)


@dataclass
class World:
    home: Path
    copy: Path  # the same world after its first run, for the consent test
    pg_database: str
    api: FakeAudienceApi
    syncs: list[SyncDefinition]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from touchpoint.sources import generate

    home = tmp_path_factory.mktemp("erasure_home")
    generate(home / "sources", customers=250, days=40, seed=11, start=AS_OF - timedelta(days=39))
    monkeypatch = pytest.MonkeyPatch()
    with fresh_postgres_database("touchpoint_erasure") as pg, FakeAudienceApi(TOKEN) as api:
        server = f"postgresql://{PG_SERVER['user']}@{PG_SERVER['host']}:5432/{pg}"
        monkeypatch.setenv("TOUCHPOINT_CONN_ERASURE_PG", server)
        monkeypatch.setenv("TOUCHPOINT_CONN_ERASURE_API", api.url.replace("http://", f"http://:{TOKEN}@") + "/v1")
        syncs = sync_definitions("erasure_pg", "erasure_api")
        run_everything(home, AS_OF, "run-1", syncs)
        copy = tmp_path_factory.mktemp("consent_home") / "home"
        shutil.copytree(home, copy)
        yield World(home, copy, pg, api, syncs)
    monkeypatch.undo()


@dataclass(frozen=True)
class Person:
    person_id: str
    email: str
    phone: str
    first_name: str
    last_name: str
    first_name_unique: bool  # a shared first name's pseudonym rightly remains for the others who have it
    last_name_key: str | None  # the last name as identity compares it, when nobody else's is the same

    def needles(self) -> dict[str, str]:
        """What must not be found anywhere: the clear values and the analytics pseudonym of each."""
        key = pseudonym_key()
        clear = {"email": self.email, "phone": self.phone, "last_name": self.last_name,
                 "full_name": f"{self.first_name} {self.last_name}"}
        pseudonyms = {f"pseudonym({k})": pseudonym(v, key) for k, v in
                      (("email", self.email), ("phone", self.phone), ("last_name", self.last_name),
                       *([("first_name", self.first_name)] if self.first_name_unique else []),
                       *([("last_name_key", self.last_name_key)] if self.last_name_key else []))}
        return {**clear, **pseudonyms}


def synced_everywhere(world: World) -> Person:
    """A person with a unique last name, email and phone whom the first run sent to every destination."""
    pg_keys = {row[0] for row in pg_rows(world.pg_database, "select person_id from crm.audience")}
    con = duckdb.connect(str(world.home / "pii.duckdb"), read_only=True)
    try:
        candidates = con.execute(
            "select person_id, email, phone_e164, first_name, last_name, "
            "first_name in (select first_name from persons group by 1 having count(*) = 1) from persons "
            "where email is not null and phone_e164 is not null and first_name is not null "
            "and length(last_name) >= 5 "
            "and last_name in (select last_name from persons group by 1 having count(*) = 1) "
            "order by person_id").fetchall()
    finally:
        con.close()
    staged = {person_id: staged_records(world.home, person_id) for person_id, *_ in candidates}

    def preferred(candidate: tuple) -> tuple[bool, bool]:
        # someone with online orders and store purchases first: the erasure must reach those staging tables too
        return not all(staged[candidate[0]].values()), not candidate[-1]

    for person_id, email, phone, first, last, first_unique in sorted(candidates, key=preferred):
        if person_id in pg_keys and person_id in world.api.records:
            return Person(person_id, email, phone, first, last, first_unique, compared_last_name(world, person_id))
    pytest.fail("no person of the demo world reached every destination")


# The staging tables rebuilt from raw each run that hold a person's purchases: the entity and column of the record
# they belong to (identity.person_map), and their rows' key.
STAGED_PURCHASES = {"stg_shop__orders": ("shop_orders", "order_id", "order_id"),
                    "stg_shop__order_items": ("shop_orders", "order_id", "order_item_id"),
                    "stg_pos__transactions": ("pos_transactions", "transaction_id", "transaction_id")}


def staged_records(home: Path, person_id: str) -> dict[str, set[str]]:
    """staging table -> the keys of the person's rows in it (by identity.person_map), in the working file."""
    con = duckdb.connect(str(paths(home).work_db), read_only=True)
    try:
        return {table: {row[0] for row in con.execute(
            f"select {key} from staging.{table} where {column} in (select source_record_id "
            "from identity.person_map where person_id = ? and source_entity = ?)", [person_id, entity],
        ).fetchall()} for table, (entity, column, key) in STAGED_PURCHASES.items()}
    finally:
        con.close()


def still_staged(home: Path, keys: dict[str, set[str]]) -> dict[str, int]:
    """staging table -> how many of `keys` it holds."""
    con = duckdb.connect(str(paths(home).work_db), read_only=True)
    try:
        return {table: con.execute(f"select count(*) from staging.{table} where {STAGED_PURCHASES[table][2]} "
                                   "in (select unnest(?))", [sorted(table_keys)]).fetchall()[0][0]
                for table, table_keys in keys.items()}
    finally:
        con.close()


def compared_last_name(world: World, person_id: str) -> str | None:
    """The person's last name as identity compares it (int_person_records_unioned.last_name_key), if it is theirs
    alone: identity's match model keeps name frequencies keyed by its pseudonym."""
    con = duckdb.connect(str(paths(world.home).work_db), read_only=True)
    try:
        keys = con.execute(
            "select r.last_name_key, count(distinct m.person_id) over (partition by r.last_name_key) "
            "from intermediate.int_person_records_unioned as r "
            "join identity.person_map as m using (source_entity, source_record_id) "
            "qualify bool_or(m.person_id = ?) over (partition by r.last_name_key)", [person_id]).fetchall()
    finally:
        con.close()
    unique = {key for key, persons in keys if persons == 1 and key}
    return next(iter(unique)) if len(unique) == 1 else None


def pg_rows(database: str, sql: str, parameters: tuple = ()) -> list[tuple]:
    with psycopg2.connect(dbname=database, **PG_SERVER) as con, con.cursor() as cur:
        cur.execute(sql, parameters)
        rows = cur.fetchall()
    con.close()
    return rows


def files_holding(home: Path, needles: dict[str, str]) -> dict[str, list[str]]:
    """needle name -> files under the home (demo source systems aside) holding its bytes."""
    found: dict[str, list[str]] = {}
    encoded = {name: value.encode() for name, value in needles.items()}
    for path in sorted(home.rglob("*")):
        if not path.is_file() or path.is_relative_to(home / "sources"):
            continue
        data = path.read_bytes()
        for name, value in encoded.items():
            if value in data or value.lower() in data.lower():
                found.setdefault(name, []).append(str(path.relative_to(home)))
    return found


def tables_holding(home: Path, needles: dict[str, str]) -> dict[str, list[str]]:
    """needle name -> `file:table.column` of every text column, in every DuckDB file and every Parquet file under
    the home (Parquet and DuckDB compress text, so a byte search alone could miss a value), holding it."""
    found: dict[str, list[str]] = {}
    con = duckdb.connect()
    try:
        for path in sorted([*home.rglob("*.duckdb"), *home.rglob("*.parquet")]):
            if path.is_relative_to(home / "sources") or path.is_relative_to(home / "airflow"):
                continue
            for relation, columns in text_columns(con, path):
                _search(con, f"{path.relative_to(home)}:{relation}", relation, columns, needles, found)
            if path.suffix == ".duckdb":
                con.execute("detach scanned")
    finally:
        con.close()
    return found


def text_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[tuple[str, list[str]]]:
    if path.suffix == ".parquet":
        relation = f"read_parquet('{path}')"
        columns = [name for name, kind, *_ in con.execute(f"describe select * from {relation}").fetchall()
                   if kind == "VARCHAR"]
        return [(relation, columns)]
    con.execute(f"attach '{path}' as scanned (read_only)")
    tables: dict[str, list[str]] = {}
    for schema, table, column in con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where table_catalog = 'scanned' and data_type = 'VARCHAR' order by all").fetchall():
        tables.setdefault(f'scanned."{schema}"."{table}"', []).append(column)
    return list(tables.items())


def _search(con, label: str, relation: str, columns: list[str], needles: dict[str, str], found: dict) -> None:
    if not columns:
        return
    checks = [(name, column) for name in needles for column in columns]
    hits = con.execute(
        "select " + ", ".join(f'bool_or(contains(lower("{column}"), lower(?)))' for _, column in checks)
        + f" from {relation}", [needles[name] for name, _ in checks]).fetchall()[0]
    for (name, column), hit in zip(checks, hits, strict=True):
        if hit:
            found.setdefault(name, []).append(f"{label}.{column}")


def test_an_erased_person_is_nowhere_and_stays_out(world: World) -> None:
    person = synced_everywhere(world)
    needles = person.needles()
    # the searches can see the person before the erasure (else finding nothing afterwards would prove nothing)
    before_files, before_tables = files_holding(world.home, needles), tables_holding(world.home, needles)
    assert {"email", "last_name"} <= before_files.keys() | before_tables.keys(), before_files
    assert any(f.startswith("landing/") for f in before_tables["email"]), before_tables
    assert any(f.startswith("pii.duckdb") for f in before_tables["email"])
    assert any(f.startswith("activation/") for f in before_files["email"])
    assert any(f.startswith("warehouse.duckdb") for f in before_tables["pseudonym(email)"]), before_tables
    # identity's kept name frequencies (keyed by the pseudonym of the name as compared) count the person's name
    assert person.last_name_key is not None
    assert any("int_person_pairs_scored__name_frequencies" in f for f in before_tables["pseudonym(last_name_key)"])
    others_rfm = rfm_without(world.home, person.person_id)
    purchases_staged = staged_records(world.home, person.person_id)
    assert all(purchases_staged.values()), purchases_staged

    assert cli.main(["erase", "--email", f"  {person.email.upper()} ", "--home", str(world.home)]) == 0
    outcome = run_everything(world.home, AS_OF, "run-2", world.syncs)

    assert outcome["dbt.erase"]["persons_erased"] == 1
    # the identity match model's kept estimates counted the person's names: dropped, estimated again without them
    assert outcome["dbt.erase"]["removed"]["identity_estimates_dropped"] == 3
    assert outcome["publish"]["compacted_after_erasure"]["free_blocks_after"] == 0
    # the order and POS tables hold ids and amounts, which the value searches below cannot recognise as theirs
    for table, rows in purchases_staged.items():
        assert outcome["dbt.erase"]["removed"][f"staging.{table}"] == len(rows), table
    assert still_staged(world.home, purchases_staged) == dict.fromkeys(STAGED_PURCHASES, 0)
    assert files_holding(world.home, needles) == {}
    assert tables_holding(world.home, needles) == {}
    assert pg_rows(world.pg_database, "select count(*) from crm.audience where person_id = %s",
                   (person.person_id,)) == [(0,)]
    assert person.person_id not in world.api.records
    assert not any(person.email in str(record) for record in world.api.records.values())
    # the suppression list remains, with its own key: no hash of it is an analytics pseudonym
    suppression = read_suppression(paths(world.home))
    assert suppression.num_rows >= 3
    assert not set(suppression.column("hash").to_pylist()) & set(needles.values())
    [request] = load_requests(paths(world.home))
    assert request.status == "honoured" and request.removed["landing_rows"] > 0
    assert person.email not in (paths(world.home).state / "privacy" / "requests").joinpath(
        f"{request.request_id}.json").read_text()
    # model files keep parameters, not one value per training row (KMeans' labels_ is dropped before saving)
    for model_file in (world.home / "artifacts").rglob("*.joblib"):
        model = joblib.load(model_file)
        for part in [model, *(step for _, step in getattr(model, "steps", []))]:
            assert not hasattr(part, "labels_"), model_file
    # everyone else's RFM is what it was
    assert rfm_without(world.home, person.person_id) == others_rfm

    # a rewritten landing file keeps its columns (nothing added from the folder names), so it reloads
    for rewritten in (world.home / "landing" / "crm" / "crm_contacts").rglob("*.parquet"):
        assert "extract_date" not in duckdb.sql(
            f"select * from read_parquet('{rewritten}', hive_partitioning = false)").columns

    # a later extract holding the erased email (a new CRM contact) does not bring the person back; another
    # person's update that now carries the erased person's phone (a recycled number) is theirs, and stays
    neighbour = other_contact(world.home, person)
    next_day = AS_OF + timedelta(days=1)
    write_contacts(world.home, next_day, [
        ("C-RETURNS", "New", "Contact", person.email, ""),
        (neighbour["contact_id"], neighbour["first_name"], neighbour["last_name"], neighbour["email"], person.phone),
    ])
    # one of the erased person's orders comes back with its header unreadable (quarantined): its lines land alone,
    # are staged before the erasure stage runs, and go with it all the same (by the line's order id)
    returning_order = sorted(purchases_staged["stg_shop__orders"])[0]
    returning_lines = resend_order_without_header(world.home, returning_order, next_day)
    assert returning_lines
    outcome = run_everything(world.home, next_day, "run-3", world.syncs)
    assert outcome["dbt.erase"]["removed"]["raw.crm_contacts"] == 1
    removed = outcome["dbt.erase"]["removed"]  # locations with nothing removed are left out
    assert removed.get("raw.shop_order_items") == len(returning_lines)
    assert removed.get("staging.stg_shop__order_items") == len(returning_lines)
    assert still_staged(world.home, {"stg_shop__order_items": returning_lines}) == {"stg_shop__order_items": 0}
    assert outcome["dbt.erase"]["persons_erased"] == 0
    assert files_holding(world.home, {"email": person.email}) == {}
    assert tables_holding(world.home, {"email": person.email}) == {}
    con = duckdb.connect(str(world.home / "pii.duckdb"), read_only=True)
    try:
        kept = con.execute("select phone_e164 from source_records where source_entity = 'crm_contacts' "
                           "and source_record_id = ?", [neighbour["contact_id"]]).fetchall()
    finally:
        con.close()
    assert kept == [(person.phone,)]


def paths(home: Path):
    from touchpoint.config import Paths

    return Paths(home)


def rfm_without(home: Path, person_id: str) -> dict[str, tuple]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute("select person_id, recency_days, frequency, monetary from marts.customer_rfm "
                           "where person_id <> ?", [person_id]).fetchall()
    finally:
        con.close()
    return {row[0]: row[1:] for row in rows}


def other_contact(home: Path, person: Person) -> dict[str, str]:
    """A CRM contact of someone else, with an email, as the pii file has it."""
    con = duckdb.connect(str(home / "pii.duckdb"), read_only=True)
    try:
        row = con.execute(
            "select source_record_id, first_name, last_name, email from source_records "
            "where source_entity = 'crm_contacts' and email is not null and person_id <> ? "
            "order by source_record_id limit 1", [person.person_id]).fetchall()[0]
    finally:
        con.close()
    return dict(zip(("contact_id", "first_name", "last_name", "email"), row, strict=True))


def write_contacts(home: Path, day: date, rows: list[tuple[str, str, str, str, str]]) -> None:
    """A CRM contacts extract for `day`: (contact id, first name, last name, email, phone) per row."""
    path = home / "sources" / "systems" / "crm" / f"contacts_{day.isoformat()}.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(["contact_id", "first_name", "last_name", "email", "phone", "address_line1", "address_line2",
                         "city", "postcode", "region", "country", "birth_date", "email_opt_in", "updated_at"])
        for contact_id, first, last, email, phone in rows:
            writer.writerow([contact_id, first, last, email, phone, "", "", "", "", "", "DE", "", "true",
                             f"{day.isoformat()}T09:00:00Z"])


def resend_order_without_header(home: Path, order_id: str, day: date) -> set[str]:
    """Change `order_id` in the demo shop on `day` so the next extract takes it and its lines, with an empty
    customer id (a required value: the header goes to quarantine, the lines to raw); its lines' staged keys."""
    shop = sqlite3.connect(home / "sources" / "systems" / "shop.sqlite")
    try:
        with shop:
            shop.execute("update orders set customer_id = '', updated_at = ? where order_id = ?",
                         [f"{day.isoformat()}T09:00:00Z", order_id])
        lines = shop.execute("select line_number from order_items where order_id = ?", [order_id]).fetchall()
        return {f"{order_id}-{line}" for (line,) in lines}
    finally:
        shop.close()


def write_consent(home: Path, day: date, email: str, purposes: list[str]) -> None:
    path = home / "sources" / "systems" / "crm" / f"consents_{day.isoformat()}.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(["subject_email", "subject_phone", "customer_id", "purpose", "granted", "occurred_at",
                         "source"])
        for purpose in purposes:
            writer.writerow([email, "", "", purpose, "false", f"{day.isoformat()}T08:00:00Z", "preference_centre"])


def test_withdrawing_one_purpose_reaches_exactly_its_syncs_and_ml(world: World) -> None:
    home = world.copy
    syncs = sync_definitions(None, None)
    audience = audience_keys(home)
    con = duckdb.connect(str(home / "pii.duckdb"), read_only=True)
    try:
        emails = dict(con.execute("select person_id, email from persons where email is not null").fetchall())
    finally:
        con.close()
    scored = ml_scored(home)
    both = sorted(p for p in audience["email_file"] & audience["personalisation_file"] & scored if p in emails)
    assert both, "nobody is in both file audiences and scored"
    person_id = both[0]

    next_day = AS_OF + timedelta(days=1)
    write_consent(home, next_day, emails[person_id], ["personalisation", "profiling"])
    run_everything(home, next_day, "run-2", syncs)

    after = audience_keys(home)
    assert person_id in after["email_file"]
    assert person_id not in after["personalisation_file"]
    assert person_id not in ml_scored(home)
    assert after["personalisation_file"] | {person_id} >= audience["personalisation_file"] - {person_id}


def audience_keys(home: Path) -> dict[str, set[str]]:
    keys = {}
    for name in ("email_file", "personalisation_file"):
        with open(home / "activation" / name / "audience.csv", newline="", encoding="utf-8") as handle:
            keys[name] = {row["person_id"] for row in csv.DictReader(handle)}
    return keys


def ml_scored(home: Path) -> set[str]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute("select person_id from ml.customer_propensity "
                           "where as_of = (select max(as_of) from ml.customer_propensity)").fetchall()
    finally:
        con.close()
    return {row[0] for row in rows}
