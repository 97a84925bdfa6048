"""Identity records as the systems hold them: shop customer accounts and CRM contacts, with versions.

Noise model (rates per record; CRM / shop):
- first name: nickname 8% / 4% (Robert -> Bob), accents folded 30% / 15% of names with accents
  (Müller -> Mueller or Muller), typo (edit distance 1, 20% of those 2) 3% / 1.5%, case 3% / 2%,
  whitespace 3% / 1%, missing 1% / 0%; same for last name without nicknames; first/last swapped 1.5% / 0.5%.
- email: CRM uses the secondary address 15% (when the person has one), the household email for household
  members flagged to share it, changes case 10% / 5%, typo 1% / 0%, missing 8% / 0%.
- phone: present 80% / 75%, written in one of six formats (+49 30 1234567, +49301234567, 030 1234567,
  0049 30 1234567, 030/1234567, (030) 1234567); CRM: 0.7% a call-centre placeholder shared by many.
- birth date: present 85% / 50%; day and month swapped 1%.
- address: missing 10% / 3%; 'straße' written 'str.' 15% or 'strasse' 10%; typo 2%; postcode missing 3%;
  city case 3%. A person who moves (12%) updates the shop address 70% and the CRM 50% of the time
  (a new version 0-30 days after the move); landline movers also get a new phone.
- duplicates: 6% of CRM persons get a second contact later (independent noise, the secondary email when
  there is one); 2.5% of shop accounts have a second account (secondary email); 1.5% of accounts are
  deleted after the person's last online order (their orders stay, pointing at a missing customer).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import names, noise

PLACEHOLDER_PHONES = np.array(["+49 30 0000000", "0800 1234567", "+44 20 7946 0000"], dtype=object)
COUNTRY_SPELLINGS = {"DE": ["DE", "Germany", "Deutschland", "DE"], "GB": ["GB", "United Kingdom", "UK", "GB"]}

CRM_RATES = dict(
    nickname=0.08,
    accent=0.30,
    typo=0.03,
    case=0.03,
    space=0.03,
    missing_name=0.01,
    swap=0.015,
    email_secondary=0.15,
    email_case=0.10,
    email_typo=0.01,
    email_missing=0.08,
    phone=0.80,
    placeholder=0.007,
    birth=0.85,
    birth_swap=0.01,
    addr_missing=0.10,
    street_abbr=0.25,
    addr_typo=0.02,
    postcode_missing=0.03,
    city_case=0.03,
    move_update=0.5,
    duplicate=0.06,
)
SHOP_RATES = dict(
    nickname=0.04,
    accent=0.15,
    typo=0.015,
    case=0.02,
    space=0.01,
    missing_name=0.0,
    swap=0.005,
    email_secondary=0.0,
    email_case=0.05,
    email_typo=0.0,
    email_missing=0.0,
    phone=0.75,
    placeholder=0.0,
    birth=0.50,
    birth_swap=0.01,
    addr_missing=0.03,
    street_abbr=0.25,
    addr_typo=0.02,
    postcode_missing=0.03,
    city_case=0.03,
    move_update=0.7,
    duplicate=0.025,
)
NOISE_RATES = {"crm": CRM_RATES, "shop": SHOP_RATES}

_ACCENTED = set("äöüßÄÖÜéèëïçşıřáółÇŞğžýàâêíúñØøå")


def _has_accent(values: np.ndarray) -> np.ndarray:
    return np.array([v is not None and any(ch in _ACCENTED for ch in v) for v in values], dtype=bool)


def _name_noise(rng: np.random.Generator, values: np.ndarray, rates: dict, nick: bool) -> np.ndarray:
    n = len(values)
    out = values.copy()
    if nick:
        nn = np.array([names.NICKNAMES.get(v) for v in values], dtype=object)
        use = (nn != None) & (rng.random(n) < rates["nickname"] * 3)  # noqa: E711 (a third have nicknames)
        out[use] = nn[use]
    out = noise.fold_accents(out, _has_accent(out) & (rng.random(n) < rates["accent"]), rng)
    out = noise.typos(out, rng.random(n) < rates["typo"], rng)
    out = noise.change_case(out, rng.random(n) < rates["case"], rng)
    out = noise.pad_whitespace(out, rng.random(n) < rates["space"], rng)
    return noise.blank(out, rng.random(n) < rates["missing_name"])


def _address_noise(
    rng: np.random.Generator, addr: dict[str, np.ndarray], rates: dict
) -> dict[str, np.ndarray]:
    n = len(addr["address_line1"])
    line1 = addr["address_line1"].copy()
    u = rng.random(n)
    abbr = u < rates["street_abbr"] * 0.6
    spelled = (u >= rates["street_abbr"] * 0.6) & (u < rates["street_abbr"])
    line1 = np.array(
        [
            v.replace("straße", "str.").replace("Straße", "Str.") if a else (v.replace("ß", "ss") if s else v)
            for v, a, s in zip(line1, abbr, spelled, strict=True)
        ],
        dtype=object,
    )
    line1 = noise.typos(line1, rng.random(n) < rates["addr_typo"], rng)
    city = noise.change_case(addr["city"].copy(), rng.random(n) < rates["city_case"], rng)
    postcode = noise.blank(addr["postcode"].copy(), rng.random(n) < rates["postcode_missing"])
    missing = rng.random(n) < rates["addr_missing"]
    return {
        "address_line1": noise.blank(line1, missing),
        "address_line2": noise.blank(addr["address_line2"].copy(), missing),
        "city": noise.blank(city, missing),
        "postcode": noise.blank(postcode, missing),
        "region": noise.blank(addr["region"].copy(), missing | (rng.random(n) < 0.3)),
    }


def _birth_noise(rng: np.random.Generator, birth: np.ndarray, rates: dict) -> np.ndarray:
    n = len(birth)
    text = np.array([d.isoformat() for d in birth], dtype=object)
    swap = (rng.random(n) < rates["birth_swap"]) & np.array([d.day <= 12 and d.day != d.month for d in birth])
    text[swap] = [f"{d.year:04d}-{d.day:02d}-{d.month:02d}" for d in birth[swap]]
    return noise.blank(text, rng.random(n) >= rates["birth"])


def written_records(
    rng: np.random.Generator,
    people: pd.DataFrame,
    person_idx: np.ndarray,
    created_day: np.ndarray,
    system: str,
    email_choice: np.ndarray | None = None,
) -> pd.DataFrame:
    """Versions of identity records for `system` ('crm' or 'shop'): one row per (record, version).

    Returns columns record_idx, version, valid_day, person_idx and the written contract fields.
    Version 0 holds the address valid at creation; version 1 (movers who update) the new address.
    """
    rates = NOISE_RATES[system]
    p = people.iloc[person_idx].reset_index(drop=True)
    for col in p.columns:
        if col != "birth_date" and (p[col].dtype == object or pd.api.types.is_string_dtype(p[col])):
            p[col] = pd.Series(noise.texts(p[col]), dtype=object)
    n = len(p)
    first = _name_noise(rng, p["first_name"].to_numpy(dtype=object), rates, nick=True)
    last = _name_noise(rng, p["last_name"].to_numpy(dtype=object), rates, nick=False)
    swap = rng.random(n) < rates["swap"]
    first, last = np.where(swap, last, first), np.where(swap, first, last)

    email = p["email_used"].to_numpy(dtype=object).copy()
    sec = p["secondary_email"].to_numpy(dtype=object)
    use_sec = (sec != None) & (rng.random(n) < rates["email_secondary"])  # noqa: E711
    if email_choice is not None:  # duplicates: forced to the secondary address when there is one
        use_sec |= email_choice & (sec != None)  # noqa: E711
    email = np.where(use_sec, sec, email)
    email = noise.change_case(email, rng.random(n) < rates["email_case"], rng)
    email = noise.typos(email, rng.random(n) < rates["email_typo"], rng)
    email = noise.blank(email, rng.random(n) < rates["email_missing"])

    has_phone = rng.random(n) < rates["phone"]
    phone_style = rng.integers(0, 6, n)
    placeholder = rng.random(n) < rates["placeholder"]
    placeholder_value = PLACEHOLDER_PHONES[rng.integers(0, len(PLACEHOLDER_PHONES), n)]
    birth = _birth_noise(rng, p["birth_date"].to_numpy(dtype=object), rates)
    country_text = np.array(
        [
            COUNTRY_SPELLINGS[c][k] if system == "crm" else c
            for c, k in zip(p["country"], rng.integers(0, 4, n), strict=True)
        ],
        dtype=object,
    )

    moved_day = p["moved_day"].to_numpy()
    updates = (moved_day < np.inf) & (rng.random(n) < rates["move_update"])
    update_day = moved_day + rng.uniform(0, 30, n)
    old_first = created_day < moved_day  # record created before the move: starts with the old address
    versions = []
    for version, rows in ((0, np.arange(n)), (1, np.flatnonzero(old_first & updates))):
        use_new = np.full(n, version == 1) | ~old_first
        addr = {
            k: np.where(use_new, p["new_" + k], p[k])
            for k in ("address_line1", "address_line2", "city", "postcode", "region")
        }
        noisy = _address_noise(rng, addr, rates)
        area = np.where(use_new, p["new_phone_area"], p["phone_area"])
        sub = np.where(use_new, p["new_phone_subscriber"], p["phone_subscriber"])
        phone = noise.format_phones(np.where(has_phone, p["phone_cc"], None), area, sub, phone_style)
        phone = np.where(placeholder, placeholder_value, phone)
        frame = pd.DataFrame(
            {
                "record_idx": np.arange(n),
                "version": version,
                "valid_day": created_day if version == 0 else update_day,
                "person_idx": person_idx,
                "first_name": first,
                "last_name": last,
                "email": email,
                "phone": phone,
                **noisy,
                "country": country_text,
                "birth_date": birth,
            }
        )
        versions.append(frame.iloc[rows])
    return pd.concat(versions, ignore_index=True)
