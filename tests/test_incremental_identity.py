"""Incremental identity equals a rebuild, day after day (macros/incremental.sql, "Incremental identity.person_map").

A small demo world is extracted, loaded and stitched day by day, five builds. Each day the warehouse is copied
first: the original builds staging and identity on top of its own earlier days (a daily build rewrites only
the records that may have changed, and scores only the pairs of person records a changed record can move), the
copy rebuilds them with --full-refresh keeping the match model's estimates (as every daily build since the last
full build does), and identity.person_map, identity.persons, the scored pairs and the day's
identity.person_id_history rows must be the same. The days cover new records, a device logging in (a merge that
moves the device's past records), a never_link override (a split), a run back in time (records leave the view)
and forward again, four days, to the generator's next day; a rerun of a day must keep a row nothing changed,
and a full build that estimates again changes the pairs' weights only.
"""

from __future__ import annotations

import csv
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from sources.generator import advance, generate
from tests.conftest_identity import (
    altered_copy,
    dbt_build,
    extract_and_load,
    log_in_an_anonymous_device,
    query,
    rows_differing,
)

SELECT = "+person_map persons"
START = date(2026, 1, 1)
DAYS = 40
COMPARED = ("identity.person_map", "identity.persons", "intermediate.int_person_pairs_scored")
KEEP_ESTIMATES = {"identity_keep_estimates": True}


def build_both(home: Path, as_of: date, tmp_path: Path, before=None) -> dict[str, tuple[int, int, int]]:
    """Extract and load `as_of`, call `before(db)`, then build incrementally and, on a copy, in full; returns
    rows_differing for person_map, persons and the day's person_id_history rows."""
    db = extract_and_load(home, as_of, run_id=f"test-{as_of}")
    if before is not None:
        before(db)
    rebuilt = tmp_path / f"rebuilt-{len(list(tmp_path.iterdir()))}-{as_of}" / "warehouse.duckdb"
    rebuilt.parent.mkdir()
    shutil.copyfile(db, rebuilt)
    dbt_build(db, as_of.isoformat(), SELECT, command="run")
    # the rebuild keeps the estimates of the last full build, as the daily builds do (a full build with new
    # estimates differs by them: test_a_full_build_estimates_again)
    dbt_build(rebuilt, as_of.isoformat(), SELECT, "--full-refresh", command="run", dbt_vars=KEEP_ESTIMATES)
    for warehouse in (db, rebuilt):
        con = duckdb.connect(str(warehouse))
        try:
            con.execute("create or replace table main.history_today as "
                        "select * from identity.person_id_history where as_of = ?", [as_of])
        finally:
            con.close()
    return rows_differing(db, rebuilt, [*COMPARED, "main.history_today"])


def assert_same(found: dict[str, tuple[int, int, int]], as_of: date) -> None:
    for table, (rows, only_incremental, only_rebuilt) in found.items():
        assert (only_incremental, only_rebuilt) == (0, 0), (as_of, table, found)
        assert rows > 0 or table == "main.history_today", (as_of, table)


def never_link_a_linked_pair(home: Path, db: Path) -> tuple[str, str]:
    """A never_link override between two person records stitched into one person: identity must split them."""
    left, right = query(
        db,
        "select min(source_entity || ':' || source_record_id), max(source_entity || ':' || source_record_id) "
        "from identity.person_map where source_entity in ('crm_contacts', 'shop_customers') "
        "group by person_id having count(*) = 2 order by 1 limit 1",
    )[0]
    overrides = home / "identity" / "overrides.csv"
    overrides.parent.mkdir(parents=True, exist_ok=True)
    with overrides.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["left_record", "right_record", "decision", "reason"])
        writer.writerow([left, right, "never_link", "test: a split"])
    return left, right


def assert_untouched_records_keep_their_rows(db: Path, as_of: date, tmp_path: Path) -> None:
    """On a copy, one old web event's person_map row and one scored pair's row are altered where nothing says
    they changed; a rerun of the day must leave them (a build that rewrote every record, or scored every pair
    again, would restore them)."""
    def alter(con: duckdb.DuckDBPyConnection) -> tuple[str, tuple[str, str]]:
        record = con.execute(
            "select min(source_record_id) from identity.person_map where source_entity = 'web_events' "
            "and match_rule = 'anonymous_id'"
        ).fetchone()[0]
        assert record is not None
        con.execute("update identity.person_map set match_probability = -1 "
                    "where source_entity = 'web_events' and source_record_id = ?", [record])
        pair = con.execute("select left_node, right_node from intermediate.int_person_pairs_scored "
                           "order by all limit 1").fetchone()
        con.execute("update intermediate.int_person_pairs_scored set match_weight = -1 "
                    "where left_node = ? and right_node = ?", list(pair))
        return record, pair

    scratch, (record, pair) = altered_copy(db, tmp_path, alter)
    dbt_build(scratch, as_of.isoformat(), SELECT, command="run")
    assert query(
        scratch, "select match_probability from identity.person_map "
        "where source_entity = 'web_events' and source_record_id = ?", [record]
    ) == [(-1,)]
    assert query(scratch, "select match_weight from intermediate.int_person_pairs_scored "
                 "where left_node = ? and right_node = ?", list(pair)) == [(-1,)]
    shutil.rmtree(scratch.parent)


def assert_a_full_build_estimates_again(db: Path, as_of: date, tmp_path: Path, estimated: date) -> None:
    """The daily builds scored with the estimates of the last full build (`estimated`); a full build estimates
    again, and that is all it changes in the pair scores: the same candidate pairs, the same comparison levels,
    other weights. (person_map can differ by it too, where a pair's probability crosses the match threshold.)"""
    assert query(db, "select distinct estimated_as_of from intermediate.int_person_pairs_scored__estimates") == [
        (estimated,)
    ]
    rebuilt = tmp_path / "estimated-again" / "warehouse.duckdb"
    rebuilt.parent.mkdir()
    shutil.copyfile(db, rebuilt)
    dbt_build(rebuilt, as_of.isoformat(), SELECT, "--full-refresh", command="run")
    assert query(rebuilt, "select distinct estimated_as_of from intermediate.int_person_pairs_scored__estimates") == [
        (as_of,)
    ]
    con = duckdb.connect(str(db), read_only=True)
    try:
        con.execute(f"attach '{rebuilt}' as rebuilt (read_only)")
        pairs = "select left_node, right_node, blocking_rule, first_name, last_name, birth_date, contact from {}"
        table = "intermediate.int_person_pairs_scored"
        differing = con.execute(
            f"select count(*) from ({pairs.format(table)} except all {pairs.format('rebuilt.' + table)}) "
            f"union all select count(*) from ({pairs.format('rebuilt.' + table)} except all {pairs.format(table)})"
        ).fetchall()
        weights_moved = con.execute(
            f"select count(*) from {table} as mine join rebuilt.{table} as theirs using (left_node, right_node) "
            "where mine.match_weight <> theirs.match_weight"
        ).fetchone()[0]
    finally:
        con.close()
    assert differing == [(0,), (0,)], differing
    assert weights_moved > 0
    shutil.rmtree(rebuilt.parent)


def assert_history_recorded_once(home: Path, as_of: date) -> None:
    """The retried day's moves are in person_id_history once, not once per attempt."""
    from touchpoint.config import RunContext

    db = RunContext(as_of=as_of, home=home, run_id="test-history").paths.work_db
    rows, ids = query(db, "select count(*), count(distinct history_id) from identity.person_id_history "
                      "where as_of = ?", [as_of])[0]
    assert rows == ids > 0, (rows, ids)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("incremental_identity")
    generate(home / "sources", customers=300, days=DAYS, seed=7, start=START)
    return home


def test_incremental_person_map_equals_a_rebuild_every_day(world, tmp_path, monkeypatch):
    monkeypatch.setenv("TOUCHPOINT_HOME", str(world))  # where identity/overrides.csv is read
    last = START + timedelta(days=DAYS - 1)
    first = last - timedelta(days=3)
    split = {}

    def log_in(db: Path) -> None:
        split["device"] = log_in_an_anonymous_device(db, first + timedelta(days=1))
        # a build that fails after person_id_history and before person_map: the retry finds the same moves
        dbt_build(db, (first + timedelta(days=1)).isoformat(), "+person_id_history", command="run")

    def override(db: Path) -> None:
        split["pair"] = never_link_a_linked_pair(world, db)

    assert_same(build_both(world, first, tmp_path), first)
    found = build_both(world, first + timedelta(days=1), tmp_path, before=log_in)
    assert_same(found, first + timedelta(days=1))
    assert found["main.history_today"][0] > 0  # the device's records moved to the customer: a merge
    assert_history_recorded_once(world, first + timedelta(days=1))
    found = build_both(world, first + timedelta(days=2), tmp_path, before=override)
    assert_same(found, first + timedelta(days=2))
    db = extract_and_load(world, first + timedelta(days=2), run_id="test-rerun")
    left, right = split["pair"]
    persons = query(db, "select distinct person_id from identity.person_map "
                    "where source_entity || ':' || source_record_id in (?, ?)", [left, right])
    assert len(persons) == 2, persons  # the override split them
    assert query(db, "select count(*) from identity.person_id_history where as_of = ? and change_type = 'split'",
                 [first + timedelta(days=2)])[0][0] > 0
    assert query(db, "select count(*) from intermediate.int_records_remapped")[0][0] > 0  # it was a daily build
    assert_untouched_records_keep_their_rows(db, first + timedelta(days=2), tmp_path)
    assert_a_full_build_estimates_again(db, first + timedelta(days=2), tmp_path, estimated=first)

    # back in time (the later records leave the view), forward over the generator's next day
    assert_same(build_both(world, first, tmp_path), first)
    advance(world / "sources", days=1)
    assert_same(build_both(world, last + timedelta(days=1), tmp_path), last + timedelta(days=1))
    # the daily builds were incremental: the full build recorded on the first day is still the last one, and the
    # last build rewrote a part of the records only
    assert query(
        db, "select distinct full_build_end::date from audit.staged_batches where model like 'person_map:%'"
    ) == [(first + timedelta(days=1),)]
    # dbt-duckdb leaves a Python incremental model's new rows in main.<model>__dbt_tmp<time>: the post-hook drops it
    assert query(db, "select count(*) from duckdb_tables() where table_name like '%dbt_tmp%'") == [(0,)]
    remapped, mapped = query(db, "select (select count(*) from intermediate.int_records_remapped), "
                             "(select count(*) from identity.person_map)")[0]
    assert 0 < remapped < mapped / 2, (remapped, mapped)
