"""Preference-centre decisions: the CRM's consent extract (landing entity consent_events).

Each person with an email may make decisions for the purposes beyond email marketing (which the CRM opt-in
flag and unsubscribes already carry): object to profiling or to personalisation, grant SMS marketing (named by
phone) or sharing with ad platforms, and later withdraw the ad sharing again. A decision's moment is an
exponential waiting time from the person's arrival (first account or contact), so the events of a day do not
depend on how many days a world has (`--advance` writes what generating the longer world at once would).
Drawn from their own stream [seed, 11], so adding them changed no other file of a world.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from . import writers
from .world import World

# (purpose, share of persons deciding within a year, granted, subject column) in draw order
DECISIONS = (
    ("profiling", 0.03, False, "email"),
    ("personalisation", 0.01, False, "email"),
    ("sms_marketing", 0.08, True, "phone_e164"),
    ("ad_platform_sharing", 0.05, True, "email"),
)
AD_SHARING_WITHDRAWN = 0.2  # of the grants, withdrawn again later
WITHDRAWAL_MEAN_DAYS = 90.0  # mean time from an ad-sharing grant to its withdrawal
COLUMNS = ("subject_email", "subject_phone", "customer_id", "purpose", "granted", "occurred_at", "source")


def consent_events(seed: int, world: World, days: int) -> pd.DataFrame:
    """One row per decision in the first `days` days: person_idx, subject (email or phone), purpose, granted,
    day (float days since the start)."""
    rng = np.random.default_rng([seed, 11])
    people = world.people
    arrival = _arrival_days(world, len(people))
    reachable = np.flatnonzero(people["email"].notna().to_numpy())
    parts = []
    for purpose, share, granted, subject in DECISIONS:
        # within a year of the person's arrival with probability `share`
        day = arrival[reachable] + rng.exponential(365.0 / -np.log1p(-share), len(reachable))
        parts.append(pd.DataFrame({"person_idx": reachable, "subject_kind": subject, "purpose": purpose,
                                   "granted": granted, "day": day}))
        if purpose == "ad_platform_sharing":
            again = rng.random(len(reachable)) < AD_SHARING_WITHDRAWN
            later = day[again] + rng.exponential(WITHDRAWAL_MEAN_DAYS, int(again.sum()))
            parts.append(pd.DataFrame({"person_idx": reachable[again], "subject_kind": subject, "purpose": purpose,
                                       "granted": False, "day": later}))
    events = pd.concat(parts, ignore_index=True)
    events = events[events["day"] < days].reset_index(drop=True)
    events["subject"] = [people.at[i, kind] for i, kind in zip(events["person_idx"], events["subject_kind"],
                                                               strict=True)]
    return events.sort_values(["day", "person_idx", "purpose"], kind="stable").reset_index(drop=True)


def _arrival_days(world: World, persons: int) -> np.ndarray:
    """Per person, the day their first shop account or CRM contact was created (inf: never arrives): nobody
    decides about a retailer's use of their data before the retailer knows them."""
    arrival = np.full(persons, np.inf)
    for records in (world.accounts, world.contact_index):
        np.minimum.at(arrival, records["person_idx"].to_numpy(), records["created_day"].to_numpy(dtype=float))
    return arrival


def consent_table(start, events: pd.DataFrame) -> pa.Table:
    """The consent extract's rows (contract columns), in the events' order."""
    by_email = (events["subject_kind"] == "email").to_numpy()
    subject = events["subject"].to_numpy(dtype=object)
    return writers.to_table({
        "subject_email": np.where(by_email, subject, None),
        "subject_phone": np.where(by_email, None, subject),
        "customer_id": np.full(len(events), None, dtype=object),
        "purpose": events["purpose"].to_numpy(dtype=object),
        "granted": np.where(events["granted"].to_numpy(dtype=bool), "true", "false").astype(object),
        "occurred_at": writers.timestamps(start, events["day"].to_numpy()),
        "source": np.full(len(events), "preference_centre", dtype=object),
    })
