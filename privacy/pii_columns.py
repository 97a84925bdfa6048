"""Which columns hold personal data: the `meta: {pii: true}` tags in the dbt yml, and a name check that
catches a column added without one.

The tags are the one list for dbt's models (the analytics file's pseudonyms, `privacy/analytics.py`, and erasure
read them); `looks_like_pii` only exists so a test, and publish, fail when a model grows a PII-looking column
nobody classified (`pii: true`, or `pii: false` for a column named like an identifier that holds something else).

A tagged column's `pii_form` says how it holds the identifier: `value` (the default: the whole value is one) or
`node_id` (an identity-graph node `'<kind>:<value>'`, whose value is an identifier only for the kinds in
IDENTIFIER_NODE_KINDS). Columns outside dbt's models that can hold personal data (the audit tables the loader,
the gates and the syncs write) are listed once here, in UNMODELLED_PII, with what the analytics file does to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Direct identifiers, as whole column names or as their last words (billing_email, subject_phone).
_PII_NOUNS = (
    "email", "phone", "phone_number", "mobile", "first_name", "last_name", "given_name", "family_name",
    "full_name", "surname", "street", "address", "postcode", "post_code", "zip", "zip_code", "birth_date",
    "date_of_birth", "dob", "loyalty_id", "ip_address", "ssn", "national_id",
)
# Forms of one identifier that are the identifier still: normalised keys, E.164, numbered address lines.
_FORM_SUFFIX = re.compile(r"(_e164|_key|_line\d*|_raw|_normalised|_normalized|_clear)+$")

VALUE_FORM = "value"
NODE_ID_FORM = "node_id"
# Identity-graph node ids are '<kind>:<value>' (int_identity_records_unioned, int_identity_links_guarded). After
# these kinds comes a direct identifier (email, E.164 phone, loyalty card, web device cookie); after the others
# (crm, customer, web_events, email_events, pos_transactions) a source-system record id, which is a key.
IDENTIFIER_NODE_KINDS = ("email", "phone", "loyalty", "anon")
# The node of a person record: its source entity's prefix and the record id (macro record_node, dbt's one
# definition in SQL; the graph's overrides and `touchpoint identity explain` name records the same way).
PERSON_RECORD_NODE_PREFIX = {"crm_contacts": "crm:", "shop_customers": "customer:"}


def looks_like_pii(column: str) -> bool:
    """True for a column named like a direct identifier (`email`, `billing_email`, `phone_e164`,
    `address_line1`), false for measures about one (`email_open_rate`, `has_email_consent`, `is_phone_valid`)."""
    name = _FORM_SUFFIX.sub("", column.lower())
    if name.startswith(("is_", "has_", "n_")) or name.endswith(("_count", "_rate", "_at", "_state", "_source")):
        return False
    return any(name == noun or name.endswith("_" + noun) for noun in _PII_NOUNS)


def is_tagged(column: dict[str, Any]) -> bool:
    """A manifest column carries `meta: {pii: true}` (dbt 1.11 keeps it under meta and config.meta)."""
    meta = {**(column.get("config") or {}).get("meta", {}), **(column.get("meta") or {})}
    return bool(meta.get("pii"))


def is_classified(column: dict[str, Any]) -> bool:
    """A manifest column says whether it is personal data at all: `meta: {pii: true}` or `{pii: false}` (a
    column named like an identifier that holds something else, e.g. a comparison level called birth_date)."""
    meta = {**(column.get("config") or {}).get("meta", {}), **(column.get("meta") or {})}
    return "pii" in meta


def pii_form(column: dict[str, Any]) -> str:
    """How a tagged manifest column holds its identifier: VALUE_FORM or NODE_ID_FORM (`meta: {pii_form: ...}`)."""
    meta = {**(column.get("config") or {}).get("meta", {}), **(column.get("meta") or {})}
    form = meta.get("pii_form", VALUE_FORM)
    if form not in (VALUE_FORM, NODE_ID_FORM):
        raise ValueError(f"pii_form must be {VALUE_FORM!r} or {NODE_ID_FORM!r}, not {form!r}")
    return form


def _manifest_columns(manifest: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """`schema.table` -> {column name: manifest column}, over the models, seeds and sources of a dbt manifest."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    nodes = [*manifest.get("nodes", {}).values(), *manifest.get("sources", {}).values()]
    for node in nodes:
        if node.get("resource_type") not in ("model", "seed", "source"):
            continue
        relation = f"{node['schema']}.{node.get('alias') or node.get('identifier') or node['name']}"
        found.setdefault(relation, {}).update(node.get("columns") or {})
    return found


def tagged_columns(manifest: dict[str, Any], *, classified: bool = False) -> dict[str, set[str]]:
    """`schema.table` -> the columns tagged as PII (or, with `classified`, declared either way), over the
    models, seeds and sources of a dbt manifest."""
    keep = is_classified if classified else is_tagged
    tagged: dict[str, set[str]] = {}
    for relation, columns in _manifest_columns(manifest).items():
        kept = {name for name, column in columns.items() if keep(column)}
        if kept:
            tagged[relation] = kept
    return tagged


def tagged_forms(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """`schema.table` -> {tagged column: its pii_form}: what the analytics file pseudonymises, and how."""
    forms: dict[str, dict[str, str]] = {}
    for relation, columns in _manifest_columns(manifest).items():
        kept = {name: pii_form(column) for name, column in columns.items() if is_tagged(column)}
        if kept:
            forms[relation] = kept
    return forms


@dataclass(frozen=True)
class UnmodelledColumn:
    """A column outside dbt's models that can hold personal data, and what the analytics file does with it.

    `treatment`: PSEUDONYM (the whole value becomes its pseudonym: still countable and joinable) or REDACT (free
    text: quoted values and email- or phone-like runs become REDACTED). `when_pii_column` names a column of the
    same row that says which column the text is about: the text is redacted only when that one looks like PII.
    """

    relation: str
    column: str
    treatment: str
    why: str
    when_pii_column: str | None = None


PSEUDONYM = "pseudonym"
REDACT = "redact"
REDACTED = '"[redacted]"'  # JSON-safe, so a redacted JSON column stays JSON
# The values a quarantine reason names (ingest/quarantine.py): quoted as a JSON string ('cannot read "abc" as
# date'), or unquoted in an implausibility ('birth_date: 1700-01-01 is before 1800-01-01 (implausible)').
QUOTED_VALUE = r'"([^"\\]|\\.)*"'
IMPLAUSIBLE_VALUE = r"(\w+): [^;]*? (is (before|after|beyond) )"
# What is left that still looks like an address or a number one could dial: 8 to 15 digits standing alone (not
# inside an id, a date, a decimal or a hex key such as a batch id's), the boundaries kept by the replacement
EMAIL_LIKE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
PHONE_LIKE = r"(^|[^0-9A-Za-z_.-])\+?[0-9]{8,15}([^0-9A-Za-z_.-]|$)"


def reason_values(marker: str) -> tuple[tuple[str, str], ...]:
    """(pattern, replacement) pairs for `regexp_replace` that put `marker` (a JSON string) in place of every value
    a quarantine reason names: what retention expires and the analytics file redacts."""
    return (QUOTED_VALUE, marker), (IMPLAUSIBLE_VALUE, rf"\1: {marker} \2")


# Free text in the analytics file: the values a reason names, then anything shaped like an email or a phone
REDACTIONS: tuple[tuple[str, str], ...] = (
    *reason_values(REDACTED), (EMAIL_LIKE, REDACTED), (PHONE_LIKE, rf"\1{REDACTED}\2")
)

UNMODELLED_PII: tuple[UnmodelledColumn, ...] = (
    UnmodelledColumn("audit.quarantine", "raw_record", PSEUDONYM, "the rejected row as JSON, every value in it"),
    UnmodelledColumn("audit.quarantine", "reason", REDACT, "quotes the offending values"),
    UnmodelledColumn("audit.extract_errors", "error", REDACT, "a reader's message may quote what it read"),
    UnmodelledColumn("audit.load_batches", "held_reason", REDACT, "quotes the failing gate's sample values"),
    UnmodelledColumn(
        "audit.gate_results", "sample", REDACT, "sample values of the checked column", when_pii_column="column"
    ),
    UnmodelledColumn("audit.sync_rejections", "detail", REDACT, "a destination's refusal may quote the record"),
    UnmodelledColumn("audit.sync_runs", "message", REDACT, "a destination's error may quote a record"),
)
