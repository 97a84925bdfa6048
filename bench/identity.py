"""Identity benchmark: accuracy of identity.person_map against the demo generator's truth, stage time, and the
same person records linked by Splink 5 with its usual setup (DuckDB backend) side by side.

    .venv/bin/python bench/identity.py --customers 10000 --days 730        # default demo scale
    .venv/bin/python bench/identity.py --customers 2000 --days 120 --no-splink
    .venv/bin/python bench/identity.py --home /tmp/b100k --reuse --skip-dbt   # score the warehouse as it is

Pairwise precision/recall/F1 count same-person record pairs (computed from cluster contingency counts, so
events with millions of rows cost nothing); ARI is sklearn's adjusted_rand_score for person records and the
same formula from the contingency counts (in DuckDB) for all records. Each dbt command's wall time and peak
RSS (the dbt process and its children, from wait4) are reported; dbt writes its target/ and logs under the
bench home, not into dbt_project/. Results also go to <home>/identity_bench.json.

1M customers, which the generator cannot build in one piece on a 24 GB machine: bench/identity_shards.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from math import comb
from pathlib import Path

import duckdb
import pandas as pd
import yaml
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parent.parent
DBT = ROOT / ".venv" / "bin" / "dbt"
PERSON_ENTITIES = ("crm_contacts", "shop_customers")
RESULTS_FILE = "identity_bench.json"


def pair_scores(predicted: pd.Series, true: pd.Series) -> dict[str, float]:
    both = Counter(zip(predicted, true, strict=True))
    tp = sum(comb(n, 2) for n in both.values())
    pp = sum(comb(n, 2) for n in Counter(predicted).values())
    tt = sum(comb(n, 2) for n in Counter(true).values())
    precision = tp / pp if pp else 1.0
    recall = tp / tt if tt else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "records": len(predicted),
        "true_pairs": tt,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ari": adjusted_rand_score(true, predicted),
    }


def sql_pair_scores(con: duckdb.DuckDBPyConnection, cells: str, predicted: str = "predicted") -> dict[str, float]:
    """pair_scores counted in DuckDB, for tens of millions of records that would not fit in memory as Python
    objects. `cells`: a table or query of contingency cells, one row per (predicted cluster, true person) with
    its record count `c` and a `truth` column; `predicted`: the columns naming the predicted cluster (a cell
    must lie inside one predicted cluster). ARI from the pair confusion matrix, as sklearn computes it, with
    exact integers."""
    n, tp, pp, tt = con.execute(f"""
        with cells as (select * from {cells}),
        predicted as (select sum(c)::hugeint as c from cells group by {predicted}),
        truths as (select sum(c)::hugeint as c from cells group by truth)
        select (select coalesce(sum(c), 0)::hugeint from cells),
               (select coalesce(sum(c::hugeint * (c - 1) // 2), 0) from cells),
               (select coalesce(sum(c * (c - 1) // 2), 0) from predicted),
               (select coalesce(sum(c * (c - 1) // 2), 0) from truths)""").fetchone()
    n, tp, pp, tt = int(n), int(tp), int(pp), int(tt)
    fp, fn = pp - tp, tt - tp
    tn = comb(n, 2) - tp - fp - fn
    denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    precision = tp / pp if pp else 1.0
    recall = tp / tt if tt else 1.0
    return {
        "records": n,
        "true_pairs": tt,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "ari": 1.0 if fn == 0 and fp == 0 else 2 * (tp * tn - fn * fp) / denominator,
    }


@dataclass(frozen=True)
class DbtRun:
    seconds: float
    peak_rss_mb: float  # the dbt process and the children it waited for (ru_maxrss from wait4)


def _sample_rss(pid: int, out: Path, stop: threading.Event, every: float = 2.0) -> None:
    """Write the process's RSS every `every` seconds to `out` (seconds, MB), to see which model peaks."""
    started = time.perf_counter()
    with out.open("w") as log:
        log.write("seconds\trss_mb\n")
        while not stop.wait(every):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    log.write(f"{time.perf_counter() - started:.0f}\t{int(line.split()[1]) / 1024:.0f}\n")
                    log.flush()


def dbt(
    command: list[str], env: dict[str, str], profiles_dir: Path | None = None, rss_log: Path | None = None
) -> DbtRun:
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            [
                str(DBT),
                *command,
                "--project-dir",
                str(ROOT / "dbt_project"),
                "--profiles-dir",
                str(profiles_dir or ROOT / "dbt_project"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stop = threading.Event()
        sampler = None
        if rss_log and Path(f"/proc/{process.pid}").exists():
            rss_log.parent.mkdir(parents=True, exist_ok=True)
            sampler = threading.Thread(target=_sample_rss, args=(process.pid, rss_log, stop), daemon=True)
            sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        stop.set()
        if sampler:
            sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            log.seek(0)
            sys.exit(f"dbt failed ({process.returncode}):\n{log.read()[-4000:]}")
    return DbtRun(seconds, usage.ru_maxrss / 1024)


def duckdb_profiles(folder: Path, settings: dict[str, str], dbt_threads: int | None = None) -> Path:
    """A copy of dbt_project/profiles.yml in `folder` with extra DuckDB settings (e.g. memory_limit, threads)
    and, if given, another number of dbt threads (models run at once)."""
    profiles = yaml.safe_load((ROOT / "dbt_project" / "profiles.yml").read_text())
    for output in profiles["touchpoint"]["outputs"].values():
        output.setdefault("settings", {}).update(settings)
        if dbt_threads:
            output["threads"] = dbt_threads
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "profiles.yml").write_text(yaml.safe_dump(profiles, sort_keys=False))
    return folder


def build_warehouse(home: Path, customers: int, days: int, seed: int) -> tuple[Path, date, dict[str, float]]:
    from touchpoint.config import RunContext
    from touchpoint.ingest import SOURCES, extract_source, load_pending
    from touchpoint.sources.generator import generate

    timings = {}
    started = time.perf_counter()
    summary = generate(home / "sources", customers=customers, days=days, seed=seed)
    timings["generate"] = time.perf_counter() - started
    ctx = RunContext(as_of=summary.last_day, home=home, run_id="bench")
    ctx.paths.ensure()
    started = time.perf_counter()
    for source in SOURCES:
        extract_source(ctx, source)
    con = duckdb.connect(str(ctx.paths.work_db))
    load_pending(ctx, con)
    con.close()
    timings["extract_load"] = time.perf_counter() - started
    return ctx.paths.work_db, summary.last_day, timings


def written_as_of(home: Path) -> date:
    """The last generated day of the world under `home` (from its sources/generator.json)."""
    written = json.loads((home / "sources" / "generator.json").read_text())
    return date.fromisoformat(written["start"]) + timedelta(days=written["days"] - 1)


def splink_baseline(db: Path, threshold: float) -> tuple[pd.DataFrame, float]:
    """Splink 5 on the same CRM contacts and shop customers: library comparisons, random-sampling u, EM on two
    blocking rules, predict, connected components at the same threshold."""
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    con = duckdb.connect(str(db), read_only=True)
    people = con.execute("""
        select node_id as unique_id, first_name_key as first_name, last_name_key as surname,
               cast(birth_date as varchar) as dob, address_key as street, postcode, city_key as city, email
        from intermediate.int_person_records_unioned""").df()
    con.close()
    started = time.perf_counter()
    api = DuckDBAPI(duckdb.connect())
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.NameComparison("first_name"),
            cl.NameComparison("surname"),
            cl.DateOfBirthComparison("dob", input_is_string=True),
            cl.LevenshteinAtThresholds("street", [1, 3]),
            cl.ExactMatch("postcode"),
            cl.ExactMatch("city"),
            cl.EmailComparison("email"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("dob", "postcode"),
            block_on("surname", "dob"),
            block_on("first_name", "dob"),
            block_on("first_name", "surname"),
            block_on("postcode", "street"),
            block_on("surname", "postcode"),
        ],
    )
    linker = Linker(api.register(people), settings, log_level=None)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("first_name", "surname", "dob")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=1)
    for rule in (block_on("first_name", "surname"), block_on("dob")):
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(rule)
        except ValueError as error:  # Splink 5 rejects an m of 0 for a level EM never saw
            print(f"splink EM session {rule} failed: {error}".splitlines()[0][:200])
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, threshold).as_pandas_dataframe()
    return clusters[["unique_id", "cluster_id"]], time.perf_counter() - started


def _print_scores(rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"{'':58} {'records':>10} {'pairs':>10} {'precision':>9} {'recall':>9} {'F1':>9} {'ARI':>9}")
    for name, s in rows:
        print(
            f"{name:58} {s['records']:10d} {s['true_pairs']:10d} {s['precision']:9.4f} {s['recall']:9.4f} "
            f"{s['f1']:9.4f} {s['ari']:9.4f}"
        )


def measure(
    home: Path,
    db: Path,
    as_of: date,
    timings: dict[str, float],
    *,
    threshold: float = 0.95,
    splink: bool = True,
    run_dbt: bool = True,
    profiles_dir: Path | None = None,
    partition: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Run staging and intermediate+identity with dbt (unless `run_dbt` is false), then score identity.person_map
    (and Splink on the same person records) against <home>/sources/truth/record_persons.parquet.

    `partition`: a SQL expression over `source_record_id` naming the part of the data a record comes from
    (bench/identity_shards.py: its shard). Every score is then also given with the predicted persons split by
    it, i.e. as if no link crossed parts. Returns (and writes to <home>/identity_bench.json) the figures.
    """
    dbt_runs: dict[str, DbtRun] = {}
    if run_dbt:
        env = {
            **os.environ,
            "TOUCHPOINT_WORK_DB": str(db),
            "TOUCHPOINT_HOME": str(home),
            "DBT_TARGET_PATH": str(home / "dbt" / "target"),
            "DBT_LOG_PATH": str(home / "dbt" / "logs"),
        }
        dbt_vars = json.dumps({"as_of": as_of.isoformat()})
        dbt_runs["dbt_staging"] = dbt(
            ["run", "--select", "path:models/staging", "--vars", dbt_vars],
            env,
            profiles_dir,
            home / "dbt" / "rss_staging.tsv",
        )
        dbt_runs["dbt_identity"] = dbt(
            ["run", "--select", "path:models/intermediate path:models/identity", "--vars", dbt_vars],
            env,
            profiles_dir,
            home / "dbt" / "rss_identity.tsv",
        )
        timings.update({name: run.seconds for name, run in dbt_runs.items()})
    elif (home / RESULTS_FILE).exists():  # scoring again: keep the figures of the dbt run that built the tables
        earlier = json.loads((home / RESULTS_FILE).read_text())
        dbt_runs = {name: DbtRun(**run) for name, run in earlier.get("dbt", {}).items()}
        timings.update({name: run.seconds for name, run in dbt_runs.items()})

    truth_file = home / "sources" / "truth" / "record_persons.parquet"
    con = duckdb.connect(str(db), read_only=True)
    con.execute("set enable_progress_bar = false")
    con.execute(f"""create temp view scored_records as
        select m.source_entity, m.source_record_id, m.person_id, t.true_person_id,
               {partition or "null"} as part
        from identity.person_map as m
        join (select source_entity, cast(source_record_id as varchar) as source_record_id, true_person_id
              from read_parquet('{truth_file}')) as t using (source_entity, source_record_id)""")
    counts = dict(
        con.execute("select source_entity, count(*) from identity.person_map group by 1 order by 1").fetchall()
    )
    persons = con.execute("select count(*) from identity.persons").fetchone()[0]
    true_persons = con.execute(f"select count(distinct true_person_id) from read_parquet('{truth_file}')").fetchone()[0]
    # One pass over the records: contingency cells (a true person lies in one part, so a cell does too).
    con.execute(
        "create temp table cells as select person_id, true_person_id as truth, part, count(*) as c "
        "from scored_records group by all"
    )
    joined = con.execute("select sum(c) from cells").fetchone()[0]
    blocked = dict(
        con.execute(
            "select blocked_by, count(*) from identity.match_evidence where not is_linked group by 1 order by 1"
        ).fetchall()
    )
    person_records = con.execute(f"""
        select *, case when source_entity = 'crm_contacts' then 'crm:' else 'customer:' end
                  || source_record_id as node_id
        from scored_records where source_entity in {PERSON_ENTITIES}""").df()
    rows = [
        (
            "touchpoint, person records",
            pair_scores(person_records["person_id"], person_records["true_person_id"]),
        ),
        (
            "touchpoint, all records",
            sql_pair_scores(con, "cells", "person_id"),
        ),
    ]
    if partition:
        rows += [
            (
                "touchpoint, person records, links across parts cut",
                pair_scores(
                    person_records["person_id"] + "|" + person_records["part"], person_records["true_person_id"]
                ),
            ),
            (
                "touchpoint, all records, links across parts cut",
                sql_pair_scores(con, "cells", "person_id, part"),
            ),
        ]
    con.close()

    print(f"as of {as_of}; records {counts}; persons {persons} (true persons with records: {true_persons})")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if dbt_runs:
        print("dbt peak RSS (MB): " + ", ".join(f"{k} {v.peak_rss_mb:.0f}" for k, v in dbt_runs.items()))
    print(f"records with truth: {joined} of {sum(counts.values())} mapped; blocked links: {blocked}")
    _print_scores(rows)

    results = {
        **(extra or {}),
        "as_of": as_of.isoformat(),
        "records_mapped": counts,
        "persons": persons,
        "true_persons_with_records": true_persons,
        "records_with_truth": joined,
        "blocked_links": blocked,
        "timings_s": timings,
        "dbt": {name: asdict(run) for name, run in dbt_runs.items()},
        "scores": dict(rows),
        "splink": None,
    }
    results_file = home / RESULTS_FILE
    results_file.write_text(json.dumps(results, indent=2, default=str) + "\n")  # kept if Splink fails
    if splink:
        clusters, seconds = splink_baseline(db, threshold)
        splinked = person_records.merge(clusters.rename(columns={"unique_id": "node_id"}), on="node_id")
        splink_rows = [
            (
                f"splink 5 defaults, person records ({seconds:.1f}s)",
                pair_scores(splinked["cluster_id"], splinked["true_person_id"]),
            )
        ]
        if partition:
            splink_rows.append(
                (
                    "splink 5 defaults, person records, links across parts cut",
                    pair_scores(
                        splinked["cluster_id"].astype(str) + "|" + splinked["part"], splinked["true_person_id"]
                    ),
                )
            )
        _print_scores(splink_rows)
        results["splink"] = {"seconds": seconds, "scores": {name.split(" (")[0]: s for name, s in splink_rows}}
        results_file.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--home", type=Path, help="keep the warehouse here (default: a temporary folder)")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="keep the generated and loaded warehouse in --home")
    parser.add_argument("--skip-dbt", action="store_true", help="with --reuse: score the identity tables already built")
    args = parser.parse_args(argv)

    home = args.home or Path(tempfile.mkdtemp(prefix="touchpoint-bench-"))
    if args.reuse and (home / "work" / "warehouse.duckdb").exists():
        db, as_of, timings = home / "work" / "warehouse.duckdb", written_as_of(home), {}
    else:
        if args.skip_dbt:
            parser.error("--skip-dbt needs --reuse and a built warehouse in --home")
        db, as_of, timings = build_warehouse(home, args.customers, args.days, args.seed)
    print(f"scale: {args.customers} customers, {args.days} days")
    measure(
        home,
        db,
        as_of,
        timings,
        threshold=args.threshold,
        splink=not args.no_splink,
        run_dbt=not args.skip_dbt,
        extra={"customers": args.customers, "days": args.days, "seed": args.seed},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
