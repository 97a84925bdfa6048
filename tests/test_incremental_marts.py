"""Incremental fct_web_sessions, fct_funnel_steps, fct_email_engagement, fct_conversion_paths and the Markov
chain's per-person moves equal a rebuild, day after day (macros/incremental.sql, macros/attribution.sql).

A small demo world is extracted, loaded and built day by day: staging, identity (which re-stitches people and
records their moves in person_id_history), fct_orders, fct_touchpoints and the four marts, incrementally on top of
their own earlier days. Each day a copy of the warehouse rebuilds the four alone with --full-refresh from the same
inputs, and the tables must hold the same rows. The days cover new events and purchases, a device logging in
(identity moves its past sessions to a customer), two emailed persons linked by an override (a merge), a
corrected extract that moves an old session's events to another session id and an old email event to another
campaign, another that changes an old purchase's amount, an email to an address seen nowhere else, a rerun of a
day, a run back in time (sessions and that email leave the view) and forward again over the generator's next day.
"""

from __future__ import annotations

import csv
import re
import shutil
from datetime import date, datetime, time, timedelta
from pathlib import Path

import duckdb
import pytest

from sources.generator import advance, generate
from tests.conftest_identity import (
    altered_copy,
    dbt_build,
    execute,
    extract_and_load,
    log_in_an_anonymous_device,
    query,
    rows_differing,
)

MART = "fct_web_sessions"
EMAIL_MART = "fct_email_engagement"
PATHS_MART = "fct_conversion_paths"
MARKOV_MART = "attribution_markov_transitions"
MARTS = (MART, "fct_funnel_steps", EMAIL_MART, PATHS_MART, MARKOV_MART)
SELECT = " ".join(MARTS)
# the chain's moves per person, which attribution_markov_transitions keeps and sums (macros/attribution.sql)
PERSON_MOVES = "intermediate.attribution_markov_transitions__person_moves"
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
    found = rows_differing(db, rebuilt_copy(db, as_of, tmp_path), [*(f"marts.{mart}" for mart in MARTS), PERSON_MOVES])
    for mart, (rows, only_incremental, only_rebuilt) in found.items():
        assert rows > 0 and (only_incremental, only_rebuilt) == (0, 0), (as_of, mart)
    return found[f"marts.{MART}"][0]


# Rows nothing points at, per table: (its key, the time its events end, a condition that keeps out the persons
# whose rows a day re-derives for other reasons, and a count column the check alters). Sessions convert with
# their person's purchases. A person's moves are counted again only with the person's paths.
NOT_MOVED = ("person_id not in (select previous_person_id from identity.person_id_history "
             "union select person_id from identity.person_id_history)")
UNTOUCHED = {
    f"marts.{MART}": ("session_id", "ended_at",
           f"{NOT_MOVED} and person_id not in (select person_id from marts.fct_orders where person_id is not null)",
           "events_count"),
    f"marts.{EMAIL_MART}": ("email_engagement_id", "last_event_at", NOT_MOVED, "events_count"),
    f"marts.{PATHS_MART}": ("conversion_path_id", "ordered_at", NOT_MOVED, "touches_count"),
    PERSON_MOVES: ("concat_ws('|', person_id, from_state, to_state)",
                   "(select max(touched_at) from marts.fct_touchpoints as touches "
                   f"where touches.person_id = {PERSON_MOVES.split('.')[1]}.person_id)",
                   f"{NOT_MOVED} and to_state = '(conversion)'", "transitions_count"),
}


def assert_untouched_rows_are_not_rederived(db: Path, as_of: date, tmp_path: Path) -> None:
    """On a copy, an old row of each table (a session, a person's campaign, a touch on a path, a person's moves) of
    a person nothing re-derives is
    altered where nothing says it changed; a rerun of the day must leave it as it is (a build that re-derived
    every row would restore it)."""
    def alter(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
        altered = {}
        for table, (key, ended, untouched, count) in UNTOUCHED.items():
            (altered[table],), = con.execute(f"select min({key}) from {table} where {ended} < ? and {untouched}",
                                             [as_of - timedelta(days=5)]).fetchall()
            assert altered[table] is not None, table
            con.execute(f"update {table} set {count} = -1 where {key} = ?", [altered[table]])
        return altered

    scratch, altered = altered_copy(db, tmp_path, alter)
    dbt_build(scratch, as_of.isoformat(), SELECT, command="run")
    for table, (key, _, _, count) in UNTOUCHED.items():
        assert query(scratch, f"select {count} from {table} where {key} = ?", [altered[table]]) == [(-1,)], table
    shutil.rmtree(scratch.parent)


def insert_corrected_versions(con: duckdb.DuckDBPyConnection, table: str, replaced: str, where: str,
                              params: list[object], key: str = "event_id") -> None:
    """A corrected extract of raw `table` (keyed by `key`): a new version of the latest version of each row `where`
    selects, with `replaced` (a DuckDB `replace` list), in a batch of its own extracted a second later."""
    con.execute(
        f"insert into raw.{table} select * replace ({replaced}, 'test-corrected' as _batch_id,"
        "  _extracted_at + interval 1 second as _extracted_at) "
        f"from raw.{table} where {where} "
        f"qualify row_number() over (partition by {key} order by _extracted_at desc, _batch_id desc,"
        "  _row_number desc) = 1",
        params,
    )


def correct_the_chosen(db: Path, choose: str, params: list[object], table: str, replaced: str, key: str) -> str:
    """A corrected extract of the rows of raw `table` whose trimmed `key` is the value `choose` selects (it must
    find one): returns that value."""
    con = duckdb.connect(str(db))
    try:
        (chosen,), = con.execute(choose, params).fetchall()
        assert chosen is not None, choose
        insert_corrected_versions(con, table, replaced, f"trim({key}) = ?", [chosen])
    finally:
        con.close()
    return chosen


def reprice_an_old_purchase(db: Path, as_of: date) -> tuple[str, object]:
    """A corrected extract changes the amount of an old purchase on a conversion path (a new version of the shop
    order, updated on the day): its path's rows keep their count and keys, and only their conversion value
    changes. Returns the order and its new amount."""
    con = duckdb.connect(str(db))
    try:
        order_id, shop_order_id = con.execute(
            "select paths.order_id, orders.source_record_id from ("
            f"  select order_id from marts.{PATHS_MART}"
            f"  where order_channel = 'online' and ordered_at < ? and {NOT_MOVED}"
            ") as paths join marts.fct_orders as orders using (order_id) order by paths.order_id limit 1",
            [as_of - timedelta(days=5)],
        ).fetchone()
        insert_corrected_versions(
            con, "shop_orders", "total_amount + 1 as total_amount, ?::timestamp as updated_at",
            "trim(order_id) = ?", [datetime.combine(as_of, time(12)), shop_order_id], key="order_id",
        )
        (amount,), = con.execute("select total_amount from raw.shop_orders where _batch_id = 'test-corrected' "
                                 "and trim(order_id) = ?", [shop_order_id]).fetchall()
    finally:
        con.close()
    return order_id, amount


def move_an_old_email_event(db: Path, as_of: date) -> str:
    """A corrected extract gives an old email event another campaign (a new raw version in a batch of its own):
    its person's old campaign row loses the event and a new (person, campaign) row appears. Returns the event."""
    # of a person who never moved: a move re-derives all of a person's rows, and would hide a rule that forgot
    # the event's old campaign
    return correct_the_chosen(
        db,
        "select min(events.event_id) from staging.stg_email__events as events "
        "join identity.person_map on source_entity = 'email_events' and source_record_id = events.event_id "
        f"where occurred_at < ? and campaign_id is not null and email is not null and {NOT_MOVED}",
        [as_of - timedelta(days=5)], "email_events", "'test-recampaigned' as campaign_id", "event_id",
    )


def link_two_emailed_persons(home: Path, db: Path) -> tuple[tuple[str, str], ...]:
    """An always_link override between person records of two persons who both have email engagement rows:
    identity merges them, and the rows of the person whose id goes must move to the one that stays."""
    first, second = query(
        db,
        "select person_id, min(source_entity || ':' || source_record_id) from identity.person_map "
        "where source_entity in ('crm_contacts', 'shop_customers') "
        f"and person_id in (select person_id from marts.{EMAIL_MART}) "
        "group by person_id order by person_id limit 2",
    )
    overrides = home / "identity" / "overrides.csv"
    overrides.parent.mkdir(parents=True, exist_ok=True)
    with overrides.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["left_record", "right_record", "decision", "reason"])
        writer.writerow([first[1], second[1], "always_link", "test: a merge of two emailed persons"])
    return first, second  # (person id, record) each


def email_a_new_address(db: Path, as_of: date) -> None:
    """An email event on the day to an address nothing else has: a node and a person of its own, which a run
    back in time before the day takes away again, with its engagement row."""
    con = duckdb.connect(str(db))
    try:
        con.execute(
            "insert into raw.email_events select * replace ("
            "  'test-new-address' as event_id, 'only-once@example.com' as email, ? as occurred_at,"
            "  'test-new-address' as _batch_id, _extracted_at + interval 1 second as _extracted_at) "
            "from raw.email_events order by event_id limit 1",
            [datetime.combine(as_of, time(12))],
        )
    finally:
        con.close()


def new_address_person(db: Path) -> str:
    """The person email_a_new_address's event is stitched to."""
    return query(db, "select person_id from identity.person_map "
                 "where source_entity = 'email_events' and source_record_id = 'test-new-address'")[0][0]


def move_an_old_session(db: Path, as_of: date) -> str:
    """A corrected extract gives every event of an old, closed session another session id (a new raw version of
    each, in a batch of its own): the old session is left with no event, so a rebuild has no row for it. Returns
    the old session id."""
    # of a person nothing else re-derives (never bought, never moved): only the event versions can find it
    return correct_the_chosen(
        db,
        f"select min(session_id) from marts.{MART} where ended_at < ? and session_id not like 'event:%' "
        "and person_id not in ("
        "  select person_id from marts.fct_orders where person_id is not null"
        "  union select previous_person_id from identity.person_id_history"
        "  union select person_id from identity.person_id_history)",
        [as_of - timedelta(days=5)], "web_events", "'moved-' || session_id as session_id", "session_id",
    )


def rechannel_an_old_session(db: Path, as_of: date) -> str:
    """A corrected extract gives every event of an old session of a known person with nothing new (no touch or
    purchase in five days) another channel: the person's touches, paths and purchases keep their count and keys,
    and only a touch's channel (a state of the Markov chain) changes. Returns the session id."""
    return correct_the_chosen(
        db,
        f"select max(session_id) from marts.{MART} where ended_at < ? and session_id not like 'event:%' "
        f"and person_id is not null and {NOT_MOVED} and person_id not in ("
        "  select person_id from marts.fct_touchpoints where touched_at >= ?"
        "  union select person_id from marts.fct_orders where ordered_at >= ? and person_id is not null)",
        [as_of - timedelta(days=5)] * 3, "web_events", "'test-rechannelled' as channel", "session_id",
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("incremental_marts")
    generate(home / "sources", customers=300, days=DAYS, seed=5, start=START)
    return home


def test_incremental_web_sessions_equal_a_rebuild_every_day(world, tmp_path, monkeypatch):
    monkeypatch.setenv("TOUCHPOINT_HOME", str(world))  # where identity/overrides.csv is read
    last = START + timedelta(days=DAYS - 1)
    first = last - timedelta(days=3)
    rows = []
    for as_of in (first, first + timedelta(days=1), first + timedelta(days=2)):
        db = extract_and_load(world, as_of, run_id=f"test-{as_of}")
        if as_of == first:
            dbt_build(db, as_of.isoformat(), "funnel_steps", command="seed")  # `dbt run` builds no seed
        if as_of == first + timedelta(days=1):
            device = log_in_an_anonymous_device(db, as_of)
            linked = link_two_emailed_persons(world, db)
        if as_of == first + timedelta(days=2):
            moved = move_an_old_session(db, as_of)
            move_an_old_email_event(db, as_of)
            email_a_new_address(db, as_of)
            repriced, amount = reprice_an_old_purchase(db, as_of)
            rechannel_an_old_session(db, as_of)
        dbt_build(db, as_of.isoformat(), BUILT, command="run")
        rows.append(assert_equals_a_rebuild(db, as_of, tmp_path))
        if as_of == first:
            # the first build keeps the fingerprints its moves were counted from, so the next one is daily (a
            # check of dbt's relation cache, filled before fct_conversion_paths made them, once missed them)
            assert query(db, f"select count(*) > 0 from {PERSON_MOVES.replace('person_moves', 'inputs')}")[0][0]
        if as_of == first + timedelta(days=1):
            # the device's past sessions moved to the customer's person: the rule's hard case
            assert query(db, "select count(*) from identity.person_id_history where as_of = ?", [as_of])[0][0] > 0
            assert query(
                db, f"select count(distinct person_id), count(*) > 2 from marts.{MART} where anonymous_id = ?",
                [device],
            ) == [(1, True)]
            # the two emailed persons are one now, and every engagement row of theirs is under its id
            (merged,), = query(db, "select distinct person_id from identity.person_map "
                               "where source_entity || ':' || source_record_id in (?, ?)", [r for _, r in linked])
            assert query(db, f"select count(*) from marts.{EMAIL_MART} where person_id in (?, ?) and person_id <> ?",
                         [*(p for p, _ in linked), merged]) == [(0,)]
        if as_of == first + timedelta(days=2):
            # its events are in their new session, and its own row is gone (in both builds, compared above)
            assert query(db, f"select session_id from marts.{MART} where session_id in (?, ?)",
                         [moved, f"moved-{moved}"]) == [(f"moved-{moved}",)]
            assert query(db, f"select sum(events_count) from marts.{EMAIL_MART} where campaign_id = ?",
                         ["test-recampaigned"]) == [(1,)]
            # the repriced purchase's path carries its new value (its rows' count and keys did not change)
            assert query(db, f"select distinct conversion_value from marts.{PATHS_MART} where order_id = ?",
                         [repriced]) == [(amount,)]
            # the rechannelled session's channel is a state of the chain now
            assert query(db, f"select count(*) > 0 from marts.{MARKOV_MART} where to_state = 'test-rechannelled'")[0][0]
    # the first build recorded its batches; the later ones were incremental on top of it
    assert query(
        db, "select max(as_of_end)::date, max(full_build_end)::date from audit.staged_batches where model = ?", [MART]
    ) == [(first + timedelta(days=3), first + timedelta(days=1))]
    assert_untouched_rows_are_not_rederived(db, first + timedelta(days=2), tmp_path)

    # a rerun of the day, then back in time (the later sessions leave the view) and forward again over the
    # generator's next day
    db = built_incrementally(world, first + timedelta(days=2))
    assert_equals_a_rebuild(db, first + timedelta(days=2), tmp_path)
    new_person = new_address_person(db)
    assert query(db, f"select count(*) from marts.{EMAIL_MART} where person_id = ?", [new_person]) == [(1,)]
    db = built_incrementally(world, first)
    assert assert_equals_a_rebuild(db, first, tmp_path) == rows[0]
    # its only event left the view, and its row with it
    assert query(db, f"select count(*) from marts.{EMAIL_MART} where person_id = ?", [new_person]) == [(0,)]
    advance(world / "sources", days=1)
    for as_of in (last, last + timedelta(days=1)):
        db = built_incrementally(world, as_of)
        rows.append(assert_equals_a_rebuild(db, as_of, tmp_path))
    assert rows == sorted(rows) and rows[0] < rows[-1], rows  # the days did add sessions
    # and none of those builds was a rebuild in disguise
    for model in (MART, EMAIL_MART):
        assert query(db, "select distinct full_build_end::date from audit.staged_batches where model = ?",
                     [model]) == [(first + timedelta(days=1),)], model


def test_a_daily_build_tests_the_sessions_it_wrote_and_a_bare_test_every_row(tmp_path_factory, monkeypatch):
    """fct_web_sessions' and fct_funnel_steps' unique and not_null tests read the sessions their build re-derived
    (macros/test_scope.sql): an old session's rows made duplicates behind the builds' back are outside a daily
    build's tests, and inside those of `dbt test` alone, which built nothing."""
    home = tmp_path_factory.mktemp("scoped_mart_tests")
    monkeypatch.setenv("TOUCHPOINT_HOME", str(home))
    generate(home / "sources", customers=150, days=12, seed=9, start=START)
    day = START + timedelta(days=10)
    db = extract_and_load(home, day, run_id="scoped-1")
    dbt_build(db, day.isoformat(), "funnel_steps", command="seed")
    dbt_build(db, day.isoformat(), BUILT, command="run")
    # the first day's first session that reached a funnel step: nothing of it changes on the next day
    (session,), = query(db, "select min(session_id) from marts.fct_funnel_steps where session_date = ?", [START])
    for mart in (MART, "fct_funnel_steps"):
        execute(db, f"insert into marts.{mart} select * from marts.{mart} where session_id = ?", [session])

    next_day = day + timedelta(days=1)
    extract_and_load(home, next_day, run_id="scoped-2")
    # passes: the duplicates are not this build's rows (the marts reading them, which would repeat them, are left out)
    daily = dbt_build(db, next_day.isoformat(), "+person_map +fct_funnel_steps")
    assert "unique_fct_funnel_steps_funnel_step_id" in daily.stdout
    # the day's build re-derived sessions (its tests read theirs), not the planted one
    assert query(db, "select count(*) > 0, count(*) filter (where session_key = ?), bool_or(every_session) "
                 "from intermediate.fct_web_sessions__rederived where session_key is not null",
                 [session]) == [(True, 0, False)]

    bare = dbt_build(db, next_day.isoformat(), f"{MART},test_type:generic fct_funnel_steps,test_type:generic",
                     command="test", check=False)
    assert bare.returncode != 0
    for test in ("unique_fct_web_sessions_session_id", "unique_fct_funnel_steps_funnel_step_id"):
        assert re.search(rf"FAIL \d+ {test}", bare.stdout), (test, bare.stdout[-3000:])

    # a funnel definition other than the remembered one re-derives every session, as the post-hook records for the tests
    definition = "select every_session from intermediate.fct_funnel_steps__definition"
    assert query(db, definition) == [(False,)]
    execute(db, "update intermediate.fct_funnel_steps__definition set definition = 'another'")
    dbt_build(db, next_day.isoformat(), "fct_funnel_steps", command="run")
    assert query(db, definition) == [(True,)]
    dbt_build(db, next_day.isoformat(), "fct_funnel_steps", command="run")
    assert query(db, definition) == [(False,)]

    # a warehouse from before builds recorded what they wrote (the remembered definition alone): `dbt test` before
    # the model's next build tests every row (and finds the steps of the planted session, which the re-derivation
    # above repeated from its two fct_web_sessions rows), rather than stop on the missing columns
    execute(db, "create or replace table intermediate.fct_funnel_steps__definition as "
                "select definition from intermediate.fct_funnel_steps__definition")
    upgraded = dbt_build(db, next_day.isoformat(), "fct_funnel_steps,test_type:generic", command="test", check=False)
    assert re.search(r"FAIL \d+ unique_fct_funnel_steps_funnel_step_id", upgraded.stdout), upgraded.stdout[-3000:]
    assert "Runtime Error" not in upgraded.stdout, upgraded.stdout[-3000:]
