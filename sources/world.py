"""The whole simulated world for one (seed, customers): independent of how many days are written.

Everything here is drawn from one seeded stream, without a time horizon, so filtering it to "before day D"
gives the same rows whatever D is. Day-level activity (web sessions, email campaigns) has its own
per-day / per-campaign streams in `activity.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import noise, population, records, writers
from .people import AddressBook, draw_people

CATEGORIES = [
    "apparel",
    "shoes",
    "accessories",
    "home",
    "kitchen",
    "beauty",
    "sports",
    "outdoor",
    "toys",
    "books",
    "electronics",
    "garden",
]
_NOUNS = {
    "apparel": "Shirt Jacket Dress Sweater Jeans",
    "shoes": "Sneaker Boot Sandal Loafer Slipper",
    "accessories": "Scarf Belt Wallet Cap Bag",
    "home": "Cushion Lamp Rug Vase Blanket",
    "kitchen": "Pan Knife Mug Kettle Bowl",
    "beauty": "Cream Serum Shampoo Perfume Lipstick",
    "sports": "Ball Racket Mat Bottle Band",
    "outdoor": "Tent Backpack Lantern Stove Poncho",
    "toys": "Puzzle Robot Doll Kite Blocks",
    "books": "Novel Cookbook Atlas Diary Comic",
    "electronics": "Headphones Charger Speaker Mouse Cable",
    "garden": "Hose Shovel Planter Seeds Gloves",
}
_ADJ = [
    "Classic",
    "Urban",
    "Nordic",
    "Cosy",
    "Smart",
    "Eco",
    "Premium",
    "Basic",
    "Vintage",
    "Bold",
    "Soft",
    "Compact",
]
PRODUCTS_PER_CATEGORY = 20
STORE_OPEN_HOURS = (9.0, 20.0)
ONLINE_HOURS = (7.0, 23.5)
RETURN_RATE = 0.06
CANCEL_RATE, REFUND_RATE = 0.04, 0.05
ORDER_ID_BASE, CUSTOMER_ID_BASE = 100_000, 1_000


@dataclass(frozen=True)
class Chunk:
    """Which part of a world is built (generator.py builds a large world chunk by chunk).

    The chunk's records are numbered after those of the chunks before it (the offsets), and the identifiers
    drawn without replacement (phone subscriber numbers, loyalty ids) come from the chunk's own share of their
    space (`index` of `count`), so no id is shared by two chunks (email addresses: `Shared`). The default is
    the whole world in one piece, as before chunks existed.
    """

    index: int = 0
    count: int = 1
    person_offset: int = 0
    customer_offset: int = 0  # shop accounts of the chunks before
    order_offset: int = 0
    contact_offset: int = 0
    transaction_offset: int = 0


WHOLE_WORLD = Chunk()


@dataclass
class Shared:
    """What the chunks of one world share as they are built one after the other: the first chunk's product
    catalogue and the email addresses drawn so far."""

    products: pd.DataFrame | None = None
    addresses: AddressBook = field(default_factory=AddressBook)


@dataclass
class World:
    persons: pd.DataFrame  # truth per person (population draw)
    people: pd.DataFrame  # true identity attributes
    purchases: pd.DataFrame  # every purchase: person_idx, t, amount, is_online, channel record ids
    products: pd.DataFrame
    customers: pd.DataFrame  # shop customer versions (customer_id, valid_day, deleted_day, fields)
    contacts: pd.DataFrame  # CRM contact versions (contact_id, valid_day, fields, email_opt_in)
    orders: pd.DataFrame
    order_items: pd.DataFrame
    pos: pd.DataFrame
    accounts: pd.DataFrame  # one row per shop account: customer_id, person_idx, created_day, deleted_day
    contact_index: pd.DataFrame  # one row per CRM contact: contact_id, person_idx, created_day, opt_in


def _time_of_day(rng: np.random.Generator, day: np.ndarray, hours: tuple[float, float]) -> np.ndarray:
    return np.floor(day) + rng.uniform(hours[0], hours[1], len(day)) / 24.0


def _products(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    pid = 1
    for ci, cat in enumerate(CATEGORIES):
        nouns = _NOUNS[cat].split()
        median = float(np.exp(rng.uniform(np.log(12), np.log(90))))
        prices = np.sort(np.round(median * np.exp(rng.normal(0, 0.7, PRODUCTS_PER_CATEGORY)), 2) + 0.99)
        for k, price in enumerate(prices):
            rows.append(
                (pid, f"{_ADJ[(k * 7 + ci) % len(_ADJ)]} {nouns[k % len(nouns)]}", cat, float(price), ci)
            )
            pid += 1
    return pd.DataFrame(rows, columns=["product_id", "name", "category", "price", "category_idx"])


def build_world(seed: int, customers: int, chunk: Chunk = WHOLE_WORLD, shared: Shared | None = None) -> World:
    """Everyone's behaviour and records, from streams seeded by (seed, part): people, purchases and each
    system's records have their own stream, so changing how one is drawn leaves the others as they were.
    Within the shared stream [seed, 4] the order of the steps below is the order of the draws. `chunk` says
    which part of a larger world this is (its ids follow the chunks before it); `shared`: what the chunks
    built before left (the catalogue is the first chunk's: a later chunk still makes its own draw, which it
    then ignores, so its stream [seed, 4] runs as in any world)."""
    shared = Shared() if shared is None else shared
    rng = np.random.default_rng([seed, 1])
    persons = population.draw_persons(rng, customers, first_person=chunk.person_offset + 1)
    people = draw_people(np.random.default_rng([seed, 2]), persons, (chunk.index, chunk.count), shared.addresses)
    purchases = population.simulate_purchases(np.random.default_rng([seed, 3]), persons)
    rng = np.random.default_rng([seed, 4])
    purchases = _timed_purchases(rng, purchases)
    own_products = _products(rng)
    if shared.products is None:
        shared.products = own_products
    products = shared.products
    accounts = _shop_accounts(rng, persons, purchases, chunk.customer_offset)
    cust_versions = _shop_customer_versions(np.random.default_rng([seed, 5]), people, accounts)
    contacts_idx, in_crm, dup_choice = _crm_contacts(rng, persons, chunk.contact_offset)
    contact_versions = records.written_records(
        np.random.default_rng([seed, 6]),
        people,
        contacts_idx["person_idx"].to_numpy(),
        contacts_idx["created_day"].to_numpy(),
        "crm",
        email_choice=dup_choice,
    )
    contact_versions["contact_id"] = contacts_idx["contact_id"].to_numpy()[contact_versions["record_idx"]]
    contact_versions["email_opt_in"] = contacts_idx["opt_in"].to_numpy()[contact_versions["record_idx"]]

    # Online orders: one per online purchase, from the (latest existing) account of the person.
    orders, items = _orders(rng, purchases, accounts, products, people, ORDER_ID_BASE + 1 + chunk.order_offset)
    pos = _pos(rng, purchases, people, in_crm, chunk)
    return World(
        persons,
        people,
        purchases,
        products,
        cust_versions,
        contact_versions,
        orders,
        items,
        pos,
        accounts,
        contacts_idx,
    )


def _timed_purchases(rng: np.random.Generator, purchases: pd.DataFrame) -> pd.DataFrame:
    """Purchase days given a time of day (online from early to late, in store during opening hours), sorted
    by time: the order every later id (orders, transactions) follows."""
    purchases["t"] = np.where(
        purchases["is_online"],
        _time_of_day(rng, purchases["t"].to_numpy(), ONLINE_HOURS),
        _time_of_day(rng, purchases["t"].to_numpy(), STORE_OPEN_HOURS),
    )
    return purchases.sort_values(["t", "person_idx"], kind="stable").reset_index(drop=True)


def _shop_accounts(
    rng: np.random.Generator, persons: pd.DataFrame, purchases: pd.DataFrame, first: int = 0
) -> pd.DataFrame:
    """One row per shop account: person_idx, created_day, deleted_day, is_duplicate, customer_id.

    Everyone who buys online has one (created just before the first online order) and 30% of browsers
    (they log in to browse); 2.5% get a second account later; 1.5% are deleted after their last online
    order.
    """
    n = len(persons)
    on = purchases[purchases["is_online"]]
    first_online = on.groupby("person_idx")["t"].min().reindex(range(n)).to_numpy()
    last_online = on.groupby("person_idx")["t"].max().reindex(range(n)).to_numpy()
    acquired = persons["acquired_day"].to_numpy()
    browser_account = ~persons["buys"].to_numpy() & (rng.random(n) < 0.3)
    has_account = ~np.isnan(first_online) | browser_account
    created = np.where(
        ~np.isnan(first_online), first_online - rng.uniform(2, 30, n) / 1440, acquired + rng.uniform(0, 3, n)
    )
    acc_person = np.flatnonzero(has_account)
    acc_created = created[acc_person]
    dup = rng.random(len(acc_person)) < records.SHOP_RATES["duplicate"]
    dup_person = acc_person[dup]
    dup_created = acc_created[dup] + rng.uniform(30, 400, int(dup.sum()))
    deleted = ~dup & (rng.random(len(acc_person)) < 0.015)
    base_deleted_day = np.where(np.isnan(last_online[acc_person]), acc_created, last_online[acc_person])
    deleted_day = np.where(deleted, base_deleted_day + rng.uniform(10, 200, len(acc_person)), np.inf)
    accounts = (
        pd.DataFrame(
            {
                "person_idx": np.concatenate([acc_person, dup_person]),
                "created_day": np.concatenate([acc_created, dup_created]),
                "deleted_day": np.concatenate([deleted_day, np.full(len(dup_person), np.inf)]),
                "is_duplicate": np.concatenate(
                    [np.zeros(len(acc_person), bool), np.ones(len(dup_person), bool)]
                ),
            }
        )
        .sort_values(["created_day", "person_idx"], kind="stable")
        .reset_index(drop=True)
    )
    accounts["customer_id"] = CUSTOMER_ID_BASE + 1 + first + np.arange(len(accounts))
    return accounts


def _shop_customer_versions(rng: np.random.Generator, people: pd.DataFrame, accounts: pd.DataFrame) -> pd.DataFrame:
    """The shop's customer rows (versions) for `accounts`, as written: noised, with ids and lifetimes."""
    cust_versions = records.written_records(
        rng,
        people,
        accounts["person_idx"].to_numpy(),
        accounts["created_day"].to_numpy(),
        "shop",
        email_choice=accounts["is_duplicate"].to_numpy(),
    )
    cust_versions["customer_id"] = accounts["customer_id"].to_numpy()[cust_versions["record_idx"]]
    cust_versions["created_day"] = accounts["created_day"].to_numpy()[cust_versions["record_idx"]]
    cust_versions["deleted_day"] = accounts["deleted_day"].to_numpy()[cust_versions["record_idx"]]
    # A duplicate account created without any other email falls back to a "+shop" alias of the primary.
    dup_rows = accounts["is_duplicate"].to_numpy()[cust_versions["record_idx"]]
    same = dup_rows & (noise.texts(people["secondary_email"])[cust_versions["person_idx"]] == None)  # noqa: E711
    emails = noise.texts(cust_versions["email"])
    emails[same] = [e.replace("@", "+shop@", 1) if e else e for e in emails[same]]
    cust_versions["email"] = pd.Series(emails, dtype=object)
    return cust_versions


def _crm_contacts(
    rng: np.random.Generator, persons: pd.DataFrame, first: int = 0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """One row per CRM contact (person_idx, created_day, is_duplicate, contact_id, opt_in); who is in the CRM
    (per person); and which duplicate contacts use the person's secondary email.

    70% of buyers and 20% of browsers are in the CRM; 6% get a duplicate contact later.
    """
    n = len(persons)
    buys = persons["buys"].to_numpy()
    in_crm = rng.random(n) < np.where(buys, 0.7, 0.2)
    crm_person = np.flatnonzero(in_crm)
    crm_created = persons["acquired_day"].to_numpy()[crm_person] + rng.exponential(5, len(crm_person))
    cdup = rng.random(len(crm_person)) < records.CRM_RATES["duplicate"]
    contacts_idx = (
        pd.DataFrame(
            {
                "person_idx": np.concatenate([crm_person, crm_person[cdup]]),
                "created_day": np.concatenate(
                    [crm_created, crm_created[cdup] + rng.uniform(10, 500, int(cdup.sum()))]
                ),
                "is_duplicate": np.concatenate(
                    [np.zeros(len(crm_person), bool), np.ones(int(cdup.sum()), bool)]
                ),
            }
        )
        .sort_values(["created_day", "person_idx"], kind="stable")
        .reset_index(drop=True)
    )
    contacts_idx["contact_id"] = writers.prefixed("C", first + np.arange(1, len(contacts_idx) + 1), 7)
    contacts_idx["opt_in"] = rng.random(len(contacts_idx)) < 0.6
    dup_choice = contacts_idx["is_duplicate"].to_numpy() & (rng.random(len(contacts_idx)) < 0.5)
    return contacts_idx, in_crm, dup_choice


def _orders(
    rng: np.random.Generator,
    purchases: pd.DataFrame,
    accounts: pd.DataFrame,
    products: pd.DataFrame,
    people: pd.DataFrame,
    first_order_id: int = ORDER_ID_BASE + 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    on = purchases[purchases["is_online"]].reset_index()
    m = len(on)
    prim = accounts[~accounts["is_duplicate"]].set_index("person_idx")
    dupl = accounts[accounts["is_duplicate"]].set_index("person_idx")
    cust = prim["customer_id"].reindex(on["person_idx"]).to_numpy()
    dup_id = dupl["customer_id"].reindex(on["person_idx"]).to_numpy()
    dup_created = dupl["created_day"].reindex(on["person_idx"]).to_numpy()
    use_dup = ~np.isnan(dup_id) & (on["t"].to_numpy() > dup_created) & (rng.random(m) < 0.4)
    cust = np.where(use_dup, dup_id, cust).astype(np.int64)
    t = on["t"].to_numpy()
    u = rng.random(m)
    status_final = np.where(
        u < CANCEL_RATE, "cancelled", np.where(u < CANCEL_RATE + REFUND_RATE, "refunded", "completed")
    ).astype(object)
    completed_day = t + rng.uniform(1, 3, m)
    final_day = np.where(
        status_final == "cancelled",
        t + rng.uniform(0.02, 1, m),
        np.where(status_final == "refunded", completed_day + rng.uniform(5, 30, m), completed_day),
    )
    orders = pd.DataFrame(
        {
            "order_id": first_order_id + np.arange(m),
            "customer_id": cust,
            "person_idx": on["person_idx"],
            "purchase_row": on["index"],
            "t": t,
            "completed_day": completed_day,
            "final_day": final_day,
            "status_final": status_final,
        }
    )
    # Items: 1-5 lines, mostly from the person's preferred category, priced near the Gamma-Gamma spend.
    n_lines = 1 + np.minimum(rng.poisson(0.7, m), 4)
    line_order = np.repeat(np.arange(m), n_lines)
    k = len(line_order)
    qty = np.where(rng.random(k) < 0.15, 2, 1)
    pref = (
        people["last_name"].str.len().to_numpy() * 7 + people["birth_date"].map(lambda d: d.day).to_numpy()
    ) % len(CATEGORIES)
    cat = np.where(
        rng.random(k) < 0.55,
        pref[on["person_idx"].to_numpy()[line_order]],
        rng.integers(0, len(CATEGORIES), k),
    )
    amount = on["amount"].to_numpy()
    units_per_order = np.bincount(line_order, weights=qty, minlength=m)
    target = amount[line_order] / units_per_order[line_order] * rng.uniform(0.7, 1.3, k)
    key = products["category_idx"].to_numpy() * 1e6 + products["price"].to_numpy()
    pos = np.clip(np.searchsorted(key, cat * 1e6 + target), 0, len(products) - 1)
    pos = np.where(products["category_idx"].to_numpy()[pos] != cat, pos - 1, pos)
    price = products["price"].to_numpy()[pos]
    base = np.bincount(line_order, weights=qty * price, minlength=m)
    unit_price = np.round(price * (amount / base)[line_order], 2)
    unit_price = np.maximum(unit_price, 0.5)
    starts = np.cumsum(n_lines) - n_lines
    items = pd.DataFrame(
        {
            "order_id": orders["order_id"].to_numpy()[line_order],
            "line_number": np.arange(k) - np.repeat(starts, n_lines) + 1,
            "product_id": products["product_id"].to_numpy()[pos],
            "quantity": qty,
            "unit_price": unit_price,
            "t": t[line_order],
        }
    )
    orders["total_amount"] = np.round(np.bincount(line_order, weights=qty * unit_price, minlength=m), 2)
    return orders, items


def orders_for(
    rng: np.random.Generator, purchases: pd.DataFrame, accounts: pd.DataFrame, world: World, first_order_id: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shop orders and items for extra online `purchases` (person_idx, t, amount) of `world`'s people, drawn
    the way the world's own orders are, placed on `accounts` (one per person) and numbered from
    `first_order_id`."""
    return _orders(rng, purchases, accounts, world.products, world.people, first_order_id)


def customer_versions_for(rng: np.random.Generator, world: World, accounts: pd.DataFrame) -> pd.DataFrame:
    """The shop's customer rows for extra `accounts` of `world`'s people, noised like the world's own."""
    return _shop_customer_versions(rng, world.people, accounts)


def _pos(
    rng: np.random.Generator, purchases: pd.DataFrame, people: pd.DataFrame, in_crm: np.ndarray, chunk: Chunk
) -> pd.DataFrame:
    """Store transactions (and 6% later returns), identified by loyalty id, phone and/or email."""
    st = purchases[~purchases["is_online"]].reset_index()
    m = len(st)
    n = len(people)
    member = in_crm & (rng.random(n) < 0.7)
    # a chunk draws from its own residue class (index mod count) of the 90M loyalty numbers
    drawn = rng.choice(90_000_000 // chunk.count, n, replace=False) * chunk.count + chunk.index
    loyalty = writers.prefixed("L", drawn + 10_000_000, 8)
    ret = rng.random(m) < RETURN_RATE
    ret_rows = np.flatnonzero(ret)
    ret_t = _time_of_day(
        rng, st["t"].to_numpy()[ret_rows] + rng.uniform(1, 30, len(ret_rows)), STORE_OPEN_HOURS
    )
    full = rng.random(len(ret_rows)) < 0.6
    ret_amount = -np.where(
        full,
        st["amount"].to_numpy()[ret_rows],
        np.round(st["amount"].to_numpy()[ret_rows] * rng.uniform(0.2, 0.8, len(ret_rows)), 2),
    )
    tx = (
        pd.DataFrame(
            {
                "person_idx": np.concatenate(
                    [st["person_idx"].to_numpy(), st["person_idx"].to_numpy()[ret_rows]]
                ),
                "t": np.concatenate([st["t"].to_numpy(), ret_t]),
                "total_amount": np.concatenate([st["amount"].to_numpy(), ret_amount]),
                "purchase_row": np.concatenate([st["index"].to_numpy(), st["index"].to_numpy()[ret_rows]]),
                "is_return": np.concatenate([np.zeros(m, bool), np.ones(len(ret_rows), bool)]),
            }
        )
        .sort_values(["t", "person_idx"], kind="stable")
        .reset_index(drop=True)
    )
    k = len(tx)
    p = tx["person_idx"].to_numpy()
    is_member = member[p]
    first_visit = ~pd.Series(p).duplicated().to_numpy()
    u = rng.random((k, 3))
    has_loyalty = is_member & (u[:, 0] < 0.92)
    has_phone = np.where(is_member, u[:, 1] < 0.35, u[:, 1] < 0.55)
    has_email = np.where(is_member, u[:, 2] < 0.25, (u[:, 2] < 0.45) | ~has_phone)
    has_phone |= first_visit & ~has_email  # the card is registered with a contact detail on the first visit
    has_loyalty |= is_member & ~has_phone & ~has_email  # every transaction carries at least one identifier
    moved = tx["t"].to_numpy() > people["moved_day"].to_numpy()[p]
    area = np.where(moved, people["new_phone_area"].to_numpy()[p], people["phone_area"].to_numpy()[p])
    sub = np.where(
        moved, people["new_phone_subscriber"].to_numpy()[p], people["phone_subscriber"].to_numpy()[p]
    )
    # Store tills know their country, so they print UK numbers internationally (+44 ..., 0044 ...): a
    # national '0161 ...' without a country could not be told from a German number.
    style = rng.integers(0, 6, k)
    style = np.where(people["country"].to_numpy()[p] == "GB", style % 2 * 3, style)
    phone = noise.format_phones(np.where(has_phone, people["phone_cc"].to_numpy()[p], None), area, sub, style)
    email = np.where(has_email, people["email"].to_numpy()[p], None)
    email = noise.change_case(email, rng.random(k) < 0.1, rng)
    tx["transaction_id"] = writers.prefixed("T", chunk.transaction_offset + np.arange(1, k + 1), 9)
    tx["store_id"] = writers.prefixed("ST", people["city_idx"].to_numpy()[p], 3)
    tx["loyalty_id"] = np.where(has_loyalty, loyalty[p], None)
    tx["phone"] = phone
    tx["email"] = email
    return tx
