"""Mutation check: each known one-line regression must make at least one test fail.

    .venv/bin/python bench/mutations.py [--only NAME ...] [--jobs 3] [--no-baseline] [--keep]

For each mutation the working tree (uncommitted edits included, .git/.venv/data left out) is copied to a
temporary folder, the one line is changed there, and the tests named for it run in that copy; a failure means
the regression is caught. The working tree is never modified. A baseline run of every named test on an
unmutated copy comes first, so "caught" cannot come from a test that fails anyway.

The package is installed editable, mapped to the working tree (`touchpoint.ml` -> <repo>/ml, ...), so the copy
gets a `sitecustomize.py` on PYTHONPATH that points that mapping at the copy; the script checks that the copy's
modules are the ones imported before it trusts a result. dbt runs from the copy's dbt_project because the tests
find it relative to their own file.

Exit status 0 when every mutation is caught and the baseline passes, 1 otherwise. Takes about two minutes
with three jobs (the dbt-backed tests dominate).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
# Left out of the copies: version control, the environment (linked instead), data and build output.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "data", "target", "dbt_packages", "logs", "__pycache__", ".pytest_cache", ".ruff_cache",
    "*.egg-info", ".touchpoint-test",
)


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest node ids, relative to the repository root


# The two sums of macros/checksums.sql, one rule read by two consumers: a mutation for each shows both see it.
CHECKSUM_SUMS_COMPARED = (
    "    or {{ left }}.row_hash_sum is distinct from {{ right }}.row_hash_sum\n"
    "    or {{ left }}.shifted_hash_sum is distinct from {{ right }}.shifted_hash_sum\n"
)

MUTATIONS = [
    Mutation(
        "dim_consents: the oldest consent signal wins",
        "dbt_project/models/marts/dim_consents.sql",
        "order by occurred_at desc, is_granted asc, source asc",
        "order by occurred_at asc, is_granted asc, source asc",
        ("tests/test_marts_consents.py",),
    ),
    Mutation(
        "clv_scoring: CLV from the observed mean spend, not Gamma-Gamma",
        "ml/clv_scoring.py",
        "        bg, spend, x, t_x, big_t, horizon_days=CLV_HORIZON_DAYS",
        "        bg, summary[\"monetary_value\"].to_numpy(), x, t_x, big_t, horizon_days=CLV_HORIZON_DAYS",
        ("tests/test_ml_clv.py::test_scored_clv_uses_the_gamma_gamma_spend_not_the_observed_mean",),
    ),
    Mutation(
        "clv: discounting by step - 1",
        "ml/clv.py",
        "/ (1 + step_rate) ** step",
        "/ (1 + step_rate) ** (step - 1)",
        (
            "tests/test_ml_clv.py::test_discounting_starts_one_step_after_the_as_of",
            "tests/test_ml_clv.py::test_clv_matches_lifetimes_customer_lifetime_value",
        ),
    ),
    Mutation(
        "propensity: 1 - probability written (scores inverted)",
        "ml/propensity.py",
        "current[probability_column] = merged[\"probability\"].to_numpy()",
        "current[probability_column] = 1 - merged[\"probability\"].to_numpy()",
        (
            "tests/test_ml_propensity.py::test_a_customer_who_clearly_buys_again_scores_higher",
            "tests/test_ml_propensity.py::test_written_scores_rank_what_customers_really_did_next",
        ),
    ),
    Mutation(
        "incremental staging: events coming back into view (as-of moved forward again) not re-derived",
        "dbt_project/macros/incremental.sql",
        "        or {{ happened_at }} >= least(",
        "        or false and {{ happened_at }} >= least(",
        ("tests/test_incremental_staging.py::test_incremental_event_staging_equals_a_rebuild_every_day",),
    ),
    Mutation(
        "erasure: staged batches not forgotten (a surviving older version of an erased event never comes back)",
        "privacy/erasure.py",
        '    if not relation_exists(con, *STATE_TABLE.split(".")):\n        return\n',
        '    if True:\n        return\n',
        ("tests/test_incremental_staging.py::test_an_erased_version_gives_way_to_the_version_that_survived",),
    ),
    Mutation(
        "identity: match threshold 0.8 -> 0.5",
        "dbt_project/dbt_project.yml",
        "identity_match_threshold: 0.8",
        "identity_match_threshold: 0.5",
        ("tests/test_identity.py::test_the_match_threshold_is_the_measured_one",),
    ),
    Mutation(
        "conversion paths: no lookback (every earlier touch since the previous purchase)",
        "dbt_project/models/marts/journeys/fct_conversion_paths.sql",
        "where purchases.ordered_at <= touchpoints.touched_at + interval",
        "where true or purchases.ordered_at <= touchpoints.touched_at + interval",
        ("tests/test_journeys.py::test_conversion_paths_respect_the_lookback",),
    ),
    Mutation(
        "attribution: position-based middle touches share 40%, not 20%",
        "dbt_project/models/marts/journeys/attribution_conversions.sql",
        "else 0.2 / (touches_count - 2)",
        "else 0.4 / (touches_count - 2)",
        ("tests/test_journeys.py::test_attribution_credits_sum_to_one_per_conversion_and_model",),
    ),
    Mutation(
        "raw gate: email-validity share 0.9 -> 0.5",
        "expectations/suites/raw.py",
        "email_valid_share: float = 0.9",
        "email_valid_share: float = 0.5",
        ("tests/test_gates.py::test_a_third_of_bad_emails_fails_the_default_share",),
    ),
    Mutation(
        "incremental person_map: the records of re-personed nodes keep their old rows",
        "dbt_project/models/intermediate/identity/int_records_remapped.sql",
        "        or records.node_id in (select nodes_changed.node_id from nodes_changed)\n",
        "",
        ("tests/test_incremental_identity.py",),
    ),
    Mutation(
        "incremental pair scores: the blocks a changed record left are not re-derived",
        "dbt_project/models/intermediate/identity/int_person_pairs_scored.py",
        'for state in ("tp_pairs_records", previous)',
        'for state in ("tp_pairs_records",)',
        ("tests/test_identity_pairs_incremental.py",),
    ),
    Mutation(
        "incremental pair scores: a block that crossed its cap keeps its pairs' rows",
        "dbt_project/models/intermediate/identity/int_person_pairs_scored.py",
        'where {touched_before("l", shared_with="r")}""")',
        'where false""")',
        ("tests/test_identity_pairs_incremental.py",),
    ),
    Mutation(
        "erasure: the identity match model keeps the estimates counted over the erased records",
        "privacy/erasure.py",
        '        con.execute(f\'drop table intermediate."{table}"\')\n',
        "        pass\n",
        ("tests/test_privacy_erasure.py::test_an_erased_person_is_nowhere_and_stays_out",),
    ),
    Mutation(
        "incremental web sessions: a session left with no event keeps its row",
        "dbt_project/models/marts/fct_web_sessions.sql",
        '        "{{ web_sessions_out_of_date() }}",\n',
        "",
        ("tests/test_incremental_marts.py",),
    ),
    Mutation(
        "unchanged files: a rewrite that keeps size and mtime is taken as landed",
        "ingest/state.py",
        "            and kept[:4] == stamp[:4]\n",
        "            and kept[:3] == stamp[:3]\n",
        ("tests/test_ingest_unchanged_files.py",),
    ),
    Mutation(
        "unchanged files: a file written just before it was stamped is trusted",
        "ingest/state.py",
        "            and kept[4] - max(kept[2], kept[3]) > RACY_NS\n",
        "",
        ("tests/test_ingest_unchanged_files.py",),
    ),
    Mutation(
        "score history retention: a month past the policy keeps no snapshot",
        "privacy/retention.py",
        "group by date_trunc('month', as_of))",
        "where false)",
        ("tests/test_privacy_retention.py",),
    ),
    Mutation(
        "checksums compare only the counts (read by the person_map completeness test)",
        "dbt_project/macros/checksums.sql",
        CHECKSUM_SUMS_COMPARED,
        "",
        ("tests/test_identity.py::test_person_map_completeness_test_names_a_swapped_record",),
    ),
    Mutation(
        "checksums: only the plain hash sum, which DuckDB's string hash can collide",
        "dbt_project/macros/checksums.sql",
        "    or {{ left }}.shifted_hash_sum is distinct from {{ right }}.shifted_hash_sum\n",
        "",
        ("tests/test_identity.py::test_person_map_completeness_test_sees_ids_whose_hashes_collide",),
    ),
    Mutation(
        "incremental email engagement: an earlier version's campaign is not re-derived",
        "dbt_project/macros/incremental.sql",
        "            {{ staged_delta(source('email', 'email_events'), 'trim(event_id)', 'occurred_at') }}\n",
        "            {{ staged_delta(source('email', 'email_events'), 'trim(event_id)', 'occurred_at') }}\n"
        "            qualify row_number() over (partition by trim(event_id) order by _extracted_at desc) = 1\n",
        ("tests/test_incremental_marts.py",),
    ),
    Mutation(
        "incremental email engagement: the persons who moved are not re-derived",
        "dbt_project/macros/incremental.sql",
        "    select null, moved.person_id, null from ({{ persons_moved_since(since) }}) as moved\n",
        "    select null, moved.person_id, null from ({{ persons_moved_since(since) }}) as moved where false\n",
        ("tests/test_incremental_marts.py",),
    ),
    Mutation(
        "incremental email engagement: a daily build reads only the events of persons re-derived whole",
        "dbt_project/macros/incremental.sql",
        "    ({{ campaign_key }} in (select campaign_id from {{ rederived }}) or {{ node_id }} in\n",
        "    (false or {{ node_id }} in\n",
        ("tests/test_incremental_marts.py",),
    ),
    Mutation(
        "incremental email engagement: a run back in time keeps the rows of events that left the view",
        "dbt_project/macros/incremental.sql",
        "    select email_engagement_id, person_id, campaign_id from {{ this }} where last_event_at >= {{ since }}\n",
        "    select email_engagement_id, person_id, campaign_id from {{ this }} where false\n",
        ("tests/test_incremental_marts.py",),
    ),
    Mutation(
        "incremental conversion paths: the fingerprint leaves out the purchases",
        "dbt_project/macros/incremental.sql",
        "        union all\n"
        "        select\n"
        "            purchases.person_id,\n"
        "            {{ checksum_row_hashes('*columns(*)', "
        "shifted_values(['purchases.order_id', 'purchases.order_channel'])) }}\n"
        "        from ({{ lookup_purchases(conversion_path_purchase_columns()) }}) as purchases\n",
        "",
        ("tests/test_incremental_marts.py",),
    ),
    Mutation(
        "incremental conversion paths: a person whose touches and purchases all went keeps the rows",
        "dbt_project/macros/incremental.sql",
        "    select coalesce(now.person_id, before.person_id) as person_id\n",
        "    select now.person_id\n",
        ("tests/test_incremental_marts.py",),
    ),
    Mutation(
        "checksums compare only the counts (read by the incremental conversion paths)",
        "dbt_project/macros/checksums.sql",
        CHECKSUM_SUMS_COMPARED,
        "",
        ("tests/test_incremental_marts.py",),
    ),
]

SITECUSTOMIZE = '''\
"""Written by bench/mutations.py: import touchpoint from this copy, not from the editable install's tree."""
import sys

for _name, _module in list(sys.modules.items()):
    if _name.startswith("__editable__") and _name.endswith("_finder") and hasattr(_module, "MAPPING"):
        for _package, _folder in list(_module.MAPPING.items()):
            if _folder.startswith({repo!r}):
                _module.MAPPING[_package] = {copy!r} + _folder[len({repo!r}):]
'''


@dataclass
class Outcome:
    mutation: Mutation | None
    status: str  # caught / SURVIVED / error / passed / FAILED
    seconds: float
    detail: str = ""


def make_copy(workdir: Path) -> Path:
    """The working tree under workdir/main, with the environment linked and the shared kit beside it."""
    copy = workdir / "main"
    shutil.copytree(REPO, copy, ignore=IGNORED, symlinks=True)
    (copy / ".venv").symlink_to(REPO / ".venv")
    shared = REPO.parent / "shared"
    if shared.exists():
        (workdir / "shared").symlink_to(shared)  # tests look for ../shared/conformance
    site = workdir / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(repo=str(REPO), copy=str(copy)))
    return copy


def environment(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(copy.parent / "site"), str(copy)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_from(copy: Path) -> None:
    probe = "import touchpoint, touchpoint.ml.clv as m, touchpoint.expectations as e; print(m.__file__, e.__file__)"
    out = subprocess.run([str(PYTHON), "-c", probe], cwd=copy, env=environment(copy), capture_output=True,
                         text=True, check=True).stdout.split()
    if not all(Path(p).resolve().is_relative_to(copy.resolve()) for p in out):
        raise RuntimeError(f"the copy imports touchpoint from elsewhere: {out}")


def run_tests(copy: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    args = [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0", *tests]
    return subprocess.run(args, cwd=copy, env=environment(copy), capture_output=True, text=True)


def last_lines(result: subprocess.CompletedProcess[str], count: int = 1) -> str:
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return " | ".join(lines[-count:])


def try_mutation(mutation: Mutation | None, tests: tuple[str, ...], keep: bool) -> Outcome:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="touchpoint-mutation-"))
    try:
        copy = make_copy(workdir)
        check_imports_from(copy)
        if mutation is not None:
            target = copy / mutation.path
            text = target.read_text()
            if text.count(mutation.old) != 1:
                return Outcome(mutation, "error", time.monotonic() - started,
                               f"{mutation.old!r} occurs {text.count(mutation.old)} times in {mutation.path}")
            target.write_text(text.replace(mutation.old, mutation.new))
        result = run_tests(copy, tests)
        seconds = time.monotonic() - started
        if mutation is None:
            return Outcome(None, "passed" if result.returncode == 0 else "FAILED", seconds, last_lines(result, 3))
        status = {0: "SURVIVED", 1: "caught"}.get(result.returncode, "error")
        failed = [line.split(" - ")[0] for line in result.stdout.splitlines() if line.startswith("FAILED ")]
        return Outcome(mutation, status, seconds, ", ".join(failed) or last_lines(result))
    finally:
        if keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only the mutations whose name contains one of these")
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the same tests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or any(word in m.name for word in args.only)]
    all_tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        baseline = None if args.no_baseline else pool.submit(try_mutation, None, all_tests, args.keep)
        futures = [pool.submit(try_mutation, m, m.tests, args.keep) for m in chosen]
        outcomes = [f.result() for f in futures]
        base = baseline.result() if baseline else None

    if base is not None:
        print(f"baseline (no mutation), {len(all_tests)} tests: {base.status} in {base.seconds:.0f}s ({base.detail})")
    width = max(len(o.mutation.name) for o in outcomes)
    print(f"{'mutation':<{width}}  {'caught':<8}  {'secs':>5}  tests run -> failing tests")
    for outcome in outcomes:
        tests = ", ".join(outcome.mutation.tests)
        print(f"{outcome.mutation.name:<{width}}  {outcome.status:<8}  {outcome.seconds:5.0f}  {tests} -> "
              f"{outcome.detail}")
    print(f"total {time.monotonic() - started:.0f}s")
    ok = all(o.status == "caught" for o in outcomes) and (base is None or base.status == "passed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
