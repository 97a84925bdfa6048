"""The demo source systems generator: determinism, advance, contracts, truth, noise and the BTYD process."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from touchpoint.sources import generator, population
from touchpoint.sources.generator import GeneratorError, advance, generate, last_day

SMALL = dict(customers=300, days=60, seed=7, start=date(2024, 7, 1))
CONTRACT = {
    "crm_contacts": [
        "contact_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "address_line1",
        "address_line2",
        "city",
        "postcode",
        "region",
        "country",
        "birth_date",
        "email_opt_in",
        "updated_at",
    ],
    "shop_customers": [
        "customer_id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "address_line1",
        "address_line2",
        "city",
        "postcode",
        "region",
        "country",
        "birth_date",
        "created_at",
        "updated_at",
    ],
    "shop_orders": [
        "order_id",
        "customer_id",
        "ordered_at",
        "total_amount",
        "status",
        "currency",
        "updated_at",
    ],
    "shop_order_items": ["order_id", "line_number", "product_id", "quantity", "unit_price"],
    "shop_products": ["product_id", "name", "category", "price", "updated_at"],
    "web_events": [
        "event_id",
        "occurred_at",
        "event_type",
        "anonymous_id",
        "customer_id",
        "session_id",
        "page_url",
        "product_id",
        "device_type",
        "channel",
    ],
    "email_events": ["event_id", "occurred_at", "email", "event_type", "campaign_id"],
    "pos_transactions": [
        "transaction_id",
        "purchased_at",
        "total_amount",
        "store_id",
        "loyalty_id",
        "phone",
        "email",
    ],
}
DAILY = {
    "crm_contacts": ("crm", "contacts", "csv"),
    "web_events": ("web", "events", "jsonl"),
    "email_events": ("email", "events", "csv"),
    "pos_transactions": ("pos", "transactions", "csv"),
}
SQLITE = {
    "shop_customers": "customers",
    "shop_orders": "orders",
    "shop_order_items": "order_items",
    "shop_products": "products",
}


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_daily(out: Path, entity: str) -> pd.DataFrame:
    folder, stem, ext = DAILY[entity]
    files = sorted((out / "systems" / folder).glob(f"{stem}_*.{ext}"))
    if ext == "jsonl":
        rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
        return pd.DataFrame(rows, columns=CONTRACT[entity], dtype=object)
    pattern = str(out / "systems" / folder / f"{stem}_*.{ext}")
    with duckdb.connect() as con:
        return con.execute(f"select * from read_csv('{pattern}', all_varchar = true, header = true)").df()


def read_shop(out: Path, table: str) -> pd.DataFrame:
    with sqlite3.connect(out / "systems" / "shop.sqlite") as con:
        return pd.read_sql_query(f"select * from {table}", con)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small")
    generate(out, **SMALL)
    return out


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough people and days for noise rates and the purchase process to show."""
    out = tmp_path_factory.mktemp("year")
    generate(out, customers=1500, days=365, seed=3)
    return out


def test_same_seed_gives_same_bytes_and_another_seed_differs(small: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", **SMALL)
    assert digest(small) == digest(again.out)  # shop.sqlite included: byte-identical
    other = generate(tmp_path / "other", **{**SMALL, "seed": 8})
    reference = digest(small)
    differing = {k for k, v in digest(other.out).items() if reference.get(k) != v}
    assert "systems/shop.sqlite" in differing and "truth/record_persons.parquet" in differing
    assert len(differing) > 50


def test_advance_matches_a_longer_generate(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small web blocks so the appended days cross a block boundary; block size must not change any byte.
    monkeypatch.setattr(generator, "WEB_BLOCK_DAYS", 3)
    out = tmp_path / "adv"
    generate(out, **{**SMALL, "days": SMALL["days"] - 4})
    summary = advance(out, 4)
    assert summary.days_written == 4 and summary.last_day == last_day(small)
    assert digest(out) == digest(small)


def test_advance_needs_a_generated_folder(tmp_path: Path) -> None:
    with pytest.raises(GeneratorError):
        advance(tmp_path / "nothing", 1)


def test_a_world_with_nobody_in_it_yet(tmp_path: Path) -> None:
    # 50 customers acquired over two years, 5 days generated: nobody has arrived, no campaign has gone out
    summary = generate(tmp_path / "tiny", customers=50, days=5, seed=7)
    assert summary.rows == {entity: 240 if entity == "shop_products" else 0 for entity in summary.rows}
    assert {"web_events", "email_events", "pos_transactions", "crm_contacts"} <= set(summary.rows)
    assert advance(tmp_path / "tiny", 1).rows["email_events"] == 0


def test_layout_and_last_day(small: Path) -> None:
    assert last_day(small) == SMALL["start"] + timedelta(days=SMALL["days"] - 1)
    meta = json.loads((small / "generator.json").read_text())
    assert (meta["seed"], meta["customers"], meta["days"]) == (7, 300, 60)
    for folder, stem, ext in DAILY.values():
        files = sorted((small / "systems" / folder).iterdir())
        assert [f.name for f in files] == [
            f"{stem}_{SMALL['start'] + timedelta(days=i)}.{ext}" for i in range(SMALL["days"])
        ]
    for name in ("record_persons", "persons", "purchases"):
        assert (small / "truth" / f"{name}.parquet").is_file()


def test_contract_column_names_exactly(small: Path) -> None:
    for entity, (folder, _stem, ext) in DAILY.items():
        for f in sorted((small / "systems" / folder).glob(f"*.{ext}")):
            if ext == "csv":
                with f.open(newline="") as fh:
                    assert next(csv.reader(fh)) == CONTRACT[entity], f
            else:
                for line in f.read_text().splitlines():
                    assert list(json.loads(line)) == CONTRACT[entity], f
    with sqlite3.connect(small / "systems" / "shop.sqlite") as con:
        for entity, table in SQLITE.items():
            cols = [r[1] for r in con.execute(f"pragma table_info({table})")]
            assert cols == CONTRACT[entity]
            types = {r[1]: r[2] for r in con.execute(f"pragma table_info({table})")}
            if entity in ("shop_customers", "shop_orders"):
                assert types[entity.removeprefix("shop_").rstrip("s") + "_id"] == "INTEGER"


def test_nothing_after_the_last_day(small: Path) -> None:
    end = (last_day(small) + timedelta(days=1)).isoformat()
    stamps = [
        read_daily(small, "crm_contacts")["updated_at"],
        read_daily(small, "web_events")["occurred_at"],
        read_daily(small, "email_events")["occurred_at"],
        read_daily(small, "pos_transactions")["purchased_at"],
        read_shop(small, "customers")["created_at"],
        read_shop(small, "customers")["updated_at"],
        read_shop(small, "orders")["ordered_at"],
        read_shop(small, "orders")["updated_at"],
    ]
    for s in stamps:
        assert len(s) and (s < end).all() and (s >= "2024-06-01").all()
    # A file holds only its own day.
    for f in (small / "systems" / "pos").glob("*.csv"):
        day = f.stem.split("_")[1]
        assert all(r["purchased_at"].startswith(day) for r in csv.DictReader(f.open()))


def test_every_record_is_in_truth(small: Path) -> None:
    truth = pd.read_parquet(small / "truth" / "record_persons.parquet")
    assert not truth.duplicated(["source_entity", "source_record_id"]).any()
    assert truth["true_person_id"].notna().all()
    keyed = {e: set(g["source_record_id"]) for e, g in truth.groupby("source_entity")}
    ids = {
        "crm_contacts": set(read_daily(small, "crm_contacts")["contact_id"]),
        "web_events": set(read_daily(small, "web_events")["event_id"]),
        "email_events": set(read_daily(small, "email_events")["event_id"]),
        "pos_transactions": set(read_daily(small, "pos_transactions")["transaction_id"]),
        "shop_customers": set(read_shop(small, "customers")["customer_id"].astype(str)),
        "shop_orders": set(read_shop(small, "orders")["order_id"].astype(str)),
    }
    for entity, found in ids.items():
        assert found, entity
        assert found <= keyed[entity], entity
    # Event-like entities: truth holds exactly the written records.
    for entity in ("web_events", "email_events", "pos_transactions", "shop_orders", "crm_contacts"):
        assert ids[entity] == keyed[entity], entity
    persons = pd.read_parquet(small / "truth" / "persons.parquet")
    assert set(truth["true_person_id"]) <= set(persons["true_person_id"])


def test_web_logins_link_devices_to_customers(small: Path) -> None:
    web = read_daily(small, "web_events")
    assert web["event_id"].is_unique
    customers = set(read_shop(small, "customers")["customer_id"].astype(str))
    assert set(web["customer_id"].dropna()) & customers
    for _, session in web.groupby("session_id"):
        types = list(session["event_type"])
        linked = session["customer_id"].notna().to_numpy()
        if "login" in types:
            first_login = types.index("login")
            assert linked[first_login:].all() and not linked[:first_login].any()
        else:
            assert not linked.any()
    truth = pd.read_parquet(small / "truth" / "record_persons.parquet")
    web_truth = web.merge(
        truth[truth["source_entity"] == "web_events"], left_on="event_id", right_on="source_record_id"
    )
    # A device belongs to one person; some devices never log in.
    assert (web_truth.groupby("anonymous_id")["true_person_id"].nunique() == 1).all()
    logged = web_truth.groupby("anonymous_id")["customer_id"].apply(lambda s: s.notna().any())
    assert logged.any() and (~logged).any()


def test_noise_is_present(year: Path) -> None:
    truth = pd.read_parquet(year / "truth" / "record_persons.parquet")
    crm_versions = read_daily(year, "crm_contacts")
    crm = crm_versions.drop_duplicates("contact_id")
    shop = read_shop(year, "customers")
    shop["customer_id"] = shop["customer_id"].astype(str)
    crm = crm.merge(truth, left_on="contact_id", right_on="source_record_id")
    shop = shop.merge(truth, left_on="customer_id", right_on="source_record_id")
    pairs = crm.merge(shop, on="true_person_id", suffixes=("_crm", "_shop")).dropna(
        subset=["email_crm", "email_shop"]
    )
    same_lower = pairs["email_crm"].str.lower() == pairs["email_shop"].str.lower()
    assert (same_lower & (pairs["email_crm"] != pairs["email_shop"])).sum() >= 3  # case differs
    assert same_lower.mean() > 0.6  # but mostly the same address
    first_differs = pairs["first_name_crm"].fillna("") != pairs["first_name_shop"].fillna("")
    assert 0.03 < first_differs.mean() < 0.35
    assert crm["true_person_id"].duplicated().sum() >= 3  # duplicate contacts inside the CRM
    phones = crm_versions["phone"].dropna()
    assert (
        phones.str.startswith("+").any()
        and phones.str.startswith("00").any()
        and phones.str.startswith("0").any()
    )
    assert phones.value_counts().iloc[0] >= 3  # a placeholder phone shared by many
    assert crm["email"].isna().any() and crm["birth_date"].isna().any()
    # Shared household emails: one address, several true persons.
    by_email = crm.dropna(subset=["email"]).assign(e=lambda d: d["email"].str.lower())
    assert (by_email.groupby("e")["true_person_id"].nunique() > 1).any()
    # Accent variants of the same person's name.
    folded = pairs[
        pairs["last_name_crm"].fillna("").str.contains("ue|oe|ae")
        & pairs["last_name_shop"].fillna("").str.contains("ü|ö|ä")
    ]
    assert len(folded) >= 1


def test_shop_and_pos_realism(year: Path) -> None:
    orders = read_shop(year, "orders")
    assert set(orders["status"]) == {"placed", "completed", "cancelled", "refunded"}
    refunded = orders[orders["status"] == "refunded"]
    assert (refunded["updated_at"] > refunded["ordered_at"]).all()
    customers = set(read_shop(year, "customers")["customer_id"])
    assert (~orders["customer_id"].isin(customers)).any()  # deleted accounts
    items = read_shop(year, "order_items")
    line_total = (items["quantity"] * items["unit_price"]).groupby(items["order_id"]).sum()
    assert np.allclose(line_total.reindex(orders["order_id"]).to_numpy(), orders["total_amount"], atol=0.011)
    pos = read_daily(year, "pos_transactions")
    amount = pos["total_amount"].astype(float)
    assert (amount < 0).any() and (amount > 0).mean() > 0.9
    assert pos[["loyalty_id", "phone", "email"]].notna().any(axis=1).all()
    assert (pos[["loyalty_id", "phone", "email"]].notna().sum(axis=1) == 1).any()
    changed = read_shop(year, "customers")
    assert (changed["updated_at"] > changed["created_at"]).any()  # moved customers updated their address


def test_btyd_parameters_are_recoverable(year: Path) -> None:
    persons = pd.read_parquet(year / "truth" / "persons.parquet")
    params = json.loads((year / "truth" / "params.json").read_text())
    by_name = {t["name"]: t for t in params["latent_types"]}
    assert set(by_name) == {t.name for t in population.LATENT_TYPES}
    for name, group in persons.groupby("latent_type"):
        t = by_name[name]
        if t["r"] is None:
            assert (group["purchase_rate_per_day"] == 0).all()
            continue
        assert group["purchase_rate_per_day"].mean() == pytest.approx(t["r"] / t["alpha"], rel=0.25)
        assert group["dropout_probability"].mean() == pytest.approx(t["a"] / (t["a"] + t["b"]), rel=0.25)
    # Realised behaviour follows the person's parameters: spend per purchase and gaps between purchases.
    purchases = pd.read_parquet(year / "truth" / "purchases.parquet")
    buys = purchases[purchases["status"] != "returned"].merge(persons, on="true_person_id")
    assert buys["gross_amount"].mean() / buys["expected_spend"].mean() == pytest.approx(1.0, abs=0.12)
    buys = buys.sort_values(["true_person_id", "purchased_at"])
    gap_days = buys.groupby("true_person_id")["purchased_at"].diff().dt.total_seconds() / 86400
    scaled = (gap_days * buys["purchase_rate_per_day"]).dropna()
    assert 0.75 < scaled.mean() < 1.15  # Exp(1) in units of the person's rate (truncated at the horizon)
    assert purchases["is_after_last_day"].any()  # known future behaviour for the as-of date
