"""Day-level activity: web sessions/events and weekly email campaigns.

Browsing sessions are drawn per day from their own stream (seed, day), purchase sessions per order from a
world-level stream, email campaigns per campaign (seed, campaign): so the events up to day D never depend
on how many days are written after it.

Web: each person has 1-3 devices with deterministic anonymous ids; browsing sessions arrive at the
person's web rate while active (15% of it after they stop buying); 35% of sessions of a person with a shop
account log in (customer_id set from the login event on); every online order has a purchase session
(login, product views, add to cart, checkout, purchase at the order time), whose channel leans to the
channels with the larger known conversion effect (journeys.py). Browsers without an account
stay anonymous forever.

Email: a campaign every Tuesday 10:00 UTC to CRM contacts opted in, with an email, not unsubscribed and
not hard-bounced, one send per address (case-insensitive; the oldest contact wins, so a shared family
address is attributed to the older contact's person). Invalid (typo'd) addresses bounce; delivered mail is
opened at the person's open rate, 25% of opens click (more or fewer of the openers who buy soon after: the
campaign's known effect, journeys.py), 0.4% of delivered unsubscribe (and the CRM contact
gets a new version with email_opt_in false one hour later). 15% of events carry the address lower-cased.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from . import journeys
from .journeys import CHANNEL_P, CHANNELS
from .noise import texts
from .world import CATEGORIES, World

EVENT_TYPES = np.array(
    ["page_view", "login", "product_view", "add_to_cart", "checkout", "purchase"], dtype=object
)
PAGE_VIEW, LOGIN, PRODUCT_VIEW, ADD_TO_CART, CHECKOUT, PURCHASE = range(6)
PAGES = np.array(
    ["/", "/sale", "/new", "/account", "/search"] + [f"/c/{c}" for c in CATEGORIES], dtype=object
)
DEVICE_TYPES = np.array(["desktop", "mobile", "tablet"], dtype=object)
LOGIN_RATE = 0.35
EMAIL_TYPES = np.array(["sent", "bounce", "open", "click", "unsubscribe"], dtype=object)


@dataclass
class Devices:
    person_first: np.ndarray  # index of the person's first device
    count: np.ndarray
    anonymous_id: np.ndarray
    device_type: np.ndarray


def devices(seed: int, n: int) -> Devices:
    rng = np.random.default_rng([seed, 8])
    count = 1 + np.minimum(rng.poisson(0.8, n), 2)
    first = np.cumsum(count) - count
    ids = rng.integers(0, 2**63, int(count.sum()), dtype=np.int64)
    anon = np.array([f"{v:016x}" for v in ids], dtype=object)
    return Devices(first, count, anon, DEVICE_TYPES[rng.choice(3, int(count.sum()), p=[0.45, 0.45, 0.1])])


def _activity_end(seed: int, world: World) -> np.ndarray:
    """Day after which a person browses at 15% of their rate: the last purchase, or a browser's lifetime."""
    n = len(world.persons)
    rng = np.random.default_rng([seed, 10])
    last = world.purchases.groupby("person_idx")["t"].max().reindex(range(n)).to_numpy()
    return np.where(np.isnan(last), world.persons["acquired_day"].to_numpy() + rng.exponential(200, n), last)


# Numeric columns of a web event while sessions are drawn; session_key and session_start only serve to number
# the sessions of a day and are dropped once they are.
_EVENT_COLUMNS = (
    "t",
    "session_start",
    "session_key",
    "pos",
    "etype",
    "person_idx",
    "device",
    "customer_id",
    "product_id",
    "page",
    "channel",
    "day",
)


@dataclass(frozen=True)
class _Browsers:
    """Per person: from when and how often they browse, and the shop account a login reveals."""

    acquired: np.ndarray  # day the person arrives
    activity_end: np.ndarray  # day after which they browse at 15% of their rate
    rate: np.ndarray  # browsing sessions per day while active
    account_id: np.ndarray  # customer_id of their (first) account, -1 without one
    account_created: np.ndarray  # inf without an account
    account_deleted: np.ndarray  # inf while the account exists


def _browsers(seed: int, world: World) -> _Browsers:
    n = len(world.persons)
    activity_end = _activity_end(seed, world)
    # Web logins use the person's original account, never a duplicate one.
    acc = world.accounts[~world.accounts["is_duplicate"]]
    acc_id = np.full(n, -1, dtype=np.int64)
    acc_id[acc["person_idx"].to_numpy()] = acc["customer_id"].to_numpy()
    acc_created = np.full(n, np.inf)
    acc_created[acc["person_idx"].to_numpy()] = acc["created_day"].to_numpy()
    acc_deleted = np.full(n, np.inf)
    acc_deleted[acc["person_idx"].to_numpy()] = acc["deleted_day"].to_numpy()
    return _Browsers(
        acquired=world.persons["acquired_day"].to_numpy(),
        activity_end=activity_end,
        rate=world.persons["web_sessions_per_day"].to_numpy(),
        account_id=acc_id,
        account_created=acc_created,
        account_deleted=acc_deleted,
    )


def web_events(seed: int, world: World, days: int, effects_seed: int | None = None) -> pd.DataFrame:
    """All web events on days [0, days): numeric columns; strings are built by the writer.

    `effects_seed`: the seed of the known channel effects (journeys.py), the world's seed when `seed` is the
    stream seed of one of its chunks (the effects are the same for every chunk); `seed` when None."""
    dev = devices(seed, len(world.persons))
    browsers = _browsers(seed, world)
    purchase_sessions = _purchase_sessions(seed, world, dev, seed if effects_seed is None else effects_seed)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in _EVENT_COLUMNS}
    n_sessions = 0
    for d in range(days):
        # One stream per day: the events up to day D do not depend on how many days are written after it.
        rng = np.random.default_rng([seed, 7, d])
        day_events, sessions = _browsing_sessions(rng, d, browsers, dev, len(world.products), n_sessions)
        for key in _EVENT_COLUMNS:
            cols[key].append(day_events[key])
        n_sessions += sessions
    ps = purchase_sessions[purchase_sessions["day"] < days]
    for key in cols:
        extra = ps[key].to_numpy() + (n_sessions if key == "session_key" else 0)
        cols[key].append(extra)
    ev = {k: np.concatenate(v) for k, v in cols.items()}
    return _in_day_order(ev, dev)


def _browsing_sessions(
    rng: np.random.Generator, d: int, browsers: _Browsers, dev: Devices, n_products: int, first_key: int
) -> tuple[dict[str, np.ndarray], int]:
    """The browsing sessions of day `d` and their events (keyed from `first_key`); and the session count."""
    b = browsers
    r = np.where(b.acquired < d + 1, np.where(d < b.activity_end, b.rate, 0.15 * b.rate), 0.0)
    count = rng.poisson(r)
    person = np.repeat(np.arange(len(r)), count)
    s = len(person)
    start = d + rng.uniform(6, 23, s) / 24
    device = dev.person_first[person] + np.floor(rng.random(s) * dev.count[person]).astype(np.int64)
    login = (
        (b.account_created[person] < start) & (b.account_deleted[person] > start) & (rng.random(s) < LOGIN_RATE)
    )
    n_ev = 1 + np.minimum(rng.poisson(2.5, s), 11)
    n_ev = np.where(login, np.maximum(n_ev, 2), n_ev)  # a login is the second event of its session
    channel = rng.choice(len(CHANNELS), s, p=CHANNEL_P)
    sess = np.repeat(np.arange(s), n_ev)
    k = len(sess)
    first = np.cumsum(n_ev) - n_ev
    pos = np.arange(k) - np.repeat(first, n_ev)
    u = rng.random(k)
    etype = np.where(u < 0.45, PAGE_VIEW, np.where(u < 0.9, PRODUCT_VIEW, ADD_TO_CART))
    etype = np.where(pos == 0, PAGE_VIEW, etype)
    etype = np.where(login[sess] & (pos == 1), LOGIN, etype)
    gaps = rng.uniform(10, 120, k)
    gaps[pos == 0] = 0
    offset = np.cumsum(gaps)
    offset = offset - np.repeat(offset[first], n_ev)
    product = np.where((etype == PRODUCT_VIEW) | (etype == ADD_TO_CART), rng.integers(1, n_products + 1, k), 0)
    page = rng.integers(0, len(PAGES), k)
    events = {
        "t": start[sess] + offset / 86400,
        "session_start": start[sess],
        "session_key": sess + first_key,
        "pos": pos,
        "etype": etype,
        "person_idx": person[sess],
        "device": device[sess],
        # customer_id is known from the login event on
        "customer_id": np.where(login[sess] & (pos >= 1), b.account_id[person[sess]], -1),
        "product_id": product,
        "page": page,
        "channel": channel[sess],
        "day": np.full(k, d),
    }
    return events, s


def _in_day_order(ev: dict[str, np.ndarray], dev: Devices) -> pd.DataFrame:
    """Events ordered by time within their day, with session and event numbers that restart every day (the
    ids the writer builds from them are stable however many days are written)."""
    # Sessions numbered by start time within their day; events ordered by time within the day.
    keys, first_idx = np.unique(ev["session_key"], return_index=True)
    s_day, s_start = ev["day"][first_idx], ev["session_start"][first_idx]
    order = np.lexsort((keys, s_start, s_day))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    day_first = np.searchsorted(s_day[order], s_day, side="left")
    seq_of_key = rank - day_first
    ev["session_seq"] = seq_of_key[np.searchsorted(keys, ev["session_key"])]
    order = np.lexsort((ev["pos"], ev["session_seq"], ev["t"], ev["day"]))
    out = pd.DataFrame({k: v[order] for k, v in ev.items() if k not in ("session_key", "session_start")})
    out["event_seq"] = np.arange(len(out)) - np.searchsorted(out["day"].to_numpy(), out["day"].to_numpy())
    out["anonymous_id"] = dev.anonymous_id[out["device"].to_numpy()]
    out["device_type"] = dev.device_type[out["device"].to_numpy()]
    return out


def _purchase_sessions(seed: int, world: World, dev: Devices, effects_seed: int) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 9])
    orders = world.orders
    items = world.order_items
    m = len(orders)
    n_items = np.bincount(
        np.searchsorted(orders["order_id"].to_numpy(), items["order_id"].to_numpy()), minlength=m
    )
    n_ev = 4 + 2 * n_items  # page_view, login, (product_view, add_to_cart) per item, checkout, purchase
    o = np.repeat(np.arange(m), n_ev)
    k = len(o)
    starts = (np.cumsum(n_ev) - n_ev).astype(np.int64)
    pos = np.arange(k) - np.repeat(starts, n_ev)
    last = n_ev[o] - 1
    etype = np.where(
        pos == 0,
        PAGE_VIEW,
        np.where(
            pos == 1,
            LOGIN,
            np.where(
                pos == last,
                PURCHASE,
                np.where(pos == last - 1, CHECKOUT, np.where((pos % 2) == 0, PRODUCT_VIEW, ADD_TO_CART)),
            ),
        ),
    )
    item_starts = (np.cumsum(n_items) - n_items).astype(np.int64)
    item_idx = np.clip(item_starts[o] + (pos - 2) // 2, 0, max(len(items) - 1, 0))
    product = np.where(
        (etype == PRODUCT_VIEW) | (etype == ADD_TO_CART),
        items["product_id"].to_numpy()[item_idx] if len(items) else 0,
        0,
    )
    gaps = rng.uniform(10, 120, k)
    # Time runs backwards from the order: the purchase event is the order's ordered_at.
    gaps[starts[n_ev > 0]] = 0.0
    cum = np.cumsum(gaps)
    offset = cum - cum[starts][o] if k else cum
    total = offset[starts + n_ev - 1] if k else np.array([])
    before = total[o] - offset  # seconds between this event and the session's purchase event
    t_order = orders["t"].to_numpy()
    person = orders["person_idx"].to_numpy()
    device = dev.person_first[person] + np.floor(rng.random(m) * dev.count[person]).astype(np.int64)
    t = t_order[o] - before / 86400
    session_start = t[starts] if k else np.array([])
    return pd.DataFrame(
        {
            "t": t,
            "session_start": np.repeat(session_start, n_ev),
            "session_key": o,
            "pos": pos + 100,
            "etype": etype,
            "person_idx": person[o],
            "device": device[o],
            "customer_id": np.where(pos >= 1, orders["customer_id"].to_numpy()[o], -1),
            "product_id": product,
            "page": 0,
            # the known channel effects (journeys.py): purchase sessions lean to the channels that convert
            "channel": rng.choice(len(CHANNELS), m, p=journeys.purchase_channel_p(effects_seed))[o],
            "day": np.floor(t_order[o]).astype(np.int64),
        }
    )


def campaign_days(start: date, days: int) -> list[int]:
    first = (1 - start.weekday()) % 7  # Tuesday
    return list(range(first, days, 7))


def email_events(
    seed: int, world: World, start: date, days: int, effects_seed: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Email events of every campaign sent on days [0, days) (opens may fall later) and unsubscribes.
    `effects_seed`: as for `web_events`, the seed of the campaigns' known click effects."""
    effects_seed = seed if effects_seed is None else effects_seed
    ci = world.contact_index
    v0 = world.contacts[world.contacts["version"] == 0].set_index("contact_id").reindex(ci["contact_id"])
    email = texts(v0["email"])
    lower = np.array([e.lower() if e is not None else None for e in email], dtype=object)
    people = world.people
    person = ci["person_idx"].to_numpy()
    true_primary = np.array([e.lower() for e in texts(people["email_used"])], dtype=object)[person]
    true_secondary = np.array(
        [e.lower() if e else None for e in texts(people["secondary_email"])], dtype=object
    )[person]
    valid = (lower == true_primary) | (lower == true_secondary)
    valid |= np.array([e is not None and "+shop@" in e for e in lower])
    open_p = world.persons["email_open_probability"].to_numpy()[person]
    created = ci["created_day"].to_numpy()
    unsub_t = np.full(len(ci), np.inf)
    bounced = np.zeros(len(ci), bool)
    eligible_base = ci["opt_in"].to_numpy() & (email != None)  # noqa: E711
    frames = []
    purchase_times = journeys.purchase_times(world.purchases)
    for c, d in enumerate(campaign_days(start, days)):
        rng = np.random.default_rng([seed, 11, c])
        send = d + 10 / 24
        elig = eligible_base & (created < send) & (unsub_t > send) & ~bounced
        idx = np.flatnonzero(elig)
        idx = idx[~pd.Series(lower[idx]).duplicated().to_numpy()]
        r = len(idx)
        sent_t = send + rng.uniform(0, 3600, r) / 86400
        is_bounce = np.where(valid[idx], rng.random(r) < 0.005, rng.random(r) < 0.8)
        opened = ~is_bounce & (rng.random(r) < open_p[idx])
        open_t = sent_t + np.minimum(rng.exponential(6, r), 168) / 24
        click_u = rng.random(r)
        click_t = open_t + rng.uniform(5, 600, r) / 86400
        # the campaign's known effect (journeys.py): openers who buy soon after click more, or less
        buys_soon = np.zeros(r, dtype=bool)
        buys_soon[opened] = journeys.buys_within(
            purchase_times, person[idx[opened]], click_t[opened], journeys.CAMPAIGN_WINDOW_DAYS
        )
        effect = np.where(buys_soon, journeys.campaign_effect(effects_seed, c), 1.0)
        clicked = opened & (click_u < journeys.CLICK_RATE * effect)
        unsub = ~is_bounce & (rng.random(r) < 0.004)
        u_t = np.where(opened, open_t, sent_t) + rng.uniform(60, 2 * 86400, r) / 86400
        bounced[idx[is_bounce]] = True
        unsub_t[idx[unsub]] = u_t[unsub]
        parts = [
            (sent_t, np.ones(r, bool), 0),
            (sent_t + 60 / 86400, is_bounce, 1),
            (open_t, opened, 2),
            (click_t, clicked, 3),
            (u_t, unsub, 4),
        ]
        for t, mask, code in parts:
            frames.append(
                pd.DataFrame(
                    {
                        "t": t[mask],
                        "etype": code,
                        "contact": idx[mask],
                        "campaign": d,
                        "lower": rng.random(int(mask.sum())) < 0.15,
                    }
                )
            )
    ev = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({"t": [], "etype": [], "contact": [], "campaign": [], "lower": []})
    )
    ev = ev.sort_values(["t", "contact", "etype"], kind="stable").reset_index(drop=True)
    ev["contact"] = ev["contact"].astype(np.int64)
    ev["email"] = np.where(
        ev["lower"].to_numpy(dtype=bool), lower[ev["contact"].to_numpy()], email[ev["contact"].to_numpy()]
    )
    ev["person_idx"] = person[ev["contact"].to_numpy()]
    unsubscribed = pd.DataFrame(
        {
            "contact_id": ci["contact_id"].to_numpy()[unsub_t < np.inf],
            "valid_day": unsub_t[unsub_t < np.inf] + 1 / 24,
        }
    )
    return ev, unsubscribed


def day_dates(start: date, day_index: np.ndarray) -> np.ndarray:
    return np.datetime64(start) + day_index.astype("timedelta64[D]")


def shifted(start: date, days: int) -> date:
    return start + timedelta(days=days)
