"""The demo world's answer to sends (sources/treatment.py): only the treated answer, with the known rate, as
shop orders in the days after the send; the answers stay put when the world advances again; and a warehouse
person is sent to the world person most of its records belong to."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from touchpoint.sources import advance, generate, treatment

CUSTOMERS, DAYS = 800, 200


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("treated_world")
    generate(out, customers=CUSTOMERS, days=DAYS, seed=3)
    return out


def sends_to_everyone(out: Path, experiment: str, assigned_day: int) -> pd.DataFrame:
    persons = pd.read_parquet(out / "truth" / "persons.parquet")["true_person_id"]
    return pd.DataFrame(
        {
            "experiment": experiment,
            "person_id": [f"w_{p}" for p in persons],
            "arm": ["treatment" if i % 2 else "control" for i in range(len(persons))],
            "assigned_day": assigned_day,
            "true_person_id": persons,
        }
    )


def response_orders(out: Path) -> list[tuple]:
    con = sqlite3.connect(out / "systems" / "shop.sqlite")
    try:
        return con.execute(
            "select * from orders where order_id > ? order by order_id", [treatment.RESPONSE_ORDER_ID_BASE]
        ).fetchall()
    finally:
        con.close()


def test_only_the_treated_answer_at_the_known_rate_within_the_window(world: Path) -> None:
    advance(world, 1, sends=sends_to_everyone(world, "winback", DAYS - 1).iloc[:0])  # nobody sent yet
    assert treatment.read_units(world / "truth").empty and response_orders(world) == []
    advance(world, 19, sends=sends_to_everyone(world, "winback", DAYS))
    units = treatment.read_units(world / "truth")
    assert len(units) == CUSTOMERS and set(units["batch"]) == {0}
    assert abs(units["would_respond"].mean() - treatment.RESPONSE_RATE) < 0.04  # drawn in both arms alike
    assert not units.loc[units["arm"] == "control", "is_applied"].any()
    treated = units[units["arm"] == "treatment"]
    assert (treated["is_applied"] == treated["would_respond"] & treated["is_eligible"]).all()
    applied = units[units["is_applied"]]
    assert len(applied) > 30
    assert applied["response_t"].between(DAYS + 1, DAYS + 1 + treatment.RESPONSE_WINDOW_DAYS).all()
    orders = response_orders(world)
    assert [row[0] for row in orders] == sorted(applied["order_id"].astype(int))
    # every answer is an order of the person it belongs to (through the shop customer it was placed on)
    owners = pd.read_parquet(world / "truth" / "record_persons.parquet").set_index(
        ["source_entity", "source_record_id"]
    )["true_person_id"]
    persons = pd.read_parquet(world / "truth" / "persons.parquet")["true_person_id"].to_numpy()
    for (order_id, customer_id, *_), person in zip(orders, persons[applied["person_idx"]], strict=True):
        assert owners[("shop_orders", str(order_id))] == person
        assert owners[("shop_customers", str(customer_id))] == person


def test_answers_stay_as_they_were_when_the_world_advances_again(world: Path) -> None:
    before_units, before_orders = treatment.read_units(world / "truth"), response_orders(world)
    later = sends_to_everyone(world, "reactivation", DAYS + 19)
    advance(world, 20, sends=pd.concat([sends_to_everyone(world, "winback", DAYS), later]))
    units = treatment.read_units(world / "truth")
    pd.testing.assert_frame_equal(units.iloc[: len(before_units)], before_units)  # resent people are not new
    assert set(units.iloc[len(before_units) :]["experiment"]) == {"reactivation"}
    assert set(units.iloc[len(before_units) :]["batch"]) == {1}
    # the same orders (a status moves on with time: completed, then perhaps refunded)
    assert [o[:4] for o in response_orders(world)[: len(before_orders)]] == [o[:4] for o in before_orders]


def test_a_warehouse_person_is_sent_to_the_world_person_most_of_its_records_belong_to(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "source_entity": ["crm_contacts", "shop_customers", "pos_transactions", "crm_contacts"],
            "source_record_id": ["C1", "1001", "T1", "C2"],
            "true_person_id": ["P0000001", "P0000001", "P0000002", "P0000003"],
        }
    ).to_parquet(tmp_path / "record_persons.parquet")
    pii = duckdb.connect(str(tmp_path / "pii.duckdb"))
    pii.execute(
        "create table source_records as select * from (values "
        "('crm_contacts', 'C1', 'p_a'), ('shop_customers', '1001', 'p_a'), ('pos_transactions', 'T1', 'p_a'), "
        "('crm_contacts', 'C2', 'p_b'), ('crm_contacts', 'C9', 'p_c')) as t(source_entity, source_record_id, person_id)"
    )
    pii.close()
    assignments = tmp_path / "a.parquet"
    pd.DataFrame(
        {
            "experiment": ["x", "x", "x"],
            "person_id": ["p_a", "p_b", "p_c"],
            "arm": ["treatment", "control", "treatment"],
            "first_assigned_date": pd.to_datetime(["2026-01-11"] * 3).date,
        }
    ).to_parquet(assignments)
    sends = treatment.sends_from_home(
        [assignments], tmp_path / "pii.duckdb", tmp_path / "record_persons.parquet", "2026-01-01"
    )
    # p_c's only record is unknown to the world: nobody there to send to
    assert sends.to_dict("records") == [
        {"experiment": "x", "person_id": "p_a", "arm": "treatment", "assigned_day": 10, "true_person_id": "P0000001"},
        {"experiment": "x", "person_id": "p_b", "arm": "control", "assigned_day": 10, "true_person_id": "P0000003"},
    ]
