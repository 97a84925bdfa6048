"""Helpers the staging and identity tests share: a raw schema exactly per docs/contracts.md §4, filled from
landing-contract extracts or from rows written in the test, and one `dbt build` against it.

The ingest stage owns the real loader; this is a small stand-in so the dbt layers can be tested on their own.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import duckdb

from tests.conftest import require_conformance

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_DIR = PROJECT_ROOT / "dbt_project"
DBT = PROJECT_ROOT / ".venv" / "bin" / "dbt"
CONFORMANCE = PROJECT_ROOT.parent / "shared" / "conformance" / "extracts"

# Contract columns in contract order with their raw types (§1 and §4); * marks required columns.
ENTITIES: dict[str, list[tuple[str, str]]] = {
    "crm_contacts": [
        ("contact_id*", "varchar"),
        ("first_name", "varchar"),
        ("last_name", "varchar"),
        ("email", "varchar"),
        ("phone", "varchar"),
        ("address_line1", "varchar"),
        ("address_line2", "varchar"),
        ("city", "varchar"),
        ("postcode", "varchar"),
        ("region", "varchar"),
        ("country", "varchar"),
        ("birth_date", "date"),
        ("email_opt_in", "boolean"),
        ("updated_at", "timestamp"),
    ],
    "shop_customers": [
        ("customer_id*", "varchar"),
        ("email", "varchar"),
        ("first_name", "varchar"),
        ("last_name", "varchar"),
        ("phone", "varchar"),
        ("address_line1", "varchar"),
        ("address_line2", "varchar"),
        ("city", "varchar"),
        ("postcode", "varchar"),
        ("region", "varchar"),
        ("country", "varchar"),
        ("birth_date", "date"),
        ("created_at", "timestamp"),
        ("updated_at", "timestamp"),
    ],
    "shop_orders": [
        ("order_id*", "varchar"),
        ("customer_id*", "varchar"),
        ("ordered_at*", "timestamp"),
        ("total_amount*", "decimal(18,2)"),
        ("status", "varchar"),
        ("currency", "varchar"),
        ("updated_at", "timestamp"),
    ],
    "shop_order_items": [
        ("order_id*", "varchar"),
        ("line_number*", "integer"),
        ("product_id*", "varchar"),
        ("quantity", "integer"),
        ("unit_price", "decimal(18,2)"),
    ],
    "shop_products": [
        ("product_id*", "varchar"),
        ("name", "varchar"),
        ("category", "varchar"),
        ("price", "decimal(18,2)"),
        ("updated_at", "timestamp"),
    ],
    "web_events": [
        ("event_id*", "varchar"),
        ("occurred_at*", "timestamp"),
        ("event_type*", "varchar"),
        ("anonymous_id", "varchar"),
        ("customer_id", "varchar"),
        ("session_id", "varchar"),
        ("page_url", "varchar"),
        ("product_id", "varchar"),
        ("device_type", "varchar"),
        ("channel", "varchar"),
    ],
    "email_events": [
        ("event_id*", "varchar"),
        ("occurred_at*", "timestamp"),
        ("email*", "varchar"),
        ("event_type*", "varchar"),
        ("campaign_id", "varchar"),
    ],
    "consent_events": [
        ("subject_email", "varchar"),
        ("subject_phone", "varchar"),
        ("customer_id", "varchar"),
        ("purpose*", "varchar"),
        ("granted*", "boolean"),
        ("occurred_at*", "timestamp"),
        ("source", "varchar"),
    ],
    "pos_transactions": [
        ("transaction_id*", "varchar"),
        ("purchased_at*", "timestamp"),
        ("total_amount*", "decimal(18,2)"),
        ("store_id", "varchar"),
        ("loyalty_id", "varchar"),
        ("phone", "varchar"),
        ("email", "varchar"),
    ],
}
META = [
    ("_extra", "json"),
    ("_batch_id", "varchar"),
    ("_source_file", "varchar"),
    ("_row_number", "bigint"),
    ("_extracted_at", "timestamp"),
]


def columns(entity: str) -> list[tuple[str, str, bool]]:
    return [(name.rstrip("*"), typ, name.endswith("*")) for name, typ in ENTITIES[entity]]


def create_raw_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists raw")
    for entity in ENTITIES:
        cols = [(n, t) for n, t, _ in columns(entity)] + META
        ddl = ", ".join(f"{n} {t}" for n, t in cols)
        con.execute(f"create or replace table raw.{entity} ({ddl})")


def _parse(value: object, typ: str) -> object:
    """Text to the raw type the way the loader does; None for blanks, ValueError for malformed values."""
    if value is None:
        return None
    text = str(value).strip()
    if text == "":
        return None
    if typ == "boolean":
        lowered = text.lower()
        if lowered in {"true", "1", "yes"}:
            return True
        if lowered in {"false", "0", "no"}:
            return False
        raise ValueError(text)
    if typ == "timestamp":
        # ISO 8601 with Z/offset -> naive UTC; duckdb does the arithmetic.
        return duckdb.sql(f"select (timestamptz '{text}' at time zone 'UTC')::timestamp").fetchall()[0][0]
    if typ.startswith("decimal"):
        from decimal import Decimal, InvalidOperation

        try:
            return Decimal(text)
        except InvalidOperation as exc:
            raise ValueError(text) from exc
    if typ in {"integer", "bigint"}:
        return int(text)
    if typ == "date":
        import datetime as dt

        return dt.date.fromisoformat(text)
    return value  # varchar keeps its spacing: trimming is staging's job


def insert_rows(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    rows: Iterable[Mapping[str, object]],
    batch_id: str = "batch-1",
    extracted_at: str = "2026-03-31 23:00:00",
    source_file: str | None = None,
) -> int:
    """Load rows (dicts of text or typed values) into raw.<entity>; rows failing a required column or a type
    are skipped, as the loader quarantines them. Returns the number loaded."""
    cols = columns(entity)
    names = [n for n, _, _ in cols] + [m for m, _ in META]
    loaded = []
    for number, row in enumerate(rows, start=1):
        try:
            values = [_parse(row.get(n), t) for n, t, _ in cols]
        except ValueError:
            continue
        if any(v is None for v, (_, _, required) in zip(values, cols, strict=True) if required):
            continue
        extra = {k: v for k, v in row.items() if k not in {n for n, _, _ in cols}}
        values += [
            json.dumps(extra) if extra else None,
            batch_id,
            source_file or f"{entity}.test",
            number,
            extracted_at,
        ]
        loaded.append(values)
    if loaded:
        marks = ", ".join("?" for _ in names)
        con.executemany(f"insert into raw.{entity} ({', '.join(names)}) values ({marks})", loaded)
    return len(loaded)


def read_extract(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def load_extracts(con: duckdb.DuckDBPyConnection, folder: Path, **batch: str) -> None:
    for entity in ENTITIES:
        for suffix in (".csv", ".jsonl"):
            path = folder / f"{entity}{suffix}"
            if path.exists():
                insert_rows(con, entity, read_extract(path), source_file=path.name, **batch)


def make_raw_db(path: Path, folder: Path | None = CONFORMANCE) -> Path:
    if folder == CONFORMANCE:
        require_conformance(folder)
    con = duckdb.connect(str(path))
    try:
        create_raw_schema(con)
        if folder is not None:
            load_extracts(con, folder)
    finally:
        con.close()
    return path


def dbt_build(
    db: Path,
    as_of: str = "2026-03-31",
    select: str | None = None,
    *extra: str,
    check: bool = True,
    command: str = "build",
    dbt_vars: dict[str, object] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`dbt build` (or `command`) of the staging and identity layers against the warehouse file `db`.

    Indirect selection is cautious: tests the marts declare on identity tables wait for the marts layer."""
    env = {**os.environ, "TOUCHPOINT_WORK_DB": str(db), "DBT_PROFILES_DIR": str(DBT_DIR)}
    target = db.parent / "dbt_target"
    args = [
        str(DBT),
        command,
        "--project-dir",
        str(DBT_DIR),
        "--target-path",
        str(target),
        "--log-path",
        str(db.parent / "dbt_logs"),
        "--vars",
        json.dumps({"as_of": as_of, **(dbt_vars or {})}),
        "--select",
        select or "path:models/staging path:models/intermediate path:models/identity",
        *(["--indirect-selection", "cautious"] if command == "build" else []),
        *extra,
    ]
    result = subprocess.run(args, env=env, capture_output=True, text=True, cwd=DBT_DIR)
    if check and result.returncode != 0:
        raise AssertionError(f"dbt build failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}")
    return result


def extract_and_load(home: Path, as_of: date, run_id: str = "test") -> Path:
    """Extract every source of the demo world under `<home>/sources` as of `as_of` and load it into the working
    warehouse (the ingest stage's own functions, no DAG); returns the warehouse file."""
    from touchpoint.config import RunContext
    from touchpoint.ingest import SOURCES, extract_source, load_pending

    ctx = RunContext(as_of=as_of, home=home, run_id=run_id)
    ctx.paths.ensure()
    for source in SOURCES:
        extract_source(ctx, source)
    con = duckdb.connect(str(ctx.paths.work_db))
    try:
        load_pending(ctx, con)
    finally:
        con.close()
    return ctx.paths.work_db


def query(db: Path, sql: str, params: list[object] | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def execute(db: Path, sql: str, params: list[object] | None = None) -> None:
    """Run one writing statement on the warehouse file `db` (a test planting a state behind the builds' back)."""
    con = duckdb.connect(str(db))
    try:
        con.execute(sql, params or [])
    finally:
        con.close()


def rows_differing(db: Path, rebuilt: Path, tables: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """Per `schema.table`: (rows in `db`, rows only in `db`, rows only in `rebuilt`), as multisets: what the
    incremental-equals-rebuild tests compare."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute(f"attach '{rebuilt}' as rebuilt (read_only)")
        found = {}
        for table in tables:
            # a row's _invocation_id (macros/test_scope.sql) names the build that wrote it: never two builds' same
            mine, theirs = (f"(select columns(lambda c: c <> '_invocation_id') from {name})"
                            for name in (table, f"rebuilt.{table}"))
            found[table] = tuple(
                con.execute(sql).fetchone()[0]
                for sql in (
                    f"select count(*) from {mine}",
                    f"select count(*) from ({mine} except all {theirs})",
                    f"select count(*) from ({theirs} except all {mine})",
                )
            )
        return found
    finally:
        con.close()


Altered = TypeVar("Altered")


def altered_copy(
    db: Path, tmp_path: Path, alter: Callable[[duckdb.DuckDBPyConnection], Altered]
) -> tuple[Path, Altered]:
    """A copy of warehouse `db` (in `tmp_path`/scratch) changed by `alter` on a connection to it, and what `alter`
    returned: the incremental tests alter a row no input says changed and check that the next build keeps it."""
    scratch = tmp_path / "scratch" / "warehouse.duckdb"
    scratch.parent.mkdir()
    shutil.copyfile(db, scratch)
    con = duckdb.connect(str(scratch))
    try:
        return scratch, alter(con)
    finally:
        con.close()


def log_in_an_anonymous_device(db: Path, as_of: date) -> str:
    """A raw web event of `as_of` in a batch and a session of its own: a device seen only anonymously in two or
    more sessions logs in as a shop customer, so identity moves the device's records (all its past sessions) to
    the customer's person.
    Returns the device's anonymous id."""
    con = duckdb.connect(str(db))
    try:
        event_id, anonymous_id = con.execute(
            "select min(event_id), arg_min(anonymous_id, event_id) from raw.web_events where anonymous_id in ("
            "  select anonymous_id from raw.web_events group by 1"
            "  having count(customer_id) = 0 and count(distinct session_id) > 1 and min(occurred_at) < ?)",
            [as_of - timedelta(days=3)],
        ).fetchone()
        customer_id = con.execute("select min(customer_id) from raw.web_events").fetchone()[0]
        con.execute(
            "insert into raw.web_events select * replace ("
            "  'injected-' || ? as event_id, 'injected-' || ? as session_id, ? as customer_id,"
            "  ?::timestamp + interval 12 hour as occurred_at, 'login' as event_type, 'injected-' || ? as _batch_id)"
            " from raw.web_events where event_id = ? limit 1",
            [str(as_of), str(as_of), customer_id, as_of, str(as_of), event_id],
        )
        return anonymous_id
    finally:
        con.close()
