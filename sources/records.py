"""Identity records as the systems hold them: shop customer accounts and CRM contacts, with versions.

Noise model (rates per record, CRM / shop; declared in CRM_RATES / SHOP_RATES, recorded in
truth/params.json). Each record is noised independently, duplicates of a person included; the versions of
one record share its name, email, phone and birth date noise (address noise is drawn per version).
- first name: the person's second given name instead of the first 1.5% / 0.5% (60% of persons have one);
  nickname for 24% / 12% of the names that have one (Robert -> Bob; ~4% / 2% of records); initial only
  ('J' or 'J.') 1.5% / 0.5%; then accents folded 30% / 15% of names with accents (Müller -> Mueller or
  Muller), typo (edit distance 1, 20% of those 2) 3% / 1.5%, case 3% / 2%, whitespace 3% / 1%, missing
  1% / 0%.
- last name: as first name without given-name, nickname and initial noise. First/last swapped 1.5% / 0.5%;
  CRM: the whole name in the first-name field ('Anna Schmidt', last name empty) 0.5%.
- email: CRM uses the secondary address 15% (when the person has one), the household email for household
  members flagged to share it, changes case 10% / 5%, typo 1% / 0%, missing 8% / 0%.
- phone: present 80% / 75%, written in one of six formats (+49 30 1234567, +49301234567, 030 1234567,
  0049 30 1234567, 030/1234567, (030) 1234567); CRM: 0.7% a call-centre placeholder shared by many.
  Household members often give the shared landline (people.py).
- birth date: present 85% / 50%; at most one error: day and month swapped 1% (when the day is <= 12),
  one digit of YYYYMMDD wrong 2% / 1% (year, month or day digits, not the century; the result is a valid
  date in 1900-2010, up to four tries, else unchanged), year off by one 1% / 0.5% (29 February unchanged).
- address: missing 10% / 3%; street type abbreviated 25% ('Straße' -> 'Str.' 15% or 'Strasse' 10%;
  'Road'/'Street'/'Avenue'/'Lane'/'Crescent' -> 'Rd'/'St'/'Ave'/'Ln'/'Cres' 15% or with a dot 10%); house
  number dropped 1%; typo 2%; street lines missing while city and postcode are there 2%; postcode missing
  3%; city case 3%; region missing 30%; CRM writes the country as DE/Germany/Deutschland or
  GB/United Kingdom/UK. A person who moves (12%) updates the shop address 70% and the CRM 50% of the time
  (a new version 0-30 days after the move); landline movers also get a new phone.
- duplicates: 6% of CRM persons get a second contact later (independent noise, the secondary email when
  there is one); 2.5% of shop accounts have a second account (secondary email); 1.5% of accounts are
  deleted after the person's last online order (their orders stay, pointing at a missing customer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from . import names, noise
from .people import SECOND_GIVEN_NAME_RATE

PLACEHOLDER_PHONES = np.array(["+49 30 0000000", "0800 1234567", "+44 20 7946 0000"], dtype=object)
COUNTRY_SPELLINGS = {"DE": ["DE", "Germany", "Deutschland", "DE"], "GB": ["GB", "United Kingdom", "UK", "GB"]}
BIRTH_YEARS = (1900, 2010)  # a mistyped birth date stays a plausible one
BIRTH_DIGIT_TRIES = 4

CRM_RATES = dict(
    nickname=0.08,
    other_given=0.015,
    initial=0.015,
    accent=0.30,
    typo=0.03,
    case=0.03,
    space=0.03,
    missing_name=0.01,
    swap=0.015,
    full_name=0.005,
    email_secondary=0.15,
    email_case=0.10,
    email_typo=0.01,
    email_missing=0.08,
    phone=0.80,
    placeholder=0.007,
    birth=0.85,
    birth_swap=0.01,
    birth_digit=0.02,
    birth_year=0.01,
    addr_missing=0.10,
    street_abbr=0.25,
    addr_typo=0.02,
    street_missing=0.02,
    house_number_missing=0.01,
    postcode_missing=0.03,
    city_case=0.03,
    move_update=0.5,
    duplicate=0.06,
)
SHOP_RATES = dict(
    nickname=0.04,
    other_given=0.005,
    initial=0.005,
    accent=0.15,
    typo=0.015,
    case=0.02,
    space=0.01,
    missing_name=0.0,
    swap=0.005,
    full_name=0.0,
    email_secondary=0.0,
    email_case=0.05,
    email_typo=0.0,
    email_missing=0.0,
    phone=0.75,
    placeholder=0.0,
    birth=0.50,
    birth_swap=0.01,
    birth_digit=0.01,
    birth_year=0.005,
    addr_missing=0.03,
    street_abbr=0.25,
    addr_typo=0.02,
    street_missing=0.02,
    house_number_missing=0.01,
    postcode_missing=0.03,
    city_case=0.03,
    move_update=0.7,
    duplicate=0.025,
)
NOISE_RATES = {"crm": CRM_RATES, "shop": SHOP_RATES}

_ACCENTED = "äöüßÄÖÜéèëïçşıřáółÇŞğžýàâêíúñØøå"
_ACCENT_RE = "[" + _ACCENTED + "]"


def _has_accent(values: np.ndarray) -> np.ndarray:
    return pd.Series(values, dtype=object).str.contains(_ACCENT_RE, regex=True, na=False).to_numpy(dtype=bool)


def _name_noise(
    rng: np.random.Generator, values: np.ndarray, rates: dict, given: np.ndarray | None = None
) -> np.ndarray:
    """Noise on a written name. First names (`given`: the second given name or None per row) also get
    the second given name instead of the first, nicknames and initials ('J' or 'J.')."""
    n = len(values)
    out = values.copy()
    if given is not None:
        other = (given != None) & (rng.random(n) < rates["other_given"] / SECOND_GIVEN_NAME_RATE)  # noqa: E711
        out[other] = given[other]
        nn = pd.Series(out, dtype=object).map(names.NICKNAMES).to_numpy(dtype=object)
        use = pd.notna(nn) & (rng.random(n) < rates["nickname"] * 3)  # a third have nicknames
        out[use] = nn[use]
        initial = (rng.random(n) < rates["initial"]) & (out != None)  # noqa: E711
        dotted = rng.random(n) < 0.5
        out[initial] = [v[0] + ("." if d else "") for v, d in zip(out[initial], dotted[initial], strict=True)]
    out = noise.fold_accents(out, _has_accent(out) & (rng.random(n) < rates["accent"]), rng)
    out = noise.typos(out, rng.random(n) < rates["typo"], rng)
    out = noise.change_case(out, rng.random(n) < rates["case"], rng)
    out = noise.pad_whitespace(out, rng.random(n) < rates["space"], rng)
    return noise.blank(out, rng.random(n) < rates["missing_name"])


def _address_noise(
    rng: np.random.Generator, addr: dict[str, np.ndarray], rates: dict
) -> dict[str, np.ndarray]:
    n = len(addr["address_line1"])
    u = rng.random(n)
    variant = u < rates["street_abbr"]
    style = (u >= rates["street_abbr"] * 0.6).astype(np.int64)  # 0: abbreviated (60%), 1: spelled/dotted
    line1 = noise.street_variants(addr["address_line1"], variant, style[variant])
    line1 = noise.drop_house_number(line1, rng.random(n) < rates["house_number_missing"])
    line1 = noise.typos(line1, rng.random(n) < rates["addr_typo"], rng)
    no_street = rng.random(n) < rates["street_missing"]
    city = noise.change_case(addr["city"].copy(), rng.random(n) < rates["city_case"], rng)
    postcode = noise.blank(addr["postcode"].copy(), rng.random(n) < rates["postcode_missing"])
    missing = rng.random(n) < rates["addr_missing"]
    return {
        "address_line1": noise.blank(line1, missing | no_street),
        "address_line2": noise.blank(addr["address_line2"].copy(), missing | no_street),
        "city": noise.blank(city, missing),
        "postcode": noise.blank(postcode, missing),
        "region": noise.blank(addr["region"].copy(), missing | (rng.random(n) < 0.3)),
    }


def _valid_birth(year: int, month: int, day: int) -> str | None:
    if not BIRTH_YEARS[0] <= year <= BIRTH_YEARS[1]:
        return None
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _digit_changed(d: date, pos: np.ndarray, delta: np.ndarray) -> str | None:
    """One digit of YYYYMMDD changed (tries in order until the result is a valid, plausible date)."""
    digits = f"{d.year:04d}{d.month:02d}{d.day:02d}"
    for i, k in zip(pos, delta, strict=True):
        t = digits[:i] + str((int(digits[i]) + k) % 10) + digits[i + 1 :]
        out = _valid_birth(int(t[:4]), int(t[4:6]), int(t[6:]))
        if out is not None:
            return out
    return None


def _birth_noise(rng: np.random.Generator, birth: np.ndarray, rates: dict) -> np.ndarray:
    """ISO birth dates with one error at most: day/month swapped, one digit wrong, or the year off by one."""
    n = len(birth)
    text = np.asarray(birth, dtype="datetime64[D]").astype(str).astype(object)
    u = rng.random(n)
    c_swap = rates["birth_swap"]
    c_digit = c_swap + rates["birth_digit"]
    c_year = c_digit + rates["birth_year"]
    # Up to four tries of (position 2-7, +1..9 mod 10): the century digits of "19xx" are not mistyped.
    pos = rng.integers(2, 8, (n, BIRTH_DIGIT_TRIES))
    delta = rng.integers(1, 10, (n, BIRTH_DIGIT_TRIES))
    year_step = np.where(rng.random(n) < 0.5, -1, 1)
    for i in np.flatnonzero(u < c_year):
        d = birth[i]
        if u[i] < c_swap:
            new = f"{d.year:04d}-{d.day:02d}-{d.month:02d}" if d.day <= 12 and d.day != d.month else None
        elif u[i] < c_digit:
            new = _digit_changed(d, pos[i], delta[i])
        else:
            new = _valid_birth(d.year + int(year_step[i]), d.month, d.day)  # 29 February: left as it is
        if new is not None:
            text[i] = new
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
    The steps draw from `rng` in a fixed order (names, email, phone, birth date, country, move, addresses):
    reordering them changes every world generated for a seed.
    """
    rates = NOISE_RATES[system]
    p = _people_as_text(people, person_idx)
    n = len(p)
    first, last = _written_names(rng, p, rates)
    email = _written_emails(rng, p, rates, email_choice)
    phones = _PhoneChoice(
        present=rng.random(n) < rates["phone"],
        style=rng.integers(0, 6, n),
        placeholder=rng.random(n) < rates["placeholder"],
        placeholder_value=PLACEHOLDER_PHONES[rng.integers(0, len(PLACEHOLDER_PHONES), n)],
    )
    birth = _birth_noise(rng, p["birth_date"].to_numpy(dtype=object), rates)
    country = _written_countries(rng, p, system)
    fields = {"first_name": first, "last_name": last, "email": email, "country": country, "birth_date": birth}
    return _record_versions(rng, p, person_idx, created_day, rates, fields, phones)


@dataclass(frozen=True)
class _PhoneChoice:
    """Per record: whether a phone is written, in which of the six formats, and whether a placeholder
    replaces it. Drawn once per record, so a record's versions differ only by the number a move changed."""

    present: np.ndarray
    style: np.ndarray
    placeholder: np.ndarray
    placeholder_value: np.ndarray


def _people_as_text(people: pd.DataFrame, person_idx: np.ndarray) -> pd.DataFrame:
    """The people behind the records, one row per record, text columns as object arrays for the noise."""
    p = people.iloc[person_idx].reset_index(drop=True)
    for col in p.columns:
        if col != "birth_date" and (p[col].dtype == object or pd.api.types.is_string_dtype(p[col])):
            p[col] = pd.Series(noise.texts(p[col]), dtype=object)
    return p


def _written_names(rng: np.random.Generator, p: pd.DataFrame, rates: dict) -> tuple[np.ndarray, np.ndarray]:
    """First and last name as typed: noised, sometimes swapped or both in the first-name field."""
    n = len(p)
    first = _name_noise(
        rng, p["first_name"].to_numpy(dtype=object), rates, given=p["second_given_name"].to_numpy(dtype=object)
    )
    last = _name_noise(rng, p["last_name"].to_numpy(dtype=object), rates)
    swap = rng.random(n) < rates["swap"]
    first, last = np.where(swap, last, first), np.where(swap, first, last)
    # The whole name typed into the first-name field ('Anna Schmidt', last name empty).
    full = (rng.random(n) < rates["full_name"]) & ~swap & (first != None) & (last != None)  # noqa: E711
    first[full] = [f"{a.strip()} {b.strip()}" for a, b in zip(first[full], last[full], strict=True)]
    last[full] = None
    return first, last


def _written_emails(
    rng: np.random.Generator, p: pd.DataFrame, rates: dict, email_choice: np.ndarray | None
) -> np.ndarray:
    """The address given (usual or secondary) with case changes, typos and blanks."""
    n = len(p)
    email = p["email_used"].to_numpy(dtype=object).copy()
    sec = p["secondary_email"].to_numpy(dtype=object)
    use_sec = (sec != None) & (rng.random(n) < rates["email_secondary"])  # noqa: E711
    if email_choice is not None:  # duplicates: forced to the secondary address when there is one
        use_sec |= email_choice & (sec != None)  # noqa: E711
    email = np.where(use_sec, sec, email)
    email = noise.change_case(email, rng.random(n) < rates["email_case"], rng)
    email = noise.typos(email, rng.random(n) < rates["email_typo"], rng)
    return noise.blank(email, rng.random(n) < rates["email_missing"])


def _written_countries(rng: np.random.Generator, p: pd.DataFrame, system: str) -> np.ndarray:
    """Country codes; the CRM spells them several ways (DE, Germany, Deutschland)."""
    # Drawn for the shop too, where it is unused: the draws after it stay where they have always been.
    spelling = rng.integers(0, 4, len(p))
    country = p["country"].to_numpy(dtype=object)
    country_text = country.copy()
    if system == "crm":
        for c, spellings in COUNTRY_SPELLINGS.items():
            m = country == c
            country_text[m] = np.array(spellings, dtype=object)[spelling[m]]
    return country_text


def _record_versions(
    rng: np.random.Generator,
    p: pd.DataFrame,
    person_idx: np.ndarray,
    created_day: np.ndarray,
    rates: dict,
    fields: dict[str, np.ndarray],
    phones: _PhoneChoice,
) -> pd.DataFrame:
    """Version 0 of every record, plus version 1 for records created before their person's move and updated
    after it. Address noise is drawn per version, so an update can also fix or introduce a typo."""
    n = len(p)
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
        phone = noise.format_phones(np.where(phones.present, p["phone_cc"], None), area, sub, phones.style)
        phone = np.where(phones.placeholder, phones.placeholder_value, phone)
        frame = pd.DataFrame(
            {
                "record_idx": np.arange(n),
                "version": version,
                "valid_day": created_day if version == 0 else update_day,
                "person_idx": person_idx,
                "first_name": fields["first_name"],
                "last_name": fields["last_name"],
                "email": fields["email"],
                "phone": phone,
                **noisy,
                "country": fields["country"],
                "birth_date": fields["birth_date"],
            }
        )
        versions.append(frame.iloc[rows])
    return pd.concat(versions, ignore_index=True)
