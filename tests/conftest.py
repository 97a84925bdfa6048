"""Shared test fixtures. Tests never touch ./data: each gets its own Touchpoint home."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The shared conformance kit lives beside the repo (`../shared/conformance`), not in it.
CONFORMANCE = PROJECT_ROOT.parent / "shared" / "conformance"
CONFORMANCE_EXTRACTS = CONFORMANCE / "extracts"
PG_SERVER = {"host": os.environ.get("TOUCHPOINT_TEST_PGHOST", "127.0.0.1"), "port": 5432, "user": "postgres"}


def require_conformance(path: Path = CONFORMANCE_EXTRACTS) -> Path:
    """`path` inside the shared conformance kit; a skip when the kit is not beside the repo, a failure in CI."""
    if path.exists():
        return path
    reason = f"conformance kit not found at {path} (expected beside the repo, in ../shared/conformance)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must provide it")
    pytest.skip(reason)


@contextmanager
def fresh_postgres_database(prefix: str = "touchpoint_test") -> Iterator[str]:
    """A new database on the local PostgreSQL server, dropped afterwards. Unreachable server: a failure in CI
    (`.ci/run` starts it), a skip elsewhere."""
    import psycopg2

    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG_SERVER)
    except psycopg2.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI but unreachable: {error}")
        pytest.skip(f"local PostgreSQL unreachable ({error}); start it to run these tests")
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"create database {name}")
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f"drop database if exists {name} with (force)")
        admin.close()


@pytest.fixture(scope="session", autouse=True)
def _isolated_airflow(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Airflow reads its home at import: point it at a throwaway folder for the whole session."""
    airflow_home = tmp_path_factory.mktemp("airflow_home")
    os.environ.setdefault("AIRFLOW_HOME", str(airflow_home))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """Entry points called in-process (`cli.main`, Airflow tasks) set a private umask: keep it to their test."""
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    os.umask(umask)


@pytest.fixture
def conformance_extracts() -> Path:
    return require_conformance()


def demo_world_ending_yesterday(paths, customers: int = 300, days: int = 45):
    """A small demo world whose last day is yesterday (UTC): an unpaused customer_360 starts a scheduled run
    as of that day at once. Returns yesterday."""
    from datetime import UTC, datetime, timedelta

    from touchpoint.sources import generate

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    generate(paths.demo_sources, customers=customers, days=days, seed=11, start=yesterday - timedelta(days=days - 1))
    return yesterday


def wait_for_scheduled_run(client, dag_id: str = "customer_360", timeout_s: float = 120.0) -> str:
    """Unpause the DAG and return the id of the run the scheduler creates for the latest interval."""
    import time

    client.set_paused(dag_id, False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        scheduled = [run for run in client.dag_runs(dag_id) if run["run_type"] == "scheduled"]
        if scheduled:
            return scheduled[0]["dag_run_id"]
        time.sleep(2)
    pytest.fail(f"the scheduler created no run of {dag_id} within {timeout_s:.0f}s of unpausing it")
