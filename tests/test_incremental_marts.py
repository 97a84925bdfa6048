"""Incremental fct_web_sessions and fct_funnel_steps equal a rebuild, day after day (macros/incremental.sql).

A small demo world is extracted, loaded and built day by day: staging, identity (which re-stitches people and
records their moves in person_id_history), fct_orders and the two marts, incrementally on top of their own
earlier days. Each day a copy of the warehouse rebuilds the two alone with --full-refresh from the same inputs,
and the tables must hold the same rows. The days cover new events and purchases, a device logging in (identity
moves its past sessions to a customer), a corrected extract that moves an old session's events to another
session id, a rerun of a day, a run back in time (sessions leave the view) and forward again over the
generator's next day.
"""

from __future__ import annotations

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

MART = "fct_web_sessions"
MARTS = (MART, "fct_funnel_steps")
SELECT = " ".join(MARTS)
# with identity.person_map, as the identity layer builds it: person_id_history compares each day with it
BUILT = " ".join(f"+{model}" for model in ("person_map", *MARTS))
START = date(2026, 1, 1)
DAYS = 40


def built_incrementally(home: Path, as_of: date) -> Path:
    db = extract_and_load(home, as_of, run_id=f"test-{as_of}")
    dbt_build(db, as_of.isoformat(), BUILT, command="run")
    return db


def rebuilt_copy(db: Path, as_of: date, tmp_path: Path) -> Path:
    copy = tmp_path / f"rebuilt-{len(list(tmp_path.iterdir()))}-{as_of}" / "warehouse.duckdb"
    copy.parent.mkdir()
    shutil.copyfile(db, copy)
    dbt_build(copy, as_of.isoformat(), SELECT, "--full-refresh", command="run")
    return copy


def assert_equals_a_rebuild(db: Path, as_of: date, tmp_path: Path) -> int:
    """Returns the sessions' row count."""
    found = rows_differing(db, rebuilt_copy(db, as_of, tmp_path), [f"marts.{mart}" for mart in MARTS])
    for mart, (rows, only_incremental, only_rebuilt) in found.items():
        assert rows > 0 and (only_incremental, only_rebuilt) == (0, 0), (as_of, mart)
    return found[f"marts.{MART}"][0]


def assert_untouched_sessions_are_not_rederived(db: Path, as_of: date, tmp_path: Path) -> None:
    """On a copy, an old session of a person who never bought and never moved is altered where nothing says it
    changed; a rerun of the day must leave it as it is (a build that re-derived every session would restore
    it)."""
    def alter(con: duckdb.DuckDBPyConnection) -> str:
        session_id = con.execute(
            f"select min(session_id) from marts.{MART} where ended_at < ? and person_id not in ("
            "  select person_id from marts.fct_orders where person_id is not null"
            "  union select previous_person_id from identity.person_id_history"
            "  union select person_id from identity.person_id_history)",
            [as_of - timedelta(days=5)],
        ).fetchone()[0]
        assert session_id is not None
        con.execute(f"update marts.{MART} set events_count = -1 where session_id = ?", [session_id])
        return session_id

    scratch, session_id = altered_copy(db, tmp_path, alter)
    dbt_build(scratch, as_of.isoformat(), SELECT, command="run")
    assert query(scratch, f"select events_count from marts.{MART} where session_id = ?", [session_id]) == [(-1,)]
    shutil.rmtree(scratch.parent)


def move_an_old_session(db: Path, as_of: date) -> str:
    """A corrected extract gives every event of an old, closed session another session id (a new raw version of
    each, in a batch of its own): the old session is left with no event, so a rebuild has no row for it. Returns
    the old session id."""
    con = duckdb.connect(str(db))
    try:
        # of a person nothing else re-derives (never bought, never moved): only the event versions can find it
        session_id = con.execute(
            f"select min(session_id) from marts.{MART} where ended_at < ? and session_id not like 'event:%' "
            "and person_id not in ("
            "  select person_id from marts.fct_orders where person_id is not null"
            "  union select previous_person_id from identity.person_id_history"
            "  union select person_id from identity.person_id_history)",
            [as_of - timedelta(days=5)],
        ).fetchone()[0]
        assert session_id is not None
        con.execute(
            "insert into raw.web_events select * replace ("
            "  'moved-' || session_id as session_id, 'test-moved-session' as _batch_id,"
            "  _extracted_at + interval 1 second as _extracted_at) "
            "from raw.web_events where trim(session_id) = ? "
            "qualify row_number() over (partition by event_id order by _extracted_at desc, _batch_id desc,"
            "  _row_number desc) = 1",
            [session_id],
        )
    finally:
        con.close()
    return session_id


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("incremental_marts")
    generate(home / "sources", customers=300, days=DAYS, seed=5, start=START)
    return home


def test_incremental_web_sessions_equal_a_rebuild_every_day(world, tmp_path):
    last = START + timedelta(days=DAYS - 1)
    first = last - timedelta(days=3)
    rows = []
    for as_of in (first, first + timedelta(days=1), first + timedelta(days=2)):
        db = extract_and_load(world, as_of, run_id=f"test-{as_of}")
        if as_of == first:
            dbt_build(db, as_of.isoformat(), "funnel_steps", command="seed")  # `dbt run` builds no seed
        if as_of == first + timedelta(days=1):
            device = log_in_an_anonymous_device(db, as_of)
        if as_of == first + timedelta(days=2):
            moved = move_an_old_session(db, as_of)
        dbt_build(db, as_of.isoformat(), BUILT, command="run")
        rows.append(assert_equals_a_rebuild(db, as_of, tmp_path))
        if as_of == first + timedelta(days=1):
            # the device's past sessions moved to the customer's person: the rule's hard case
            assert query(db, "select count(*) from identity.person_id_history where as_of = ?", [as_of])[0][0] > 0
            assert query(
                db, f"select count(distinct person_id), count(*) > 2 from marts.{MART} where anonymous_id = ?",
                [device],
            ) == [(1, True)]
        if as_of == first + timedelta(days=2):
            # its events are in their new session, and its own row is gone (in both builds, compared above)
            assert query(db, f"select session_id from marts.{MART} where session_id in (?, ?)",
                         [moved, f"moved-{moved}"]) == [(f"moved-{moved}",)]
    # the first build recorded its batches; the later ones were incremental on top of it
    assert query(
        db, "select max(as_of_end)::date, max(full_build_end)::date from audit.staged_batches where model = ?", [MART]
    ) == [(first + timedelta(days=3), first + timedelta(days=1))]
    assert_untouched_sessions_are_not_rederived(db, first + timedelta(days=2), tmp_path)

    # a rerun of the day, then back in time (the later sessions leave the view) and forward again over the
    # generator's next day
    db = built_incrementally(world, first + timedelta(days=2))
    assert_equals_a_rebuild(db, first + timedelta(days=2), tmp_path)
    db = built_incrementally(world, first)
    assert assert_equals_a_rebuild(db, first, tmp_path) == rows[0]
    advance(world / "sources", days=1)
    for as_of in (last, last + timedelta(days=1)):
        db = built_incrementally(world, as_of)
        rows.append(assert_equals_a_rebuild(db, as_of, tmp_path))
    assert rows == sorted(rows) and rows[0] < rows[-1], rows  # the days did add sessions
    # and none of those builds was a rebuild in disguise
    assert query(db, "select distinct full_build_end::date from audit.staged_batches where model = ?", [MART]) == [
        (first + timedelta(days=1),)
    ]
