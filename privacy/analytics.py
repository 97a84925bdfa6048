"""The two files publish writes from the working warehouse: pseudonymised analytics, and the one home of clear
identifiers (ARCHITECTURE.md rule 8, docs/privacy.md).

- The analytics file (`Paths.published_db`: what `touchpoint sql` and the syncs' SQL read) holds every table and
  view of the published schemas (all but raw, staging, intermediate, held and dbt's test-failure schemas) as a
  fresh table, `create table as` from the attached working warehouse: no view reads raw, no free block keeps a
  deleted clear value. A column tagged `meta: {pii: true}` in dbt's yml holds its keyed pseudonym under the same
  name (HMAC-SHA256, `pseudonyms.hmac_sql`: the dbt macro's expression, equal to `pseudonyms.pseudonym`), null
  stays null; a node id keeps its kind ('email:<pseudonym>'); the audit columns of `UNMODELLED_PII` are
  pseudonymised or redacted. A column named like an identifier that nobody classified stops the publish.
- The pii file (`Paths.pii_db`: `pii.*` in `touchpoint sql --pii`, the syncs' personal fields) holds the clear
  identifiers once: `persons`, `source_records`, `identifier_nodes` and `quarantine` (see PII_TABLES).

Both are written in one pass, one CTAS per table inside DuckDB (no row crosses into Python), into the files
the caller names and then swaps in (touchpoint/publish.py). The CTAS run two at a time, largest first
(`TABLE_WRITERS`): one DuckDB table write keeps about one core busy, whatever DuckDB's thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import Any

import duckdb

from touchpoint.ingest.batches import HELD_SCHEMA
from touchpoint.sql_text import quote_ident, sql_literal

from .keys import PrivacyKey
from .pii_columns import (
    IDENTIFIER_NODE_KINDS,
    NODE_ID_FORM,
    PSEUDONYM,
    REDACTIONS,
    UNMODELLED_PII,
    UnmodelledColumn,
    looks_like_pii,
    tagged_columns,
    tagged_forms,
)
from .pseudonyms import connection_setup, hmac_sql

# Schemas that never leave the working warehouse: loaded and staged rows in clear text, identity's internals,
# batches held out of raw. dbt's stored test failures (`<schema>_dbt_test__audit`) are left out by suffix.
INTERNAL_SCHEMAS = frozenset({"raw", "staging", "intermediate", HELD_SCHEMA})
TEST_FAILURE_SUFFIX = "dbt_test__audit"
# Internal tables a published tool reads, carried over (tags applied as everywhere): `touchpoint identity
# explain` weighs each field of a probabilistic pair here. Its nodes are person records ('crm:', 'customer:'),
# keys, and its name columns are comparison levels (`meta: {pii: false}`), not names.
PUBLISHED_INTERNAL = frozenset({"intermediate.int_person_pairs_scored"})
# Catalog names the two new files are attached under while they are written (not what analysts see: the shell
# attaches the pii file as `pii`)
ANALYTICS_CATALOG = "tp_analytics"
PII_CATALOG = "tp_pii"
# How many tables publish writes at once. A DuckDB table write (CTAS) keeps about one core busy even with more
# threads: at 100k customers on this 2-core machine the analytics file took 10.3-10.5 s one table at a time,
# 8.5-9.5 s two at a time, 8.9 s three at a time (bench/results/M-2026-12-07.md).
TABLE_WRITERS = 2
# A table written from inputs of this many rows or more is written alone, before the others: its write keeps the
# cores busy by itself. At 1M customers (person_map 70M rows, the funnel steps 23M) the whole publish took
# 111.2-123.6 s one table at a time and 124.7-126.7 s two at a time (bench/results/L-2026-12-07-daily.md); at 100k
# no table comes near, and two at a time is the faster.
ALONE_FROM_ROWS = 10_000_000


class UnclassifiedPersonalData(ValueError):
    """A published column is named like a direct identifier but no yml tag or registry entry says what it is."""


@dataclass(frozen=True)
class Relation:
    """A table or view of the working warehouse, with its columns (name, type) in order."""

    schema: str
    name: str
    columns: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"


@dataclass(frozen=True)
class PublishedFiles:
    """What `write_published_files` wrote."""

    tables: int  # in the analytics file
    pseudonymised_columns: int  # columns pseudonymised or redacted there
    pii_tables: tuple[str, ...]  # written to the pii file


def is_published(relation: str) -> bool:
    """`schema.table` is copied into the analytics file."""
    schema = relation.split(".", 1)[0]
    internal = schema in INTERNAL_SCHEMAS or schema.endswith(TEST_FAILURE_SUFFIX)
    return relation in PUBLISHED_INTERNAL or not internal


def warehouse_relations(con: duckdb.DuckDBPyConnection) -> list[Relation]:
    """Every table and view of the connection's own database (attached ones left out), in name order."""
    rows = con.execute(
        "select table_schema, table_name, list(column_name order by ordinal_position), "
        "list(data_type order by ordinal_position) "
        "from information_schema.columns where table_catalog = current_database() group by all order by all"
    ).fetchall()
    return [Relation(schema, name, tuple(zip(names, types, strict=True))) for schema, name, names, types in rows]


def unclassified_columns(relations: list[Relation], manifest: dict[str, Any]) -> list[str]:
    """`schema.table.column` of every column named like an identifier (`looks_like_pii`) that neither dbt's yml
    (`pii: true` or `pii: false`) nor UNMODELLED_PII classifies: publishing it could leak what nobody reviewed."""
    classified = tagged_columns(manifest, classified=True)
    registered = {(entry.relation, entry.column) for entry in UNMODELLED_PII}
    return [
        f"{relation.key}.{column}"
        for relation in relations
        for column, _ in relation.columns
        if looks_like_pii(column)
        and column not in classified.get(relation.key, set())
        and (relation.key, column) not in registered
    ]


def pseudonym_sql(expression: str) -> str:
    """SQL: the pseudonym of `expression` as text (null stays null), with the pads `connection_setup` set."""
    return hmac_sql(expression)


def node_id_sql(column: str) -> str:
    """SQL: a graph node id '<kind>:<value>' with the value pseudonymised when the kind is an identifier (email,
    phone, loyalty, anon), so 'email:<pseudonym>' equals 'email:' || the pseudonymised persons.email; a node
    of a source record ('crm:C-1') is a key and stays as it is."""
    kind = f"split_part({column}, ':', 1)"
    kinds = ", ".join(sql_literal(k) for k in IDENTIFIER_NODE_KINDS)
    value = f"substr({column}, length({kind}) + 2)"
    return f"case when {kind} in ({kinds}) then {kind} || ':' || {pseudonym_sql(value)} else {column} end"


def redacted_sql(column: str, data_type: str) -> str:
    """SQL: free text (or JSON) with quoted values and email- or phone-like runs replaced by REDACTED, cast
    back to its type (the marker is a JSON string, so JSON stays valid)."""
    text = f"cast({column} as varchar)"
    for pattern, replacement in REDACTIONS:
        text = f"regexp_replace({text}, {sql_literal(pattern)}, {sql_literal(replacement)}, 'g')"
    return f"cast({text} as {data_type})"


def _unmodelled_sql(entry: UnmodelledColumn, column: str, data_type: str, pii_named: Callable[[str], list[str]]) -> str:
    if entry.treatment == PSEUDONYM:
        return pseudonym_sql(column)
    if entry.when_pii_column is None:
        return redacted_sql(column, data_type)
    # Judged row by row: only the rows about a PII-looking column (a gate's sample of invalid emails) are
    # redacted; the names are the few distinct values of that column, judged in Python once.
    names = pii_named(entry.when_pii_column)
    if not names:
        return column
    listed = ", ".join(sql_literal(name) for name in names)
    about = quote_ident(entry.when_pii_column)
    return f"case when {about} in ({listed}) then {redacted_sql(column, data_type)} else {column} end"


def select_list(
    relation: Relation, forms: dict[str, str], pii_named: Callable[[str], list[str]]
) -> tuple[str, int]:
    """The analytics file's select list for `relation` (every column under its own name) and how many columns it
    pseudonymises or redacts. `forms`: its tagged columns and their pii_form."""
    registry = {entry.column: entry for entry in UNMODELLED_PII if entry.relation == relation.key}
    expressions, changed = [], 0
    for column, data_type in relation.columns:
        quoted = quote_ident(column)
        if column in forms:
            expression = node_id_sql(quoted) if forms[column] == NODE_ID_FORM else pseudonym_sql(quoted)
        elif column in registry:
            expression = _unmodelled_sql(registry[column], quoted, data_type, pii_named)
        else:
            expressions.append(quoted)
            continue
        expressions.append(f"{expression} as {quoted}")
        changed += 1
    return ", ".join(expressions), changed


@dataclass(frozen=True)
class TableWrite:
    """One table of a published file: `create table <target> as <select>`, and the working warehouse's relations
    it reads (its size, to start the largest first)."""

    target: str
    select: str
    reads: tuple[str, ...]


def _analytics_writes(
    con: duckdb.DuckDBPyConnection, relations: list[Relation], manifest: dict[str, Any]
) -> tuple[list[TableWrite], int]:
    """Every published relation's table in the analytics catalog, and the number of columns pseudonymised."""
    forms = tagged_forms(manifest)

    def pii_named(source: Relation) -> Callable[[str], list[str]]:
        def names(column: str) -> list[str]:
            rows = con.execute(f"select distinct cast({quote_ident(column)} as varchar) from {source.sql}").fetchall()
            return sorted(value for (value,) in rows if value is not None and looks_like_pii(value))

        return names

    writes, changed = [], 0
    for relation in relations:
        columns, count = select_list(relation, forms.get(relation.key, {}), pii_named(relation))
        writes.append(TableWrite(f"{ANALYTICS_CATALOG}.{relation.sql}", f"select {columns} from {relation.sql}",
                                 (relation.key,)))
        changed += count
    return writes, changed


def _estimated_rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """DuckDB's row estimate of every table of the connection's own database, by 'schema.table' (views: none)."""
    rows = con.execute(
        "select schema_name || '.' || table_name, estimated_size from duckdb_tables() "
        "where database_name = current_database()"
    ).fetchall()
    return {name: int(size or 0) for name, size in rows}


def write_tables(con: duckdb.DuckDBPyConnection, writes: list[TableWrite], setup: list[str],
                 writers: int = TABLE_WRITERS) -> None:
    """Create every table of `writes` on cursors of `con` (each runs `setup` first: session variables are per
    cursor), the largest inputs first: those of ALONE_FROM_ROWS rows or more one at a time, then the others
    `writers` at a time. After a failure no new table is started; the first error is raised, naming its table,
    once every started write has ended. An interrupt of the caller (Ctrl-C, the SIGTERM Airflow turns into an
    exception) interrupts the writes under way and starts no other."""
    estimates = _estimated_rows(con)

    def input_rows(write: TableWrite) -> int:
        return sum(estimates.get(read, 0) for read in write.reads)

    ordered = sorted(writes, key=input_rows, reverse=True)
    _write_side_by_side(con, [write for write in ordered if input_rows(write) >= ALONE_FROM_ROWS], setup, 1)
    _write_side_by_side(con, [write for write in ordered if input_rows(write) < ALONE_FROM_ROWS], setup, writers)


def _write_side_by_side(con: duckdb.DuckDBPyConnection, writes: list[TableWrite], setup: list[str],
                        writers: int) -> None:
    """write_tables' work for `writes`, in their order, `writers` at a time."""
    if not writes:
        return
    pending: Iterator[TableWrite] = iter(writes)
    lock = Lock()
    errors: list[BaseException] = []
    cursors: list[duckdb.DuckDBPyConnection] = []
    stopped = False

    def next_write() -> TableWrite | None:
        with lock:
            return None if errors or stopped else next(pending, None)

    def writer() -> None:
        cursor = con.cursor()
        with lock:
            cursors.append(cursor)
        try:
            for statement in setup:
                cursor.execute(statement)
            while (write := next_write()) is not None:
                try:
                    cursor.execute(f"create table {write.target} as {write.select}")
                except Exception as error:
                    error.add_note(f"while publishing {write.target}")
                    with lock:
                        errors.append(error)
        finally:
            with lock:
                cursors.remove(cursor)
            cursor.close()

    pool = ThreadPoolExecutor(max_workers=max(1, writers), thread_name_prefix="publish")
    try:
        started = [pool.submit(writer) for _ in range(max(1, writers))]
        for future in started:
            future.result()  # anything a writer raised outside a table's write (its cursor, its setup)
    except BaseException:
        with lock:
            stopped = True
            for cursor in cursors:
                cursor.interrupt()
        raise
    finally:
        pool.shutdown(wait=True)
    if errors:
        raise errors[0]


# The pii file: name -> (the working warehouse's relations it reads, its select). `persons` is built from the
# tags of identity.persons instead (`_persons_sql`), so a newly tagged column reaches it with no edit here.
PII_TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    # every CRM contact, shop customer and POS transaction with the clear identifiers it carries (as staged)
    "source_records": (
        ("identity.person_map", "intermediate.int_person_records_unioned", "staging.stg_pos__transactions"),
        """
        select
            person_map.source_entity,
            person_map.source_record_id,
            person_map.person_id,
            person_records.first_name,
            person_records.last_name,
            coalesce(person_records.email, pos.email) as email,
            coalesce(person_records.phone_e164, pos.phone_e164) as phone_e164,
            person_records.address_line1 as address,
            person_records.postcode,
            person_records.birth_date,
            pos.loyalty_id
        from identity.person_map as person_map
        left join intermediate.int_person_records_unioned as person_records
            on person_map.source_entity = person_records.source_entity
            and person_map.source_record_id = person_records.source_record_id
        left join staging.stg_pos__transactions as pos
            on person_map.source_entity = 'pos_transactions' and person_map.source_record_id = pos.transaction_id
        where person_map.source_entity in ('crm_contacts', 'shop_customers', 'pos_transactions')
        """,
    ),
    # every identifier node of the identity graph (email, phone, loyalty card, web device), clear, with the node
    # id the analytics file shows for it (identity.match_evidence, identity.unlinked_identifiers) and its person
    "identifier_nodes": (
        ("intermediate.int_identity_graph_resolved",),
        f"""
        select
            {node_id_sql("left_node")} as node_id,
            left_node as clear_node_id,
            split_part(left_node, ':', 1) as identifier_type,
            substr(left_node, length(split_part(left_node, ':', 1)) + 2) as identifier,
            left_person_id as person_id
        from intermediate.int_identity_graph_resolved
        where match_rule = 'self'
            and split_part(left_node, ':', 1) in ({", ".join(sql_literal(k) for k in IDENTIFIER_NODE_KINDS)})
        """,
    ),
    # the quarantined rows as they arrived (raw_record and reason in clear; the analytics file's are not)
    "quarantine": (("audit.quarantine",), "select * from audit.quarantine"),
}


def _persons_sql(relations: dict[str, Relation], manifest: dict[str, Any]) -> str | None:
    """person_id and the clear values of identity.persons' tagged columns, in the table's order."""
    persons = relations.get("identity.persons")
    tagged = tagged_columns(manifest).get("identity.persons", set())
    if persons is None or not tagged:
        return None
    columns = ["person_id", *(column for column, _ in persons.columns if column in tagged)]
    return f"select {', '.join(quote_ident(column) for column in columns)} from identity.persons"


def _pii_writes(relations: dict[str, Relation], manifest: dict[str, Any]) -> dict[str, TableWrite]:
    """The clear tables whose inputs exist (a warehouse without identity has no persons), in the pii catalog, by
    name."""
    tables = {"persons": (("identity.persons",), _persons_sql(relations, manifest))}
    tables |= {name: (inputs, sql if set(inputs) <= relations.keys() else None)
               for name, (inputs, sql) in PII_TABLES.items()}
    return {name: TableWrite(f"{PII_CATALOG}.main.{quote_ident(name)}", sql, inputs)
            for name, (inputs, sql) in tables.items() if sql is not None}


def write_published_files(
    con: duckdb.DuckDBPyConnection, analytics: Path, pii: Path, manifest: dict[str, Any], key: PrivacyKey
) -> PublishedFiles:
    """Write the analytics file and the pii file (both new: the paths must not exist) from the warehouse `con`
    is connected to, and close them. Raises UnclassifiedPersonalData before writing anything when a published
    column looks like an identifier nobody classified.

    `manifest` is dbt's (touchpoint.dbt.read_manifest): its `pii` tags say what to pseudonymise.
    """
    relations = {relation.key: relation for relation in warehouse_relations(con)}
    published = [relation for key, relation in relations.items() if is_published(key)]
    unclassified = unclassified_columns(published, manifest)
    if unclassified:
        raise UnclassifiedPersonalData(
            f"column(s) named like personal data with no `meta: {{pii: true|false}}` in dbt's yml and no entry in "
            f"privacy/pii_columns.py UNMODELLED_PII: {', '.join(unclassified[:20])}"
        )
    setup = connection_setup(key)  # session variables: the key never reaches either file
    for statement in setup:
        con.execute(statement)
    con.execute(f"attach {sql_literal(str(analytics))} as {ANALYTICS_CATALOG}")
    con.execute(f"attach {sql_literal(str(pii))} as {PII_CATALOG}")
    try:
        for schema in sorted({relation.schema for relation in published}):
            con.execute(f"create schema if not exists {ANALYTICS_CATALOG}.{quote_ident(schema)}")
        analytics_writes, changed = _analytics_writes(con, published, manifest)
        pii_writes = _pii_writes(relations, manifest)
        write_tables(con, analytics_writes + list(pii_writes.values()), setup)
        con.execute(f"checkpoint {ANALYTICS_CATALOG}")
        con.execute(f"checkpoint {PII_CATALOG}")
    finally:
        con.execute(f"detach {ANALYTICS_CATALOG}")
        con.execute(f"detach {PII_CATALOG}")
    return PublishedFiles(len(published), changed, tuple(pii_writes))
