"""Sync definitions: declarative YAML files that say what leaves the warehouse, to whom, and on what terms.

One file per sync in `activation/syncs/` (or a folder passed in). Example:

```yaml
name: churn_risk_audience
description: Customers likely to lapse, for the CRM's win-back journey.
source:
  table: marts.customer_360          # or  sql: select ... from marts... join ml...
primary_key: person_id
fields: [person_id, email, first_name, rfm_segment]
personal_fields:                      # fields holding direct identifiers: read by person_id from the pii file's
  email: clear                        # persons, never from the source (whose tables hold pseudonyms); clear, or
  first_name: clear                   # sha256 (hex SHA-256 of the normalised value, for ad platforms)
filter: rfm_segment in ('at_risk', 'cannot_lose')   # optional SQL predicate over the source columns
purpose: email_marketing              # required: what the data is sent for (marts.consent_purposes); only
                                      # persons whose consent for it is granted (marts.dim_consents) are sent
email_field: email                    # optional: rows whose (clear) email is invalid are rejected
destination:
  type: postgres                      # file | postgres | http
  connection: touchpoint_crm          # name of an Airflow connection / TOUCHPOINT_CONN_<NAME> env var
  table: churn_risk_audience          # destination options (see each destination's module)
batch_size: 5000                      # optional
holdout: 10%                          # optional: a control group never sent (or 0.1), see experiments.py
experiment: churn_winback_2026        # optional with a holdout: the experiment's name (default: the sync's)
```

Definitions are untrusted input (ARCHITECTURE.md rule 9): sources may only read the published `marts`, `ml`
and `identity` schemas (checked with a SQL parser here, and the query runs on the sandboxed analyst connection),
a filter must be one boolean expression (see `sql_guard`), and HTTP paths must stay under the connection's base.

Personal data is sent only as declared (rule 8): a field named like a direct identifier (`looks_like_pii`) must
be listed under `personal_fields`, else the definition is refused; its value never comes from the source query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from touchpoint.activation.experiments import parse_holdout
from touchpoint.activation.sql_guard import READABLE_SCHEMAS, SqlRefused, check_filter, check_source_sql
from touchpoint.privacy.pii_columns import looks_like_pii
from touchpoint.sql_text import quote_ident

DEFAULT_SYNCS_DIR = Path(__file__).resolve().parent / "syncs"
DESTINATION_TYPES = ("file", "postgres", "http")
DESTINATION_OPTIONS = {
    "file": ("formats",),
    "postgres": ("schema", "table"),
    "http": ("upsert_path", "delete_path", "timeout_s", "max_attempts", "backoff_s", "max_backoff_s"),
}
DEFAULT_BATCH_SIZE = {"file": 100_000, "postgres": 20_000, "http": 500}
# How a personal field is sent: its clear value, or the lowercase hex SHA-256 of its normalised value (what ad
# platforms match on: the email lower-cased and trimmed as staged, the phone in E.164 as staged).
PERSONAL_FIELD_FORMS = ("clear", "sha256")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_SYNC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_TABLE = re.compile(r"^([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)$")
_KNOWN_KEYS = {
    "name",
    "description",
    "source",
    "primary_key",
    "fields",
    "personal_fields",
    "filter",
    "purpose",
    "consent",  # the former name of `purpose`, still read
    "email_field",
    "destination",
    "batch_size",
    "enabled",
    "holdout",
    "experiment",
}


class SyncDefinitionError(ValueError):
    """A sync definition file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class DestinationSpec:
    """Where a sync sends its rows: the type, the connection that holds its address and secrets, options."""

    type: str
    connection: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncDefinition:
    name: str
    source_sql: str
    primary_key: str
    fields: tuple[str, ...]
    destination: DestinationSpec
    description: str = ""
    filter: str | None = None
    consent_purpose: str = ""  # the purpose: only persons whose consent for it is granted are sent
    email_field: str | None = None
    batch_size: int = 1000
    enabled: bool = True
    path: Path | None = None
    # field -> "clear" | "sha256": taken by person_id from the pii file's persons, not from the source
    personal_fields: dict[str, str] = field(default_factory=dict)
    # the control share of the sync's experiment (None: no experiment, everyone eligible is sent) and its name
    holdout: float | None = None
    experiment: str | None = None


def _experiment(raw: dict[str, Any], name: str, where: str) -> tuple[float | None, str | None]:
    """(holdout share, experiment name) of a sync, or (None, None) when it declares no holdout."""
    if "holdout" not in raw:
        if "experiment" in raw:
            raise _fail(where, "experiment needs a holdout (e.g. holdout: 10%): without one nobody is held out")
        return None, None
    try:
        share = parse_holdout(raw["holdout"])
    except ValueError as error:
        raise _fail(where, f"holdout {error}") from error
    return share, _identifier(raw.get("experiment", name), where, "experiment")


def _purpose(raw: dict[str, Any], where: str) -> str:
    """The sync's purpose: required, since consent is enforced for it (`consent:` is its former name)."""
    purpose, former = raw.get("purpose"), raw.get("consent")
    if purpose is not None and former is not None and purpose != former:
        raise _fail(where, f"purpose {purpose!r} and consent {former!r} disagree: give only purpose")
    purpose = purpose if purpose is not None else former
    if purpose is None:
        raise _fail(
            where,
            "missing required key 'purpose' (what the data is sent for, one of marts.consent_purposes, e.g. "
            "email_marketing): a sync without a purpose is refused",
        )
    return _identifier(purpose, where, "purpose")


def _personal_fields(raw: Any, fields: tuple[str, ...], primary_key: str, where: str) -> dict[str, str]:
    """The declared personal fields; every field named like a direct identifier must be one of them."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _fail(where, "personal_fields must be a mapping of field: clear | sha256")
    for name, form in raw.items():
        _identifier(name, where, "each personal field")
        if name not in fields:
            raise _fail(where, f"personal field {name!r} must be one of the fields")
        if form not in PERSONAL_FIELD_FORMS:
            raise _fail(where, f"personal field {name!r} must be sent as one of {PERSONAL_FIELD_FORMS}, not {form!r}")
        if name in ("person_id", primary_key):
            raise _fail(where, f"{name!r} is a key, not a personal field (keys are kept in the sync state and audit)")
    undeclared = [f for f in fields if looks_like_pii(f) and f not in raw]
    if undeclared:
        raise _fail(
            where,
            f"field {undeclared[0]!r} looks like personal data: declare it under personal_fields "
            f"({undeclared[0]}: clear or sha256) to send it from the pii file, or leave it out",
        )
    return dict(raw)


def _fail(where: str, problem: str) -> SyncDefinitionError:
    return SyncDefinitionError(f"{where}: {problem}")


def _identifier(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise _fail(where, f"{what} must be a lowercase identifier, got {value!r}")
    return value


def _source_sql(raw: Any, where: str) -> str:
    if isinstance(raw, str):
        raw = {"table": raw}
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("table", "sql"):
        raise _fail(where, "source must be {table: schema.name} or {sql: select ...}")
    kind, value = next(iter(raw.items()))
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, f"source.{kind} must be a non-empty string")
    if kind == "table":
        match = _TABLE.match(value.strip())
        if not match:
            raise _fail(where, f"source.table must be schema.table, got {value!r}")
        if match.group(1) not in READABLE_SCHEMAS:
            raise _fail(
                where, f"source.table must be in a published schema {READABLE_SCHEMAS}, got {value!r}"
            )
        return f"select * from {quote_ident(match.group(1))}.{quote_ident(match.group(2))}"
    sql = value.strip().rstrip(";").strip()
    try:
        return check_source_sql(sql)
    except SqlRefused as error:
        raise _fail(where, str(error)) from error


def relative_api_path(value: Any) -> str:
    """An HTTP path relative to the connection's base URL, or ValueError.

    Why: the bearer token goes with every request, so a path must never name another host (`https://...`,
    `//host/...`) nor climb out of the base path (`..`, also percent-encoded).
    """
    if not isinstance(value, str) or not value.strip("/"):
        raise ValueError(f"must be a non-empty relative path, got {value!r}")
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//") or ":" in value.split("/")[0]:
        raise ValueError(f"must be relative to the connection's base URL, got {value!r}")
    if any(ch in value for ch in "\\#") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError(f"must not contain backslashes, fragments or control characters, got {value!r}")
    if any(segment in (".", "..") for segment in unquote(parts.path).split("/")):
        raise ValueError(f"must not contain '.' or '..' segments, got {value!r}")
    return value.strip("/")


def _destination(raw: Any, where: str) -> DestinationSpec:
    if not isinstance(raw, dict) or "type" not in raw:
        raise _fail(where, "destination must be a mapping with a type")
    kind = raw["type"]
    if kind not in DESTINATION_TYPES:
        raise _fail(where, f"destination.type must be one of {DESTINATION_TYPES}, got {kind!r}")
    connection = raw.get("connection")
    if kind in ("postgres", "http") and not connection:
        raise _fail(where, f"a {kind} destination needs a connection name (secrets never live in the repo)")
    if connection is not None and (not isinstance(connection, str) or not _IDENTIFIER.match(connection)):
        raise _fail(where, f"destination.connection must be a lowercase identifier, got {connection!r}")
    for secret_like in ("password", "token", "api_key", "uri", "dsn", "url"):
        if secret_like in raw:
            raise _fail(
                where, f"destination.{secret_like} is not allowed here: put it in connection {connection!r}"
            )
    options = {k: v for k, v in raw.items() if k not in ("type", "connection")}
    unknown = set(options) - set(DESTINATION_OPTIONS[kind])
    if unknown:
        raise _fail(
            where,
            f"unknown {kind} destination options {sorted(unknown)} "
            f"(allowed: {list(DESTINATION_OPTIONS[kind])})",
        )
    if kind == "http":
        for option in ("upsert_path", "delete_path"):
            if option in options:
                try:
                    options[option] = relative_api_path(options[option])
                except ValueError as error:
                    raise _fail(where, f"destination.{option} {error}") from error
    if kind == "postgres":
        _identifier(options.get("table"), where, "destination.table")
        _identifier(options.get("schema", "public"), where, "destination.schema")
    if kind == "file":
        formats = options.setdefault("formats", ["csv", "parquet"])
        if not isinstance(formats, list) or not formats or set(formats) - {"csv", "parquet"}:
            raise _fail(
                where, f"destination.formats must be a non-empty subset of [csv, parquet], got {formats!r}"
            )
    return DestinationSpec(type=kind, connection=connection, options=options)


def parse_sync_definition(raw: Any, where: str = "<sync>", path: Path | None = None) -> SyncDefinition:
    """Validate one parsed YAML document and return the definition (raises SyncDefinitionError)."""
    if not isinstance(raw, dict):
        raise _fail(where, "a sync definition must be a mapping")
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)} (allowed: {sorted(_KNOWN_KEYS)})")
    for required in ("name", "source", "fields", "destination"):
        if required not in raw:
            raise _fail(where, f"missing required key {required!r}")
    name = raw["name"]
    if not isinstance(name, str) or not _SYNC_NAME.match(name):
        raise _fail(where, f"name must match {_SYNC_NAME.pattern}, got {name!r}")
    fields = raw["fields"]
    if not isinstance(fields, list) or not fields:
        raise _fail(where, "fields must be a non-empty list of column names")
    fields = tuple(_identifier(f, where, "each field") for f in fields)
    if len(set(fields)) != len(fields):
        raise _fail(where, "fields contain duplicates")
    if any(f.startswith("_") for f in fields):
        raise _fail(where, "field names starting with '_' are reserved for sync metadata")
    primary_key = _identifier(raw.get("primary_key", "person_id"), where, "primary_key")
    if primary_key not in fields:
        raise _fail(where, f"primary_key {primary_key!r} must be one of the fields")
    consent = _purpose(raw, where)
    if "person_id" not in fields:
        raise _fail(where, "fields must include person_id: consent is checked per person")
    personal_fields = _personal_fields(raw.get("personal_fields"), fields, primary_key, where)
    email_field = raw.get("email_field")
    if email_field is not None and email_field not in fields:
        raise _fail(where, f"email_field {email_field!r} must be one of the fields")
    row_filter = raw.get("filter")
    if row_filter is not None:
        if not isinstance(row_filter, str) or not row_filter.strip():
            raise _fail(where, "filter must be a non-empty SQL boolean expression")
        try:
            row_filter = check_filter(row_filter)
        except SqlRefused as error:
            raise _fail(where, str(error)) from error
    destination = _destination(raw["destination"], where)
    batch_size = raw.get("batch_size", DEFAULT_BATCH_SIZE[destination.type])
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise _fail(where, f"batch_size must be a positive integer, got {batch_size!r}")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _fail(where, "enabled must be true or false")
    holdout, experiment = _experiment(raw, name, where)
    return SyncDefinition(
        name=name,
        description=str(raw.get("description", "")).strip(),
        source_sql=_source_sql(raw["source"], where),
        primary_key=primary_key,
        fields=fields,
        filter=row_filter,
        consent_purpose=consent,
        email_field=email_field,
        destination=destination,
        batch_size=batch_size,
        enabled=enabled,
        path=path,
        personal_fields=personal_fields,
        holdout=holdout,
        experiment=experiment,
    )


def load_sync_definitions(folder: Path | None = None) -> list[SyncDefinition]:
    """Every `*.yml`/`*.yaml` sync in `folder` (default: the repo's `activation/syncs/`), sorted by name."""
    folder = Path(folder) if folder is not None else DEFAULT_SYNCS_DIR
    if not folder.is_dir():
        raise SyncDefinitionError(f"{folder}: no such sync definition folder")
    syncs: list[SyncDefinition] = []
    for path in sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")]):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise SyncDefinitionError(f"{path}: not valid YAML: {error}") from error
        syncs.append(parse_sync_definition(raw, where=str(path), path=path))
    seen: dict[str, Path | None] = {}
    for sync in syncs:
        if sync.name in seen:
            raise SyncDefinitionError(
                f"sync name {sync.name!r} defined twice: {seen[sync.name]} and {sync.path}"
            )
        seen[sync.name] = sync.path
    # an experiment's assignments are kept per sync (its state folder): one experiment, one sync
    experiments: dict[str, Path | None] = {}
    for sync in syncs:
        if sync.experiment is None:
            continue
        if sync.experiment in experiments:
            raise SyncDefinitionError(
                f"experiment {sync.experiment!r} declared by two syncs: {experiments[sync.experiment]} and "
                f"{sync.path} (name each sync's experiment apart with `experiment:`)"
            )
        experiments[sync.experiment] = sync.path
    return sorted(syncs, key=lambda s: s.name)
