"""dim_consents: the latest consent signal wins, whichever system it came from.

Three people on a tiny raw schema, built with `dbt build --select +dim_consents` (staging, identity, the mart):
an opt-in then an unsubscribe, an unsubscribe then a fresh opt-in, and both at the same instant. A model that
let the oldest signal win, or ignored unsubscribes, gets at least two of them wrong.
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


@pytest.fixture(scope="module")
def consents(tmp_path_factory) -> dict[str, tuple[bool, str]]:
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
    finally:
        con.close()
    dbt_build(db, AS_OF, "+dim_consents", command="run")  # data tests run elsewhere
    rows = query(
        db,
        """
        select person_map.source_record_id, dim_consents.is_granted, dim_consents.source
        from marts.dim_consents
        inner join identity.person_map
            on person_map.person_id = dim_consents.person_id and person_map.source_entity = 'crm_contacts'
        """,
    )
    return {contact: (granted, source) for contact, granted, source in rows}


def test_an_unsubscribe_after_the_opt_in_withdraws_consent(consents):
    assert consents["C-unsub-later"] == (False, "email_events")


def test_an_opt_in_after_an_unsubscribe_grants_it_again(consents):
    assert consents["C-optin-later"] == (True, "crm_contacts")


def test_at_the_same_instant_the_unsubscribe_wins(consents):
    assert consents["C-same-instant"] == (False, "email_events")


def test_an_open_is_not_a_consent_signal(consents):
    assert consents["C-never-unsub"] == (True, "crm_contacts")
    assert len(consents) == len(CONTACTS)
