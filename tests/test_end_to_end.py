"""The whole pipeline through Airflow (`touchpoint run` -> `dag.test()`), on small real inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tests.conftest import CONFORMANCE, require_conformance
from tests.dbt_manifest import parse_manifest, relation

pytestmark = pytest.mark.slow
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_CHECK = CONFORMANCE / "check.py"


def touchpoint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "touchpoint.cli", *args], capture_output=True, text=True, cwd=PROJECT_ROOT
    )


@pytest.fixture(scope="module")
def conformance_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    extracts = require_conformance()
    home = tmp_path_factory.mktemp("conformance_home")
    result = touchpoint("run", "--extracts", str(extracts), "--as-of", "2026-03-31", "--home", str(home))
    assert result.returncode == 0, result.stdout + result.stderr
    (home / "run.stdout").write_text(result.stdout)
    (home / "run.stderr").write_text(result.stderr)
    return home


def test_run_prints_a_short_summary_not_log_noise(conformance_run: Path) -> None:
    printed = (conformance_run / "run.stdout").read_text().splitlines()
    assert len(printed) < 40, printed
    assert any(line.strip().startswith("ok publish") for line in printed)
    assert any("quarantined" in line for line in printed)
    # the summary names every layer, journeys and experiments included, each with its figures (not n/a)
    labels = {line.split()[0]: line for line in printed if line.startswith("  ") and len(line.split()) > 1}
    for label in ("loaded", "identity", "marts", "journeys", "experiments", "ml", "gates"):
        assert label in labels and "n/a" not in labels[label], (label, printed)
    assert not any("[info" in line for line in printed)  # Airflow's log lines went to the log file
    # no library warnings on the terminal: they belong in the log too
    assert (conformance_run / "run.stderr").read_text() == ""
    assert not any("warning" in line.lower() for line in printed), printed
    # tasks in DAG order, even those finishing within one poll; the summary ends with the wall time
    tasks = [line.split()[1] for line in printed if line.startswith(("  ok ", "  !! ", "  -- "))]
    assert tasks.index("ml.score") < tasks.index("ml.gate_ml") < tasks.index("publish")
    assert max(i for i, t in enumerate(tasks) if t.startswith("sync.run[")) < tasks.index("release_warehouse")
    assert tasks[-1] == "release_warehouse"
    assert printed[-1].startswith("done in ") and printed[-1].endswith("(wall time)")
    log = conformance_run / "artifacts" / "2026-03-31" / "airflow.log"
    assert log.exists() and log.stat().st_size > 0


def test_conformance_kit_passes_on_the_published_warehouse(conformance_run: Path) -> None:
    checked = subprocess.run(
        [sys.executable, str(require_conformance(CONFORMANCE_CHECK)), str(conformance_run / "warehouse.duckdb")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_pipeline_leaves_dbt_unit_tests_out(conformance_run: Path) -> None:
    """Their inputs are fixed rows, so they say the same every day: the suite runs them (tests/test_marts.py)."""
    for layer in ("staging", "identity", "marts", "scored"):
        results = json.loads((conformance_run / "work" / "dbt_target" / layer / "run_results.json").read_text())
        kinds = {item["unique_id"].split(".")[0] for item in results["results"]}
        assert "unit_test" not in kinds and "test" in kinds, (layer, kinds)


def test_rerun_of_the_same_as_of_changes_nothing(conformance_run: Path) -> None:
    def snapshot() -> dict[str, int]:
        counts = {}
        # raw lives in the working warehouse only; the published one holds the analyst schemas
        for db, schemas in (("work", "('raw')"), ("", "('audit', 'identity', 'marts')")):
            con = duckdb.connect(str(conformance_run / db / "warehouse.duckdb"), read_only=True)
            try:
                tables = con.execute(
                    "select table_schema, table_name from information_schema.tables "
                    f"where table_schema in {schemas} and table_type = 'BASE TABLE' and table_name not like 'sync_%'"
                ).fetchall()
                for schema, table in tables:
                    rows = con.execute(f'select count(*) from "{schema}"."{table}"').fetchone()[0]
                    counts[f"{schema}.{table}"] = rows
            finally:
                con.close()
        return counts

    before = snapshot()
    result = touchpoint(
        "run", "--extracts", str(require_conformance()), "--as-of", "2026-03-31", "--home", str(conformance_run)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot() == before


PUBLIC_SCHEMAS = ("identity", "marts", "ml")


def documented_tables(target: Path) -> dict[str, dict[str, object]]:
    """`schema.table` -> description and described columns of every dbt model, seed and source in a public
    schema, from the manifest `dbt parse` writes (the ml schema is a source: models/ml/_ml__sources.yml)."""
    manifest = parse_manifest(target)
    resources = [n for n in manifest["nodes"].values() if n["resource_type"] in ("model", "seed", "snapshot")]
    documented = {}
    for node in [*resources, *manifest["sources"].values()]:
        if node["schema"] in PUBLIC_SCHEMAS:
            described = {c["name"] for c in node["columns"].values() if c.get("description", "").strip()}
            documented[relation(node)] = {"description": node["description"].strip(), "columns": described}
    return documented


def test_every_public_table_and_column_is_documented(conformance_run: Path, tmp_path: Path) -> None:
    """identity, marts and ml as published: every table has a description and every column (no more, no less)
    is described, so analysts can read the whole contract in dbt docs."""
    documented = documented_tables(tmp_path)
    con = _published(conformance_run)
    try:
        columns: dict[str, set[str]] = {}
        for schema, table, column in con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            f"where table_schema in {PUBLIC_SCHEMAS}"
        ).fetchall():
            columns.setdefault(f"{schema}.{table}", set()).add(column)
    finally:
        con.close()
    assert {"identity.persons", "marts.customer_360", "ml.model_runs"} <= columns.keys()
    gaps = [f"{table}: not documented" for table in sorted(columns.keys() - documented.keys())]
    gaps += [f"{table}: documented, not in the warehouse" for table in sorted(documented.keys() - columns.keys())]
    for table in sorted(columns.keys() & documented.keys()):
        doc = documented[table]
        if not doc["description"]:
            gaps.append(f"{table}: no description")
        if undescribed := sorted(columns[table] - doc["columns"]):
            gaps.append(f"{table}: columns not described {undescribed}")
        if stale := sorted(doc["columns"] - columns[table]):
            gaps.append(f"{table}: described columns it does not have {stale}")
    assert gaps == []


def test_every_column_that_looks_like_personal_data_is_tagged(conformance_run: Path, tmp_path: Path) -> None:
    """Every table dbt builds (staging, intermediate, identity, marts; the working warehouse, where the clear-text
    layers live): a column named like a direct identifier (email, phone, names, street, postcode, birth date,
    loyalty id) carries `meta: {pii: true}` in its yml, the one list pseudonymisation and erasure read
    (docs/privacy.md), or `{pii: false}` when it only looks like one (a comparison level named birth_date)."""
    from touchpoint.privacy.pii_columns import looks_like_pii, tagged_columns

    tagged = tagged_columns(parse_manifest(tmp_path), classified=True)
    con = duckdb.connect(str(conformance_run / "work" / "warehouse.duckdb"), read_only=True)
    try:
        built = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where table_schema in ('staging', 'intermediate', 'identity', 'marts', 'ml')"
        ).fetchall()
    finally:
        con.close()
    assert any(schema == "staging" for schema, _, _ in built)  # the check reaches the clear-text layers
    untagged = sorted(
        f"{schema}.{table}.{column}" for schema, table, column in built
        if looks_like_pii(column) and column not in tagged.get(f"{schema}.{table}", set())
    )
    assert untagged == []


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo world run through the DAG, then advanced one day and run again."""
    home = tmp_path_factory.mktemp("demo_home")
    generated = touchpoint("generate", "--customers", "400", "--days", "120", "--seed", "7", "--home", str(home))
    assert generated.returncode == 0, generated.stderr
    first = touchpoint("run", "--home", str(home))
    assert first.returncode == 0, first.stdout + first.stderr
    return home


def _published(home: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)



def test_demo_run_publishes_every_layer(demo_home: Path) -> None:
    work = duckdb.connect(str(demo_home / "work" / "warehouse.duckdb"), read_only=True)
    try:
        # raw and staging stay in the working warehouse: every staged person record is mapped exactly once
        assert work.execute("select count(*) from raw.shop_orders").fetchone()[0] > 0
        assert work.execute("select count(*) from raw.web_events").fetchone()[0] > 0
        unmapped = work.execute(
            "select count(*) from staging.stg_crm__contacts contact left join identity.person_map map "
            "on map.source_entity = 'crm_contacts' and map.source_record_id = contact.contact_id "
            "where map.person_id is null"
        ).fetchone()[0]
        assert unmapped == 0
    finally:
        work.close()
    con = _published(demo_home)
    try:

        def count(table: str) -> int:
            return con.execute(f"select count(*) from {table}").fetchone()[0]

        schemas = {row[0] for row in con.execute("select distinct table_schema from information_schema.tables")
                   .fetchall()}
        assert not schemas & {"raw", "staging"}  # the analytics file: published schemas only
        con.execute(f"attach '{demo_home / 'pii.duckdb'}' as pii (read_only)")
        assert count("pii.persons") == count("identity.persons")  # the clear identifiers, in their own file
        for table in (
            "identity.person_map",
            "identity.persons",
            "marts.customer_rfm",
            "marts.customer_360",
            "ml.model_runs",
        ):
            assert count(table) > 0, table
        # every loaded row is accounted for, and every staged person record is mapped exactly once
        unbalanced = con.execute(
            "select count(*) from audit.load_batches where rows_read <> rows_loaded + rows_quarantined"
        ).fetchone()[0]
        assert unbalanced == 0
        assert count("marts.customer_360") == count("identity.persons")
        gates = con.execute("select distinct layer from audit.gate_results where success").fetchall()
        assert {"raw", "marts", "ml"} <= {layer for (layer,) in gates}
    finally:
        con.close()
    audience = demo_home / "activation"
    assert any(audience.rglob("audience.csv")), "the default file sync wrote no audience"


# customer_360's ML columns: the ml table and column they come from (this run's as-of partition), and the
# models that must have trained for them to hold a value
ML_COLUMNS = {
    "segment_id": ("customer_segments", "segment_id", ("segments",)),
    "segment_name": ("customer_segments", "segment_name", ("segments",)),
    "purchase_30d_probability": ("customer_propensity", "purchase_30d_probability", ("purchase_propensity",)),
    "purchase_30d_decile": ("customer_propensity", "purchase_30d_decile", ("purchase_propensity",)),
    "churn_90d_probability": ("customer_propensity", "churn_90d_probability", ("churn_propensity",)),
    "churn_90d_decile": ("customer_propensity", "churn_90d_decile", ("churn_propensity",)),
    "clv": ("customer_clv", "clv", ("bg_nbd", "gamma_gamma")),
    "probability_alive": ("customer_clv", "probability_alive", ("bg_nbd",)),
}


def test_customer_360_carries_this_runs_scores_for_every_scored_person(demo_home: Path) -> None:
    """The first run on a fresh home: customer_360 has every scored person's scores of this very run (the scored
    layer runs after the ML stage), the same values as the ml tables, none for non-buyers, and none at all from
    a model the run skipped (the 120-day demo is too short to train churn: its 90-day labels need older
    cut-offs). Who is scored (every buyer the ML stage may profile) is the ML stage's own test."""
    con = _published(demo_home)
    try:
        as_of = con.execute("select max(as_of) from marts.customer_360").fetchone()[0]
        status = dict(con.execute("select model_name, status from ml.model_runs where as_of = ?", [as_of]).fetchall())
        assert {"segments", "purchase_propensity", "bg_nbd", "gamma_gamma"} <= {
            model for model, state in status.items() if state == "trained"
        }, status
        for column, (table, source, models) in ML_COLUMNS.items():
            filled, differing, outside_buyers = con.execute(
                f"select count(c.{column}), count(*) filter (where c.{column} is distinct from m.{source}), "
                f"count(c.{column}) filter (where c.orders_count = 0) "
                f"from marts.customer_360 as c left join ml.{table} as m "
                f"on m.person_id = c.person_id and m.as_of = c.as_of"
            ).fetchone()
            not_in_360 = con.execute(
                f"select count(*) from ml.{table} where as_of = ? and {source} is not null "
                "and person_id not in (select person_id from marts.customer_360)",
                [as_of],
            ).fetchone()[0]
            assert (differing, outside_buyers, not_in_360) == (0, 0, 0), column
            assert (filled > 0) == all(status[model] == "trained" for model in models), column
        # every CLV decile is filled, and each tier holds the deciles the seed marts.clv_tiers gives it
        tiers = "select clv_tier, min(clv_decile), max(clv_decile), count(distinct clv_decile) from {} group by 1"
        assert sorted(con.execute(tiers.format("marts.customer_360 where clv is not null")).fetchall()) == sorted(
            con.execute(tiers.format("marts.clv_tiers")).fetchall()
        )
    finally:
        con.close()


def test_advancing_a_day_loads_only_the_new_day_and_keeps_person_ids(demo_home: Path) -> None:
    con = _published(demo_home)
    before_ids = dict(
        con.execute(
            "select source_entity || ':' || source_record_id, person_id from identity.person_map "
            "where source_entity in ('crm_contacts', 'shop_customers')"
        ).fetchall()
    )
    batches_before = {batch for (batch,) in con.execute("select batch_id from audit.load_batches").fetchall()}
    last_as_of = con.execute("select max(as_of) from marts.customer_rfm").fetchone()[0]
    con.close()

    assert touchpoint("generate", "--advance", "1", "--home", str(demo_home)).returncode == 0
    second = touchpoint("run", "--home", str(demo_home))
    assert second.returncode == 0, second.stdout + second.stderr

    con = _published(demo_home)
    try:
        new_batches = [
            (batch, str(extract_date))
            for batch, extract_date in con.execute("select batch_id, extract_date from audit.load_batches").fetchall()
            if batch not in batches_before
        ]
        as_of = con.execute("select max(as_of) from marts.customer_rfm").fetchone()[0]
        assert (as_of - last_as_of).days == 1
        assert new_batches, "the new day brought no batch"
        # only the new day's files and the shop rows changed since the last cursor are pulled
        assert {extract_date for _, extract_date in new_batches} == {str(as_of)}
        after_ids = dict(
            con.execute(
                "select source_entity || ':' || source_record_id, person_id from identity.person_map "
                "where source_entity in ('crm_contacts', 'shop_customers')"
            ).fetchall()
        )
        kept = sum(after_ids.get(key) == person for key, person in before_ids.items())
        assert kept / len(before_ids) > 0.99
        history = con.execute("select count(distinct as_of) from marts.customer_rfm_history").fetchone()[0]
        assert history == 2
    finally:
        con.close()


def test_a_single_entity_still_runs_end_to_end(tmp_path: Path) -> None:
    """Only shop orders: every other entity is empty downstream, models are skipped with a reason."""
    extracts = tmp_path / "extracts"
    extracts.mkdir()
    (extracts / "shop_orders.csv").write_bytes(require_conformance().joinpath("shop_orders.csv").read_bytes())
    result = touchpoint("run", "--extracts", str(extracts), "--as-of", "2026-03-31", "--home", str(tmp_path / "home"))
    assert result.returncode == 0, result.stdout + result.stderr
    work = duckdb.connect(str(tmp_path / "home" / "work" / "warehouse.duckdb"), read_only=True)
    try:
        assert work.execute("select count(*) from raw.crm_contacts").fetchone()[0] == 0
    finally:
        work.close()
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    try:
        # S-100 (3 orders before the as-of), S-300, S-999: customer ids seen only on orders are persons
        assert con.execute("select count(*) from marts.customer_rfm").fetchone()[0] == 3
        assert con.execute("select count(*) from audit.quarantine").fetchone()[0] == 1  # the 'abc' amount
        skipped = con.execute("select count(*) from ml.model_runs where status = 'skipped'").fetchone()[0]
        reasons = con.execute("select count(*) from ml.model_runs where status = 'skipped' and reason <> ''")
        assert skipped == 5 and reasons.fetchone()[0] == 5
    finally:
        con.close()
