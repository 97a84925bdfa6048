"""Erasure requests and the suppression list: what `touchpoint erase` records and the next run honours.

A request is kept as keyed hashes only (HMAC-SHA256 with the suppression key, `privacy/keys.py`), never as the
email or phone it names: `<home>/state/privacy/requests/<request_id>.json` holds the time, the hashes, and once
a run honoured it, what was removed where. Those files are the record of the erasures processed.

The suppression list (`<home>/state/privacy/suppression.parquet`: identifier kind, hash, request, time) is every
identifier of every erased person. Each run drops a row carrying one of them before anything reads it
(privacy/erasure.py), so a later extract holding the same email, phone or record id does not bring the person
back. Its key differs from the pseudonymisation key, so its hashes never equal an analytics pseudonym.

Identifiers are normalised before hashing exactly as staging normalises them: the dbt macros
(`dbt_project/macros/normalise.sql`) are rendered here, not written a second time.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import duckdb
import jinja2
import pyarrow as pa
import pyarrow.parquet as pq

from touchpoint.config import DEFAULT_COUNTRY, Paths, dbt_project_dir

from .keys import suppression_key
from .pseudonyms import SUPPRESSION_PADS, connection_setup, hmac_sql

# The identifier kinds of stg_privacy__record_identifiers, and the ones a request may name.
IDENTIFIER_KINDS = ("email", "phone", "crm_contact", "shop_customer", "shop_order", "loyalty_card", "web_visitor")
REQUEST_KINDS = ("email", "phone", "person_id")  # a person id is hashed as `person_id:<id>`
SUPPRESSION_SCHEMA = pa.schema(
    [("identifier_kind", pa.string()), ("hash", pa.string()), ("request_id", pa.string()),
     ("added_at", pa.timestamp("us"))]
)


class ErasureRequestError(ValueError):
    """A request the CLI cannot record: an unknown kind, an empty value, a malformed request file."""


@dataclass
class ErasureRequest:
    """One request: hashes of what it named, then (once honoured) what the run removed where."""

    request_id: str
    requested_at: str
    identifiers: list[dict[str, str]]  # [{"kind": "email", "hash": "..."}]
    persons_at_request: int | None = None  # persons the published warehouse resolved it to, if known
    status: str = "pending"  # pending | honoured
    honoured_at: str | None = None
    honoured_by_run: str | None = None
    removed: dict[str, int] = field(default_factory=dict)  # location -> rows or files removed


def privacy_state(paths: Paths) -> Path:
    return paths.state / "privacy"


def requests_dir(paths: Paths) -> Path:
    return privacy_state(paths) / "requests"


def suppression_file(paths: Paths) -> Path:
    return privacy_state(paths) / "suppression.parquet"


@cache
def _normalise_macros() -> jinja2.runtime.TemplateModule:
    text = (dbt_project_dir() / "macros" / "normalise.sql").read_text(encoding="utf-8")
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    environment.globals["var"] = lambda name, default=None: {"default_country": DEFAULT_COUNTRY}.get(name, default)
    return environment.from_string(text).module


def normalise(kind: str, values: list[str]) -> list[str | None]:
    """Each value as staging stores it: an email cleaned, a phone in E.164 (the default country for a national
    number), an id trimmed. None where staging would have no valid identifier."""
    macros = _normalise_macros()
    if kind == "email":  # cleaned, and null unless staging would call it valid (so junk never becomes a request)
        cleaned = str(macros.clean_email("value"))
        expression = f"case when {macros.is_valid_email(cleaned)} then {cleaned} end"
    elif kind == "phone":
        e164 = str(macros.phone_e164("value", "null"))
        expression = f"case when {macros.is_valid_phone(e164)} then {e164} end"
    else:
        expression = "nullif(trim(value), '')"
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"select {expression} from (select unnest(?::varchar[]) as value, generate_subscripts(?::varchar[], 1) "
            "as position) order by position",
            [values, values],
        ).fetchall()
    finally:
        con.close()
    return [row[0] for row in rows]


def suppression_hashes(pairs: list[tuple[str, str]]) -> list[str]:
    """The suppression hash of each (kind, normalised identifier): HMAC of `kind:identifier`, in DuckDB with the
    same expression privacy/erasure.py uses on the warehouse."""
    con = duckdb.connect()
    try:
        for statement in connection_setup(suppression_key(), SUPPRESSION_PADS):
            con.execute(statement)
        kinds = [kind for kind, _ in pairs]
        values = [value for _, value in pairs]
        rows = con.execute(
            f"select {hmac_sql(identifier_text('kind', 'value'), SUPPRESSION_PADS)} from (select unnest(?::varchar[]) "
            "as kind, unnest(?::varchar[]) as value, generate_subscripts(?::varchar[], 1) as position) "
            "order by position",
            [kinds, values, kinds],
        ).fetchall()
    finally:
        con.close()
    return [row[0] for row in rows]


def identifier_text(kind_sql: str, value_sql: str) -> str:
    """The text a suppression hash is taken of: the kind, a colon, the normalised identifier (the kind keeps a
    shop customer id `42` and an order id `42` apart)."""
    return f"{kind_sql} || ':' || {value_sql}"


def new_request(identifiers: list[tuple[str, str]], persons: int | None, now: datetime | None = None) -> ErasureRequest:
    """A pending request over (kind, normalised identifier) pairs; only their hashes are kept."""
    if not identifiers:
        raise ErasureRequestError("an erasure request needs at least one email, phone or person id")
    hashes = suppression_hashes(identifiers)
    moment = (now or datetime.now(UTC)).replace(tzinfo=None)
    unique = sorted({(kind, digest) for (kind, _), digest in zip(identifiers, hashes, strict=True)})
    return ErasureRequest(
        request_id=f"erasure-{moment:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
        requested_at=moment.isoformat(sep=" ", timespec="seconds"),
        identifiers=[{"kind": kind, "hash": digest} for kind, digest in unique],
        persons_at_request=persons,
    )


def save_request(paths: Paths, request: ErasureRequest) -> Path:
    folder = requests_dir(paths)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{request.request_id}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(request), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_requests(paths: Paths, status: str | None = None) -> list[ErasureRequest]:
    """Every recorded request (or those with `status`), oldest first."""
    folder = requests_dir(paths)
    if not folder.exists():
        return []
    requests = []
    for path in sorted(folder.glob("erasure-*.json")):
        try:
            requests.append(ErasureRequest(**json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, TypeError) as error:
            raise ErasureRequestError(f"{path}: not an erasure request ({error})") from error
    return [r for r in requests if status is None or r.status == status]


def read_suppression(paths: Paths) -> pa.Table:
    path = suppression_file(paths)
    return pq.read_table(path, schema=SUPPRESSION_SCHEMA) if path.exists() else SUPPRESSION_SCHEMA.empty_table()


def write_suppression(paths: Paths, table: pa.Table) -> None:
    path = suppression_file(paths)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table.cast(SUPPRESSION_SCHEMA), tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Resolution:
    """What one request names, normalised, and the persons the published warehouse resolves it to."""

    identifiers: list[tuple[str, str]]  # (kind, normalised identifier), clear: kept in memory only
    persons: set[str]
    unknown: list[str]  # inputs that normalise to nothing (an invalid email or phone)


def resolve_request(paths: Paths, emails: list[str], phones: list[str], person_ids: list[str]) -> Resolution:
    """Normalise a request's identifiers and follow them to persons through the published `pii` file.

    An email or phone is kept as itself (the run follows the identity graph from the rows carrying it); a person
    id is kept as `person_id` (the run takes every record of that person from `identity.person_map`), never
    expanded here into the person's emails and phones, which a household may share.
    """
    pairs: list[tuple[str, str]] = []
    unknown: list[str] = []
    for kind, values in (("email", emails), ("phone", phones)):
        for raw, clean in zip(values, normalise(kind, values) if values else [], strict=True):
            if clean is None:
                unknown.append(f"{kind} {raw!r}")
            else:
                pairs.append((kind, clean))
    ids = sorted({p.strip() for p in person_ids if p.strip()})
    pairs += [("person_id", person_id) for person_id in ids]
    persons: set[str] = set()
    if paths.pii_db.exists():
        con = duckdb.connect(str(paths.pii_db), read_only=True)
        try:
            known = {row[0] for row in con.execute(
                "select person_id from persons where list_contains(?::varchar[], person_id)", [ids]).fetchall()}
            if missing := sorted(set(ids) - known):
                raise ErasureRequestError(f"no such person in the published warehouse: {', '.join(missing)}")
            persons = _persons_of(con, pairs) | known
        finally:
            con.close()
    elif ids:
        raise ErasureRequestError(f"no published pii file at {paths.pii_db}: a person id needs a run first")
    return Resolution(sorted(set(pairs)), persons, unknown)


def _persons_of(con: duckdb.DuckDBPyConnection, pairs: list[tuple[str, str]]) -> set[str]:
    emails = [value for kind, value in pairs if kind == "email"]
    phones = [value for kind, value in pairs if kind == "phone"]
    rows = con.execute(
        "select distinct person_id from source_records where person_id is not null and "
        "(list_contains(?::varchar[], email) or list_contains(?::varchar[], phone_e164))",
        [emails, phones],
    ).fetchall()
    tables = {row[0] for row in con.execute("select table_name from duckdb_tables()").fetchall()}
    if "identifier_nodes" in tables:  # a person known only through email events is an email node of the graph
        rows += con.execute(
            "select distinct person_id from identifier_nodes where person_id is not null and "
            "((identifier_type = 'email' and list_contains(?::varchar[], identifier)) or "
            "(identifier_type = 'phone' and list_contains(?::varchar[], identifier)))",
            [emails, phones],
        ).fetchall()
    return {row[0] for row in rows}
