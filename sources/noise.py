"""Vectorised noise on written values: typos, case, whitespace, accents, phone formats.

Each function takes an object array of strings (None = missing), a boolean mask of rows to alter and a
numpy Generator, and returns a new array. Only the masked rows (a few percent) pass through Python string
code, so cost stays proportional to the noise, not to the row count. Rates live with the callers
(`sources/records.py`) and are recorded in truth/params.json.
"""

from __future__ import annotations

import re

import numpy as np

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_FOLD = {
    "ä": "ae",
    "ö": "oe",
    "ü": "ue",
    "ß": "ss",
    "Ä": "Ae",
    "Ö": "Oe",
    "Ü": "Ue",
    "é": "e",
    "è": "e",
    "ë": "e",
    "ï": "i",
    "ç": "c",
    "ş": "s",
    "ı": "i",
    "ř": "r",
    "á": "a",
    "ó": "o",
    "ł": "l",
    "Ç": "C",
    "Ş": "S",
    "ğ": "g",
    "ž": "z",
    "ý": "y",
    "à": "a",
    "â": "a",
    "ê": "e",
    "í": "i",
    "ú": "u",
    "ñ": "n",
    "Ø": "O",
    "ø": "o",
    "å": "a",
}
_STRIP = {k: v[0] for k, v in _FOLD.items()}
_FOLD_TABLE = str.maketrans(_FOLD)
_STRIP_TABLE = str.maketrans(_STRIP)


def fold_ascii(value: str) -> str:
    """Müller -> Mueller, Zoë -> Zoe: the transliteration people type on an English keyboard."""
    return value.translate(_FOLD_TABLE)


def strip_accents(value: str) -> str:
    """Müller -> Muller: accents dropped instead of transliterated."""
    return value.translate(_STRIP_TABLE)


def texts(values: object) -> np.ndarray:
    """Any array or Series of strings -> object array with None for missing (pandas may give NaN)."""
    arr = np.asarray(values, dtype=object)
    return np.where(np.array([isinstance(v, str) for v in arr], dtype=bool), arr, None)


def _apply(values: np.ndarray, mask: np.ndarray, fn, *args: np.ndarray) -> np.ndarray:
    """fn(value, *args[j]) for the j-th masked row; args are aligned with np.flatnonzero(mask)."""
    out = values.copy()
    for j, i in enumerate(np.flatnonzero(mask)):
        if isinstance(values[i], str):
            out[i] = fn(values[i], *(a[j] for a in args))
    return out


def _typo(value: str, kind: int, pos: float, letter: int) -> str:
    if len(value) < 3:
        return value
    i = 1 + int(pos * (len(value) - 2))  # never the first character: people rarely mistype it
    ch = _LETTERS[letter]
    if kind == 0:  # substitution
        return value[:i] + (ch if value[i].islower() else ch.upper()) + value[i + 1 :]
    if kind == 1:  # deletion
        return value[:i] + value[i + 1 :]
    if kind == 2:  # insertion
        return value[:i] + ch + value[i:]
    return value[: i - 1] + value[i] + value[i - 1] + value[i + 1 :]  # transposition


def typos(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One edit (substitute/delete/insert/transpose) per masked value; a second one for 20% of them."""
    n = len(values)
    kinds, pos, letters = rng.integers(0, 4, n), rng.random(n), rng.integers(0, 26, n)
    twice = rng.random(n) < 0.2
    m = np.flatnonzero(mask)
    out = _apply(values, mask, _typo, kinds[m], pos[m], letters[m])
    m2 = np.flatnonzero(mask & twice)
    return _apply(out, mask & twice, _typo, (kinds[m2] + 1) % 4, 1 - pos[m2], letters[m2])


def change_case(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """UPPER, lower or Capitalised, chosen per value."""
    style = rng.integers(0, 3, len(values))[np.flatnonzero(mask)]
    fns = (str.upper, str.lower, str.capitalize)
    return _apply(values, mask, lambda v, s: fns[s](v), style)


def pad_whitespace(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Leading/trailing blanks or a doubled inner space."""
    style = rng.integers(0, 3, len(values))[np.flatnonzero(mask)]

    def pad(v: str, s: int) -> str:
        if s == 0:
            return " " + v
        if s == 1:
            return v + "  "
        return v.replace(" ", "  ", 1) if " " in v else v + " "

    return _apply(values, mask, pad, style)


def fold_accents(values: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Transliterate (Müller -> Mueller, 75%) or strip (Müller -> Muller, 25%)."""
    style = rng.random(len(values))[np.flatnonzero(mask)] < 0.75
    return _apply(values, mask, lambda v, s: fold_ascii(v) if s else strip_accents(v), style)


_GB_SUFFIXES = {"Road": "Rd", "Street": "St", "Avenue": "Ave", "Lane": "Ln", "Crescent": "Cres"}
_GB_SUFFIX_RE = re.compile(r"\b(" + "|".join(_GB_SUFFIXES) + r")\b")
_HOUSE_NUMBER_RE = re.compile(r"^\d+[a-z]?\s+|\s+\d+[a-z]?$")


def _street_variant(value: str, style: int) -> str:
    if "traße" in value:  # German: 'Hauptstraße' -> 'Hauptstr.' (style 0) or 'Hauptstrasse' (style 1)
        return value.replace("straße", "str.").replace("Straße", "Str.") if style == 0 else value.replace("ß", "ss")
    dot = "." if style == 1 else ""  # British: 'Station Road' -> 'Station Rd' (style 0) or 'Station Rd.'
    return _GB_SUFFIX_RE.sub(lambda m: _GB_SUFFIXES[m.group(1)] + dot, value, count=1)


def street_variants(values: np.ndarray, mask: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Abbreviated street types; `style` aligned with np.flatnonzero(mask). Style 0: 'straße' -> 'str.',
    'Road' -> 'Rd', 'Street' -> 'St', 'Avenue' -> 'Ave', 'Lane' -> 'Ln', 'Crescent' -> 'Cres'; style 1:
    'straße' -> 'strasse', 'Road' -> 'Rd.' (and so on). Streets without such a word stay as they are."""
    return _apply(values, mask, _street_variant, style)


def drop_house_number(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """'Hauptstraße 12a' -> 'Hauptstraße', '12 High Street' -> 'High Street'."""
    return _apply(values, mask, lambda v: _HOUSE_NUMBER_RE.sub("", v, count=1))


def blank(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = values.copy()
    out[mask] = None
    return out


def format_phones(
    country_code: np.ndarray, area: np.ndarray, subscriber: np.ndarray, style: np.ndarray
) -> np.ndarray:
    """Write phones as people do: style 0 '+49 30 1234567', 1 '+49301234567', 2 '030 1234567',
    3 '0049 30 1234567', 4 '030/1234567', 5 '(030) 1234567'. None where country_code is None."""
    out = np.empty(len(style), dtype=object)
    for s, template in enumerate(
        ("+{c} {a} {n}", "+{c}{a}{n}", "0{a} {n}", "00{c} {a} {n}", "0{a}/{n}", "(0{a}) {n}")
    ):
        idx = np.flatnonzero((style == s) & (country_code != None))  # noqa: E711  (object array)
        out[idx] = [
            template.format(c=c, a=a, n=n)
            for c, a, n in zip(country_code[idx], area[idx], subscriber[idx], strict=True)
        ]
    return out
