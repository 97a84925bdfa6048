"""dim_consents and fct_consent_events: one row per person and purpose, the latest signal wins, whichever
system it came from, and every signal is kept.

Four people on a tiny raw schema, built with `dbt run --select +dim_consents` (staging, identity, the marts):
an opt-in then an unsubscribe, an unsubscribe then a fresh opt-in, and both at the same instant. A model that
let the oldest signal win, or ignored unsubscribes, gets at least two of them wrong. The consent extract adds
decisions for other purposes; purposes nobody decided on follow their legal basis (seed consent_purposes).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.conftest_identity import create_raw_schema, dbt_build, insert_rows, query

AS_OF = "2026-03-31"
CONTACTS = [  # (contact_id, email, CRM opt-in flag, CRM updated_at)
    ("C-unsub-later", "ulla.later@example.com", "true", "2026-01-10T10:00:00Z"),
    ("C-optin-later", "otto.later@example.com", "true", "2026-02-10T10:00:00Z"),
    ("C-same-instant", "sina.same@example.com", "true", "2026-02-01T09:00:00Z"),
    ("C-never-unsub", "nora.never@example.com", "true", "2026-01-20T10:00:00Z"),
]
UNSUBSCRIBES = [  # (event_id, email, occurred_at)
    ("E-1", "ulla.later@example.com", "2026-02-01T09:00:00Z"),  # after her opt-in: withdrawn
    ("E-2", "otto.later@example.com", "2026-01-05T09:00:00Z"),  # before his opt-in: granted again
    ("E-3", "sina.same@example.com", "2026-02-01T09:00:00Z"),  # same instant: the unsubscribe wins
    ("E-4", "ulla.later@example.com", "2026-03-30T09:00:00Z"),  # a second unsubscribe changes nothing
]


EXTRACT = [  # (subject_email, purpose, granted, occurred_at, source): the consent extract
    ("nora.never@example.com", "Profiling", "false", "2026-03-02T08:00:00Z", "preference_centre"),
    ("nora.never@example.com", "sms_marketing", "true", "2026-03-02T08:00:00Z", "preference_centre"),
    ("nora.never@example.com", "sms_marketing", "false", "2026-04-02T08:00:00Z", "preference_centre"),  # after as-of
    ("otto.later@example.com", "telepathy", "true", "2026-03-02T08:00:00Z", "cmp"),  # not a known purpose
    ("stranger@example.com", "profiling", "false", "2026-03-02T08:00:00Z", "cmp"),  # nobody the warehouse knows
]
PURPOSES = {"email_marketing", "sms_marketing", "personalisation", "profiling", "ad_platform_sharing"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    db: Path = tmp_path_factory.mktemp("consents") / "warehouse.duckdb"
    con = duckdb.connect(str(db))
    try:
        create_raw_schema(con)
        insert_rows(
            con,
            "crm_contacts",
            [
                {"contact_id": cid, "first_name": cid.split("-")[1].title(), "last_name": "Muster", "email": email,
                 "email_opt_in": flag, "updated_at": at}
                for cid, email, flag, at in CONTACTS
            ],
        )
        insert_rows(
            con,
            "email_events",
            [{"event_id": eid, "email": email, "event_type": "unsubscribe", "occurred_at": at}
             for eid, email, at in UNSUBSCRIBES]
            + [{"event_id": "E-open", "email": "nora.never@example.com", "event_type": "open",
                "occurred_at": "2026-03-01T09:00:00Z"}],
        )
        insert_rows(
            con,
            "consent_events",
            [{"subject_email": email, "purpose": purpose, "granted": granted, "occurred_at": at, "source": source}
             for email, purpose, granted, at, source in EXTRACT],
        )
    finally:
        con.close()
    # models and the purpose seed; data tests run elsewhere
    only = ("--resource-type", "model", "--resource-type", "seed")
    dbt_build(db, AS_OF, "+dim_consents +fct_consent_events +person_map", *only)
    return db


def _by_contact(db: Path, purpose: str) -> dict[str, tuple]:
    rows = query(
        db,
        """
        select person_map.source_record_id, dim_consents.is_granted, dim_consents.source, dim_consents.consent_state
        from marts.dim_consents
        inner join identity.person_map
            on person_map.person_id = dim_consents.person_id and person_map.source_entity = 'crm_contacts'
        where dim_consents.purpose = ?
        """,
        [purpose],
    )
    return {contact: tuple(rest) for contact, *rest in rows}


@pytest.fixture(scope="module")
def consents(built: Path) -> dict[str, tuple[bool, str]]:
    email = _by_contact(built, "email_marketing")
    return {contact: (granted, source) for contact, (granted, source, _) in email.items()}


def test_an_unsubscribe_after_the_opt_in_withdraws_consent(consents):
    assert consents["C-unsub-later"] == (False, "email_events")


def test_an_opt_in_after_an_unsubscribe_grants_it_again(consents):
    assert consents["C-optin-later"] == (True, "crm_contacts")


def test_at_the_same_instant_the_unsubscribe_wins(consents):
    assert consents["C-same-instant"] == (False, "email_events")


def test_an_open_is_not_a_consent_signal(consents):
    assert consents["C-never-unsub"] == (True, "crm_contacts")
    assert len(consents) == len(CONTACTS)


def test_every_person_has_one_row_per_purpose(built):
    rows = query(built, "select person_id, purpose from marts.dim_consents")
    persons = {person for person, _ in rows}
    assert len(persons) == len(CONTACTS)
    assert len(rows) == len(persons) * len(PURPOSES) and {purpose for _, purpose in rows} == PURPOSES


def test_the_consent_extract_decides_other_purposes_and_defaults_follow_the_legal_basis(built):
    profiling = _by_contact(built, "profiling")
    assert profiling["C-never-unsub"] == (False, "preference_centre", "withdrawn")  # "Profiling" normalised
    assert profiling["C-optin-later"] == (True, "default", "granted_by_default")  # legitimate interest
    sms = _by_contact(built, "sms_marketing")
    assert sms["C-never-unsub"] == (True, "preference_centre", "granted")  # the later withdrawal is not yet
    assert sms["C-optin-later"] == (False, "default", "not_given")  # consent purpose: nothing until given
    assert _by_contact(built, "ad_platform_sharing")["C-unsub-later"] == (False, "default", "not_given")


def test_every_signal_is_kept_in_order_and_strangers_wait_for_a_person(built):
    history = query(
        built,
        """
        select events.source, events.is_granted
        from marts.fct_consent_events as events
        inner join identity.person_map
            on person_map.person_id = events.person_id and person_map.source_entity = 'crm_contacts'
        where person_map.source_record_id = 'C-unsub-later' and events.purpose = 'email_marketing'
        order by events.occurred_at
        """,
    )
    assert history == [("crm_contacts", True), ("email_events", False), ("email_events", False)]
    purposes = {row[0] for row in query(built, "select distinct purpose from marts.fct_consent_events")}
    assert "telepathy" not in purposes and purposes <= PURPOSES
    unattributed = query(built, "select purpose, is_granted from marts.fct_consent_events where person_id is null")
    assert unattributed == [("profiling", False)]  # the stranger's withdrawal, kept for when they turn up
