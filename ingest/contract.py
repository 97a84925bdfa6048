"""The landing contract (docs/contracts.md §1, §4): entities, their columns, types and keys.

One place says what every entity looks like, which source system it comes from and how each of its
columns is typed in `raw`, so extraction, loading and validation never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

SOURCES: tuple[str, ...] = ("shop", "crm", "web", "email", "pos")


class Kind(StrEnum):
    """How a contract column is parsed from text and typed in `raw`."""

    TEXT = "VARCHAR"
    TIMESTAMP = "TIMESTAMP"
    DATE = "DATE"
    AMOUNT = "DECIMAL(18,2)"
    INTEGER = "INTEGER"
    BOOLEAN = "BOOLEAN"

    @property
    def sql_type(self) -> str:
        return self.value


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind = Kind.TEXT
    required: bool = False


@dataclass(frozen=True)
class EntitySpec:
    """One contract entity: where it comes from, its columns (contract order) and its primary key."""

    name: str
    source: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns if column.required)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")


def _kind_of(name: str) -> Kind:
    """Type rules of contracts §4, decided by column name."""
    if name.endswith("_at"):
        return Kind.TIMESTAMP
    if name == "birth_date":
        return Kind.DATE
    if name in {"total_amount", "unit_price", "price"}:
        return Kind.AMOUNT
    if name in {"quantity", "line_number"}:
        return Kind.INTEGER
    if name in {"email_opt_in", "granted"}:
        return Kind.BOOLEAN
    return Kind.TEXT


def _entity(name: str, source: str, columns: str, primary_key: tuple[str, ...]) -> EntitySpec:
    """Build a spec from the contract table's notation: space-separated names, `*` marks required."""
    parsed = []
    for token in columns.split():
        column_name = token.rstrip("*")
        parsed.append(Column(column_name, _kind_of(column_name), required=token.endswith("*")))
    return EntitySpec(name, source, tuple(parsed), primary_key)


ENTITY_SPECS: dict[str, EntitySpec] = {
    spec.name: spec
    for spec in (
        _entity(
            "crm_contacts",
            "crm",
            "contact_id* first_name last_name email phone address_line1 address_line2 city postcode region "
            "country birth_date email_opt_in updated_at",
            ("contact_id",),
        ),
        _entity(
            "shop_customers",
            "shop",
            "customer_id* email first_name last_name phone address_line1 address_line2 city postcode region "
            "country birth_date created_at updated_at",
            ("customer_id",),
        ),
        _entity(
            "shop_orders",
            "shop",
            "order_id* customer_id* ordered_at* total_amount* status currency updated_at",
            ("order_id",),
        ),
        _entity(
            "shop_order_items",
            "shop",
            "order_id* line_number* product_id* quantity unit_price",
            ("order_id", "line_number"),
        ),
        _entity("shop_products", "shop", "product_id* name category price updated_at", ("product_id",)),
        _entity(
            "web_events",
            "web",
            "event_id* occurred_at* event_type* anonymous_id customer_id session_id page_url product_id "
            "device_type channel",
            ("event_id",),
        ),
        _entity(
            "email_events", "email", "event_id* occurred_at* email* event_type* campaign_id", ("event_id",)
        ),
        _entity(
            "consent_events",
            "crm",
            # One grant or withdrawal of one purpose by one subject (email, phone or shop customer id), e.g. from
            # a consent-management platform or a preference centre. No natural id: the key is the whole event.
            "subject_email subject_phone customer_id purpose* granted* occurred_at* source",
            ("purpose", "occurred_at", "subject_email", "subject_phone", "customer_id", "source"),
        ),
        _entity(
            "pos_transactions",
            "pos",
            "transaction_id* purchased_at* total_amount* store_id loyalty_id phone email",
            ("transaction_id",),
        ),
    )
}

# Contract entity -> the source system it is extracted from.
ENTITIES: dict[str, str] = {name: spec.source for name, spec in ENTITY_SPECS.items()}


def entities_of(source: str) -> tuple[str, ...]:
    """The contract entities one source system provides, in contract order."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    return tuple(name for name, spec in ENTITY_SPECS.items() if spec.source == source)


# A file column whose name starts with "_" is landed as "_extra." + its name (contracts §3). Names starting with
# "_" belong to the pipeline (the readers' `_row_number`, the loader's `_batch_id`, raw's `_extra`, ...), and a
# file must neither break a load nor overwrite them. The rule is injective (`_extra.x` lands as
# `_extra._extra.x`), so the original name is always recovered, and it never yields a contract name.
RESERVED_PREFIX = "_"
EXTRA_PREFIX = "_extra."


def landed_name(file_column: str) -> str:
    """The name a file column lands under."""
    return EXTRA_PREFIX + file_column if file_column.startswith(RESERVED_PREFIX) else file_column


def original_name(landed: str) -> str:
    """The file's own name of a landed column (inverse of `landed_name`)."""
    return landed.removeprefix(EXTRA_PREFIX)


# Load metadata appended to every raw table (contracts §4), in order. A public contract: columns are added at the
# end, never renamed or dropped. `_extract_date` is the day the batch was extracted for (its manifest's
# extract_date, as in audit.load_batches and the landing path), so no reader has to parse a batch id.
LOAD_METADATA: tuple[tuple[str, str], ...] = (
    ("_extra", "JSON"),
    ("_batch_id", "VARCHAR"),
    ("_source_file", "VARCHAR"),
    ("_row_number", "BIGINT"),
    ("_extracted_at", "TIMESTAMP"),
    ("_extract_date", "DATE"),
)
