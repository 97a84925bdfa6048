"""Identity benchmark: accuracy of identity.person_map against the demo generator's truth, stage time, and the
same person records linked by Splink 5 with its usual setup (DuckDB backend) side by side.

    .venv/bin/python bench/identity.py --customers 10000 --days 730        # default demo scale
    .venv/bin/python bench/identity.py --customers 2000 --days 120 --no-splink

Pairwise precision/recall/F1 count same-person record pairs (computed from cluster contingency counts, so
events with millions of rows cost nothing); ARI is sklearn's adjusted_rand_score.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from math import comb
from pathlib import Path

import duckdb
import pandas as pd
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parent.parent
DBT = ROOT / ".venv" / "bin" / "dbt"
PERSON_ENTITIES = ("crm_contacts", "shop_customers")


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


def dbt(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [
            str(DBT),
            *command,
            "--project-dir",
            str(ROOT / "dbt_project"),
            "--profiles-dir",
            str(ROOT / "dbt_project"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.exit(f"dbt failed:\n{result.stdout[-4000:]}")
    return time.perf_counter() - started


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
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold
    ).as_pandas_dataframe()
    return clusters[["unique_id", "cluster_id"]], time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--home", type=Path, help="keep the warehouse here (default: a temporary folder)")
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument(
        "--reuse", action="store_true", help="keep the generated and loaded warehouse in --home"
    )
    args = parser.parse_args(argv)

    home = args.home or Path(tempfile.mkdtemp(prefix="touchpoint-bench-"))
    if args.reuse and (home / "work" / "warehouse.duckdb").exists():
        db, timings = home / "work" / "warehouse.duckdb", {}
        written = json.loads((home / "sources" / "generator.json").read_text())
        as_of = date.fromisoformat(written["start"]) + timedelta(days=written["days"] - 1)
    else:
        db, as_of, timings = build_warehouse(home, args.customers, args.days, args.seed)
    env = {**os.environ, "TOUCHPOINT_WORK_DB": str(db), "TOUCHPOINT_HOME": str(home)}
    dbt_vars = json.dumps({"as_of": as_of.isoformat()})
    timings["dbt_staging"] = dbt(["run", "--select", "path:models/staging", "--vars", dbt_vars], env)
    timings["dbt_identity"] = dbt(
        ["run", "--select", "path:models/intermediate path:models/identity", "--vars", dbt_vars], env
    )

    truth = pd.read_parquet(home / "sources" / "truth" / "record_persons.parquet")
    truth["source_record_id"] = truth["source_record_id"].astype(str)
    con = duckdb.connect(str(db), read_only=True)
    mapped = con.execute("select source_entity, source_record_id, person_id from identity.person_map").df()
    counts = dict(
        con.execute("select source_entity, count(*) from identity.person_map group by 1").fetchall()
    )
    persons = con.execute("select count(*) from identity.persons").fetchall()[0][0]
    blocked = dict(
        con.execute(
            "select blocked_by, count(*) from identity.match_evidence where not is_linked group by 1"
        ).fetchall()
    )
    con.close()
    joined = mapped.merge(truth, on=["source_entity", "source_record_id"], how="inner")

    print(
        f"scale: {args.customers} customers, {args.days} days, as of {as_of}; records {counts}; "
        f"persons {persons} (true persons with records: {truth['true_person_id'].nunique()})"
    )
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"records with truth: {len(joined)} of {len(mapped)} mapped; blocked links: {blocked}")
    rows = []
    person_records = joined[joined["source_entity"].isin(PERSON_ENTITIES)]
    rows.append(
        (
            "touchpoint, person records",
            pair_scores(person_records["person_id"], person_records["true_person_id"]),
        )
    )
    rows.append(("touchpoint, all records", pair_scores(joined["person_id"], joined["true_person_id"])))
    print(f"{'':45} {'records':>9} {'pairs':>9} {'precision':>9} {'recall':>9} {'F1':>9} {'ARI':>9}")
    for name, s in rows:
        print(
            f"{name:45} {s['records']:9d} {s['true_pairs']:9d} {s['precision']:9.4f} {s['recall']:9.4f} "
            f"{s['f1']:9.4f} {s['ari']:9.4f}"
        )
    rows = []
    if not args.no_splink:
        clusters, seconds = splink_baseline(db, args.threshold)
        clusters["node_id"] = clusters["unique_id"]
        keys = person_records.assign(
            node_id=person_records.apply(
                lambda r: (
                    ("crm:" if r["source_entity"] == "crm_contacts" else "customer:") + r["source_record_id"]
                ),
                axis=1,
            )
        )
        splinked = keys.merge(clusters, on="node_id")
        rows.append(
            (
                f"splink 5 defaults, person records ({seconds:.1f}s)",
                pair_scores(splinked["cluster_id"], splinked["true_person_id"]),
            )
        )
    print(f"{'':45} {'records':>9} {'pairs':>9} {'precision':>9} {'recall':>9} {'F1':>9} {'ARI':>9}")
    for name, s in rows:
        print(
            f"{name:45} {s['records']:9d} {s['true_pairs']:9d} {s['precision']:9.4f} {s['recall']:9.4f} "
            f"{s['f1']:9.4f} {s['ari']:9.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
