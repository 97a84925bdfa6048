"""Retention: landing files and quarantined raw records expire by the as-of, and only finished batches; score
histories older than the policy keep one partition a month."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import duckdb
import pytest

from touchpoint.config import Paths
from touchpoint.ingest.landing import BatchManifest, manifests_dir, read_manifests, record_manifest
from touchpoint.privacy.retention import (
    SCORE_HISTORIES,
    RetentionPolicy,
    RetentionSettingError,
    apply_retention,
)

AS_OF = date(2026, 6, 30)


def _landed(paths: Paths, batch_id: str, extract_date: str) -> BatchManifest:
    landing = f"landing/crm/crm_contacts/extract_date={extract_date}/{batch_id}.parquet"
    (paths.home / landing).parent.mkdir(parents=True, exist_ok=True)
    (paths.home / landing).write_bytes(b"PAR1 stand-in: retention never reads it")
    manifest = BatchManifest(batch_id, "crm", "crm_contacts", "crm_contacts.csv", extract_date, extract_date,
                             f"{extract_date} 23:59:59", landing, 10, 0)
    record_manifest(paths, manifest)
    return manifest


def _home(tmp_path) -> tuple[Paths, duckdb.DuckDBPyConnection]:
    paths = Paths(tmp_path).ensure()
    con = duckdb.connect(str(tmp_path / "work.duckdb"))
    con.execute("create schema audit")
    con.execute("create table audit.load_batches (batch_id varchar, status varchar)")
    con.execute("""create table audit.quarantine (batch_id varchar, source varchar, entity varchar,
        source_file varchar, row_number bigint, column_name varchar, reason varchar, raw_record varchar,
        quarantined_at timestamp)""")
    return paths, con


def test_old_finished_batches_lose_their_landing_files_and_nothing_else(tmp_path) -> None:
    paths, con = _home(tmp_path)
    old_loaded = _landed(paths, "crm_contacts-2025-01-01-aaaa", "2025-01-01")
    old_dropped = _landed(paths, "crm_contacts-2025-01-02-bbbb", "2025-01-02")
    old_held = _landed(paths, "crm_contacts-2025-01-03-cccc", "2025-01-03")
    old_pending = _landed(paths, "crm_contacts-2025-01-04-dddd", "2025-01-04")  # landed, never loaded
    recent = _landed(paths, "crm_contacts-2026-06-01-eeee", "2026-06-01")
    con.executemany("insert into audit.load_batches values (?, ?)", [
        (old_loaded.batch_id, "loaded"), (old_dropped.batch_id, "dropped"), (old_held.batch_id, "held"),
        (recent.batch_id, "loaded"),
    ])
    outcomes = apply_retention(paths, con, AS_OF, "run-1", RetentionPolicy(landing_days=365, quarantine_days=None))

    landing = {o.layer: o for o in outcomes}["landing"]
    assert landing.items == 2 and landing.cutoff == date(2025, 6, 30)
    assert not old_loaded.landing_path(paths).exists() and not old_dropped.landing_path(paths).exists()
    for kept in (old_held, old_pending, recent):
        assert kept.landing_path(paths).exists()
    # the loader no longer sees the expired batches' manifests; they are parked, not lost
    assert {m.batch_id for m in read_manifests(paths)} == {old_held.batch_id, old_pending.batch_id, recent.batch_id}
    assert (paths.state / "ingest" / "expired" / f"{old_loaded.batch_id}.json").exists()
    assert not (manifests_dir(paths) / f"{old_loaded.batch_id}.json").exists()
    logged = con.execute("select layer, items, cutoff from audit.retention_log order by layer").fetchall()
    assert logged == [("landing", 2, date(2025, 6, 30))]  # only what expired
    assert old_loaded.batch_id in con.execute("select detail from audit.retention_log where layer = 'landing'"
                                              ).fetchone()[0]

    again = apply_retention(paths, con, AS_OF, "run-2", RetentionPolicy(landing_days=365, quarantine_days=None))
    assert {o.layer: o.items for o in again} == {"landing": 0, "quarantine": 0, "score_history": 0}  # nothing new


def test_quarantined_raw_records_expire_and_reasons_stop_quoting_values(tmp_path) -> None:
    paths, con = _home(tmp_path)
    reason = 'email: "ann@example.com" is not an email; birth_date: "1999-13-45" does not parse'
    raw = '{"email": "ann@example.com", "birth_date": "1999-13-45"}'
    con.executemany("insert into audit.quarantine values ('b', 'crm', 'crm_contacts', 'f', ?, 'email', ?, ?, ?)", [
        (1, reason, raw, datetime(2026, 1, 1)),  # 180 days before the as-of
        (2, reason, raw, datetime(2026, 6, 20)),  # 10 days before
    ])
    outcomes = apply_retention(paths, con, AS_OF, "run-1", RetentionPolicy(landing_days=None, quarantine_days=90))
    assert {o.layer: o.items for o in outcomes} == {"landing": 0, "quarantine": 1, "score_history": 0}
    rows = dict(con.execute("select row_number, (raw_record, reason) from audit.quarantine").fetchall())
    assert rows[2] == (raw, reason)
    expired_raw, expired_reason = rows[1]
    assert expired_raw is None
    assert "ann@example.com" not in expired_reason and "1999-13-45" not in expired_reason
    assert expired_reason == 'email: "[expired]" is not an email; birth_date: "[expired]" does not parse'


def test_settings_are_days_or_never(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOUCHPOINT_RETENTION_LANDING_DAYS", raising=False)
    monkeypatch.delenv("TOUCHPOINT_RETENTION_SCORE_HISTORY_DAYS", raising=False)
    monkeypatch.setenv("TOUCHPOINT_RETENTION_QUARANTINE_DAYS", "never")
    assert RetentionPolicy.from_env() == RetentionPolicy(landing_days=400, quarantine_days=None, score_history_days=35)
    monkeypatch.setenv("TOUCHPOINT_RETENTION_SCORE_HISTORY_DAYS", "never")
    assert RetentionPolicy.from_env().score_history_days is None
    monkeypatch.setenv("TOUCHPOINT_RETENTION_SCORE_HISTORY_DAYS", "0")  # the ML stage needs the previous run's
    with pytest.raises(RetentionSettingError, match="at least 1 day"):
        RetentionPolicy.from_env()
    monkeypatch.delenv("TOUCHPOINT_RETENTION_SCORE_HISTORY_DAYS")
    monkeypatch.setenv("TOUCHPOINT_RETENTION_LANDING_DAYS", "30")
    assert RetentionPolicy.from_env().landing_days == 30
    monkeypatch.setenv("TOUCHPOINT_RETENTION_LANDING_DAYS", "a year")
    with pytest.raises(RetentionSettingError, match="TOUCHPOINT_RETENTION_LANDING_DAYS"):
        RetentionPolicy.from_env()


def _score_histories(con: duckdb.DuckDBPyConnection, days: list[date]) -> None:
    """Every score history with two people scored on each of `days`."""
    for table in SCORE_HISTORIES:
        schema = table.split(".")[0]
        con.execute(f"create schema if not exists {schema}")
        con.execute(f"create table {table} (person_id varchar, as_of date, score double)")
        con.executemany(f"insert into {table} values (?, ?, 0.5)", [(p, day) for day in days for p in ("p_1", "p_2")])


def _partitions(con: duckdb.DuckDBPyConnection, table: str) -> list[date]:
    return [row[0] for row in con.execute(f"select distinct as_of from {table} order by 1").fetchall()]


def test_score_histories_older_than_the_policy_keep_each_months_last_partition(tmp_path) -> None:
    paths, con = _home(tmp_path)
    daily_runs = [AS_OF - timedelta(days=n) for n in range(120)]  # 2026-03-03 to 2026-06-30, every day
    _score_histories(con, daily_runs)
    policy = RetentionPolicy(landing_days=None, quarantine_days=None, score_history_days=35)
    outcomes = {o.layer: o for o in apply_retention(paths, con, AS_OF, "run-1", policy)}

    cutoff = date(2026, 5, 26)
    assert outcomes["score_history"].cutoff == cutoff
    recent = [day for day in sorted(daily_runs) if day >= cutoff]
    month_ends = [date(2026, 3, 31), date(2026, 4, 30)]  # May's last run (the 31st) is still recent
    for table in SCORE_HISTORIES:
        assert _partitions(con, table) == month_ends + recent, table
    removed = (len(daily_runs) - len(recent) - len(month_ends)) * 2 * len(SCORE_HISTORIES)
    assert outcomes["score_history"].items == removed
    assert con.execute("select items from audit.retention_log where layer = 'score_history'").fetchall() == [
        (removed,)
    ]

    # a rerun the same day removes nothing more
    later = {o.layer: o.items for o in apply_retention(paths, con, AS_OF, "run-2", policy)}
    assert later["score_history"] == 0


def test_score_histories_are_kept_forever_when_told(tmp_path) -> None:
    paths, con = _home(tmp_path)
    days = [AS_OF - timedelta(days=n) for n in range(0, 400, 7)]
    _score_histories(con, days)
    policy = RetentionPolicy(landing_days=None, quarantine_days=None, score_history_days=None)
    outcomes = {o.layer: o.items for o in apply_retention(paths, con, AS_OF, "run-1", policy)}
    assert outcomes["score_history"] == 0
    assert _partitions(con, "ml.customer_clv") == sorted(days)
