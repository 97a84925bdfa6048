"""Where the privacy keys come from: never the warehouse, never the repository.

Two keys with two jobs, so knowing one reveals nothing about the other:
- the pseudonymisation key turns identifiers into the pseudonyms analysts and syncs see;
- the suppression key hashes the identifiers of erased people, so a later extract holding them is refused.

Each is looked up, in order: an environment variable (`TOUCHPOINT_PSEUDONYM_KEY`,
`TOUCHPOINT_SUPPRESSION_KEY`); inside Airflow, a Variable of the same name in lower case, then the password of
a connection of that name. Found nowhere, the documented demo key is used and `PrivacyKey.is_demo` says so:
fine for the embedded demo, wrong for real customers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

PSEUDONYM_KEY_NAME = "TOUCHPOINT_PSEUDONYM_KEY"
SUPPRESSION_KEY_NAME = "TOUCHPOINT_SUPPRESSION_KEY"
# Public on purpose (they are in this file): pseudonyms made with them protect nothing against someone who
# reads this repository. They exist so the demo runs with no setup.
DEMO_KEYS = {
    PSEUDONYM_KEY_NAME: "touchpoint-demo-pseudonym-key (not secret: set TOUCHPOINT_PSEUDONYM_KEY)",
    SUPPRESSION_KEY_NAME: "touchpoint-demo-suppression-key (not secret: set TOUCHPOINT_SUPPRESSION_KEY)",
}
_MIN_KEY_BYTES = 16  # HMAC accepts any length; a short key is guessable, so it is refused


class PrivacyKeyError(ValueError):
    """A key is set but unusable (too short). The message names where it was read, never the key."""


@dataclass(frozen=True)
class PrivacyKey:
    name: str
    secret: bytes = field(repr=False)
    source: str  # where it was read, for messages and the run summary
    is_demo: bool = False


def _from_airflow(name: str) -> tuple[str, str] | None:
    if "airflow" not in sys.modules:  # not inside Airflow: don't import it (slow, needs its config)
        return None
    try:
        from airflow.sdk import BaseHook, Variable

        value = Variable.get(name.lower(), default=None)
        if value:
            return value, f"the Airflow variable {name.lower()}"
        password = BaseHook.get_connection(name.lower()).password
        return (password, f"the Airflow connection {name.lower()}") if password else None
    except Exception:  # no such variable or connection, or no metadata database: not configured there
        return None


def privacy_key(name: str) -> PrivacyKey:
    """The key called `name` (PSEUDONYM_KEY_NAME or SUPPRESSION_KEY_NAME), from the first place that sets it."""
    if name not in DEMO_KEYS:
        raise ValueError(f"unknown privacy key {name!r}; expected one of {sorted(DEMO_KEYS)}")
    found = (os.environ[name], f"the environment variable {name}") if os.environ.get(name) else _from_airflow(name)
    if found is None:
        return PrivacyKey(name, DEMO_KEYS[name].encode(), "the documented demo default", is_demo=True)
    value, source = found
    if len(value.encode()) < _MIN_KEY_BYTES:
        raise PrivacyKeyError(f"{name} from {source} is shorter than {_MIN_KEY_BYTES} bytes: use a random key")
    return PrivacyKey(name, value.encode(), source, is_demo=value == DEMO_KEYS[name])


def pseudonym_key() -> PrivacyKey:
    return privacy_key(PSEUDONYM_KEY_NAME)


def suppression_key() -> PrivacyKey:
    return privacy_key(SUPPRESSION_KEY_NAME)
