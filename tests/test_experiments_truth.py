"""An experiment on a sync's audience, read out by the warehouse against the demo world's known effect.

One demo world runs the whole DAG in this process with a file sync holding out half its audience. The world
then hears of the sends (`touchpoint generate --advance`, which reads the home's assignments) and its treated
people answer with RESPONSE_RATE (sources/treatment.py); a second run 31 days later reads the experiment out.
The true lift comes from the world's truth, not from the warehouse (`treatment.true_conversion_lift`): per
unit, whether they bought in the readout's window anyway, and whether they would have answered if treated.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from touchpoint import cli, pipeline
from touchpoint.activation.definitions import parse_sync_definition
from touchpoint.config import Paths, RunContext
from touchpoint.sources import generate, last_day, treatment

FIRST_AS_OF = date(2026, 3, 31)
WINDOW_DAYS = 30  # the readout's default window (dbt var experiment_window_days)
EXPERIMENT = "winback_truth"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    paths = Paths(tmp_path_factory.mktemp("experiment_truth")).ensure()
    generate(paths.demo_sources, customers=6_000, days=100, seed=7, start=FIRST_AS_OF - timedelta(days=99))
    sync = parse_sync_definition({
        "name": EXPERIMENT,
        "source": {"sql": "select person_id from marts.customer_360"},
        "primary_key": "person_id",
        "fields": ["person_id", "email"],
        "personal_fields": {"email": "clear"},
        "purpose": "email_marketing",
        "email_field": "email",
        "destination": {"type": "file", "formats": ["csv"]},
        "holdout": "50%",
    })
    pipeline.run_in_process(RunContext(as_of=FIRST_AS_OF, home=paths.home, run_id="run-1"), [sync])
    assert cli.main(["generate", "--advance", str(WINDOW_DAYS + 1), "--home", str(paths.home)]) == 0
    as_of = last_day(paths.demo_sources)
    pipeline.run_in_process(RunContext(as_of=as_of, home=paths.home, run_id="run-2"))
    return paths.home


def readout(home: Path, metric: str) -> dict:
    con = duckdb.connect(str(Paths(home).published_db), read_only=True)
    try:
        frame = con.execute(
            "select * from marts.experiment_readouts where experiment = ? and metric = ?", [EXPERIMENT, metric]
        ).df()
    finally:
        con.close()
    assert len(frame) == 1, frame
    return frame.iloc[0].to_dict()


def test_the_readout_recovers_the_worlds_true_lift(home: Path) -> None:
    truth = Paths(home).demo_sources / "truth"
    start = FIRST_AS_OF - timedelta(days=99)
    lift, units = treatment.true_conversion_lift(truth, EXPERIMENT, start, WINDOW_DAYS)
    row = readout(home, f"conversion_{WINDOW_DAYS}d")
    assert row["treatment_size"] + row["control_size"] == units
    assert not row["has_sample_ratio_mismatch"]
    assert row["absolute_lift_ci_low"] <= lift <= row["absolute_lift_ci_high"], (lift, row)
    assert row["absolute_lift_ci_low"] > 0 and row["p_value"] < 0.05, row  # the world's effect is there to find
    assert row["cuped_absolute_lift_ci_low"] <= lift <= row["cuped_absolute_lift_ci_high"], (lift, row)


def test_only_the_treated_answered_and_the_control_was_never_sent(home: Path) -> None:
    units = treatment.read_units(Paths(home).demo_sources / "truth")
    by_arm = units.groupby("arm")["is_applied"].sum()
    assert by_arm.get("control", 0) == 0 and by_arm["treatment"] > 0
    sent = pd.concat(pd.read_csv(f) for f in (home / "activation" / EXPERIMENT).rglob("*.csv"))
    control = set(units.loc[units["arm"] == "control", "person_id"])
    assert control and not control & set(sent["person_id"])
