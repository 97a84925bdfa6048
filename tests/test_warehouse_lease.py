"""The working warehouse's run lease: one run at a time owns it, a finished holder is taken over, and a stage of
a run that does not hold it stops before touching anything."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from touchpoint import pipeline
from touchpoint.config import Paths, RunContext
from touchpoint.warehouse import LeaseNotHeldError, WarehouseLease


def never_stale(_holder) -> bool:
    return False


def test_one_run_holds_the_lease_until_it_releases_it(tmp_path: Path) -> None:
    lease = WarehouseLease(Paths(tmp_path))
    assert lease.try_claim("customer_360/a", "2026-03-30", never_stale) is None
    assert lease.try_claim("customer_360/a", "2026-03-30", never_stale) is None  # a retried claim: still ours
    holder = lease.try_claim("customer_360/b", "2026-03-31", never_stale)
    assert holder is not None and (holder.run_key, holder.as_of) == ("customer_360/a", "2026-03-30")
    assert lease.release("customer_360/b") is False  # only the holder gives it back
    lease.check("customer_360/a")
    with pytest.raises(LeaseNotHeldError, match="leased to run customer_360/a"):
        lease.check("customer_360/b")
    assert lease.release("customer_360/a") is True
    assert lease.holder() is None
    assert lease.try_claim("customer_360/b", "2026-03-31", never_stale) is None


def test_a_holder_whose_run_is_over_is_taken_over(tmp_path: Path) -> None:
    lease = WarehouseLease(Paths(tmp_path))
    lease.try_claim("customer_360/crashed", "2026-03-30", never_stale)
    seen = []

    def finished(holder) -> bool:
        seen.append(holder.run_key)
        return True

    assert lease.try_claim("customer_360/next", "2026-03-31", finished) is None
    assert seen == ["customer_360/crashed"]
    assert lease.holder().run_key == "customer_360/next"


def test_claims_racing_from_many_processes_have_one_winner(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from touchpoint.config import Paths
        from touchpoint.warehouse import WarehouseLease
        won = WarehouseLease(Paths(Path({str(tmp_path)!r}))).try_claim(sys.argv[1], "2026-03-31", lambda h: False)
        print("won" if won is None else "lost")
    """)
    racers = [
        subprocess.Popen([sys.executable, "-c", script, f"customer_360/run-{n}"], stdout=subprocess.PIPE, text=True)
        for n in range(8)
    ]
    outcomes = [racer.communicate(timeout=60)[0].strip() for racer in racers]
    assert sorted(outcomes) == ["lost"] * 7 + ["won"]


def test_a_stage_of_a_run_without_the_lease_touches_nothing(tmp_path: Path) -> None:
    paths = Paths(tmp_path).ensure()
    WarehouseLease(paths).try_claim("customer_360/owner", "2026-03-31", never_stale)
    intruder = RunContext(as_of=date(2026, 3, 31), home=tmp_path, run_id="2026-03-31", lease_key="customer_360/other")
    for stage in (pipeline.load, pipeline.ml, pipeline.publish):
        with pytest.raises(LeaseNotHeldError):
            stage(intruder)
    with pytest.raises(LeaseNotHeldError):
        pipeline.dbt_layer(intruder, "staging")
    assert not paths.work_db.exists()
    # a stage called directly (no orchestrated run, e.g. a benchmark) does not ask for the lease
    direct = RunContext(as_of=date(2026, 3, 31), home=tmp_path, run_id="2026-03-31")
    assert pipeline.release_warehouse(intruder) == {"lease": "customer_360/other", "released": False}
    with pytest.raises(ValueError, match="lease key"):
        pipeline.release_warehouse(direct)
