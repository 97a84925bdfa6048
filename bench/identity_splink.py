"""Splink 5 with one generic configuration on a Touchpoint warehouse's person records, scored like the in-house
identity stage: an engine comparison with no per-dataset settings on the Splink side.

    .venv/bin/python bench/febrl.py --datasets 1 2 3 4 --identity-only --home /tmp/splink_febrl   # warehouses
    .venv/bin/python bench/identity_splink.py febrl --home /tmp/splink_febrl [--datasets 1 2 3 4]
    .venv/bin/python bench/identity.py --customers 10000 --days 730 --home /tmp/splink_demo10k --no-splink
    .venv/bin/python bench/identity_splink.py demo --home /tmp/splink_demo10k

Input: `intermediate.int_person_records_unioned` of <warehouse>, opened read-only and copied into a fresh
in-memory DuckDB (staged name/city/street keys, empty strings as null, birth date as an ISO string). Truth: FEBRL
record ids (bench/febrl.py) or the demo generator's <home>/sources/truth/record_persons.parquet. Scores: pairwise
precision/recall/F1 over the staged person records with a truth (CRM contacts, shop customers), Splink's clusters
at each threshold next to the in-house identity.person_map on the same records, plus Splink's blocking recall
(share of true pairs among the pairs it scored). Seconds and peak RSS (VmHWM, reset before the run) cover the
Splink part: copy, training, prediction, clustering, not the blocking-rule counts; most of it is u sampling, a
fixed cost. Results: identity_splink.json beside the warehouse.

One configuration for every warehouse; the only thing read from the data is which columns have values: a
comparison, blocking rule or training rule on a column that is entirely null is dropped (FEBRL: email, phone).
Fellegi-Sunter multiplies the comparisons' evidence as if independent, so the choices below mostly keep one
fact from being counted twice:

- first_name / last_name: NameComparison's levels (null; exact with term-frequency adjustment, as a common name
  says little; Jaro-Winkler >= 0.92 / 0.88 / 0.7) plus first and last name swapped, exactly and with a typo
  (FEBRL and CRM exports transpose them), and for first names the staged nickname form (jack ~ john), which
  the library cannot know. The swap levels weigh in the first-name comparison only and are neutral (a null
  level) in the last-name one: counted in both, one transposition outweighed two exact name matches. Two name
  comparisons rather than ForenameSurnameComparison, which has no "surname exact, forename misspelt" level.
- birth_date: DateOfBirthComparison on the ISO string (exact, one edit, <= 1 month, <= 1 year, <= 10 years).
- address: street (address_key, house number included), postcode and city as ONE comparison: street+postcode
  exact, street exact, street within 3 edits with postcode exact, postcode exact (TF), city exact (TF), any of
  them one edit / city Jaro-Winkler >= 0.9, else. As three comparisons they count one address three times, and
  every household (same surname, same address) became one person. Not PostcodeComparison: its sector/district/
  area levels are UK regexes and null out for Australian or German postcodes. On FEBRL, whose fields are
  corrupted independently and which has no households, three comparisons scored ~0.01 F1 higher.
- email: exact with TF only; phone: exact (already E.164). EmailComparison's username and Jaro-Winkler levels
  were dropped: usernames are made of names, so "anna.mueller@gmail.com" ~ "anna_mueller5@web.de" repeats the
  name evidence, and at 100k customers such namesakes were most of Splink's false links.
- Prediction blocking: first+last name in either order (least/greatest of the two), birth date, postcode + first
  initial, street, last name + birth year, email, phone; core DuckDB functions only (no soundex or metaphone
  here). A rule producing more than MAX_RULE_PAIRS pairs on its own is dropped, so a default-filled column
  cannot explode the run. Each rule is printed with its own pair count and what it adds after the ones before.
- Training: probability two random records match from exact (first, last, birth date) / (first, last, postcode)
  / email at recall 0.7; u by random sampling (1e7 pairs, seed 1); EM on first+last name, then birth date (then
  street, postcode only if a comparison were still untrained): each comparison is estimated in a session not
  blocked on it, and no further session averages in a worse block (street blocks are households, whose
  "matches" have different first names). A failing session (Splink 5 raises when EM leaves an m at 0) is
  reported and skipped; levels no session observed keep Splink's default m (it warns).
- Predictions: every blocked pair scored (for blocking recall), connected components at 0.9, 0.95 and 0.99.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from febrl import pair_scores, write_extracts  # noqa: E402

PERSON_ENTITIES = ("crm_contacts", "shop_customers")
THRESHOLDS = (0.9, 0.95, 0.99)
MAIN_THRESHOLD = 0.95
MAX_RULE_PAIRS = 20_000_000
U_SAMPLE_PAIRS = 1e7
RESULTS_FILE = "identity_splink.json"

# Staged columns under the names Splink sees; empty strings become null so they never count as agreement.
RECORDS_SQL = """
create table person_records as
select node_id as unique_id, source_entity, source_record_id,
       nullif(trim(first_name_key), '') as first_name,
       nullif(trim(first_name_canonical), '') as first_name_canonical,
       nullif(trim(last_name_key), '') as last_name,
       cast(birth_date as varchar) as birth_date,
       nullif(trim(postcode), '') as postcode,
       nullif(trim(city_key), '') as city,
       nullif(trim(address_key), '') as street,
       nullif(lower(trim(email)), '') as email,
       nullif(trim(phone_e164), '') as phone
from warehouse.intermediate.int_person_records_unioned
"""
MODEL_COLUMNS = (
    "first_name",
    "first_name_canonical",
    "last_name",
    "birth_date",
    "postcode",
    "city",
    "street",
    "email",
    "phone",
)


@dataclass
class SplinkRun:
    clusters: dict[float, pd.DataFrame]  # threshold -> unique_id, cluster_id
    scored_pairs: pa.Table  # unique_id_l, unique_id_r of every pair Splink scored (Arrow: compact)
    seconds: float
    peak_rss_mb: float
    populated: list[str]
    phases: dict[str, float]
    rule_pairs: list[dict] = field(default_factory=list)
    em_failures: list[str] = field(default_factory=list)


class PhaseTimer:
    """Called with a phase name, records the seconds since the previous call under it."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self.last
        self.last = now


# --- peak memory of the Splink part -------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process (Linux: '5' to clear_refs), so VmHWM afterwards is the
    peak of what runs next rather than of the whole process."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb(was_reset: bool) -> float:
    if was_reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # lifetime peak: an upper bound


# --- the generic configuration ------------------------------------------------------------------------------


def load_person_records(warehouse: Path) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB holding `person_records`, copied from the warehouse opened read-only."""
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    con.execute(f"attach '{warehouse}' as warehouse (read_only)")
    con.execute(RECORDS_SQL)
    con.execute("detach warehouse")
    return con


def populated_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Model columns with at least one value: the only thing about the data the configuration looks at."""
    counts = con.execute(
        "select " + ", ".join(f"count({c})" for c in MODEL_COLUMNS) + " from person_records"
    ).fetchall()[0]  # fetchall: DuckDB 2 blocks the connection while a result is unread
    return [column for column, count in zip(MODEL_COLUMNS, counts, strict=True) if count]


def name_comparison(column: str, other: str, nickname_column: str | None, swap_is_evidence: bool):
    """NameComparison's levels plus 'swapped with the other name column' (exactly, then with a typo: a
    transposed record is as likely as any other to carry one) and, when given, equal nickname canonical forms
    (a staged column); term frequencies on the exact level. Both name comparisons see a swap, but only one may
    count it (`swap_is_evidence`): in the other the swap levels are neutral like a null, or one transposition
    would weigh as much as two exact name matches squared."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    swapped_with_typo = (
        f"jaro_winkler_similarity({column}_l, {other}_r) >= 0.88 "
        f"and jaro_winkler_similarity({column}_r, {other}_l) >= 0.88"
    )
    swap_levels = [
        cll.ColumnsReversedLevel(column, other, symmetrical=True),
        cll.CustomLevel(swapped_with_typo, label_for_charts=f"{column} and {other} swapped, Jaro-Winkler >= 0.88"),
    ]
    if not swap_is_evidence:
        swap_levels = [level.configure(is_null_level=True) for level in swap_levels]
    levels = [
        cll.NullLevel(column),
        cll.ExactMatchLevel(column).configure(tf_adjustment_column=column),
        *swap_levels,
    ]
    if nickname_column:
        levels.append(cll.ExactMatchLevel(nickname_column).configure(label_for_charts="Same canonical nickname"))
    levels += [cll.JaroWinklerLevel(column, threshold) for threshold in (0.92, 0.88, 0.7)]
    return cl.CustomComparison(comparison_levels=[*levels, cll.ElseLevel()], output_column_name=column)


def address_comparison(populated: list[str]):
    """Street, postcode and city as one comparison, levels from most to least specific. Three comparisons would
    count one address three times (they agree together, for a person and for a household alike), which makes
    any two people at one address with the same surname a match whatever their first names."""
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    have = {"street", "postcode", "city"} & set(populated)
    if not have:
        return None
    levels = [cll.And(*[cll.NullLevel(column) for column in sorted(have)])]
    if {"street", "postcode"} <= have:
        levels.append(cll.And(cll.ExactMatchLevel("street"), cll.ExactMatchLevel("postcode")))
    if "street" in have:
        levels.append(cll.ExactMatchLevel("street"))
    if {"street", "postcode"} <= have:
        levels.append(cll.And(cll.DamerauLevenshteinLevel("street", 3), cll.ExactMatchLevel("postcode")))
    if "postcode" in have:
        levels.append(cll.ExactMatchLevel("postcode").configure(tf_adjustment_column="postcode"))
    if "city" in have:
        levels.append(cll.ExactMatchLevel("city").configure(tf_adjustment_column="city"))
    near = [cll.DamerauLevenshteinLevel(column, 1) for column in ("street", "postcode") if column in have]
    near += [cll.JaroWinklerLevel("city", 0.9)] if "city" in have else []
    levels += [cll.Or(*near).configure(label_for_charts="street or postcode one edit, or city similar")]
    return cl.CustomComparison(comparison_levels=[*levels, cll.ElseLevel()], output_column_name="address")


def comparisons(populated: list[str]) -> list:
    """The comparison library's person comparisons, one per populated column or group (module docstring)."""
    import splink.comparison_library as cl

    have = set(populated)
    chosen: list = []
    if {"first_name", "last_name"} <= have:
        nickname = "first_name_canonical" if "first_name_canonical" in have else None
        chosen += [
            name_comparison("first_name", "last_name", nickname, swap_is_evidence=True),
            name_comparison("last_name", "first_name", None, swap_is_evidence=False),
        ]
    else:  # no swapped level without both name columns
        chosen += [
            cl.NameComparison(name).configure(term_frequency_adjustments=True)
            for name in ("first_name", "last_name")
            if name in have
        ]
    if "birth_date" in have:
        chosen.append(cl.DateOfBirthComparison("birth_date", input_is_string=True, datetime_format="%Y-%m-%d"))
    if address := address_comparison(populated):
        chosen.append(address)
    if "email" in have:  # exact only: near-equal emails are mostly namesakes' (see the module docstring)
        chosen.append(cl.ExactMatch("email").configure(term_frequency_adjustments=True))
    if "phone" in have:
        chosen.append(cl.ExactMatch("phone"))
    return chosen


# Equi-join blocking rules as (label, key expressions). Names in either order is one rule: least/greatest of the
# two name columns is the same for 'Mia Burgmann' and 'Burgmann Mia'. DuckDB's least/greatest skip nulls, so
# without the guard every record missing a first name would join every one with its surname as either name.
BOTH_NAMES = "case when first_name is not null and last_name is not null then {} end"
PREDICTION_RULES: list[tuple[str, tuple[str, ...]]] = [
    (
        "names, either order",
        (BOTH_NAMES.format("least(first_name, last_name)"), BOTH_NAMES.format("greatest(first_name, last_name)")),
    ),
    ("birth_date", ("birth_date",)),
    ("postcode + first initial", ("postcode", "substr(first_name, 1, 1)")),
    ("street", ("street",)),
    ("last_name + birth year", ("last_name", "substr(birth_date, 1, 4)")),
    ("email", ("email",)),
    ("phone", ("phone",)),
]
EM_RULES: list[tuple[str, ...]] = [("first_name", "last_name"), ("birth_date",), ("street",), ("postcode",)]
# The columns each comparison reads (the swapped-name levels read both names).
COMPARISON_COLUMNS: dict[str, set[str]] = {
    "first_name": {"first_name", "last_name", "first_name_canonical"},
    "last_name": {"first_name", "last_name"},
    "birth_date": {"birth_date"},
    "address": {"street", "postcode", "city"},
    "email": {"email"},
    "phone": {"phone"},
}
DETERMINISTIC_RULES: list[tuple[str, ...]] = [
    ("first_name", "last_name", "birth_date"),
    ("first_name", "last_name", "postcode"),
    ("email",),
]


def uses_only(keys: tuple[str, ...], populated: list[str]) -> bool:
    """Every model column named in the key expressions has values."""
    named = set(re.findall(r"[a-z_]+", " ".join(keys))) & set(MODEL_COLUMNS)
    return named <= set(populated)


def rule_pair_count(con: duckdb.DuckDBPyConnection, keys: tuple[str, ...]) -> int:
    """Pairs an equi-join rule produces on its own, counted from its block sizes (cheap even if it explodes)."""
    not_null = " and ".join(f"({key}) is not null" for key in keys)
    sql = f"""
        select coalesce(sum(n * (n - 1) // 2), 0) from (
            select count(*)::hugeint as n from person_records where {not_null} group by {", ".join(keys)})"""
    return con.execute(sql).fetchall()[0][0]


def choose_prediction_rules(con: duckdb.DuckDBPyConnection, populated: list[str]) -> list[dict]:
    """The prediction rules whose columns are populated and whose pair count is under MAX_RULE_PAIRS."""
    chosen = []
    for label, keys in PREDICTION_RULES:
        if not uses_only(keys, populated):
            continue
        pairs = int(rule_pair_count(con, keys))
        if pairs > MAX_RULE_PAIRS:
            print(f"  blocking rule {label!r} dropped: {pairs:,} pairs")
            continue
        chosen.append({"rule": label, "keys": keys, "pairs": pairs})
    return chosen


def add_marginal_counts(records, rules: list[dict]) -> None:
    """Splink's own exact count of the new pairs each rule adds after the ones before it."""
    from splink import block_on
    from splink.blocking_analysis import count_comparisons_from_blocking_rules

    counted = count_comparisons_from_blocking_rules(
        records,
        blocking_rules=[block_on(*rule["keys"]) for rule in rules],
        link_type="dedupe_only",
        record_sample_proportion=1.0,  # the default 0.05 only estimates
    )
    for rule, count in zip(rules, counted, strict=True):
        rule["marginal_pairs"] = int(count["marginal_comparison_count"])
        rule["cumulative_pairs"] = int(count["cumulative_comparison_count"])


# --- training, prediction, clustering ----------------------------------------------------------------------


def em_sessions(populated: list[str]) -> list[tuple[str, ...]]:
    """EM_RULES in order, each kept only if it leaves free a populated comparison no earlier session estimated.
    A session whose block hides a comparison's columns estimates m for it; one more session than needed would
    average in the m of an inferior block (street blocks are households: their 'matches' differ in first name)."""
    untrained = {name for name, columns in COMPARISON_COLUMNS.items() if columns & set(populated)}
    chosen = []
    for cols in EM_RULES:
        frees = {name for name in untrained if not COMPARISON_COLUMNS[name] & set(cols)}
        if set(cols) <= set(populated) and frees:
            chosen.append(cols)
            untrained -= frees
    return chosen


def train(linker, populated: list[str], lap: PhaseTimer) -> list[str]:
    """Random-match probability, u by sampling, m by EM on blocks that leave each comparison free at least once.
    Returns the failed EM sessions."""
    from splink import block_on

    deterministic = [block_on(*cols) for cols in DETERMINISTIC_RULES if set(cols) <= set(populated)]
    if deterministic:
        linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.7)
    lap("train: random-match probability")
    linker.training.estimate_u_using_random_sampling(max_pairs=U_SAMPLE_PAIRS, seed=1)
    lap("train: u sampling")
    failures = []
    for cols in em_sessions(populated):
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*cols))
        except (ValueError, ZeroDivisionError) as error:  # e.g. an m of 0 for a level the block never showed
            failures.append(f"{'+'.join(cols)}: {str(error).splitlines()[0][:160]}")
            print(f"  EM session on {'+'.join(cols)} failed: {failures[-1]}")
    lap("train: EM")
    return failures


def run_splink(warehouse: Path) -> SplinkRun:
    """The whole Splink part on one warehouse: copy, configure, count, train, predict, cluster."""
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    was_reset = reset_peak_rss()
    phases: dict[str, float] = {}
    lap = PhaseTimer(phases)
    con = load_person_records(warehouse)
    populated = populated_columns(con)
    rules = choose_prediction_rules(con, populated)
    records = DuckDBAPI(con).register("person_records")
    lap("load")
    add_marginal_counts(records, rules)
    lap("blocking counts (not in seconds)")
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=comparisons(populated),
        blocking_rules_to_generate_predictions=[block_on(*rule["keys"]) for rule in rules],
    )
    linker = Linker(records, settings, log_level=logging.WARNING)
    failures = train(linker, populated, lap)
    predictions = linker.inference.predict()  # every blocked pair, for blocking recall
    scored = con.sql(f"select unique_id_l, unique_id_r from {predictions.physical_name}").to_arrow_table()
    lap("predict")
    clusters = {
        threshold: linker.clustering.cluster_pairwise_predictions_at_threshold(
            predictions, threshold
        ).as_pandas_dataframe()[["unique_id", "cluster_id"]]
        for threshold in THRESHOLDS
    }
    lap("cluster")
    con.close()
    seconds = sum(t for phase, t in phases.items() if not phase.startswith("blocking counts"))
    return SplinkRun(clusters, scored, seconds, peak_rss_mb(was_reset), populated, phases, rules, failures)


# --- scoring -----------------------------------------------------------------------------------------------


def node_ids(truth: pd.DataFrame) -> pd.Series:
    prefix = truth["source_entity"].map({"crm_contacts": "crm:", "shop_customers": "customer:"})
    return prefix + truth["source_record_id"]


def in_house_clusters(warehouse: Path) -> pd.DataFrame:
    con = duckdb.connect(str(warehouse), read_only=True)
    mapped = con.execute(
        "select source_entity, source_record_id, person_id from identity.person_map "
        f"where source_entity in {PERSON_ENTITIES}"
    ).df()
    con.close()
    return mapped


def true_pairs_scored(scored_pairs: pa.Table, truth: pd.DataFrame) -> int:
    """How many scored pairs are true pairs (each pair is scored once), joined in DuckDB: millions of pairs."""
    con = duckdb.connect()
    con.register("scored_pairs", scored_pairs)
    con.register("truth", truth[["node_id", "true_person_id"]])
    found = con.execute("""
        select count(*) from scored_pairs as p
        join truth as l on p.unique_id_l = l.node_id
        join truth as r on p.unique_id_r = r.node_id
        where l.true_person_id = r.true_person_id""").fetchall()[0][0]
    con.close()
    return found


def score(run: SplinkRun, truth: pd.DataFrame, warehouse: Path) -> dict:
    """Pairwise scores of Splink at each threshold and of the in-house person_map on the same person records;
    a record missing from a clustering is its own cluster."""
    truth = truth[truth["source_entity"].isin(PERSON_ENTITIES)].assign(node_id=node_ids)
    staged = truth["node_id"].isin(run.clusters[MAIN_THRESHOLD]["unique_id"])  # every input record is clustered
    not_staged, truth = int((~staged).sum()), truth[staged]  # e.g. demo records created after the as-of date
    singleton = "unclustered:" + truth["node_id"]
    scores = {}
    for threshold, clusters in run.clusters.items():
        predicted = truth["node_id"].map(clusters.set_index("unique_id")["cluster_id"].astype(str))
        scores[f"splink@{threshold}"] = pair_scores(predicted.fillna(singleton), truth["true_person_id"])
    mapped = truth.merge(in_house_clusters(warehouse), on=["source_entity", "source_record_id"], how="left")
    scores["in-house"] = pair_scores(mapped["person_id"].fillna(singleton), mapped["true_person_id"])
    wanted = scores["in-house"]["true_pairs"]
    return {
        "scores": scores,
        "splink_scored_pairs": run.scored_pairs.num_rows,
        "splink_blocking_recall": true_pairs_scored(run.scored_pairs, truth) / wanted if wanted else 1.0,
        "truth_records_not_staged": not_staged,
    }


def report(name: str, run: SplinkRun, scored: dict, out: Path) -> dict:
    result = {
        "dataset": name,
        **scored,
        "seconds": run.seconds,
        "peak_rss_mb": run.peak_rss_mb,
        "phase_seconds": run.phases,
        "populated_columns": run.populated,
        "blocking_rules": [
            {k: v for k, v in rule.items() if k != "keys"} | {"keys": list(rule["keys"])} for rule in run.rule_pairs
        ],
        "em_failures": run.em_failures,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_table(results: list[dict]) -> None:
    print(
        f"\n{'dataset':14} {'engine':12} {'records':>8} {'true pairs':>10} {'precision':>9} {'recall':>7} "
        f"{'F1':>7} {'seconds':>8} {'peak MB':>8}"
    )
    for r in results:
        for engine, s in r["scores"].items():
            cost = f"{r['seconds']:8.1f} {r['peak_rss_mb']:8.0f}" if engine.startswith("splink") else ""
            print(
                f"{r['dataset']:14} {engine:12} {s['records']:8d} {s['true_pairs']:10d} {s['precision']:9.4f} "
                f"{s['recall']:7.4f} {s['f1']:7.4f} {cost}"
            )
    for r in results:
        print(
            f"\n{r['dataset']}: Splink scored {r['splink_scored_pairs']:,} pairs, blocking recall "
            f"{r['splink_blocking_recall']:.4f}; truth records not staged {r['truth_records_not_staged']}; "
            f"EM failures: {r['em_failures'] or 'none'}"
        )
        print("  seconds: " + ", ".join(f"{phase} {t:.1f}" for phase, t in r["phase_seconds"].items()))
        for rule in r["blocking_rules"]:
            print(
                f"  {rule['rule']:26} pairs {rule['pairs']:>10,}  new {rule['marginal_pairs']:>10,}  "
                f"cumulative {rule['cumulative_pairs']:>10,}"
            )


# --- datasets ----------------------------------------------------------------------------------------------


def febrl_truth(dataset: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as folder:
        return write_extracts(dataset, Path(folder))


def demo_truth(home: Path) -> pd.DataFrame:
    truth = pd.read_parquet(home / "sources" / "truth" / "record_persons.parquet")
    return truth.assign(source_record_id=truth["source_record_id"].astype(str))[
        ["source_entity", "source_record_id", "true_person_id"]
    ]


def run_dataset(name: str, warehouse: Path, truth: pd.DataFrame) -> dict:
    if not warehouse.exists():
        sys.exit(f"no warehouse at {warehouse}: build it first (see the module docstring)")
    print(f"{name}: Splink on {warehouse}", flush=True)
    run = run_splink(warehouse)
    return report(name, run, score(run, truth, warehouse), warehouse.parent / RESULTS_FILE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["febrl", "demo"])
    parser.add_argument("--home", type=Path, required=True, help="bench/febrl.py --home, or the demo world's home")
    parser.add_argument("--datasets", nargs="+", default=["1", "2", "3", "4"], help="FEBRL datasets")
    args = parser.parse_args(argv)
    if args.kind == "febrl":
        results = [
            run_dataset(f"FEBRL{n}", args.home / f"febrl{n}" / "home" / "work" / "warehouse.duckdb", febrl_truth(n))
            for n in args.datasets
        ]
    else:
        results = [run_dataset(args.home.name, args.home / "work" / "warehouse.duckdb", demo_truth(args.home))]
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
