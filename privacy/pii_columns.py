"""Which columns hold personal data: the `meta: {pii: true}` tags in the dbt yml, and a name check that
catches a column added without one.

The tags are the one list (the pseudonymised views and erasure read them); `looks_like_pii` only exists so
a test can fail when a model grows a PII-looking column nobody classified (`pii: true`, or `pii: false` for a
column named like an identifier that holds something else).
"""

from __future__ import annotations

import re
from typing import Any

# Direct identifiers, as whole column names or as their last words (billing_email, subject_phone).
_PII_NOUNS = (
    "email", "phone", "phone_number", "mobile", "first_name", "last_name", "given_name", "family_name",
    "full_name", "surname", "street", "address", "postcode", "post_code", "zip", "zip_code", "birth_date",
    "date_of_birth", "dob", "loyalty_id", "ip_address", "ssn", "national_id",
)
# Forms of one identifier that are the identifier still: normalised keys, E.164, numbered address lines.
_FORM_SUFFIX = re.compile(r"(_e164|_key|_line\d*|_raw|_normalised|_normalized|_clear)+$")


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


def tagged_columns(manifest: dict[str, Any], *, classified: bool = False) -> dict[str, set[str]]:
    """`schema.table` -> the columns tagged as PII (or, with `classified`, declared either way), over the
    models, seeds and sources of a dbt manifest."""
    keep = is_classified if classified else is_tagged
    tagged: dict[str, set[str]] = {}
    nodes = [*manifest.get("nodes", {}).values(), *manifest.get("sources", {}).values()]
    for node in nodes:
        if node.get("resource_type") not in ("model", "seed", "source"):
            continue
        relation = f"{node['schema']}.{node.get('alias') or node.get('identifier') or node['name']}"
        columns = {name for name, column in (node.get("columns") or {}).items() if keep(column)}
        if columns:
            tagged[relation] = columns
    return tagged
