"""Identity benchmark at a scale the demo generator cannot build in one piece: N customers as N / shard-size
independent worlds, combined into one raw schema, then bench/identity.py's measurement on the combined warehouse.

    .venv/bin/python bench/identity_shards.py --customers 1000000 --shard-size 100000 --home /tmp/b1m
    .venv/bin/python bench/identity_shards.py --customers 1500 --shard-size 500 --days 60 --home /tmp/bshards
    .venv/bin/python bench/identity_shards.py ... --reuse              # keep shards and combined raw; rerun dbt
    .venv/bin/python bench/identity_shards.py ... --reuse --skip-dbt   # score the identity tables as they are
    .venv/bin/python bench/identity_shards.py ... --memory-limit 10GB --dbt-threads 1  # bound dbt's memory

Why: the generator draws one world in memory (peak RSS 3.8 GB at 100k customers, growing linearly), so one
1M-customer world would need ~38 GB on a 24 GB machine, and its seeded streams cover the whole population, so
it cannot be drawn in pieces that add up to the same world.

Method:
1. Shard k (k = 0 .. N/shard-size - 1) is a world of shard-size customers with seed `--seed + k` (shard 0 is
   bench/identity.py's world at that size and seed), generated, extracted and loaded by the project's own
   code (bench/identity.build_warehouse) into <home>/shards/sKK/, `--jobs` shards at a time.
2. The shards' raw and audit tables are inserted into one warehouse (<home>/work/warehouse.duckdb, tables
   created by touchpoint.ingest.ensure_tables) with every source key prefixed `sKK-` (KEY_COLUMNS: record
   ids, the ids records link through, products, batches and source files), so no two shards share a key.
   Names, phones, addresses and birth dates are left as generated (emails: see below), and so are store ids
   and campaign ids (the same stores and weekly campaigns serve everyone). The truth
   (record_persons.parquet) gets the same prefix on source_record_id and on true_person_id.
3. bench/identity.measure: `dbt run` of staging, then of intermediate + identity, timed with their peak RSS,
   scored against the combined truth, Splink defaults on the same person records.

Emails: each world makes its addresses unique only within itself (sources/people.py bumps a repeated local
part: anna.schmidt@, anna.schmidt2@, ...) from Zipf-drawn names, so independent worlds give the same address
to different people (37,251 of 200,000 people at 2 shards of 100k), where one big world would have given
each their own. Left as generated, those collisions dominate the result (at 2 shards: person-record
precision 0.894, against 0.993 with the cross-shard links cut), so in shards 1.. every email gets `.sKK`
after the base of its local part (before any +alias), as written: case, whitespace and typo noise are kept,
so the variants of one address stay variants of one address. `--keep-emails` leaves them as generated.
Phones, also unique only within a world, are left as generated: they collide far less (42 of 200,000 people
at 2 shards), and their format noise leaves no equally safe rewrite. Names, birth dates and addresses are
drawn independently per person from the same distributions, so their collisions across shards are those one
big world would have.

Memory: the identity stage keeps candidate pairs and the identity graph in DuckDB (only integer arrays
reach numpy), so DuckDB's memory_limit bounds it; `--memory-limit` sets it for the bench. At 1M customers
(1,274,681 person records, 67,040,750 records) it ran with --memory-limit 12GB at 12.0 GB peak RSS
(2026-12-02). Before that change, int_identity_graph_resolved read every scored candidate pair into pandas
and was OOM-killed at 21 GB, after first + last name blocking had produced 38.6M candidate pairs.

The bench counts the collisions as generated (people whose primary email or phone also belongs to a person
in another shard) and also scores every result with the predicted persons split by shard ("links across
parts cut"): a true person never spans two shards, so every cross-shard link is a false merge, and the gap
between the two rows is what the remaining cross-shard collisions cost.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from identity import build_warehouse, duckdb_profiles, measure, written_as_of  # noqa: E402

from touchpoint.ingest import ENTITY_SPECS, ensure_tables  # noqa: E402
from touchpoint.ingest.contract import LOAD_METADATA  # noqa: E402

# Per raw table: the columns holding a source key (the table's own key and the keys it links through).
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "crm_contacts": ("contact_id",),
    "shop_customers": ("customer_id",),
    "shop_orders": ("order_id", "customer_id"),
    "shop_order_items": ("order_id", "product_id"),
    "shop_products": ("product_id",),
    "web_events": ("event_id", "anonymous_id", "customer_id", "session_id", "product_id"),
    "email_events": ("event_id",),
    "pos_transactions": ("transaction_id", "loyalty_id"),
    "consent_events": ("customer_id",),
}
# Per raw table: the columns holding an email address (see "Emails" in the docstring).
EMAIL_COLUMNS: dict[str, tuple[str, ...]] = {
    "crm_contacts": ("email",),
    "shop_customers": ("email",),
    "email_events": ("email",),
    "pos_transactions": ("email",),
    "consent_events": ("subject_email",),
}
# Load metadata and audit columns naming a batch or a landed file.
BATCH_COLUMNS = ("_batch_id", "_source_file")
AUDIT_KEY_COLUMNS = {"load_batches": ("batch_id", "source_file"), "quarantine": ("batch_id", "source_file")}
SHARD_META = "shard.json"
COMBINED_META = "combined.json"
PARTITION = "split_part(source_record_id, '-', 1)"  # the shard prefix, for the "links across parts cut" rows

if set(KEY_COLUMNS) != set(ENTITY_SPECS) or any(
    column not in ENTITY_SPECS[entity].column_names
    for entity, columns in (*KEY_COLUMNS.items(), *EMAIL_COLUMNS.items())
    for column in columns
):
    raise RuntimeError("KEY_COLUMNS is out of date with the landing contract (touchpoint.ingest.contract)")


def prefix(shard: int) -> str:
    return f"s{shard:02d}-"


def shard_home(home: Path, shard: int) -> Path:
    return home / "shards" / prefix(shard)[:-1]


def build_shard(home: Path, shard: int, customers: int, days: int, seed: int, keep_sources: bool) -> dict:
    """Generate, extract and load one shard (in its own process: the generator's memory goes with it)."""
    folder = shard_home(home, shard)
    started = time.perf_counter()
    _, as_of, timings = build_warehouse(folder, customers, days, seed)
    meta = {
        "shard": shard,
        "seed": seed,
        "customers": customers,
        "days": days,
        "as_of": as_of.isoformat(),
        "timings": timings,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - started,
    }
    if not keep_sources:  # only the warehouse, the truth and generator.json are needed from here on
        shutil.rmtree(folder / "sources" / "systems")
        shutil.rmtree(folder / "landing")
    (folder / SHARD_META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def built_shard(home: Path, shard: int, customers: int, days: int, seed: int) -> dict | None:
    """The shard's metadata if it was built with these settings."""
    path = shard_home(home, shard) / SHARD_META
    if not path.exists():
        return None
    meta = json.loads(path.read_text())
    same = (meta["customers"], meta["days"], meta["seed"]) == (customers, days, seed)
    return meta if same else None


def build_shards(
    home: Path, shards: int, customers: int, days: int, seed: int, jobs: int, reuse: bool, keep_sources: bool
) -> list[dict]:
    metas: dict[int, dict] = {}
    todo = []
    for shard in range(shards):
        meta = built_shard(home, shard, customers, days, seed + shard) if reuse else None
        if meta:
            metas[shard] = meta
        else:
            todo.append(shard)
    print(f"shards: {shards} x {customers} customers; reused {sorted(metas)}, building {todo}", flush=True)
    with ProcessPoolExecutor(max(1, jobs), max_tasks_per_child=1) as pool:
        futures = {
            shard: pool.submit(build_shard, home, shard, customers, days, seed + shard, keep_sources) for shard in todo
        }
        for shard, future in futures.items():
            metas[shard] = future.result()
            print(f"shard {shard}: {json.dumps(metas[shard])}", flush=True)
    return [metas[shard] for shard in range(shards)]


def _prefixed(column: str, shard: int) -> str:
    """`column` with the shard prefix; null and blank values stay as they are (staging reads blank as null)."""
    quoted = f'"{column}"'
    return f"case when trim({quoted}) <> '' then '{prefix(shard)}' || trim({quoted}) else {quoted} end"


def _tagged_email(column: str, shard: int) -> str:
    """The address with `.sKK` after its local part's base (before any `+alias`), as written: case, whitespace
    and typo noise are kept, so every variant of one address stays a variant of the same new address."""
    quoted = f'"{column}"'
    return (
        f"case when trim({quoted}) <> '' then regexp_replace({quoted}, '^([^@+]*)', '\\1.{prefix(shard)[:-1]}') "
        f"else {quoted} end"
    )


def _select(columns: list[str], keys: tuple[str, ...], shard: int, emails: tuple[str, ...] = ()) -> str:
    def expression(column: str) -> str:
        if column in keys:
            return f'{_prefixed(column, shard)} as "{column}"'
        if column in emails:
            return f'{_tagged_email(column, shard)} as "{column}"'
        return f'"{column}"'

    return ", ".join(expression(column) for column in columns)


def combine(home: Path, metas: list[dict], keep_emails: bool = False) -> tuple[Path, dict]:
    """One warehouse whose raw and audit tables hold every shard with prefixed keys (and, unless `keep_emails`,
    the email addresses of shards 1.. tagged), and the combined truth."""
    db = home / "work" / "warehouse.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    for stale in (db, db.with_name(db.name + ".wal"), home / COMBINED_META):
        stale.unlink(missing_ok=True)
    truth = home / "sources" / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute("set enable_progress_bar = false")
    ensure_tables(con)
    metadata = [name for name, _ in LOAD_METADATA]
    rows: dict[str, int] = {}
    for meta in metas:
        shard = meta["shard"]
        con.execute(f"attach '{shard_home(home, shard) / 'work' / 'warehouse.duckdb'}' as shard (read_only)")
        con.execute("begin transaction")
        for entity, spec in ENTITY_SPECS.items():
            columns = [*spec.column_names, *metadata]
            keys = KEY_COLUMNS[entity] + BATCH_COLUMNS
            emails = () if keep_emails or shard == 0 else EMAIL_COLUMNS.get(entity, ())
            count = con.execute(
                f"insert into raw.{entity} select {_select(columns, keys, shard, emails)} from shard.raw.{entity}"
            ).fetchone()[0]
            rows[entity] = rows.get(entity, 0) + count
        for table in ("load_batches", "quarantine", "extract_errors"):
            columns = [row[0] for row in con.execute(f"describe audit.{table}").fetchall()]
            select = _select(columns, AUDIT_KEY_COLUMNS.get(table, ()), shard)
            con.execute(f"insert into audit.{table} select {select} from shard.audit.{table}")
        con.execute("commit")
        con.execute("detach shard")
    parts = " union all ".join(
        f"select source_entity, '{prefix(m['shard'])}' || source_record_id as source_record_id, "
        f"'{prefix(m['shard'])}' || true_person_id as true_person_id "
        f"from read_parquet('{shard_home(home, m['shard']) / 'sources' / 'truth' / 'record_persons.parquet'}')"
        for m in metas
    )
    con.execute(f"copy ({parts}) to '{truth / 'record_persons.parquet'}' (format parquet)")
    collisions = cross_shard_collisions(con, home, metas)
    con.close()
    seconds = time.perf_counter() - started
    first = json.loads((shard_home(home, 0) / "sources" / "generator.json").read_text())
    # Read by bench/identity.written_as_of: every shard has the same start and days.
    (home / "sources" / "generator.json").write_text(
        json.dumps({**first, "seed": None, "customers": sum(m["customers"] for m in metas), "shards": metas}, indent=2)
        + "\n"
    )
    combined = {
        "shards": len(metas),
        "emails_tagged": not keep_emails,
        "raw_rows": rows,
        "seconds": seconds,
        "cross_shard_collisions_as_generated": collisions,
    }
    (home / COMBINED_META).write_text(json.dumps(combined, indent=2) + "\n")
    return db, combined


def cross_shard_collisions(con: duckdb.DuckDBPyConnection, home: Path, metas: list[dict]) -> dict[str, int]:
    """Acquired people whose primary email (case-folded) or phone, as generated, also belongs to someone in
    another shard."""
    persons = " union all ".join(
        f"select {m['shard']} as shard, lower(email) as email, phone_e164 "
        f"from read_parquet('{shard_home(home, m['shard']) / 'sources' / 'truth' / 'persons.parquet'}') "
        "where is_acquired"
        for m in metas
    )
    counts = {}
    for column in ("email", "phone_e164"):
        counts[f"people_sharing_{column}_across_shards"] = con.execute(f"""
            with persons as ({persons})
            select coalesce(sum(people), 0) from (
                select count(*) as people from persons where {column} is not null
                group by {column} having count(distinct shard) > 1)""").fetchone()[0]
    counts["acquired_people"] = con.execute(f"select count(*) from ({persons})").fetchone()[0]
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="in all shards together")
    parser.add_argument("--shard-size", type=int, default=100_000, help="customers per shard (divides --customers)")
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=42, help="shard k has seed + k")
    parser.add_argument("--home", type=Path, required=True, help="shards, combined warehouse and dbt logs")
    parser.add_argument("--jobs", type=int, default=2, help="shards built at once (~4 GB each at 100k)")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep built shards and the combined warehouse")
    parser.add_argument("--skip-dbt", action="store_true", help="with --reuse: score the identity tables built")
    parser.add_argument("--keep-sources", action="store_true", help="keep each shard's source files and landing")
    parser.add_argument(
        "--keep-emails", action="store_true", help="leave email addresses as generated (shards then share many)"
    )
    parser.add_argument("--memory-limit", help="DuckDB memory_limit for dbt, e.g. 12GB (default: DuckDB's)")
    parser.add_argument("--duckdb-threads", type=int, help="DuckDB threads for dbt (default: DuckDB's)")
    parser.add_argument("--dbt-threads", type=int, help="models dbt runs at once (default: the profile's, 2)")
    args = parser.parse_args(argv)
    if args.customers % args.shard_size:
        parser.error("--shard-size must divide --customers")
    shards = args.customers // args.shard_size
    home = args.home.resolve()

    metas = build_shards(home, shards, args.shard_size, args.days, args.seed, args.jobs, args.reuse, args.keep_sources)
    db = home / "work" / "warehouse.duckdb"
    combined_meta = home / COMBINED_META
    combined = json.loads(combined_meta.read_text()) if args.reuse and combined_meta.exists() else None
    if combined is None or (combined["shards"], combined.get("emails_tagged")) != (shards, not args.keep_emails):
        if args.skip_dbt:
            parser.error("--skip-dbt needs --reuse and a combined warehouse with these settings in --home")
        db, combined = combine(home, metas, args.keep_emails)
    print(f"combined: {json.dumps(combined)}", flush=True)

    settings = {}
    if args.memory_limit:
        settings["memory_limit"] = args.memory_limit
    if args.duckdb_threads:
        settings["threads"] = str(args.duckdb_threads)
    profiles_dir = (
        duckdb_profiles(home / "dbt" / "profiles", settings, args.dbt_threads) if settings or args.dbt_threads else None
    )
    timings = {
        "generate_all_shards": sum(m["timings"]["generate"] for m in metas),
        "extract_load_all_shards": sum(m["timings"]["extract_load"] for m in metas),
        "combine": combined["seconds"],
    }
    print(f"scale: {args.customers} customers as {shards} shards of {args.shard_size}, {args.days} days")
    measure(
        home,
        db,
        written_as_of(home),
        timings,
        threshold=args.threshold,
        splink=not args.no_splink,
        run_dbt=not args.skip_dbt,
        profiles_dir=profiles_dir,
        partition=PARTITION,
        extra={
            "customers": args.customers,
            "shard_size": args.shard_size,
            "days": args.days,
            "seed": args.seed,
            "duckdb_settings": settings,
            "dbt_threads": args.dbt_threads,
            "combined": combined,
            "shard_builds": metas,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
