"""A daily build of int_person_pairs_scored (kept estimates, only the pairs a changed record can move re-scored)
equals a full build with the same estimates, on person records made to hit what blocking makes non-local:
- a block at its scoring cap (25) that a new record pushes over it: its pairs stop being candidates, though
  neither record of such a pair changed;
- a block over the cap that a record leaves, which brings it back within: its pairs become candidates;
- records whose name changes (their old pairs go, new ones come) and records that are gone.

The model runs here on a plain DuckDB connection with a stand-in for dbt's Python-model object, as dbt runs it:
a full build creates the table from the returned relation, a daily one appends the returned rows. The dbt runs,
day after day on a generated world, are in test_incremental_identity.py.
"""

from __future__ import annotations

import importlib.util
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from touchpoint.frames import temp_table
from touchpoint.privacy.pseudonyms import PSEUDONYM_PADS

MODEL = Path(__file__).resolve().parent.parent / "dbt_project/models/intermediate/identity/int_person_pairs_scored.py"
TABLE = "intermediate.int_person_pairs_scored"


def load_model():
    spec = importlib.util.spec_from_file_location("int_person_pairs_scored", MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scoring = load_model()


class _Config(dict):
    def __call__(self, **_settings) -> None:  # dbt.config(materialized=...): the materialization is ours here
        pass


class _This:
    database, schema, identifier = "memory", "intermediate", "int_person_pairs_scored"


class _Relation:
    def __init__(self, sql: str):
        self.sql = sql

    def sql_query(self) -> str:
        return self.sql


class StandInDbt:
    """What the model reads of dbt's Python-model object."""

    def __init__(self, people_table: str, *, incremental: bool, keep_estimates: bool, as_of: date):
        self.is_incremental = incremental
        self.this = _This()
        self.config = _Config(keep_estimates=str(keep_estimates), as_of=as_of.isoformat())
        self.ref = lambda _name: _Relation(f"select * from {people_table}")


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("create schema intermediate")
    # a fixed key: the name frequencies are keyed by pseudonym (the privacy plugin sets these in dbt)
    con.execute(f"set variable {PSEUDONYM_PADS}_ipad = unhex('36363636')")
    con.execute(f"set variable {PSEUDONYM_PADS}_opad = unhex('5c5c5c5c')")
    return con


def with_both_days(first: pd.DataFrame, second: pd.DataFrame) -> duckdb.DuckDBPyConnection:
    """A connection holding the two days' person records as people_monday and people_tuesday."""
    con = connect()
    temp_table(con, "people_monday", first)
    temp_table(con, "people_tuesday", second)
    return con


def built(days: tuple[pd.DataFrame, pd.DataFrame], *builds: tuple[str, bool, date]) -> duckdb.DuckDBPyConnection:
    """A connection holding both days, after the builds (people table, incremental, as of) in order."""
    con = with_both_days(*days)
    for people_table, incremental, as_of in builds:
        build(con, people_table, incremental=incremental, keep_estimates=False, as_of=as_of)
    return con


def estimated_as_of(con) -> list[tuple]:
    return con.execute(f"select distinct estimated_as_of from {TABLE}__estimates").fetchall()


def build(con, people_table: str, *, incremental: bool, keep_estimates: bool, as_of: date) -> None:
    dbt = StandInDbt(people_table, incremental=incremental, keep_estimates=keep_estimates, as_of=as_of)
    rows = scoring.model(dbt, con)
    if not incremental:
        con.execute(f"drop table if exists {TABLE}")
        rows.create(TABLE)
    else:
        rows.insert_into(TABLE)


def person_records(seed: int = 11) -> pd.DataFrame:
    """Random people from small pools of names, streets and dates, plus two crowds: 25 records sharing a last
    name and postcode (a last_name_postcode block exactly at its cap) and 26 sharing another (one over it)."""
    rng = np.random.default_rng(seed)
    firsts = ["anna", "ben", "carla", "dirk", "eva", "fritz", "greta", "hans", "ilse", "jonas", "karl", "lena"]
    lasts = ["maier", "schmidt", "schulz", "becker", "hoffmann", "koch", "richter", "wolf", "klein", "neumann"]

    def people(count: int, prefix: str, last=None, postcode=None) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "node_id": [f"{prefix}:{i:04d}" for i in range(count)],
                "first_name_key": rng.choice(firsts, count),
                "last_name_key": [last] * count if last else rng.choice(lasts, count),
                "birth_date": [date(1950, 1, 1) + timedelta(days=int(d)) for d in rng.integers(0, 20000, count)],
                "address_key": [f"{int(n)} street {int(s)}" for n, s in zip(rng.integers(1, 40, count),
                                                                             rng.integers(0, 30, count),
                                                                             strict=True)],
                "postcode": [postcode] * count if postcode else rng.choice(["10115", "20095", "80331"], count),
                "city_key": rng.choice(["berlin", "hamburg", "munich"], count),
                "email": [f"{prefix}{i}@example.org" if rng.random() < 0.7 else None for i in range(count)],
                "phone_e164": [None] * count,
            }
        )

    frame = pd.concat([people(300, "crm"), people(25, "at_cap", "zeller", "99999"),
                       people(26, "over_cap", "yilmaz", "88888")], ignore_index=True)
    # a few true duplicates: copies with a typo in the first name, so some pairs score high
    copies = frame.iloc[:40].copy()
    copies["node_id"] = copies["node_id"].str.replace("crm:", "customer:")
    copies["first_name_key"] = copies["first_name_key"].str[:-1] + "x"
    frame = pd.concat([frame, copies], ignore_index=True)
    frame["first_name_canonical"] = frame["first_name_key"]
    return frame


def next_day(records: pd.DataFrame) -> pd.DataFrame:
    """One more record in the block at its cap, one fewer in the block over it, two renamed, three gone."""
    day = records.copy()
    newcomer = day[day["node_id"] == "at_cap:0000"].assign(node_id="at_cap:9999", first_name_key="zora",
                                                           first_name_canonical="zora", email=None)
    day = pd.concat([day, newcomer], ignore_index=True)
    day = day[~day["node_id"].isin(["over_cap:0003", "crm:0100", "crm:0101", "customer:0005"])]
    renamed = day["node_id"].isin(["crm:0007", "crm:0150"])
    day.loc[renamed, "last_name_key"] = "zeller"
    return day.reset_index(drop=True)


def pairs(con, table: str = TABLE) -> set[tuple]:
    return set(con.execute(f"select * from {table}").fetchall())


@pytest.fixture(scope="module")
def days() -> tuple[pd.DataFrame, pd.DataFrame]:
    first = person_records()
    return first, next_day(first)


def test_a_daily_build_equals_a_full_build_with_the_same_estimates(days):
    first, second = days
    monday, tuesday = date(2026, 3, 2), date(2026, 3, 3)
    daily, full = with_both_days(first, second), with_both_days(first, second)
    for con in (daily, full):
        build(con, "people_monday", incremental=False, keep_estimates=False, as_of=monday)
    before = pairs(daily)

    build(daily, "people_tuesday", incremental=True, keep_estimates=False, as_of=tuesday)
    build(full, "people_tuesday", incremental=False, keep_estimates=True, as_of=tuesday)

    after = pairs(daily)
    assert after == pairs(full)
    # the day moved pairs of records that did not change: the block at its cap lost its pairs, the one over it
    # gained them
    nodes = {(row[0], row[1]) for row in after}
    assert ("at_cap:0000", "at_cap:0001") in {(row[0], row[1]) for row in before} - nodes
    assert ("over_cap:0000", "over_cap:0001") in nodes - {(row[0], row[1]) for row in before}
    # and it was a daily build: it re-derived a part of the pairs, with the estimates of the full build
    affected = daily.execute("select count(*) from tp_pairs_affected").fetchone()[0]
    assert 0 < affected < len(after)
    assert estimated_as_of(daily) == [(monday,)]


def test_a_full_build_estimates_again_unless_told_to_keep(days):
    con = built(days, ("people_monday", False, date(2026, 3, 2)), ("people_tuesday", False, date(2026, 3, 3)))
    assert estimated_as_of(con) == [(date(2026, 3, 3),)]


def test_estimates_kept_under_another_definition_are_estimated_again(days):
    """A changed comparison or blocking rule, or another pseudonym key, makes the kept estimates unusable: the
    daily build then estimates and scores every pair again."""
    con = built(days, ("people_monday", False, date(2026, 3, 2)))
    con.execute(f"update {TABLE}__estimates set definition = 'another'")
    build(con, "people_tuesday", incremental=True, keep_estimates=False, as_of=date(2026, 3, 3))
    assert estimated_as_of(con) == [(date(2026, 3, 3),)]
    assert con.execute(f"select count(*) - count(distinct (left_node, right_node)) from {TABLE}").fetchone() == (0,)


def febrl_people() -> pd.DataFrame:
    """FEBRL1 (tests/fixtures/febrl, 1,000 records, 500 true pairs: public data nobody here generated) as person
    records, lower-cased and trimmed; the dbt staging normalisation is not the point here, blocking on real name,
    address and date distributions is."""
    from tests.test_identity_linkage import FEBRL1, febrl_contacts

    contacts, _ = febrl_contacts(FEBRL1)
    frame = pd.DataFrame(contacts)
    people = pd.DataFrame(
        {
            "node_id": "crm:" + frame["contact_id"],
            "first_name_key": frame["first_name"].str.lower(),
            "last_name_key": frame["last_name"].str.lower(),
            "birth_date": pd.to_datetime(frame["birth_date"]).dt.date,
            "address_key": frame["address_line1"].str.lower(),
            "postcode": frame["postcode"],
            "city_key": frame["city"].str.lower(),
            "email": None,
            "phone_e164": None,
        }
    )
    people["first_name_canonical"] = people["first_name_key"]
    return people.astype({"email": "string", "phone_e164": "string"})


def test_febrl_arriving_over_two_days_scores_as_a_full_build():
    """FEBRL1 arrives in two parts: 800 records on the first day (a full build), the other 200 the next, when
    30 of the first day's also change their surname to one another record has. The daily build equals a full
    build with the same estimates."""
    people = febrl_people()
    first = people.iloc[:800]
    second = people.copy()
    second.loc[second.index[:30], "last_name_key"] = second["last_name_key"].iloc[500]
    daily, full = with_both_days(first, second), with_both_days(first, second)
    for con in (daily, full):
        build(con, "people_monday", incremental=False, keep_estimates=False, as_of=date(2026, 3, 2))
    build(daily, "people_tuesday", incremental=True, keep_estimates=False, as_of=date(2026, 3, 3))
    build(full, "people_tuesday", incremental=False, keep_estimates=True, as_of=date(2026, 3, 3))
    assert pairs(daily) == pairs(full)
    affected = daily.execute("select count(*) from tp_pairs_affected").fetchone()[0]
    assert 0 < affected < len(pairs(full)), affected


def test_a_run_back_in_time_does_not_score_with_later_estimates(days):
    """Estimates made as of a later day are counted over records the run must not use: estimated again."""
    con = built(days, ("people_tuesday", False, date(2026, 3, 3)), ("people_monday", True, date(2026, 3, 2)))
    assert estimated_as_of(con) == [(date(2026, 3, 2),)]
    assert pairs(con) == pairs(built(days, ("people_monday", False, date(2026, 3, 2))))
