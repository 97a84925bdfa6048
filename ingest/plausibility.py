"""What a value must look like to be believed, beyond parsing as its type (docs/contracts.md §5).

A value can parse and still be wrong: `0001-01-01` from a null date filled by a legacy system, an order
dated in 2999 by a broken clock, a total of 10^15 from a currency in minor units read twice. Such rows are
quarantined one by one, naming the column and the value; the rest of the batch loads.

The bounds live here and nowhere else. Each has a documented default and can be overridden by an
environment variable `TOUCHPOINT_PLAUSIBLE_<FIELD>` (upper case), read by `plausibility_from_env` only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

ENV_PREFIX = "TOUCHPOINT_PLAUSIBLE_"


@dataclass(frozen=True)
class Plausibility:
    """The bounds a landed value must keep, with why each default is what it is."""

    # Timestamps (`*_at`): a value before 1900 is a placeholder (0001-01-01 for "unknown", 1899-12-30 as a
    # spreadsheet's day zero), not an event: no order, visit or update in a customer-analytics source is older.
    earliest_timestamp: datetime = datetime(1900, 1, 1)
    # Births have a lower bound of their own: historical person registers (genealogy, census extracts used to
    # evaluate linkage) hold people born in the 1800s, and identity must not lose those records.
    earliest_birth_date: date = date(1800, 1, 1)
    # A value later than the time the file was read cannot be true (a broken clock); one day of slack covers
    # time zones (a naive local time in UTC+14 read as UTC) and small clock skew between systems.
    clock_slack_hours: int = 24
    # Absolute amounts above a billion (in the reporting currency) are an error (minor units read as major,
    # an id in the amount column); negative amounts are refunds and returns, fine within the bound.
    max_abs_amount: Decimal = Decimal("1000000000.00")
    # Longer text values are not names, addresses or ids but a file gone wrong (an unclosed quote swallowing
    # the rest of the file, a blob pasted into a cell); 64 Ki characters leaves room for any real value.
    max_text_chars: int = 65_536

    @property
    def clock_slack(self) -> timedelta:
        return timedelta(hours=self.clock_slack_hours)

    def describe_slack(self) -> str:
        hours = self.clock_slack_hours
        if hours % 24 == 0:
            days = hours // 24
            return f"{days} day" + ("s" if days != 1 else "")
        return f"{hours} hours"


_PARSERS: dict[str, Callable[[str], object]] = {
    "earliest_timestamp": datetime.fromisoformat,
    "earliest_birth_date": date.fromisoformat,
    "clock_slack_hours": int,
    "max_abs_amount": Decimal,
    "max_text_chars": int,
}


def plausibility_from_env(environ: Mapping[str, str] | None = None) -> Plausibility:
    """The defaults, overridden by any `TOUCHPOINT_PLAUSIBLE_*` variable set (a bad value raises, naming it)."""
    environ = os.environ if environ is None else environ
    overrides: dict[str, object] = {}
    for field in fields(Plausibility):
        name = ENV_PREFIX + field.name.upper()
        text = environ.get(name)
        if text is None or not text.strip():
            continue
        try:
            value = _PARSERS[field.name](text.strip())
        except (ValueError, InvalidOperation) as exc:
            raise ValueError(f"{name}={text!r} is not a valid {field.name.replace('_', ' ')}") from exc
        if isinstance(value, datetime) and value.tzinfo is not None:
            raise ValueError(f"{name}={text!r}: give a UTC time without an offset")
        if isinstance(value, int | Decimal) and value < 0:
            raise ValueError(f"{name}={text!r} must not be negative")
        overrides[field.name] = value
    return Plausibility(**overrides)


def latest_plausible(pulled_at: str | None, extracted_at: str, limits: Plausibility) -> datetime:
    """The latest believable time in a batch: when its file was read, plus the clock slack.

    Not the run's as-of: a full export read today holds rows dated after an earlier as-of, which are
    legitimate "not yet" rows. The logical extraction time counts too, since a simulated demo world can be
    dated after the wall clock. A manifest written before `pulled_at` existed has only `extracted_at`.
    """
    extracted = datetime.fromisoformat(extracted_at)
    pulled = datetime.fromisoformat(pulled_at) if pulled_at else extracted
    return max(pulled, extracted) + limits.clock_slack
