"""Tables a dbt model keeps beside itself between builds, named once: the model that writes them and the erasure
that drops them (privacy/erasure.py) both read the names here."""

from __future__ import annotations

# int_person_pairs_scored keeps its match model's estimates, the name frequencies behind them (keyed by
# pseudonym) and a hash per person record between full builds (docs/identity_engine.md, "Daily runs"). They were
# counted over every record, so an erasure drops them and the next build estimates again.
PAIR_SCORES_MODEL = "int_person_pairs_scored"
PAIR_SCORES_STATE = ("estimates", "name_frequencies", "records")


def kept_table(model: str, name: str) -> str:
    """The name of the table `model` keeps as `name`, in the model's schema."""
    return f"{model}__{name}"
