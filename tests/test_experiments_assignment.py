"""Holdouts on syncs: the declaration, the stable hash assignment, the control arm never sent, and the record of
every assignment that reaches audit.experiment_assignments (activation/experiments.py)."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.doubles.activation import person, write_published_warehouse
from touchpoint.activation import load_sync_audit, load_sync_definitions, plan_sync, run_sync, sync_audit_tables
from touchpoint.activation.audit import experiment_assignment_table
from touchpoint.activation.definitions import SyncDefinitionError, parse_sync_definition
from touchpoint.activation.experiments import arm_of, assignment_unit, assignment_unit_sql, parse_holdout
from touchpoint.config import RunContext

AS_OF = date(2026, 3, 31)
PEOPLE = 200


def ctx(home: Path, run_id: str, as_of: date = AS_OF) -> RunContext:
    return RunContext(as_of=as_of, home=home, run_id=run_id)


def holdout_sync(**overrides):
    raw = {
        "name": "winback",
        "source": {"table": "marts.customer_360"},
        "fields": ["person_id", "email", "first_name"],
        "personal_fields": {"email": "clear", "first_name": "clear"},
        "purpose": "email_marketing",
        "email_field": "email",
        "destination": {"type": "file", "formats": ["csv", "parquet"]},
        "holdout": "10%",
    }
    raw.update(overrides)
    return parse_sync_definition({k: v for k, v in raw.items() if v is not None})


def people(n: int = PEOPLE, **extra) -> list[dict]:
    return [person(f"P{i:04d}", **extra) for i in range(n)]


def assignment_rows(home: Path) -> list[dict]:
    return experiment_assignment_table(home).to_pylist()


def audience_ids(home: Path, sync: str = "winback") -> set[str]:
    return {r["person_id"] for r in pq.read_table(home / "activation" / sync / "audience.parquet").to_pylist()}


@pytest.mark.parametrize(("value", "share"), [("10%", 0.1), (0.1, 0.1), ("2.5 %", 0.025), (0.5, 0.5), ("50%", 0.5)])
def test_holdout_accepts_a_percentage_or_a_fraction(value, share) -> None:
    assert parse_holdout(value) == pytest.approx(share)
    sync = holdout_sync(holdout=value)
    assert sync.holdout == pytest.approx(share) and sync.experiment == "winback"


@pytest.mark.parametrize("value", [10, 1, 1.0, 0, "0%", "100%", "ten", True, None, [0.1], "-5%"])
def test_holdout_refuses_what_it_would_have_to_guess(value) -> None:
    with pytest.raises(SyncDefinitionError, match="holdout"):
        parse_sync_definition({**_raw(), "holdout": value})


def _raw() -> dict:
    return {
        "name": "winback", "source": {"table": "marts.customer_360"}, "fields": ["person_id"],
        "purpose": "email_marketing", "destination": {"type": "file"},
    }


def test_experiment_name_defaults_to_the_sync_and_needs_a_holdout(tmp_path: Path) -> None:
    assert parse_sync_definition({**_raw(), "holdout": "10%", "experiment": "q2_winback"}).experiment == "q2_winback"
    plain = parse_sync_definition(_raw())
    assert plain.holdout is None and plain.experiment is None
    with pytest.raises(SyncDefinitionError, match="experiment needs a holdout"):
        parse_sync_definition({**_raw(), "experiment": "q2_winback"})
    with pytest.raises(SyncDefinitionError, match="experiment must be a lowercase identifier"):
        parse_sync_definition({**_raw(), "holdout": "10%", "experiment": "Q2 winback"})
    for name in ("a", "b"):
        (tmp_path / f"{name}.yml").write_text(
            f"name: {name}\nsource: {{table: marts.customer_360}}\nfields: [person_id]\npurpose: email_marketing\n"
            "destination: {type: file}\nholdout: 10%\nexperiment: shared\n"
        )
    with pytest.raises(SyncDefinitionError, match="experiment 'shared' declared by two syncs"):
        load_sync_definitions(tmp_path)


def test_shipped_churn_audience_runs_a_ten_percent_holdout() -> None:
    syncs = {s.name: s for s in load_sync_definitions()}
    assert (syncs["churn_risk_audience"].holdout, syncs["churn_risk_audience"].experiment) == (
        0.1, "churn_risk_audience")


def test_assignment_is_a_stable_uniform_hash_the_same_in_python_and_sql() -> None:
    ids = [f"P{i:05d}" for i in range(20_000)]
    con = duckdb.connect()
    con.execute("create table ids as select unnest(?) as person_id", [ids])
    from_sql = dict(con.execute(f"select person_id, {assignment_unit_sql('person_id', 'exp')} from ids").fetchall())
    units = [assignment_unit(i, "exp") for i in ids]
    assert units == [from_sql[i] for i in ids]  # bit for bit: a plan and a readout can recompute the arm
    assert units == [assignment_unit(i, "exp") for i in ids]  # stable
    # ~10% control within 4 binomial standard deviations (deterministic: md5 of fixed ids)
    control = sum(arm_of(i, "exp", 0.1) == "control" for i in ids)
    assert abs(control - 0.1 * len(ids)) < 4 * math.sqrt(len(ids) * 0.1 * 0.9)
    # deciles even, and another experiment splits the same people independently
    deciles = [sum(int(u * 10) == d for u in units) for d in range(10)]
    assert max(abs(c - 2000) for c in deciles) < 4 * math.sqrt(20_000 * 0.1 * 0.9)
    both = sum(arm_of(i, "exp", 0.1) == "control" and arm_of(i, "other", 0.1) == "control" for i in ids)
    assert abs(both - 0.01 * len(ids)) < 4 * math.sqrt(len(ids) * 0.01 * 0.99)


def test_the_control_arm_is_never_sent_and_is_not_a_rejection(tmp_path: Path) -> None:
    crowd = people() + [person("X1", consent=False), person("X2", email="not-an-email")]
    write_published_warehouse(tmp_path / "warehouse.duckdb", crowd)
    sync = holdout_sync()
    expected_control = {p["person_id"] for p in crowd[:PEOPLE] if arm_of(p["person_id"], "winback", 0.1) == "control"}
    assert 10 <= len(expected_control) <= 30

    plan = plan_sync(ctx(tmp_path, "plan"), sync)
    assert not (tmp_path / "state").exists()  # planning assigns nobody on disk
    assert plan.held_out == len(expected_control)
    assert plan.ineligible == {"invalid_email": 1, "missing_consent": 1}  # the holdout is not among them
    assert plan.inserts == plan.eligible == PEOPLE - len(expected_control)

    first = run_sync(ctx(tmp_path, "r1"), sync)
    assert first.status == "success" and first.held_out == len(expected_control) and first.skipped == 2
    sent = audience_ids(tmp_path)
    assert sent.isdisjoint(expected_control) and len(sent) == PEOPLE - len(expected_control)
    for path in (tmp_path / "activation" / "winback").rglob("*.*"):
        text = path.read_bytes().decode("utf-8", "replace")
        assert not any(pid in text for pid in expected_control), path
    rejected = {r["record_key"] for r in sync_audit_tables(tmp_path)["sync_rejections"].to_pylist()}
    assert rejected == {"X1", "X2"}
    run = sync_audit_tables(tmp_path)["sync_runs"].to_pylist()[0]
    assert (run["held_out"], run["skipped"], run["sent"]) == (len(expected_control), 2, len(sent))

    rows = assignment_rows(tmp_path)
    assert len(rows) == PEOPLE  # every eligible person, in one arm or the other; the rejected in neither
    assert {r["person_id"] for r in rows if r["arm"] == "control"} == expected_control
    assert {(r["experiment"], r["sync_name"], r["first_assigned_date"], r["holdout_share"]) for r in rows} == {
        ("winback", "winback", AS_OF, 0.1)}
    assert not any(r["was_sent_before_assignment"] for r in rows)

    # the next run (a later day): same arms, nothing new recorded, nothing sent
    second = run_sync(ctx(tmp_path, "r2", date(2026, 4, 1)), sync)
    assert (second.sent, second.held_out) == (0, len(expected_control))
    assert len(assignment_rows(tmp_path)) == PEOPLE
    # a newcomer is assigned with the date of the run that first saw them
    write_published_warehouse(tmp_path / "warehouse.duckdb", [*crowd, person("P9999")])
    run_sync(ctx(tmp_path, "r3", date(2026, 4, 2)), sync)
    newcomer = [r for r in assignment_rows(tmp_path) if r["person_id"] == "P9999"]
    assert [(r["arm"], r["first_assigned_date"]) for r in newcomer] == [
        (arm_of("P9999", "winback", 0.1), date(2026, 4, 2))]


def test_a_holdout_added_after_sending_deletes_the_control_and_flags_them(tmp_path: Path) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", people())
    run_sync(ctx(tmp_path, "r1"), holdout_sync(holdout=None))
    assert len(audience_ids(tmp_path)) == PEOPLE and assignment_rows(tmp_path) == []

    control = {f"P{i:04d}" for i in range(PEOPLE) if arm_of(f"P{i:04d}", "winback", 0.1) == "control"}
    result = run_sync(ctx(tmp_path, "r2", date(2026, 4, 1)), holdout_sync())
    assert (result.plan.deletes, result.plan.inserts, result.held_out) == (len(control), 0, len(control))
    assert audience_ids(tmp_path) == {f"P{i:04d}" for i in range(PEOPLE)} - control
    changes = pq.read_table(tmp_path / "activation" / "winback" / "changes" / "r2.parquet").to_pylist()
    assert {r["person_id"] for r in changes if r["_change"] == "delete"} == control
    rows = assignment_rows(tmp_path)
    assert len(rows) == PEOPLE and all(r["was_sent_before_assignment"] for r in rows)


def test_an_arm_once_recorded_never_changes(tmp_path: Path) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", people())
    run_sync(ctx(tmp_path, "r1"), holdout_sync())
    before = {r["person_id"]: r["arm"] for r in assignment_rows(tmp_path)}
    # raising the holdout to 50% applies to newcomers only: the treated stay treated
    write_published_warehouse(tmp_path / "warehouse.duckdb", people(PEOPLE + 100))
    result = run_sync(ctx(tmp_path, "r2", date(2026, 4, 1)), holdout_sync(holdout="50%"))
    rows = {r["person_id"]: r for r in assignment_rows(tmp_path)}
    assert {p: rows[p]["arm"] for p in before} == before
    newcomers = [rows[f"P{i:04d}"] for i in range(PEOPLE, PEOPLE + 100)]
    assert all(r["holdout_share"] == 0.5 and r["first_assigned_date"] == date(2026, 4, 1) for r in newcomers)
    assert [r["arm"] for r in newcomers] == [arm_of(f"P{i:04d}", "winback", 0.5) for i in range(PEOPLE, PEOPLE + 100)]
    held = sum(a == "control" for a in before.values()) + sum(r["arm"] == "control" for r in newcomers)
    assert result.held_out == held
    assert audience_ids(tmp_path) == {p for p, r in rows.items() if r["arm"] == "treatment"}


def test_a_backfill_moves_the_first_assignment_back_not_the_arm(tmp_path: Path) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", people(50))
    run_sync(ctx(tmp_path, "r1"), holdout_sync())
    run_sync(ctx(tmp_path, "backfill", date(2026, 3, 1)), holdout_sync())
    rows = assignment_rows(tmp_path)
    assert len(rows) == 100  # the later run's rows and the backfill's earlier ones; the mart keeps the first
    by_person: dict[str, set] = {}
    for r in rows:
        by_person.setdefault(r["person_id"], set()).add(r["arm"])
    assert all(len(arms) == 1 for arms in by_person.values())
    assert {r["first_assigned_date"] for r in rows} == {AS_OF, date(2026, 3, 1)}
    # a third run finds everyone recorded on or before its date: nothing new
    run_sync(ctx(tmp_path, "r3", date(2026, 4, 1)), holdout_sync())
    assert len(assignment_rows(tmp_path)) == 100


class _RecordingBatches:
    """A batch destination that keeps what it was sent, or fails on the first upsert."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.upserted, self.deleted = fail, [], []

    def open(self, schema) -> None:
        pass

    def upsert(self, rows):
        from touchpoint.activation.destinations import BatchResult, DestinationUnavailableError

        if self.fail:
            raise DestinationUnavailableError("down")
        self.upserted += rows.column("person_id").to_pylist()
        return BatchResult()

    def delete(self, keys):
        from touchpoint.activation.destinations import BatchResult

        self.deleted += keys
        return BatchResult()

    def close(self) -> None:
        pass


def test_batch_destinations_never_get_the_control_and_a_failed_send_records_nobody(tmp_path: Path) -> None:
    write_published_warehouse(tmp_path / "warehouse.duckdb", people(100))
    failed = run_sync(ctx(tmp_path, "r1"), holdout_sync(), destination=_RecordingBatches(fail=True))
    assert failed.status == "failed" and failed.retryable and assignment_rows(tmp_path) == []
    destination = _RecordingBatches()
    result = run_sync(ctx(tmp_path, "r2", date(2026, 4, 1)), holdout_sync(), destination=destination)
    control = {r["person_id"] for r in assignment_rows(tmp_path) if r["arm"] == "control"}
    assert result.status == "success" and control and result.held_out == len(control)
    assert set(destination.upserted) == {f"P{i:04d}" for i in range(100)} - control
    assert {r["first_assigned_date"] for r in assignment_rows(tmp_path)} == {date(2026, 4, 1)}


def test_assignments_load_into_the_warehouse_idempotently(tmp_path: Path) -> None:
    con = duckdb.connect()
    assert load_sync_audit(con, tmp_path) == {"sync_runs": 0, "sync_rejections": 0, "experiment_assignments": 0}
    assert con.execute("select count(*) from audit.experiment_assignments").fetchall() == [(0,)]  # first run
    write_published_warehouse(tmp_path / "warehouse.duckdb", people(30))
    run_sync(ctx(tmp_path, "r1"), holdout_sync())
    for _ in range(2):
        assert load_sync_audit(con, tmp_path) == {"sync_runs": 1, "sync_rejections": 0, "experiment_assignments": 30}
        assert con.execute("select count(*), count(distinct person_id) from audit.experiment_assignments"
                           ).fetchall() == [(30, 30)]
    assert con.execute("select distinct experiment, sync_name from audit.experiment_assignments").fetchall() == [
        ("winback", "winback")]
