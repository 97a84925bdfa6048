"""A world built in chunks (sources/generator.py): one set of source systems whose ids never repeat across
chunks, that loads without quarantine, advances like a longer generate, and hears the sends of every chunk."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from touchpoint.config import RunContext
from touchpoint.ingest import SOURCES, extract_source, load_pending
from touchpoint.sources import advance, generate, treatment
from touchpoint.sources.generator import GeneratorError, last_day
from touchpoint.sources.people import AddressBook, _unique

CHUNKED = {"customers": 300, "days": 90, "seed": 5, "chunk_customers": 100}


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("chunked") / "sources"
    generate(out, **CHUNKED)
    return out


def daily_rows(out: Path, pattern: str) -> pd.DataFrame:
    with duckdb.connect() as con:
        if pattern.endswith(".jsonl"):
            return con.execute(f"select * from read_json_auto('{out / 'systems' / pattern}')").df()
        return con.execute(f"select * from read_csv('{out / 'systems' / pattern}', all_varchar = true)").df()


def test_one_set_of_systems_with_ids_unique_across_chunks(chunked: Path) -> None:
    assert json.loads((chunked / "generator.json").read_text())["chunk_customers"] == 100
    assert sorted(p.name for p in (chunked / "systems").glob("shop*")) == ["shop.sqlite"]
    assert len(list((chunked / "systems" / "web").glob("events_*.jsonl"))) == CHUNKED["days"]  # one per day
    persons = pd.read_parquet(chunked / "truth" / "persons.parquet")
    assert len(persons) == 300 and persons["true_person_id"].is_unique
    assert persons["true_person_id"].iloc[[0, 100, 299]].tolist() == ["P0000001", "P0000101", "P0000300"]
    assert persons["email"].is_unique  # primary addresses stay one person's across chunks
    assert set(persons["household_head_id"].dropna()) <= set(persons["true_person_id"])
    truth = pd.read_parquet(chunked / "truth" / "record_persons.parquet")
    assert not truth.duplicated(["source_entity", "source_record_id"]).any()
    chunk_of = persons["true_person_id"].str[1:].astype(int).sub(1).floordiv(100)
    for entity in ("crm_contacts", "shop_customers", "shop_orders", "pos_transactions", "web_events"):
        owners = truth.loc[truth["source_entity"] == entity, "true_person_id"]
        assert set(chunk_of.set_axis(persons["true_person_id"])[owners]) == {0, 1, 2}, entity  # every chunk

    with sqlite3.connect(chunked / "systems" / "shop.sqlite") as con:
        assert con.execute("select count(*) from products").fetchone()[0] == 240  # one catalogue
        customers = con.execute("select count(*), max(customer_id) - min(customer_id) + 1 from customers")
        assert len(set(customers.fetchone())) <= 2  # contiguous ids but for deleted accounts
    web = daily_rows(chunked, "web/events_*.jsonl")
    assert web["event_id"].is_unique
    assert web.groupby("session_id")["anonymous_id"].nunique().max() == 1  # a session is one device's
    assert daily_rows(chunked, "email/events_*.csv")["event_id"].is_unique
    pos = daily_rows(chunked, "pos/transactions_*.csv")
    assert pos["transaction_id"].is_unique
    owner = truth[truth["source_entity"] == "pos_transactions"].set_index("source_record_id")["true_person_id"]
    loyalty = pos.dropna(subset=["loyalty_id"]).assign(person=lambda d: owner[d["transaction_id"]].to_numpy())
    assert loyalty.groupby("loyalty_id")["person"].nunique().max() == 1  # a card is one person's
    # the shared campaigns: every chunk mails on the same Tuesdays
    campaigns = daily_rows(chunked, "email/events_*.csv")["campaign_id"].unique()
    effects = pd.read_parquet(chunked / "truth" / "campaign_effects.parquet")
    assert set(campaigns) <= set(effects["campaign_id"])


def test_a_chunked_world_loads_without_quarantine(chunked: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "sources").symlink_to(chunked)
    ctx = RunContext(as_of=last_day(chunked), home=home, run_id="chunked")
    extracts = {source: extract_source(ctx, source) for source in SOURCES}
    assert all(not r.errors for r in extracts.values())
    with duckdb.connect(str(tmp_path / "work.duckdb")) as con:
        loaded = load_pending(ctx, con)
        assert loaded.rows_quarantined == 0 and loaded.rows_loaded > 0
        for table, key in (("shop_customers", "customer_id"), ("crm_contacts", "contact_id")):
            persons = con.execute(f"select count(distinct {key}) from raw.{table}").fetchone()[0]
            truth = pd.read_parquet(chunked / "truth" / "record_persons.parquet")
            assert persons == (truth["source_entity"] == table).sum()


def test_a_world_of_one_chunk_is_the_world_without_chunks(tmp_path: Path) -> None:
    one = generate(tmp_path / "one", customers=100, days=30, seed=5, chunk_customers=100)
    default = generate(tmp_path / "default", customers=100, days=30, seed=5)
    assert digest(one.out) == digest(default.out)
    assert "chunk_customers" not in json.loads((one.out / "generator.json").read_text())


def test_advance_a_chunked_world_matches_a_longer_generate(chunked: Path, tmp_path: Path) -> None:
    out = tmp_path / "adv"
    generate(out, **{**CHUNKED, "days": CHUNKED["days"] - 3})
    advance(out, 2)
    summary = advance(out, 1)
    assert summary.last_day == last_day(chunked) and summary.rows["web_events"] > 0
    assert digest(out) == digest(chunked)


def test_sends_reach_the_persons_of_every_chunk(tmp_path: Path) -> None:
    out = tmp_path / "sent"
    generate(out, **{**CHUNKED, "days": 60})
    persons = pd.read_parquet(out / "truth" / "persons.parquet")["true_person_id"]
    sends = pd.DataFrame(
        {
            "experiment": "winback",
            "person_id": [f"w_{p}" for p in persons],
            "arm": ["treatment" if i % 2 else "control" for i in range(len(persons))],
            "assigned_day": 59,
            "true_person_id": persons,
        }
    )
    advance(out, 20, sends=sends)
    advance(out, 5, sends=sends.assign(experiment="second", assigned_day=79))
    units = treatment.read_units(out / "truth")
    assert len(units) == 600 and set(units["batch"]) == {0, 1}
    sent_to = dict(zip(sends["person_id"], sends["true_person_id"], strict=True))
    assert (persons.to_numpy()[units["person_idx"]] == units["person_id"].map(sent_to).to_numpy()).all()
    applied = units[units["is_applied"]]
    assert applied["order_id"].is_unique and len(applied) > 10
    assert (applied["person_idx"] // 100).nunique() == 3  # answers in every chunk
    truth = pd.read_parquet(out / "truth" / "record_persons.parquet")
    assert not truth.duplicated(["source_entity", "source_record_id"]).any()
    orders = truth[truth["source_entity"] == "shop_orders"].set_index("source_record_id")["true_person_id"]
    placed = applied[applied["response_t"] < 85]  # the answers placed up to the last day
    answered = orders[placed["order_id"].astype("int64").astype(str)].to_numpy()
    assert (answered == persons.to_numpy()[placed["person_idx"]]).all()  # each answer is its person's order
    with sqlite3.connect(out / "systems" / "shop.sqlite") as con:
        in_shop = con.execute("select count(*) from orders where order_id > ?", [treatment.RESPONSE_ORDER_ID_BASE])
        assert in_shop.fetchone()[0] == len(placed)


def test_chunks_number_email_addresses_as_one_world_would() -> None:
    first, second = ["a@x.de", "b@x.de", "a@x.de"], ["a@x.de", "c@x.de", "b@x.de", "a@x.de"]
    book = AddressBook()
    chunked = [*_unique(pd.Series(first).to_numpy(), book), *_unique(pd.Series(second).to_numpy(), book)]
    assert chunked == list(_unique(pd.Series(first + second).to_numpy()))
    assert chunked == ["a@x.de", "b@x.de", "a2@x.de", "a3@x.de", "c@x.de", "b2@x.de", "a4@x.de"]


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError):
        generate(tmp_path / "bad", customers=10, days=5, chunk_customers=0)

