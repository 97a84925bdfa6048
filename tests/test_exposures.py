"""The dbt exposures are the syncs: one per definition in activation/syncs/, reading exactly the same tables.

dbt docs draw the lineage from marts (and the ml source) to each exposure; a sync renamed, added or pointed at
another table without its exposure would make that lineage lie about what leaves the warehouse.
"""

from __future__ import annotations

from pathlib import Path

from tests.dbt_manifest import parse_manifest, relation
from touchpoint.activation import load_sync_definitions
from touchpoint.activation.sql_guard import source_tables


def test_each_sync_has_an_exposure_reading_the_tables_it_reads(tmp_path: Path) -> None:
    manifest = parse_manifest(tmp_path)
    nodes = {**manifest["nodes"], **manifest["sources"]}
    exposures = {
        exposure["name"]: {relation(nodes[node_id]) for node_id in exposure["depends_on"]["nodes"]}
        for exposure in manifest["exposures"].values()
    }
    syncs = {sync.name: source_tables(sync.source_sql) for sync in load_sync_definitions()}
    assert set(syncs) == {"high_clv_audience", "churn_risk_audience", "segments_api"}
    assert exposures == syncs
    assert all(e["description"] and e["owner"]["name"] for e in manifest["exposures"].values())


def test_source_tables_are_the_published_tables_a_query_reads() -> None:
    sql = (
        "with latest as (select person_id from ml.customer_clv) "
        "select c.person_id from marts.customer_360 as c inner join latest using (person_id) "
        "where c.person_id in (select person_id from identity.persons)"
    )
    assert source_tables(sql) == {"ml.customer_clv", "marts.customer_360", "identity.persons"}
