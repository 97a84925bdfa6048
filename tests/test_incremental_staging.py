"""Incremental staging equals a rebuild, day after day (macros/incremental.sql).

A small demo world is extracted and loaded day by day. Each day the same warehouse is copied: the original
builds the event staging tables incrementally, on top of its own earlier days, the copy rebuilds them with
--full-refresh, and the two tables must hold the same rows. The days cover what changes a key's latest
version: new batches, a day of the generator's own (advance), a run back in time (a backfill: events leave the
view) and forward again, and rows deleted from raw and staging as an erasure does.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from sources.generator import advance, generate
from tests.conftest_identity import dbt_build, execute, extract_and_load, rows_differing
from touchpoint.incremental import FullRefreshSettingError, full_refresh_reason
from touchpoint.privacy.erasure import forget_staged_batches

EVENT_TABLES = ("stg_web__events", "stg_email__events")
SELECT = " ".join(EVENT_TABLES)
START = date(2026, 1, 1)
DAYS = 40


def load_day(home: Path, as_of: date) -> Path:
    return extract_and_load(home, as_of, run_id=f"test-{as_of}")


def differences(incremental: Path, rebuilt: Path) -> dict[str, tuple[int, int, int]]:
    """Per event table: (rows, rows only in the incremental table, rows only in the rebuilt one)."""
    found = rows_differing(incremental, rebuilt, [f"staging.{table}" for table in EVENT_TABLES])
    return {table.removeprefix("staging."): counts for table, counts in found.items()}


def build_both(db: Path, as_of: date, tmp_path: Path) -> dict[str, tuple[int, int, int]]:
    rebuilt = tmp_path / f"rebuilt-{len(list(tmp_path.iterdir()))}-{as_of}" / "warehouse.duckdb"
    rebuilt.parent.mkdir()
    shutil.copyfile(db, rebuilt)
    dbt_build(db, as_of.isoformat(), SELECT, command="run")
    dbt_build(rebuilt, as_of.isoformat(), SELECT, "--full-refresh", command="run")
    return differences(db, rebuilt)


def assert_only_changed_keys_are_rederived(db: Path, as_of: date, tmp_path: Path) -> None:
    """On a copy, one staged event is altered where no raw version says so; a build with nothing new must leave
    it as it is (a build that re-derived every key would restore it)."""
    scratch = tmp_path / "scratch" / "warehouse.duckdb"
    scratch.parent.mkdir()
    shutil.copyfile(db, scratch)
    con = duckdb.connect(str(scratch))
    try:
        event_id = con.execute("select min(event_id) from staging.stg_web__events").fetchone()[0]
        con.execute("update staging.stg_web__events set page_url = 'sentinel' where event_id = ?", [event_id])
    finally:
        con.close()
    dbt_build(scratch, as_of.isoformat(), SELECT, command="run")
    con = duckdb.connect(str(scratch), read_only=True)
    try:
        assert con.execute(
            "select page_url from staging.stg_web__events where event_id = ?", [event_id]
        ).fetchone() == ("sentinel",)
    finally:
        con.close()
    shutil.rmtree(scratch.parent)


def built_as_of(home: Path, as_of: date) -> Path:
    """The world's warehouse loaded and its event tables built (incrementally) as of `as_of`."""
    db = load_day(home, as_of)
    dbt_build(db, as_of.isoformat(), SELECT, command="run")
    return db


def staged_state(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "select model, count(*), max(as_of_end), max(full_build_end) from audit.staged_batches "
            "group by 1 order by 1"
        ).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("incremental_staging")
    generate(home / "sources", customers=250, days=DAYS, seed=3, start=START)
    return home


def test_incremental_event_staging_equals_a_rebuild_every_day(world, tmp_path):
    home = world
    last = START + timedelta(days=DAYS - 1)
    days = [last - timedelta(days=4), last - timedelta(days=3), last - timedelta(days=2)]
    seen_rows: dict[str, list[int]] = {table: [] for table in EVENT_TABLES}
    for as_of in days:
        db = load_day(home, as_of)
        for table, (rows, only_incremental, only_rebuilt) in build_both(db, as_of, tmp_path).items():
            assert (only_incremental, only_rebuilt) == (0, 0), (as_of, table)
            seen_rows[table].append(rows)
    # the first build recorded its batches; the later ones were incremental on top of it
    first_end = days[0] + timedelta(days=1)
    assert [(model, end.date(), full.date()) for model, _, end, full in staged_state(db)] == [
        (table, days[-1] + timedelta(days=1), first_end) for table in sorted(EVENT_TABLES)
    ]

    assert_only_changed_keys_are_rederived(db, days[-1], tmp_path)

    # back in time (a backfill of an earlier day): the later events leave the view
    back = days[0]
    for table, (_, only_incremental, only_rebuilt) in build_both(db, back, tmp_path).items():
        assert (only_incremental, only_rebuilt) == (0, 0), (back, table)
    # and forward again, over the generator's next day (a new day's batches)
    advance(home / "sources", days=1)
    for as_of in (last, last + timedelta(days=1)):
        db = load_day(home, as_of)
        for table, (rows, only_incremental, only_rebuilt) in build_both(db, as_of, tmp_path).items():
            assert (only_incremental, only_rebuilt) == (0, 0), (as_of, table)
            seen_rows[table].append(rows)
    for rows in seen_rows.values():  # the days did add events
        assert rows == sorted(rows) and rows[0] < rows[-1], seen_rows
    # and none of those builds was a rebuild in disguise
    assert {full.date() for _, _, _, full in staged_state(db)} == {first_end}


def test_rows_erased_from_raw_and_staging_stay_erased(world, tmp_path):
    """privacy/erasure.py deletes a person's raw rows and their staged rows; the next incremental build sees
    the batches' counts change, re-derives their keys and brings nothing back."""
    as_of = START + timedelta(days=DAYS - 1)
    db = built_as_of(world, as_of)
    con = duckdb.connect(str(db))
    try:
        erased = [row[0] for row in con.execute(
            "select distinct trim(event_id) from raw.web_events order by 1 limit 25").fetchall()]
        con.execute("delete from raw.web_events where list_contains(?, trim(event_id))", [erased])
        con.execute("delete from staging.stg_web__events where list_contains(?, event_id)", [erased])
    finally:
        con.close()
    for table, (_, only_incremental, only_rebuilt) in build_both(db, as_of, tmp_path).items():
        assert (only_incremental, only_rebuilt) == (0, 0), table
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute(
            "select count(*) from staging.stg_web__events where list_contains(?, event_id)", [erased]
        ).fetchone()[0] == 0
    finally:
        con.close()


def test_full_refresh_is_forced_scheduled_or_not_at_all(tmp_path, monkeypatch):
    db = str(tmp_path / "warehouse.duckdb")
    end = datetime(2026, 3, 10)
    assert full_refresh_reason(db, end) == "first build"  # no warehouse yet
    con = duckdb.connect(db)
    con.execute("create schema audit")
    con.close()
    assert full_refresh_reason(db, end) == "first build"  # a warehouse from before audit.staged_batches
    con = duckdb.connect(db)
    con.execute("create table audit.staged_batches (model varchar, batch_id varchar, rows bigint, "
                "as_of_end timestamp, full_build_end timestamp, invocation_id varchar)")
    con.execute(
        "insert into audit.staged_batches values ('stg_web__events', 'b1', 3, '2026-03-09', '2026-03-04', 'i'),"
        " ('stg_email__events', 'b2', 3, '2026-03-09', '2026-03-02', 'i')"
    )
    con.close()
    monkeypatch.delenv("TOUCHPOINT_FULL_REFRESH", raising=False)
    monkeypatch.delenv("TOUCHPOINT_FULL_REFRESH_EVERY_DAYS", raising=False)
    # the older of the two models' last full builds counts: 8 days before, then 6 days before the as-of end
    assert full_refresh_reason(db, end) == "schedule"
    assert full_refresh_reason(db, datetime(2026, 3, 8)) is None
    monkeypatch.setenv("TOUCHPOINT_FULL_REFRESH_EVERY_DAYS", "5")
    assert full_refresh_reason(db, datetime(2026, 3, 7)) == "schedule"
    monkeypatch.setenv("TOUCHPOINT_FULL_REFRESH", "always")
    assert full_refresh_reason(db, datetime(2026, 3, 3)) == "forced"
    monkeypatch.setenv("TOUCHPOINT_FULL_REFRESH", "sometimes")
    with pytest.raises(FullRefreshSettingError, match="TOUCHPOINT_FULL_REFRESH"):
        full_refresh_reason(db, end)


def test_an_erased_version_gives_way_to_the_version_that_survived(world, tmp_path):
    """An event with two versions in two batches: the later one is staged. When an erasure deletes that version
    (its batch keeps another row), the earlier version must come back, as a rebuild would bring it."""
    as_of = START + timedelta(days=DAYS - 1)
    db = built_as_of(world, as_of)
    con = duckdb.connect(str(db))
    try:
        first, second = [row[0] for row in con.execute(
            "select trim(event_id) from raw.web_events where occurred_at < ? order by 1 limit 2", [as_of]
        ).fetchall()]
        # a later extraction of both events, with another page_url: the new latest versions
        con.execute(
            "insert into raw.web_events select * replace ('https://shop.example/v2' as page_url, "
            "'web_events-manual-v2' as _batch_id, _extracted_at + interval 1 day as _extracted_at) "
            "from raw.web_events where list_contains(?, trim(event_id))",
            [[first, second]],
        )
    finally:
        con.close()
    dbt_build(db, as_of.isoformat(), SELECT, command="run")
    assert page_urls(db, first, second) == ["https://shop.example/v2"] * 2
    con = duckdb.connect(str(db))
    try:  # the erasure's part: the later version of `first` goes from raw, the record from staging
        con.execute("delete from raw.web_events where _batch_id = 'web_events-manual-v2' and trim(event_id) = ?",
                    [first])
        con.execute("delete from staging.stg_web__events where event_id = ?", [first])
        forget_staged_batches(con, "stg_web__events", "web_events", "event_id", f"select '{first}'")
    finally:
        con.close()
    for table, (_, only_incremental, only_rebuilt) in build_both(db, as_of, tmp_path).items():
        assert (only_incremental, only_rebuilt) == (0, 0), table
    restored, kept = page_urls(db, first, second)
    assert restored != "https://shop.example/v2" and kept == "https://shop.example/v2"


def page_urls(db: Path, *event_ids: str) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [con.execute("select page_url from staging.stg_web__events where event_id = ?", [event_id]
                            ).fetchone()[0] for event_id in event_ids]
    finally:
        con.close()


def test_batches_gone_from_raw_force_a_rebuild(tmp_path, monkeypatch):
    """A staged batch held or dropped out of raw leaves rows no raw version points to: only a rebuild drops them."""
    db = str(tmp_path / "warehouse.duckdb")
    con = duckdb.connect(db)
    con.execute("create schema audit")
    con.execute("create schema raw")
    con.execute("create table raw.web_events (event_id varchar, _batch_id varchar)")
    con.execute("insert into raw.web_events values ('e1', 'b1'), ('e2', 'b2')")
    con.execute("create table audit.staged_batches (model varchar, batch_id varchar, rows bigint, "
                "as_of_end timestamp, full_build_end timestamp, invocation_id varchar)")
    con.execute("insert into audit.staged_batches values ('stg_web__events', 'b1', 1, '2026-03-09', '2026-03-08', 'i'),"
                " ('stg_web__events', 'b2', 1, '2026-03-09', '2026-03-08', 'i')")
    con.close()
    monkeypatch.delenv("TOUCHPOINT_FULL_REFRESH", raising=False)
    monkeypatch.delenv("TOUCHPOINT_FULL_REFRESH_EVERY_DAYS", raising=False)
    assert full_refresh_reason(db, datetime(2026, 3, 10)) is None
    con = duckdb.connect(db)
    con.execute("delete from raw.web_events where _batch_id = 'b2'")  # `touchpoint batches drop b2`
    con.close()
    assert full_refresh_reason(db, datetime(2026, 3, 10)) == "batches left raw"


def test_a_layer_whose_last_build_failed_is_rebuilt_in_full(tmp_path, monkeypatch):
    """An incremental model commits its rows before its tests run: after a failed build, the next builds on them
    only once a full build has replaced them."""
    from touchpoint.config import RunContext
    from touchpoint.dbt import _full_refresh_reason

    monkeypatch.delenv("TOUCHPOINT_FULL_REFRESH", raising=False)
    ctx = RunContext(as_of=date(2026, 3, 9), home=tmp_path, run_id="r")
    kept = ctx.paths.work / "dbt_target" / "identity" / "run_results.json"
    kept.parent.mkdir(parents=True)
    assert _full_refresh_reason(ctx, "identity") == "first build"  # no warehouse yet
    results = [{"unique_id": "model.touchpoint.person_map", "status": "success", "execution_time": 1.0},
               {"unique_id": "test.touchpoint.unique_person_map", "status": "fail", "execution_time": 0.1}]
    kept.write_text(json.dumps({"results": results}))
    assert _full_refresh_reason(ctx, "identity") == "last build failed"
    assert _full_refresh_reason(ctx, "scored") is None  # no incremental model there
    results[1]["status"] = "pass"
    kept.write_text(json.dumps({"results": results}))
    assert _full_refresh_reason(ctx, "identity") == "first build"



def invocations(db: Path) -> dict[str, int]:
    """_invocation_id -> rows of stg_web__events it wrote."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return dict(con.execute("select _invocation_id, count(*) from staging.stg_web__events group by 1").fetchall())
    finally:
        con.close()


def test_a_daily_build_tests_the_rows_it_wrote_and_a_bare_test_every_row(world, tmp_path):
    """The event tables' unique and not_null tests are scoped to the rows their build wrote (macros/test_scope.sql):
    an earlier row made a duplicate behind the builds' back is outside a daily build's scope, and inside that of
    `dbt test` alone, which built nothing, and of a full build, which rewrites every row (and so drops it)."""
    as_of = START + timedelta(days=DAYS - 3)
    db = built_as_of(world, as_of)
    execute(db, "insert into staging.stg_web__events select * from staging.stg_web__events "
                "where event_id = (select min(event_id) from staging.stg_web__events)")
    before = invocations(db)

    next_day = as_of + timedelta(days=1)
    load_day(world, next_day)
    dbt_build(db, next_day.isoformat(), "stg_web__events")  # its tests pass: the duplicate is not its row
    after = invocations(db)
    [(daily, written)] = [(invocation, rows) for invocation, rows in after.items() if invocation not in before]
    assert 0 < written < sum(after.values()) / 10, after  # a day's events, not a rebuild

    generic = "stg_web__events,test_type:generic"  # its own tests, not the whole-set ones reading other models
    bare = dbt_build(db, next_day.isoformat(), generic, command="test", check=False)
    assert bare.returncode != 0, bare.stdout[-3000:]
    assert "FAIL 1 unique_stg_web__events_event_id" in bare.stdout, bare.stdout[-3000:]

    dbt_build(db, next_day.isoformat(), "stg_web__events", "--full-refresh")
    assert daily not in invocations(db)
    dbt_build(db, next_day.isoformat(), generic, command="test")


def test_a_layer_whose_last_build_never_finished_is_rebuilt_in_full(tmp_path, monkeypatch):
    """An interrupted build (Ctrl-C, Airflow's SIGTERM, a kill) leaves no run results: the marker its start left
    makes the next build a full one, as a failed build's results do; a build that returned removes it."""
    from touchpoint import dbt
    from touchpoint.config import RunContext

    monkeypatch.delenv("TOUCHPOINT_FULL_REFRESH", raising=False)
    ctx = RunContext(as_of=date(2026, 3, 9), home=tmp_path, run_id="r")
    target = tmp_path / "target"
    target.mkdir()
    kept = ctx.paths.work / "dbt_target" / "staging" / "run_results.json"
    passed = [{"unique_id": "model.touchpoint.stg_web__events", "status": "success", "execution_time": 1.0}]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def finished(*args, **kwargs):
        (target / "run_results.json").write_text(json.dumps({"results": passed}))
        return dbt.DbtInvocation(succeeded=True, output="")

    monkeypatch.setattr(dbt, "_run_dbt", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dbt._build_and_check(ctx, ["build"], target, "staging", None)
    assert dbt._full_refresh_reason(ctx, "staging") == "last build failed"
    monkeypatch.setattr(dbt, "_run_dbt", finished)
    dbt._build_and_check(ctx, ["build"], target, "staging", "last build failed")
    assert json.loads(kept.read_text())["results"] == passed
    assert dbt._full_refresh_reason(ctx, "staging") == "first build"  # no warehouse here: not the marker's reason
