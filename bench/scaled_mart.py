"""Benchmark: one mart's full build on its inputs copied k times over, for 1M-size work without a 1M world.

    .venv/bin/python bench/scaled_mart.py --home <a bench home> [--copies 10] [--runs 2] [--sql FILE ...]

A 1M world takes about 35 minutes to generate and build here; a query's behaviour at that size (a grouping
that spills, a hash table that no longer fits) shows up on a copy of its inputs. This copies the inputs of
`marts.fct_web_sessions` from the home's working warehouse (read only) into a scratch file, `--copies` times,
every id suffixed with its copy number ('#3'), so each copy is a disjoint world of the same shape: the staged web
events, the identity graph's node persons, the orders. It then times `create table ... as` of the model's
full-build query (the home's compiled model, its incremental filter dropped, or each `--sql` file given, say
an older form to compare with), one after the other `--runs` times, at the working warehouse's memory limit
and two threads, and checks that every query gives the same rows (`except all` both ways).

The home needs a built warehouse and dbt's compiled model: any `touchpoint run` or `bench/harness.py --work`
leaves both; after a change to the model, `dbt compile -s fct_web_sessions` with TOUCHPOINT_WORK_DB set to the
home's warehouse and `--target-path <home>/work/dbt_target/compiled_now` compiles it again (the latest is read).
Prints seconds per query and run.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import duckdb

# The inputs of fct_web_sessions: table -> (columns suffixed per copy, a filter on the copied rows)
INPUTS = {
    "staging.stg_web__events": (("event_id", "session_id", "customer_id", "anonymous_id"), "true"),
    "intermediate.int_identity_graph_resolved": (("left_node", "left_person_id"), "match_rule = 'self'"),
    "marts.fct_orders": (("order_id", "person_id"), "true"),
}
MEMORY_LIMIT = "9.6GB"  # 40% of this 24 GB machine: touchpoint/config.py's default


def copy_inputs(source: Path, target: Path, copies: int) -> int:
    """Write the INPUTS `copies` times into `target`; the number of web events written."""
    con = duckdb.connect(str(target), config={"memory_limit": MEMORY_LIMIT})
    try:
        con.execute(f"attach '{source}' as source (read_only)")
        for table, (suffixed, where) in INPUTS.items():
            schema, name = table.split(".")
            columns = [row[0] for row in con.execute(
                "select column_name from duckdb_columns() where database_name = 'source' and schema_name = ? "
                "and table_name = ? order by column_index", [schema, name]).fetchall()]
            select = ", ".join(f"{c} || '#' || copy as {c}" if c in suffixed else c for c in columns)
            con.execute(f"create schema if not exists {schema}")
            con.execute(f"create table {table} as select {select} from source.{table}, range({copies}) as r(copy) "
                        f"where {where}")
        return int(con.execute("select count(*) from staging.stg_web__events").fetchall()[0][0])
    finally:
        con.close()


def full_build_sql(home: Path) -> str:
    """The home's compiled fct_web_sessions as a full build reads it: the daily filter on re-derived sessions
    dropped, the catalog name left out."""
    compiled = max((home / "work" / "dbt_target").glob("*/compiled/touchpoint/models/marts/fct_web_sessions.sql"),
                   key=lambda path: path.stat().st_mtime)  # the latest layer or `dbt compile` that compiled it
    sql = compiled.read_text().replace('"warehouse".', "")
    return re.sub(r"\n\s*where \(\s*coalesce\(web_events\.session_id.*?\n    \)\n", "\n", sql, flags=re.S)


def time_queries(database: Path, queries: dict[str, str], runs: int) -> dict[str, list[float]]:
    con = duckdb.connect(str(database), config={"memory_limit": MEMORY_LIMIT, "threads": 2})
    seconds: dict[str, list[float]] = {name: [] for name in queries}
    try:
        for _ in range(runs):
            for name, sql in queries.items():
                started = time.perf_counter()
                con.execute(f"create or replace table main.{name} as {sql}")
                seconds[name].append(round(time.perf_counter() - started, 1))
        first, *others = queries
        for other in others:
            differing = con.execute(f"select (select count(*) from (from main.{first} except all from main.{other})) "
                                    f"+ (select count(*) from (from main.{other} except all from main.{first}))")
            if differing.fetchall()[0][0]:
                raise AssertionError(f"{other} gives other rows than {first}")
    finally:
        con.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sql", type=Path, nargs="*", default=[], help="other forms of the query to time")
    args = parser.parse_args()
    queries = {"compiled": full_build_sql(args.home)}
    queries |= {f"q_{re.sub(r'[^a-z0-9]', '_', path.stem.lower())}": path.read_text() for path in args.sql}
    with tempfile.TemporaryDirectory(dir=args.home) as scratch:
        database = Path(scratch) / "scaled.duckdb"
        events = copy_inputs(args.home / "work" / "warehouse.duckdb", database, args.copies)
        print(f"{args.copies} copies: {events:,} web events")
        for name, seconds in time_queries(database, queries, args.runs).items():
            print(f"{name}: {', '.join(f'{s} s' for s in seconds)}")


if __name__ == "__main__":
    main()
