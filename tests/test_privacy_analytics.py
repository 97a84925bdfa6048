"""Personal data has one home (ARCHITECTURE.md rule 8): the analytics file analysts and syncs read holds
pseudonyms, the pii file holds the clear identifiers, and syncs send only the personal fields they declare.

One small demo world runs through every stage of the DAG in this process (with a CRM contact the loader must
quarantine, so the audit tables carry personal data too); the sync tests use the activation test double.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import signal
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.doubles.activation import PHONE, person, write_published_warehouse
from touchpoint import cli, pipeline
from touchpoint.activation import SyncDefinitionError, load_sync_definitions, run_sync
from touchpoint.activation.definitions import parse_sync_definition
from touchpoint.config import Paths, RunContext
from touchpoint.dbt import read_manifest
from touchpoint.privacy.analytics import TableWrite, write_tables
from touchpoint.privacy.keys import pseudonym_key
from touchpoint.privacy.pii_columns import IDENTIFIER_NODE_KINDS, NODE_ID_FORM, tagged_forms
from touchpoint.privacy.pseudonyms import pseudonym
from touchpoint.shell import ShellRefused, open_analyst_connection, run_query
from touchpoint.sql_text import quote_ident, sql_literal

AS_OF = date(2026, 3, 31)
# A CRM contact whose birth date is implausible: quarantined whole, its reason quoting the birth date
QUARANTINED = {"first_name": "Zelda", "last_name": "Quarantinova", "email": "zelda.quarantinova@example.org",
               "phone": "+49 151 2345 6789", "birth_date": "1700-01-01"}
PSEUDONYM = r"[0-9a-f]{64}"
EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
# A number one could dial, alone or inside text. Not phones: digits inside an id, a date or a decimal
# (0.26963776679982293, a batch id's hex suffix 'crm_contacts-2026-03-31-418200431587'), pseudonyms and md5 keys
# (removed first), and JSON numbers (a model's random_state), so in JSON only a '+' number or a string counts.
PHONE_ALONE = r"^\+?[0-9]{8,15}$"
PHONE_INSIDE = {"VARCHAR": r"(^|[^0-9A-Za-z_.-])\+?[0-9]{8,15}([^0-9A-Za-z_.-]|$)",
                "JSON": r"\+[0-9]{8,15}|\"[0-9]{8,15}\""}


def _add_quarantined_contact(paths: Paths, day: date) -> None:
    path = paths.demo_sources / "systems" / "crm" / f"contacts_{day.isoformat()}.csv"
    with open(path, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(
            ["Q-0001", QUARANTINED["first_name"], QUARANTINED["last_name"], QUARANTINED["email"],
             QUARANTINED["phone"], "Quarantänestraße 1", "", "Berlin", "10115", "", "DE", QUARANTINED["birth_date"],
             "true", f"{day.isoformat()}T09:00:00Z"]
        )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo world, every stage of the customer_360 DAG up to publish run in this process."""
    from touchpoint.sources import generate

    paths = Paths(tmp_path_factory.mktemp("privacy_home")).ensure()
    generate(paths.demo_sources, customers=250, days=45, seed=11, start=AS_OF - timedelta(days=44))
    _add_quarantined_contact(paths, AS_OF)
    pipeline.run_in_process(RunContext(as_of=AS_OF, home=paths.home, run_id=AS_OF.isoformat()))
    return paths.home


def both_files(home: Path) -> duckdb.DuckDBPyConnection:
    """The analytics file, with the pii file attached as `pii` (a test's view, not the analyst shell)."""
    con = duckdb.connect(str(Paths(home).published_db), read_only=True)
    con.execute(f"attach {sql_literal(str(Paths(home).pii_db))} as pii (read_only)")
    return con


def text_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str]]:
    """(schema, table, column, type) of every text or JSON column of every table of the analytics file."""
    return con.execute(
        "select table_schema, table_name, column_name, data_type from information_schema.columns "
        "where table_catalog = current_database() and data_type in ('VARCHAR', 'JSON') order by all"
    ).fetchall()


# -- the analytics file ------------------------------------------------------------------------------------


def test_the_analytics_file_holds_tables_of_the_published_schemas_only(home: Path) -> None:
    con = both_files(home)
    try:
        schemas = {row[0] for row in con.execute(
            "select distinct schema_name from duckdb_tables() where database_name = current_database()").fetchall()}
        views = con.execute("select count(*) from duckdb_views() where not internal "
                            "and database_name = current_database()").fetchone()[0]
        internal = con.execute("select table_name from duckdb_tables() where database_name = current_database() "
                               "and schema_name = 'intermediate'").fetchall()
    finally:
        con.close()
    assert schemas == {"audit", "identity", "marts", "ml", "intermediate"}
    assert views == 0  # fresh tables only: no view reads raw or staging
    assert internal == [("int_person_pairs_scored",)]  # what `identity explain` weighs, levels not values


def test_every_tagged_column_holds_pseudonyms_of_the_clear_values(home: Path) -> None:
    key = pseudonym_key()
    forms = tagged_forms(read_manifest(Paths(home)))
    con = both_files(home)
    try:
        published = {f"{s}.{t}" for s, t in con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_catalog = current_database()").fetchall()}
        checked = []
        for relation in sorted(published & forms.keys()):
            for column, form in forms[relation].items():
                value = quote_ident(column)
                kinds = "|".join(IDENTIFIER_NODE_KINDS)
                pattern = f"^(({kinds}):{PSEUDONYM}|[a-z_]+:.*)$" if form == NODE_ID_FORM else f"^{PSEUDONYM}$"
                bad = con.execute(f"select count(*) from {relation} where {value} is not null "
                                  f"and not regexp_matches({value}, {sql_literal(pattern)})").fetchone()[0]
                assert bad == 0, f"{relation}.{column}"
                checked.append(f"{relation}.{column}")
        assert {"identity.persons.email", "marts.customer_360.last_name", "identity.match_evidence.right_node",
                "marts.fct_web_sessions.anonymous_id"} <= set(checked)
        for relation in ("identity.persons", "marts.customer_360"):
            for column in forms[relation]:
                rows = con.execute(
                    f"select published.{quote_ident(column)}, cast(clear.{quote_ident(column)} as varchar) "
                    f"from {relation} as published inner join pii.persons as clear using (person_id) "
                    "order by person_id limit 50").fetchall()
                assert rows and all(shown == pseudonym(value, key) for shown, value in rows), f"{relation}.{column}"
        # an identifier node is 'email:' || the pseudonym of the clear email: joinable with persons.email
        nodes = con.execute("select node_id, identifier_type, identifier from pii.identifier_nodes").fetchall()
        assert {kind for _, kind, _ in nodes} >= {"email", "phone", "anon"}
        assert all(node == f"{kind}:{pseudonym(value, key)}" for node, kind, value in nodes)
        unmatched = con.execute("select count(*) from identity.match_evidence where split_part(right_node, ':', 1) "
                                "in ('email', 'phone') and right_node not in (select node_id from pii.identifier_nodes)"
                                ).fetchone()[0]
        assert unmatched == 0
    finally:
        con.close()


def test_no_text_in_the_analytics_file_looks_like_an_email_a_phone_or_a_known_identifier(home: Path) -> None:
    """Every text column of every table, scanned in SQL: no email- or phone-shaped value, and none of the clear
    emails, phones and last names the pii file holds (the quarantined contact's included) inside any value."""
    con = both_files(home)
    try:
        needles = {row[0] for row in con.execute(
            "select email from pii.persons union select phone_e164 from pii.persons "
            "union select last_name from pii.persons where length(last_name) >= 5 "
            "and last_name not in (select city from identity.persons where city is not null) "
            "union select email from pii.source_records union select identifier from pii.identifier_nodes "
            "where identifier_type in ('email', 'phone')").fetchall() if row[0]}
        needles |= {QUARANTINED["email"], QUARANTINED["last_name"], QUARANTINED["birth_date"], "+4915123456789"}
        assert len(needles) > 100
        known = "|".join(re.escape(needle) for needle in sorted(needles))
        found = []
        for schema, table, column, data_type in text_columns(con):
            text = f"cast({quote_ident(column)} as varchar)"
            unhexed = f"regexp_replace({text}, '[0-9a-f]{{16,}}', '', 'g')"
            hits = con.execute(
                f"select count(*) filter (where regexp_matches({text}, {sql_literal(EMAIL)})), "
                f"count(*) filter (where regexp_matches({text}, {sql_literal(PHONE_ALONE)}) "
                f"or regexp_matches({unhexed}, {sql_literal(PHONE_INSIDE[data_type])})), "
                f"count(*) filter (where regexp_matches({text}, {sql_literal(known)})) "
                f"from {quote_ident(schema)}.{quote_ident(table)}"
            ).fetchone()
            if any(hits):
                found.append(f"{schema}.{table}.{column}: email {hits[0]}, phone {hits[1]}, known {hits[2]}")
    finally:
        con.close()
    assert found == []


def test_the_audit_tables_are_pseudonymised_and_the_clear_rows_are_in_the_pii_file(home: Path) -> None:
    key = pseudonym_key()
    con = both_files(home)
    try:
        clear = con.execute("select batch_id, row_number, reason, raw_record from pii.quarantine "
                            "where raw_record like '%Quarantinova%'").fetchall()
        assert len(clear) == 1 and QUARANTINED["birth_date"] in clear[0][2]
        batch_id, row_number, reason, raw_record = clear[0]
        published = con.execute("select reason, raw_record from audit.quarantine where batch_id = ? "
                                "and row_number = ?", [batch_id, row_number]).fetchall()
        assert reason == f"birth_date: {QUARANTINED['birth_date']} is before 1800-01-01 (implausible)"
        redacted = 'birth_date: "[redacted]" is before 1800-01-01 (implausible)'
        assert published == [(redacted, pseudonym(raw_record, key))]
        # every person is in both files, once
        assert con.execute("select count(*) from pii.persons").fetchone() == \
            con.execute("select count(*) from identity.persons").fetchone()
        records = con.execute("select source_entity, count(*) from pii.source_records group by 1").fetchall()
        assert {entity for entity, _ in records} >= {"crm_contacts", "shop_customers"}
        # source-system record ids stay keys: the conformance kit and person_map lookups rely on them
        ids = con.execute("select count(*) from identity.person_map inner join pii.source_records "
                          "using (source_entity, source_record_id, person_id)").fetchone()[0]
        assert ids == sum(count for _, count in records)
    finally:
        con.close()


# -- touchpoint sql, with and without --pii --------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_shell_reads_the_pii_file_only_with_pii_and_stays_sandboxed(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = Paths(home)
    before = {path: _sha256(path) for path in (paths.published_db, paths.pii_db)}
    con = open_analyst_connection(paths.published_db)
    try:
        with pytest.raises(duckdb.CatalogException):
            run_query(con, "select count(*) from pii.persons")
    finally:
        con.close()
    con = open_analyst_connection(paths.published_db, pii=paths.pii_db)
    try:
        assert run_query(con, "select count(*) from pii.persons").rows[0][0] > 0
        assert run_query(con, "select count(*) from marts.customer_360").rows[0][0] > 0
        escapes = {
            "create table pii.x as select 1": "the analyst shell is read-only",
            "insert into pii.persons (person_id) values ('x')": "the analyst shell is read-only",
            f"copy pii.persons to '{home / 'persons.csv'}'": "file access is disabled",
            f"attach '{paths.pii_db}' as again": "ATTACH and DETACH are disabled",
            f"select * from read_csv('{home / 'sources' / 'systems' / 'crm' / 'contacts_2026-03-31.csv'}')":
                "file access is disabled",
            "set enable_external_access = true": "settings are locked",
        }
        for sql, reason in escapes.items():
            with pytest.raises(ShellRefused, match=re.escape(reason)):
                run_query(con, sql)
            if not sql.startswith("attach"):  # DuckDB lets a file attached before the sandbox be attached again
                with pytest.raises(duckdb.Error):
                    con.execute(sql).fetchall()  # past the statement check: DuckDB's own settings hold
    finally:
        con.close()
    assert {path: _sha256(path) for path in before} == before
    assert not (home / "persons.csv").exists()

    assert cli.main(["sql", "--home", str(home), "select count(*) as n from pii.persons"]) == 1
    assert "pii" in capsys.readouterr().err
    assert cli.main(["sql", "--pii", "--home", str(home), "select count(*) as n from pii.persons"]) == 0
    assert "| n" in capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO(".tables\n"))
    assert cli.main(["sql", "--pii", "--home", str(home)]) == 0
    tables = capsys.readouterr().out
    assert "pii.persons" in tables and "marts.customer_360" in tables


def test_the_shell_refuses_pii_when_there_is_no_pii_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = Paths(tmp_path).ensure()
    duckdb.connect(str(paths.published_db)).close()
    assert cli.main(["sql", "--home", str(tmp_path), "select 1 as one"]) == 0
    capsys.readouterr()
    assert cli.main(["sql", "--pii", "--home", str(tmp_path), "select 1 as one"]) == 2
    assert f"no pii file at {paths.pii_db}" in capsys.readouterr().err


def test_identity_explain_shows_pseudonymised_identifiers(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    con = duckdb.connect(str(Paths(home).published_db), read_only=True)
    try:
        biggest = "select person_id from identity.cluster_report order by size_rank limit 1"
        person_id = con.execute(biggest).fetchone()[0]
    finally:
        con.close()
    assert cli.main(["identity", "explain", "--home", str(home), person_id]) == 0
    out = capsys.readouterr().out
    assert f"person {person_id}" in out
    assert not re.search(EMAIL, out)


# -- syncs send only the personal fields they declare ---------------------------------------------------


def sync(personal: dict[str, str], fields: list[str], **overrides) -> dict:
    return {
        "name": "minimal", "source": {"table": "marts.customer_360"}, "fields": fields,
        "personal_fields": personal, "purpose": "email_marketing", "email_field": "email",
        "destination": {"type": "file", "formats": ["csv", "parquet"]}, **overrides,
    }


def test_personal_fields_are_sent_clear_or_hashed_from_the_pii_file(tmp_path: Path) -> None:
    people = [person("P1", first_name=" Ann "), person("P2", email="not-an-email")]
    write_published_warehouse(tmp_path / "warehouse.duckdb", people)
    fields = ["person_id", "email", "phone_e164", "first_name", "rfm_segment"]
    definition = parse_sync_definition(sync({"email": "clear", "phone_e164": "sha256", "first_name": "sha256"},
                                            fields))
    result = run_sync(RunContext(as_of=AS_OF, home=tmp_path, run_id="r1"), definition)
    assert result.status == "success" and result.plan.ineligible == {"invalid_email": 1}
    audience = pq.read_table(tmp_path / "activation" / "minimal" / "audience.parquet")
    assert audience.column_names == fields  # only the declared fields, in their order
    assert audience.to_pylist() == [{
        "person_id": "P1", "email": "p1@example.com", "phone_e164": hashlib.sha256(PHONE.encode()).hexdigest(),
        "first_name": hashlib.sha256(b"ann").hexdigest(), "rfm_segment": "champions",
    }]
    # hashed, the email is still validated on its clear value, and the hash is what is diffed and sent
    hashed = parse_sync_definition(sync({"email": "sha256"}, ["person_id", "email"], name="hashed"))
    result = run_sync(RunContext(as_of=AS_OF, home=tmp_path, run_id="r2"), hashed)
    assert result.plan.ineligible == {"invalid_email": 1}
    assert pq.read_table(tmp_path / "activation" / "hashed" / "audience.parquet").to_pylist() == [
        {"person_id": "P1", "email": hashlib.sha256(b"p1@example.com").hexdigest()}]
    people[0]["email"] = "ann.new@example.com"  # a changed clear value is an update of the hash
    write_published_warehouse(tmp_path / "warehouse.duckdb", people)
    assert run_sync(RunContext(as_of=AS_OF, home=tmp_path, run_id="r3"), hashed).plan.updates == 1


def test_a_sync_never_sends_what_it_did_not_declare(tmp_path: Path) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", [person("P1", last_name="Undeclared")])
    definition = parse_sync_definition(sync({"email": "clear"}, ["person_id", "email", "country"]))
    assert run_sync(RunContext(as_of=AS_OF, home=tmp_path, run_id="r1"), definition).sent == 1
    written = [path for path in (tmp_path / "activation").rglob("*") if path.is_file()]
    assert written and all(b"Undeclared" not in path.read_bytes() for path in written)
    with open(tmp_path / "activation" / "minimal" / "audience.csv", newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["person_id", "email", "country"]
    # the source SQL runs on the analytics file: what it selects as `email` is a pseudonym, never sent
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        assert re.fullmatch(PSEUDONYM, con.execute("select email from marts.customer_360").fetchone()[0])
    finally:
        con.close()


def test_an_undeclared_field_that_looks_personal_is_refused_naming_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "leaky.yml").write_text(
        "name: leaky\nsource: {table: marts.customer_360}\nfields: [person_id, email, last_name]\n"
        "personal_fields: {email: clear}\npurpose: email_marketing\ndestination: {type: file}\n"
    )
    with pytest.raises(SyncDefinitionError, match=re.escape(f"{tmp_path / 'leaky.yml'}: field 'last_name' looks like "
                                                            "personal data: declare it under personal_fields")):
        load_sync_definitions(tmp_path)
    for personal, message in (
        ({"email": "md5"}, "must be sent as one of"),
        ({"email": "clear", "phone_e164": "clear"}, "personal field 'phone_e164' must be one of the fields"),
        ({"email": "clear", "person_id": "clear"}, "is a key, not a personal field"),
    ):
        with pytest.raises(SyncDefinitionError, match=re.escape(message)):
            parse_sync_definition(sync(personal, ["person_id", "email"]))


def test_a_sync_on_the_published_files_sends_the_pii_files_clear_values(home: Path) -> None:
    """The real analytics and pii files of a run: the sync's SQL reads pseudonyms, the audience gets clear ones."""
    definition = parse_sync_definition(sync({"email": "clear", "last_name": "clear"},
                                            ["person_id", "email", "last_name", "rfm_segment"]))
    result = run_sync(RunContext(as_of=AS_OF, home=home, run_id="sync-1"), definition)
    assert result.status == "success", result.message
    audience = pq.read_table(home / "activation" / "minimal" / "audience.parquet").to_pylist()
    con = duckdb.connect(str(Paths(home).pii_db), read_only=True)
    try:
        clear = {row[0]: row[1:] for row in con.execute("select person_id, email, last_name from persons").fetchall()}
    finally:
        con.close()
    assert audience and all((row["email"], row["last_name"]) == clear[row["person_id"]] for row in audience)


def test_tables_are_written_side_by_side_and_a_failed_one_is_named(tmp_path: Path) -> None:
    """publish writes its tables two at a time (analytics.write_tables): each cursor gets the session variables
    the pseudonyms read, every table is written, and a failing write is raised with its table's name."""
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    con.execute("create table big as select range as id from range(200000)")
    con.execute("create table small as select range as id from range(3)")
    con.execute(f"attach {sql_literal(str(tmp_path / 'out.duckdb'))} as out")
    setup = ["set variable tp_marker = 'set on this cursor'"]
    writes = [TableWrite(f"out.main.copy_{name}", f"select *, getvariable('tp_marker') as marker from {name}",
                         (f"main.{name}",)) for name in ("small", "big")]
    write_tables(con, writes, setup, writers=2)
    assert con.execute("select count(*), min(marker) from out.copy_big").fetchall() == [(200000, "set on this cursor")]
    assert con.execute("select count(*), min(marker) from out.copy_small").fetchall() == [(3, "set on this cursor")]

    failing = [TableWrite("out.main.broken", "select no_such_column from small", ("main.small",))]
    with pytest.raises(duckdb.BinderException) as raised:
        write_tables(con, failing + [TableWrite("out.main.after", "select * from small", ("main.small",))],
                     [], writers=1)
    assert "while publishing out.main.broken" in "".join(raised.value.__notes__)
    # one writer, the failure first (the larger inputs first: equal here, so in the given order): nothing after it
    assert con.execute("select count(*) from duckdb_tables() where database_name = 'out' and table_name = 'after'"
                       ).fetchall() == [(0,)]


def test_the_largest_tables_are_written_alone_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A table written from ALONE_FROM_ROWS input rows or more keeps the cores busy by itself: write_tables
    writes those one at a time, largest first, and only then the others side by side; a failure among the first
    starts none of the others."""
    from touchpoint.privacy import analytics

    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    for name, rows in (("huge", 300000), ("big", 200000), ("small", 3), ("tiny", 1)):
        con.execute(f"create table {name} as select range as id from range({rows})")
    con.execute("checkpoint")  # the row estimates write_tables sorts by
    con.execute(f"attach {sql_literal(str(tmp_path / 'out.duckdb'))} as out")
    monkeypatch.setattr(analytics, "ALONE_FROM_ROWS", 1000)
    calls: list[tuple[list[str], int]] = []
    original = analytics._write_side_by_side

    def spy(con, writes, setup, writers):
        calls.append(([write.target for write in writes], writers))
        original(con, writes, setup, writers)

    monkeypatch.setattr(analytics, "_write_side_by_side", spy)
    copies = [TableWrite(f"out.main.{name}", f"select * from {name}", (f"main.{name}",))
              for name in ("small", "big", "tiny", "huge")]
    write_tables(con, copies, [], writers=2)
    assert calls == [(["out.main.huge", "out.main.big"], 1), (["out.main.small", "out.main.tiny"], 2)]
    assert con.execute("select count(*) from out.huge").fetchall() == [(300000,)]

    broken = TableWrite("out.main.broken", "select no_such_column from huge", ("main.huge",))
    after = TableWrite("out.main.after", "select * from small", ("main.small",))
    with pytest.raises(duckdb.BinderException):
        write_tables(con, [after, broken], [], writers=2)
    assert con.execute("select count(*) from duckdb_tables() where database_name = 'out' and table_name = 'after'"
                       ).fetchall() == [(0,)]


def test_an_interrupted_publish_stops_its_writes_and_starts_no_other(tmp_path: Path) -> None:
    """Ctrl-C, or the SIGTERM Airflow turns into an exception, reaches publish while a table is being written:
    that write is interrupted, no other starts, and the writers have ended when the exception leaves (they
    would otherwise go on writing into the file publish then deletes)."""

    class Interrupted(BaseException):  # what a signal handler raises; not KeyboardInterrupt, which stops pytest
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    con.execute(f"attach {sql_literal(str(tmp_path / 'out.duckdb'))} as out")
    # about a minute of hashing on 2 cores if nothing stopped it
    slow = TableWrite("out.main.slow", "select range, md5(range::varchar) as digest from range(400000000)", ())
    after = TableWrite("out.main.after", "select 1 as x", ())
    previous = signal.signal(signal.SIGALRM, interrupt)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Interrupted):
            write_tables(con, [slow, after], [], writers=1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 20
    # the writers have ended: none is left writing into a file the caller is about to remove
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("publish")]
    assert con.execute("select table_name from duckdb_tables() where database_name = 'out'").fetchall() == []
