"""True identities of the population: names, birth dates, addresses (with moves), phones, emails, households.

Given names: every person has a first name and, SECOND_GIVEN_NAME_RATE of them, a second given name from
the same (gender) pool, never equal to the first; records sometimes use it instead of the first name.

Households: HOUSEHOLD_RATE of persons join another person's household (same address and moves; same last
name for 80%), so about 15% of persons live with another person of the population. A joiner always has a
first name and a birth date different from the head's: a partner (PARTNER_SHARE, a few years apart) or a
parent / adult child (22-35 years apart). SHARED_PHONE_IN_HOUSEHOLD of joiners give the household
landline (the head's phone, made a landline; it moves with the household), SHARED_EMAIL_IN_HOUSEHOLD use
the head's email in their own records: hard negatives for identity resolution (same address and
phone or email, different person).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import names, writers
from .noise import fold_ascii

HOUSEHOLD_RATE = 0.08
SHARED_EMAIL_IN_HOUSEHOLD = 0.20
SHARED_PHONE_IN_HOUSEHOLD = 0.70
PARTNER_SHARE = 0.65
SECOND_GIVEN_NAME_RATE = 0.60
MOVE_RATE = 0.12
SECONDARY_EMAIL_RATE = 0.30
MOBILE_RATE = 0.70

_MOBILE_DE = ["151", "152", "157", "160", "162", "170", "171", "172", "175", "176", "177", "178", "179"]
_MOBILE_GB = ["7700", "7711", "7723", "7734", "7745", "7752", "7766", "7781", "7799", "7412", "7508", "7957"]
_DOMAINS = {
    "DE": (
        ["gmx.de", "web.de", "t-online.de", "gmail.com", "outlook.de", "yahoo.de", "posteo.de"],
        [0.22, 0.22, 0.14, 0.24, 0.08, 0.06, 0.04],
    ),
    "GB": (
        ["gmail.com", "hotmail.co.uk", "outlook.com", "yahoo.co.uk", "btinternet.com", "icloud.com"],
        [0.35, 0.2, 0.15, 0.12, 0.1, 0.08],
    ),
}
_WORK_DOMAINS = ["firma.de", "acme-gmbh.de", "example-corp.com", "uni-beispiel.de", "nhs-trust.uk", "mail.de"]


def _addresses(rng: np.random.Generator, n: int, city_idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    cities = names.CITIES
    if city_idx is None:
        w = np.array([c[5] for c in cities])
        city_idx = rng.choice(len(cities), size=n, p=w / w.sum())
    country = np.array([c[2] for c in cities], dtype=object)[city_idx]
    de_streets, gb_streets = names.streets_de(), names.streets_gb()
    street = np.where(
        country == "DE",
        np.array(de_streets, dtype=object)[rng.integers(0, len(de_streets), n)],
        np.array(gb_streets, dtype=object)[rng.integers(0, len(gb_streets), n)],
    )
    house = rng.integers(1, 160, n).astype(str).astype(object)
    suffix = np.where(rng.random(n) < 0.08, np.array(list("abc"), dtype=object)[rng.integers(0, 3, n)], "")
    house = house + suffix
    line1 = np.where(country == "DE", street + " " + house, house + " " + street)
    line2_options = np.array(
        ["Hinterhaus", "2. OG", "c/o Familie", "Flat 2", "Apartment 4", "Unit 7"], dtype=object
    )
    line2 = np.where(rng.random(n) < 0.07, line2_options[rng.integers(0, 6, n)], None)
    base = np.array([c[3] for c in cities], dtype=object)[city_idx]
    de_code = writers.zero_padded(
        (np.array([int(b) if b.isdigit() else 0 for b in base]) + rng.integers(0, 90, n)).astype(str), 5
    ).astype(object)
    letters = np.array(list("ABDEFGHJLNPQRSTUWXYZ"), dtype=object)
    gb_code = (
        base
        + " "
        + rng.integers(1, 10, n).astype(str).astype(object)
        + letters[rng.integers(0, 20, n)]
        + letters[rng.integers(0, 20, n)]
    )
    return {
        "city_idx": city_idx,
        "address_line1": line1,
        "address_line2": line2,
        "city": np.array([c[0] for c in cities], dtype=object)[city_idx],
        "postcode": np.where(country == "DE", de_code, gb_code),
        "region": np.array([c[1] for c in cities], dtype=object)[city_idx],
        "country": country,
    }


class AddressBook:
    """How many persons of the chunks built so far drew each email address (before numbering): a chunk numbers
    its repeats after theirs, so the chunks of a world number an address as one big world would and no
    address belongs to two persons. Empty for the first (or only) chunk."""

    def __init__(self) -> None:
        self.uses = pd.Series(dtype=np.int64)

    def number(self, drawn: pd.Series) -> np.ndarray:
        """For each drawn address, how many persons drew it before (this chunk's earlier rows included)."""
        before = self.uses.reindex(drawn.to_numpy()).fillna(0).to_numpy(dtype=np.int64)
        self.uses = self.uses.add(drawn.value_counts(), fill_value=0).astype(np.int64)
        return drawn.groupby(drawn).cumcount().to_numpy() + before


def _unique(values: np.ndarray, addresses: AddressBook | None = None) -> np.ndarray:
    """Append 2, 3, ... to repeated email local parts so that each address belongs to one person (numbered
    after the chunks before, `addresses`)."""
    s = pd.Series(values)
    n = s.groupby(s).cumcount().to_numpy() if addresses is None else addresses.number(s)
    local_domain = s.str.split("@", n=1, expand=True)
    local, domain = local_domain[0].to_numpy(dtype=object), local_domain[1].to_numpy(dtype=object)
    bumped = local + np.where(n > 0, (n + 1).astype(str).astype(object), "") + "@" + domain
    return bumped


def _phones(rng: np.random.Generator, country: np.ndarray, city_idx: np.ndarray, numbers: np.ndarray) -> dict:
    n = len(country)
    mobile = rng.random(n) < MOBILE_RATE
    area_code = np.array([c[4] for c in names.CITIES], dtype=object)[city_idx]
    mob = np.where(
        country == "DE",
        np.array(_MOBILE_DE, dtype=object)[rng.integers(0, len(_MOBILE_DE), n)],
        np.array(_MOBILE_GB, dtype=object)[rng.integers(0, len(_MOBILE_GB), n)],
    )
    return {
        "phone_cc": np.where(country == "DE", "49", "44").astype(object),
        "phone_area": np.where(mobile, mob, area_code),
        "phone_subscriber": numbers.astype(str).astype(object),
        "is_mobile": mobile,
    }


def _given_names(rng: np.random.Generator, female: np.ndarray) -> np.ndarray:
    return np.where(
        female,
        names.sample_zipf(rng, names.FEMALE_NAMES, len(female), 0.9),
        names.sample_zipf(rng, names.MALE_NAMES, len(female), 0.9),
    )


def _redraw_equal(
    rng: np.random.Generator, values: np.ndarray, other: np.ndarray, female: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Redraw values (same gender pool) where mask and values == other, until no such row is left."""
    out = values.copy()
    clash = np.flatnonzero(mask & (out == other))
    while len(clash):
        out[clash] = _given_names(rng, female[clash])
        clash = clash[out[clash] == other[clash]]
    return out


def _household_ages(
    rng: np.random.Generator, age_days: np.ndarray, head: np.ndarray, joiner: np.ndarray
) -> np.ndarray:
    """Joiners: a partner a few years apart from the head or a parent / adult child, never the same day."""
    n = len(age_days)
    lo, hi = 18 * 365, 82 * 365 - 1
    partner = rng.random(n) < PARTNER_SHARE
    gap = np.where(
        partner, rng.normal(0, 3.5, n), np.where(rng.random(n) < 0.5, -1, 1) * rng.uniform(22, 35, n)
    )
    gap_days = np.rint(gap * 365.25).astype(np.int64)
    gap_days = np.where(gap_days == 0, 1, gap_days)
    cand = age_days[head] + gap_days
    cand = np.where((cand < lo) | (cand > hi), age_days[head] - gap_days, cand)  # the other way round
    cand = np.clip(cand, lo, hi)
    cand = np.where(cand == age_days[head], np.where(cand > lo, cand - 1, cand + 1), cand)
    return np.where(joiner, cand, age_days)


def draw_people(
    rng: np.random.Generator,
    persons: pd.DataFrame,
    share: tuple[int, int] = (0, 1),
    addresses: AddressBook | None = None,
) -> pd.DataFrame:
    """True attributes for every person, including a possible move (new address from `moved_day`).

    In chunk i of k of a world (`share`, world.Chunk) the phone subscriber numbers come from the chunk's own
    residue class (i mod k) and email addresses are numbered after the chunks before (`addresses`), so both
    stay unique across the chunks.

    The steps draw from `rng` in a fixed order (own attributes, households, emails, moves): reordering them
    changes every world generated for a seed.
    """
    n = len(persons)
    female = rng.random(n) < 0.5
    first = _given_names(rng, female)
    second = _given_names(rng, female)
    has_second = rng.random(n) < SECOND_GIVEN_NAME_RATE
    last = names.sample_zipf(rng, names.LAST_NAMES, n, 0.85)
    age_days = rng.integers(18 * 365, 82 * 365, n)
    addr = _addresses(rng, n)
    # unique subscriber numbers, from the chunk's residue class (mod k) of the 9M
    numbers = rng.choice(9_000_000 // share[1], size=2 * n, replace=False) * share[1] + share[0] + 1_000_000
    phones = _phones(rng, addr["country"], addr["city_idx"], numbers[:n])

    # Households: a joiner takes the head's address, usually the last name, often the landline, sometimes
    # the email; never the head's first name or birth date.
    joiner = rng.random(n) < HOUSEHOLD_RATE
    heads = np.flatnonzero(~joiner)
    head = np.arange(n)
    head[joiner] = heads[rng.integers(0, len(heads), int(joiner.sum()))]
    same_last = joiner & (rng.random(n) < 0.8)
    last = np.where(same_last, last[head], last)
    first = _redraw_equal(rng, first, first[head], female, joiner)
    second = _redraw_equal(rng, second, first, female, has_second)
    second = np.where(has_second, second, None)
    age_days = _household_ages(rng, age_days, head, joiner)
    birth = (np.datetime64("2024-07-01") - age_days.astype("timedelta64[D]")).astype(object)
    for k in addr:
        addr[k] = np.where(joiner, addr[k][head], addr[k])
    shared_phone = _share_landlines(rng, phones, addr, joiner, head)

    primary_email, secondary_email = _emails(rng, first, last, addr["country"], addresses)
    shared_email = joiner & (rng.random(n) < SHARED_EMAIL_IN_HOUSEHOLD)
    move = _moves(rng, persons, addr, phones, numbers[n:], joiner, head, shared_phone)

    out = pd.DataFrame(
        {
            "first_name": first,
            "second_given_name": second,
            "last_name": last,
            "is_female": female,
            "birth_date": birth,
            **{k: v for k, v in addr.items()},
            **phones,
            "email": primary_email,
            "secondary_email": secondary_email,
            "household_head_idx": np.where(joiner, head, -1),
            "uses_household_email": shared_email,
            "email_used": np.where(shared_email, primary_email[head], primary_email),
            "moved": move.moved,
            "moved_day": np.where(move.moved, move.moved_day, np.inf),
        }
    )
    for k, v in move.new_address.items():
        out["new_" + k] = v
    out["new_phone_area"] = move.new_phone_area
    out["new_phone_subscriber"] = move.new_phone_subscriber
    out["phone_e164"] = "+" + out["phone_cc"] + out["phone_area"] + out["phone_subscriber"]
    return out


def _share_landlines(
    rng: np.random.Generator,
    phones: dict[str, np.ndarray],
    addr: dict[str, np.ndarray],
    joiner: np.ndarray,
    head: np.ndarray,
) -> np.ndarray:
    """Joiners who give the household phone take the head's, made a landline (a shared mobile would be
    odd); `phones` is changed in place. Returns who shares the head's phone."""
    shared_phone = joiner & (rng.random(len(joiner)) < SHARED_PHONE_IN_HOUSEHOLD)
    landline_head = np.zeros(len(joiner), dtype=bool)
    landline_head[head[shared_phone]] = True  # the phone the household shares is the head's landline
    city_area = np.array([c[4] for c in names.CITIES], dtype=object)[addr["city_idx"]]
    phones["phone_area"] = np.where(landline_head, city_area, phones["phone_area"])
    phones["is_mobile"] = phones["is_mobile"] & ~landline_head
    for k in phones:
        phones[k] = np.where(shared_phone, phones[k][head], phones[k])
    return shared_phone


def _emails(
    rng: np.random.Generator,
    first: np.ndarray,
    last: np.ndarray,
    country: np.ndarray,
    addresses: AddressBook | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Primary (a private provider of the country) and secondary (work) addresses, each unique to a person;
    the secondary is None for those who have none."""
    n = len(first)
    f_ascii = np.array([fold_ascii(v).lower() for v in first], dtype=object)
    l_ascii = np.array([fold_ascii(v).lower() for v in last], dtype=object)
    style = rng.integers(0, 4, n)
    local = np.select(
        [style == 0, style == 1, style == 2],
        [
            f_ascii + "." + l_ascii,
            f_ascii.astype(str).astype("U1").astype(object) + l_ascii,
            f_ascii + "_" + l_ascii,
        ],
        f_ascii + rng.integers(1, 99, n).astype(str).astype(object),
    )
    domain = np.empty(n, dtype=object)
    for c, (doms, w) in _DOMAINS.items():
        m = country == c
        domain[m] = np.array(doms, dtype=object)[rng.choice(len(doms), size=int(m.sum()), p=w)]
    has_secondary = rng.random(n) < SECONDARY_EMAIL_RATE
    secondary = (
        f_ascii.astype(str).astype("U1").astype(object)
        + "."
        + l_ascii
        + "@"
        + np.array(_WORK_DOMAINS, dtype=object)[rng.integers(0, len(_WORK_DOMAINS), n)]
    )
    # Made unique together, so a work address never equals another person's private one either.
    both = _unique(np.concatenate([local + "@" + domain, secondary]), addresses)
    return both[:n], np.where(has_secondary, both[n:], None)


@dataclass(frozen=True)
class _Move:
    moved: np.ndarray
    moved_day: np.ndarray  # drawn for everyone; meaningful where `moved`
    new_address: dict[str, np.ndarray]
    new_phone_area: np.ndarray
    new_phone_subscriber: np.ndarray


def _moves(
    rng: np.random.Generator,
    persons: pd.DataFrame,
    addr: dict[str, np.ndarray],
    phones: dict[str, np.ndarray],
    spare_numbers: np.ndarray,
    joiner: np.ndarray,
    head: np.ndarray,
    shared_phone: np.ndarray,
) -> _Move:
    """Who moves (within their country), when, where to, and the landline number that comes with it."""
    n = len(joiner)
    country = addr["country"]
    moved = rng.random(n) < MOVE_RATE
    moved_day = persons["acquired_day"].to_numpy() + rng.uniform(30, 900, n)
    new_addr = _addresses(rng, n, np.where(rng.random(n) < 0.7, addr["city_idx"], rng.integers(0, 60, n)))
    same_country = new_addr["country"] == country
    moved &= same_country
    # Households move together (the joiner follows the head's move).
    moved = np.where(joiner, moved[head], moved)
    moved_day = np.where(joiner, moved_day[head], moved_day)
    for k in new_addr:
        new_addr[k] = np.where(joiner, new_addr[k][head], new_addr[k])
    new_landline = moved & ~phones["is_mobile"]
    new_phone_sub = np.where(new_landline, spare_numbers.astype(str).astype(object), phones["phone_subscriber"])
    new_phone_area = np.where(
        new_landline,
        np.array([c[4] for c in names.CITIES], dtype=object)[new_addr["city_idx"]],
        phones["phone_area"],
    )
    # The shared landline moves with the household: one new number for all who share it.
    new_phone_sub = np.where(shared_phone, new_phone_sub[head], new_phone_sub)
    new_phone_area = np.where(shared_phone, new_phone_area[head], new_phone_area)
    return _Move(moved, moved_day, new_addr, new_phone_area, new_phone_sub)
