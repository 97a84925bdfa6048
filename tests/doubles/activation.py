"""Test doubles for activation: a tiny published warehouse and a local audience API with scripted faults.

Used by the test suite and `bench/sync_postgres.py`; also handy to try a sync by hand without real systems
(`from tests.doubles.activation import ...` from the repository root). Not shipped with the package.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from touchpoint.privacy.keys import pseudonym_key
from touchpoint.privacy.pseudonyms import connection_setup, hmac_sql
from touchpoint.sql_text import sql_literal

PEOPLE_SCHEMA = pa.schema(
    [
        ("person_id", pa.string()),
        ("email", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("country", pa.string()),
        ("rfm_segment", pa.string()),
        ("consent", pa.bool_()),  # null: no consent record at all
        ("clv", pa.float64()),
        ("churn_90d_decile", pa.int32()),
        ("segment_id", pa.int32()),
    ]
)


def person(person_id: str, **values: Any) -> dict[str, Any]:
    """A test person with plausible defaults (consenting, valid email)."""
    row: dict[str, Any] = {
        "person_id": person_id,
        "email": f"{person_id.lower()}@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "country": "DE",
        "rfm_segment": "champions",
        "consent": True,
        "clv": 100.0,
        "churn_90d_decile": 5,
        "segment_id": 1,
    }
    row.update(values)
    return row


PHONE = "+4915100000000"


def write_published_warehouse(
    path: Path, people: pa.Table | list[dict[str, Any]], as_of: date = date(2026, 3, 31)
) -> None:
    """Write a published warehouse (marts.customer_360, marts.dim_consents, ml.*) for these people, with their
    names, email and phone as pseudonyms, and beside it (`pii.duckdb`) the pii file's persons in clear text.

    Replaces both files atomically, as the pipeline's publish step does.
    """
    table = people if isinstance(people, pa.Table) else pa.Table.from_pylist(people, schema=PEOPLE_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_pii_persons(path.with_name("pii.duckdb"), table)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.building")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        con.register("people", table)
        for statement in connection_setup(pseudonym_key()):
            con.execute(statement)
        con.execute("create schema marts")
        con.execute("create schema ml")
        con.execute(
            f"""
            create table marts.customer_360 as
            select
                person_id, {hmac_sql("email")} as email, {hmac_sql(sql_literal(PHONE))} as phone_e164,
                {hmac_sql("first_name")} as first_name, {hmac_sql("last_name")} as last_name, country,
                date '2025-01-01' as first_order_date, date '2026-03-01' as last_order_date,
                3 as orders_count, 300.00::decimal(18, 2) as revenue,
                100.00::decimal(18, 2) as avg_order_value,
                'online' as preferred_channel, 'books' as preferred_category, 4 as web_sessions,
                timestamp '2026-03-30 10:00:00' as last_visit_at, 0.5 as email_open_rate,
                0.1 as email_click_rate, coalesce(consent, false) as has_email_consent,
                30 as recency_days, 3 as frequency, 300.00::decimal(18, 2) as monetary,
                4 as r_score, 4 as f_score, 4 as m_score, rfm_segment
            from people
            """
        )
        con.execute(
            """
            create table marts.consent_purposes as
            select * from (values ('email_marketing', 'consent', false), ('profiling', 'legitimate_interest', true))
                as purposes(purpose, legal_basis, granted_by_default)
            """
        )
        # as dbt's dim_consents: every person x purpose; a null `consent` is an email opt-in never given
        con.execute(
            """
            create table marts.dim_consents as
            select person_id, purpose,
                   case when purpose = 'email_marketing' then coalesce(consent, false) else true end as is_granted,
                   case when purpose = 'email_marketing' and consent is not null then 'crm' else 'default' end
                       as source,
                   timestamp '2026-03-01 00:00:00' as updated_at
            from people cross join marts.consent_purposes
            """
        )
        con.execute(
            """
            create table ml.customer_segments as
            select person_id, segment_id, 'segment ' || segment_id as segment_name, ?::date as as_of
            from people
            """,
            [as_of],
        )
        con.execute(
            """
            create table ml.customer_propensity as
            select person_id, ?::date as as_of, 0.5::double as purchase_30d_probability,
                   5 as purchase_30d_decile, churn_90d_decile / 10.0 as churn_90d_probability,
                   churn_90d_decile
            from people
            """,
            [as_of],
        )
        con.execute(
            """
            create table ml.customer_clv as
            select person_id, ?::date as as_of, 3.0 as frequency, 200.0 as recency, 400.0 as "T",
                   100.0 as monetary_value, 1.0 as expected_purchases_90d, 4.0 as expected_purchases_365d,
                   0.9 as probability_alive, 100.0 as expected_avg_spend, clv, 365 as clv_horizon_days,
                   0.01 as discount_rate
            from people
            """,
            [as_of],
        )
    finally:
        con.close()
    os.replace(tmp, path)


def _write_pii_persons(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.building")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    try:
        con.register("people", table)
        con.execute(
            "create table persons as select person_id, first_name, last_name, email, ? as phone_e164 from people",
            [PHONE],
        )
    finally:
        con.close()
    os.replace(tmp, path)


class FakeAudienceApi:
    """A local HTTP audience API (see destinations/http.py for the protocol) that misbehaves on request.

    `faults` is consumed one per request: "ok", "429:<retry-after seconds>", "500", "503",
    "timeout:<seconds>" (the request is applied, but the answer comes after the client gave up).
    Records whose email ends with `refuse_domain` are refused in the response body (partial failure).
    """

    def __init__(self, token: str, faults: list[str] | None = None, refuse_domain: str = "@refused.example"):
        self.token = token
        self.faults = list(faults or [])
        self.refuse_domain = refuse_domain
        self.records: dict[str, dict[str, Any]] = {}
        self.applied: Counter[str] = Counter()  # key -> times an upsert of it was applied
        self.log: list[tuple[str, int, int, float]] = []  # path, records in request, status, time
        self.idempotency_keys: list[str | None] = []  # per request, in arrival order
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeAudienceApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                size = len(body.get("records", body.get("keys", [])))
                with api.lock:
                    fault = api.faults.pop(0) if api.faults else "ok"
                    api.idempotency_keys.append(self.headers.get("Idempotency-Key"))
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._answer(401, {"error": "bad token"}, size)
                if fault.startswith("429"):
                    return self._answer(
                        429, {"error": "slow down"}, size, {"Retry-After": fault.split(":")[1]}
                    )
                if fault in ("500", "503"):
                    return self._answer(int(fault), {"error": "boom"}, size)
                errors = api.apply(self.path, body)
                if fault.startswith("timeout"):
                    with api.lock:  # logged on arrival: the client gives up before the answer
                        api.log.append((self.path, size, 200, time.monotonic()))
                    time.sleep(float(fault.split(":")[1]))
                    return self._answer(200, {"errors": errors}, size, logged=True)
                return self._answer(200, {"errors": errors}, size)

            def _answer(
                self,
                status: int,
                payload: Any,
                size: int,
                headers: dict[str, str] | None = None,
                logged: bool = False,
            ) -> None:
                data = json.dumps(payload).encode()
                if not logged:
                    with api.lock:
                        api.log.append((self.path, size, status, time.monotonic()))
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def apply(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []
        with self.lock:
            if path.rstrip("/").endswith("delete"):
                for key in body.get("keys", []):
                    self.records.pop(key, None)
                return errors
            for index, record in enumerate(body.get("records", [])):
                if str(record.get("email", "")).endswith(self.refuse_domain):
                    errors.append({"index": index, "reason": "email domain is blocked"})
                    continue
                self.records[record["person_id"]] = record
                self.applied[record["person_id"]] += 1
        return errors
