"""True identities of the population: names, birth dates, addresses (with moves), phones, emails, households.

Households: HOUSEHOLD_RATE of persons join another person's household (same address and moves; same last
name for 80%); 15% of them share the head's email in their own records and 15% share the
landline: hard negatives for identity resolution (same email/phone, different person).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import names, writers
from .noise import fold_ascii

HOUSEHOLD_RATE = 0.06
SHARED_EMAIL_IN_HOUSEHOLD = 0.15
SHARED_PHONE_IN_HOUSEHOLD = 0.15
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


def _unique(values: np.ndarray) -> np.ndarray:
    """Append 2, 3, ... to repeated email local parts so that each address belongs to one person."""
    s = pd.Series(values)
    n = s.groupby(s).cumcount().to_numpy()
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


def draw_people(rng: np.random.Generator, persons: pd.DataFrame) -> pd.DataFrame:
    """True attributes for every person, including a possible move (new address from `moved_day`)."""
    n = len(persons)
    female = rng.random(n) < 0.5
    first = np.where(
        female,
        names.sample_zipf(rng, names.FEMALE_NAMES, n, 0.9),
        names.sample_zipf(rng, names.MALE_NAMES, n, 0.9),
    )
    last = names.sample_zipf(rng, names.LAST_NAMES, n, 0.85)
    age_days = rng.integers(18 * 365, 82 * 365, n)
    birth = (np.datetime64("2024-07-01") - age_days.astype("timedelta64[D]")).astype(object)
    addr = _addresses(rng, n)
    numbers = rng.choice(9_000_000, size=2 * n, replace=False) + 1_000_000  # unique subscriber numbers
    phones = _phones(rng, addr["country"], addr["city_idx"], numbers[:n])

    # Households: a joiner takes the head's address, usually the last name, sometimes email or phone.
    joiner = rng.random(n) < HOUSEHOLD_RATE
    heads = np.flatnonzero(~joiner)
    head = np.arange(n)
    head[joiner] = heads[rng.integers(0, len(heads), int(joiner.sum()))]
    same_last = joiner & (rng.random(n) < 0.8)
    last = np.where(same_last, last[head], last)
    for k in addr:
        addr[k] = np.where(joiner, addr[k][head], addr[k])
    shared_phone = joiner & (rng.random(n) < SHARED_PHONE_IN_HOUSEHOLD)
    for k in phones:
        phones[k] = np.where(shared_phone, phones[k][head], phones[k])

    country = addr["country"]
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
    both = _unique(np.concatenate([local + "@" + domain, secondary]))
    primary_email, secondary_email = both[:n], np.where(has_secondary, both[n:], None)
    shared_email = joiner & (rng.random(n) < SHARED_EMAIL_IN_HOUSEHOLD)

    # Moves: households move together (the joiner follows the head's move).
    moved = rng.random(n) < MOVE_RATE
    moved_day = persons["acquired_day"].to_numpy() + rng.uniform(30, 900, n)
    new_addr = _addresses(rng, n, np.where(rng.random(n) < 0.7, addr["city_idx"], rng.integers(0, 60, n)))
    new_addr_country = new_addr["country"]
    same_country = new_addr_country == country
    moved &= same_country
    moved = np.where(joiner, moved[head], moved)
    moved_day = np.where(joiner, moved_day[head], moved_day)
    for k in new_addr:
        new_addr[k] = np.where(joiner, new_addr[k][head], new_addr[k])
    new_landline = moved & ~phones["is_mobile"]
    new_phone_sub = np.where(new_landline, numbers[n:].astype(str).astype(object), phones["phone_subscriber"])
    new_phone_area = np.where(
        new_landline,
        np.array([c[4] for c in names.CITIES], dtype=object)[new_addr["city_idx"]],
        phones["phone_area"],
    )

    out = pd.DataFrame(
        {
            "first_name": first,
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
            "moved": moved,
            "moved_day": np.where(moved, moved_day, np.inf),
        }
    )
    for k, v in new_addr.items():
        out["new_" + k] = v
    out["new_phone_area"] = new_phone_area
    out["new_phone_subscriber"] = new_phone_sub
    out["phone_e164"] = "+" + out["phone_cc"] + out["phone_area"] + out["phone_subscriber"]
    return out
