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

from touchpoint.sources import generator, population, records
from touchpoint.sources.generator import GeneratorError, advance, generate, last_day
from touchpoint.sources.world import build_world

SMALL = dict(customers=300, days=60, seed=7, start=date(2024, 7, 1))
CONTRACT = {
    "consent_events": ["subject_email", "subject_phone", "customer_id", "purpose", "granted", "occurred_at", "source"],
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
    "consent_events": ("crm", "consents", "csv"),
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
        files = sorted((small / "systems" / folder).glob(f"{stem}_*"))
        assert [f.name for f in files] == [
            f"{stem}_{SMALL['start'] + timedelta(days=i)}.{ext}" for i in range(SMALL["days"])
        ]
    for name in ("record_persons", "persons", "purchases"):
        assert (small / "truth" / f"{name}.parquet").is_file()


def test_contract_column_names_exactly(small: Path) -> None:
    for entity, (folder, stem, ext) in DAILY.items():
        for f in sorted((small / "systems" / folder).glob(f"{stem}_*.{ext}")):
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


# Identity noise: each kind at about its declared rate, and households as hard negatives.

IDENTITY = dict(customers=3000, days=730, seed=5)
_ABBREVIATED = r"\b(?:Rd|St|Ave|Ln|Cres)\.?(?:\s|$)"
_SUFFIX_WORD = r"\b(?:Road|Street|Avenue|Lane|Crescent)\b"


@pytest.fixture(scope="module")
def identity_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("identity")
    generate(out, **IDENTITY)
    return out


def _with_truth(out: Path) -> dict[str, pd.DataFrame]:
    """First written version of every CRM contact / shop account beside its true person's attributes."""
    truth = pd.read_parquet(out / "truth" / "record_persons.parquet")
    persons = pd.read_parquet(out / "truth" / "persons.parquet")
    crm = read_daily(out, "crm_contacts").drop_duplicates("contact_id")
    shop = read_shop(out, "customers").astype({"customer_id": str})
    return {
        system: df.merge(truth, left_on=key, right_on="source_record_id").merge(
            persons, on="true_person_id", suffixes=("", "_true")
        )
        for system, df, key in (("crm", crm, "contact_id"), ("shop", shop, "customer_id"))
    }


def _birth_errors(written: pd.Series, true: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(one digit of YYYYMMDD wrong, year off by one) per written birth date."""
    w = written.str.replace("-", "").to_numpy(dtype=str)
    t = pd.Series(true).astype(str).str.replace("-", "").to_numpy(dtype=str)
    hamming = np.array([sum(a != b for a, b in zip(x, y, strict=True)) for x, y in zip(w, t, strict=True)])
    same_day = np.array([x[4:] == y[4:] for x, y in zip(w, t, strict=True)])
    year_gap = np.array([abs(int(x[:4]) - int(y[:4])) for x, y in zip(w, t, strict=True)])
    year = same_day & (year_gap == 1)
    return (hamming == 1) & ~year, year


def _near(measured: float, expected: float, low: float = 0.6, high: float = 1.5) -> bool:
    return expected * low <= measured <= expected * high


def test_noise_rates_per_record() -> None:
    """Many records of one world through the noise model: every new kind at about its declared rate."""
    world = build_world(5, 2000)
    people = world.people
    idx = np.random.default_rng(0).integers(0, len(people), 30_000)
    for system, rates in records.NOISE_RATES.items():
        r = records.written_records(np.random.default_rng(1), people, idx, np.zeros(len(idx)), system)
        r = r[r["version"] == 0].reset_index(drop=True)
        p = people.iloc[r["person_idx"]].reset_index(drop=True)
        born = r["birth_date"].notna().to_numpy()
        assert _near(born.mean(), rates["birth"], 0.95, 1.05)
        digit, year = _birth_errors(r["birth_date"][born], p["birth_date"][born])
        assert _near(digit.mean(), rates["birth_digit"], 0.8, 1.2), (system, digit.mean())
        assert _near(year.mean(), rates["birth_year"], 0.8, 1.25), (system, year.mean())
        # A wrong digit still gives a valid date.
        assert pd.to_datetime(r["birth_date"][born], format="%Y-%m-%d").notna().all()

        first = r["first_name"].fillna("").str.strip()
        initial = first.str.fullmatch(r"\w\.?") & (first.str[0].str.lower() == p["first_name"].str[0].str.lower())
        assert _near(initial.mean(), rates["initial"], 0.8, 1.2), (system, initial.mean())
        assert first.str.fullmatch(r"\w").any() and first.str.fullmatch(r"\w\.").any()  # 'J' and 'J.'
        other = first.str.lower() == p["second_given_name"].fillna("-").str.lower()
        assert _near(other.mean(), rates["other_given"], 0.75, 1.2), (system, other.mean())
        full = (first.str.lower() == (p["first_name"] + " " + p["last_name"]).str.lower()) & r["last_name"].isna()
        assert _near(full.mean(), rates["full_name"], 0.75, 1.2) if rates["full_name"] else not full.any()

        line1 = r["address_line1"]
        no_street = line1.isna() & r["city"].notna() & r["postcode"].notna()
        expected = rates["street_missing"] * (1 - rates["addr_missing"]) * (1 - rates["postcode_missing"])
        assert _near(no_street.mean(), expected, 0.8, 1.2), (system, no_street.mean())
        no_number = line1.notna() & ~line1.fillna("").str.contains(r"\d")
        expected = rates["house_number_missing"] * (1 - rates["addr_missing"] - rates["street_missing"])
        assert _near(no_number.mean(), expected, 0.8, 1.2), (system, no_number.mean())
        gb = (p["country"] == "GB") & p["address_line1"].str.contains(_SUFFIX_WORD) & line1.notna()
        abbreviated = line1[gb].str.contains(_ABBREVIATED)
        assert _near(abbreviated.mean(), rates["street_abbr"], 0.8, 1.2), (system, abbreviated.mean())
        assert line1[gb].str.contains(r"\bRd\b").any() and line1[gb].str.contains(r"\bSt\.?$").any()


def test_identity_noise_in_written_records(identity_world: Path) -> None:
    """The written CRM contacts and shop accounts against their true persons."""
    params = json.loads((identity_world / "truth" / "params.json").read_text())
    world = build_world(IDENTITY["seed"], IDENTITY["customers"])
    second = world.people["second_given_name"].set_axis(world.persons["true_person_id"])
    for system, df in _with_truth(identity_world).items():
        rates = params["noise"][system]
        assert rates == records.NOISE_RATES[system]  # recorded in truth/params.json
        born = df.dropna(subset=["birth_date"])
        digit, year = _birth_errors(born["birth_date"], born["birth_date_true"])
        assert _near(digit.mean(), rates["birth_digit"], 0.4), (system, digit.mean())
        assert _near(year.mean(), rates["birth_year"], 0.4, 2.0), (system, year.mean())
        first = df["first_name"].fillna("").str.strip()
        initial = first.str.fullmatch(r"\w\.?") & (
            first.str[0].str.lower() == df["first_name_true"].str[0].str.lower()
        )
        assert _near(initial.mean(), rates["initial"], 0.4, 2.0), (system, initial.mean())
        other = first.str.lower() == second.reindex(df["true_person_id"]).fillna("-").str.lower().to_numpy()
        assert _near(other.mean(), rates["other_given"], 0.4, 2.0), (system, other.mean())
        line1 = df["address_line1"]
        no_street = line1.isna() & df["city"].notna() & df["postcode"].notna()
        assert _near(no_street.mean(), rates["street_missing"], 0.5), (system, no_street.mean())
        no_number = line1.notna() & ~line1.fillna("").str.contains(r"\d")
        assert _near(no_number.mean(), rates["house_number_missing"], 0.4, 2.0), (system, no_number.mean())
        gb = (df["country_true"] == "GB") & line1.notna()
        assert line1[gb].str.contains(_ABBREVIATED).mean() > 0.1
    crm = _with_truth(identity_world)["crm"]
    full = crm["first_name"].fillna("").str.strip().str.contains(" ") & crm["last_name"].isna()
    assert 0 < full.mean() < 0.015
    swapped = (crm["first_name"].str.strip().str.lower() == crm["last_name_true"].str.lower()) & (
        crm["last_name"].str.strip().str.lower() == crm["first_name_true"].str.lower()
    )
    assert 0 < swapped.mean() < 0.03


def test_duplicates_get_independent_noise(identity_world: Path) -> None:
    crm = _with_truth(identity_world)["crm"]
    fields = ["first_name", "last_name", "email", "phone", "address_line1", "postcode", "birth_date"]
    dup = crm[crm["true_person_id"].duplicated(keep=False)].sort_values(["true_person_id", "contact_id"])
    assert dup["true_person_id"].nunique() >= 50
    pairs = dup.groupby("true_person_id")[fields].agg(lambda s: s.fillna("").nunique() > 1)
    assert pairs.any(axis=1).mean() > 0.5  # duplicates of one person are not copies of each other
    for field in fields:
        assert pairs[field].any(), field


def test_households_share_address_and_phone_but_are_different_persons(identity_world: Path) -> None:
    persons = pd.read_parquet(identity_world / "truth" / "persons.parquet")
    joiners = persons[persons["household_head_id"].notna()]
    heads = persons.set_index("true_person_id").loc[joiners["household_head_id"]].reset_index()
    living_with_another = (len(joiners) + joiners["household_head_id"].nunique()) / len(persons)
    assert 0.10 <= living_with_another <= 0.20
    assert (joiners["address_line1"].to_numpy() == heads["address_line1"].to_numpy()).all()
    assert (joiners["first_name"].to_numpy() != heads["first_name"].to_numpy()).all()
    assert (joiners["birth_date"].to_numpy() != heads["birth_date"].to_numpy()).all()
    same_last = (joiners["last_name"].to_numpy() == heads["last_name"].to_numpy()).mean()
    assert 0.7 < same_last < 0.9
    shares_phone = joiners["phone_e164"].to_numpy() == heads["phone_e164"].to_numpy()
    assert 0.55 < shares_phone.mean() < 0.85
    shared_phones = persons["phone_e164"].duplicated(keep=False)
    assert 0.05 < shared_phones.mean() < 0.15  # of all persons: one landline, several persons

    # In the written records: one phone number, several true persons with different birth dates.
    by_system = _with_truth(identity_world)
    written = pd.concat([by_system["crm"], by_system["shop"]], ignore_index=True)
    written = written.assign(digits=written["phone"].str.replace(r"\D", "", regex=True).str[-7:])
    written = written[written["phone"].notna() & ~written["phone"].isin(records.PLACEHOLDER_PHONES)]
    groups = written.groupby("digits").agg(
        people=("true_person_id", "nunique"), births=("birth_date_true", "nunique"), post=("postcode_true", "nunique")
    )
    shared = groups[groups["people"] > 1]
    assert len(shared) >= 20
    assert (shared["births"] == shared["people"]).all() and (shared["post"] == 1).mean() > 0.9
    # ... and a shared email address, also of different true persons.
    with_email = written.dropna(subset=["email"]).assign(e=lambda d: d["email"].str.lower())
    assert (with_email.groupby("e")["true_person_id"].nunique() > 1).sum() >= 5
