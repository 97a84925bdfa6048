"""Airflow's REST API (v2), the few calls running Touchpoint needs: log in, trigger, wait, backfill, read assets.

`touchpoint backfill` hands dates to the deployment serving a home through it, and `touchpoint airflow`, the
scheduler tests and `bench/orchestration.py` use it on the deployment they start (`touchpoint.airflow_server`).
It talks HTTP only: starting and stopping Airflow is the server module's job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import httpx

from touchpoint.config import Paths
from touchpoint.orchestration import logical_date_for

ADMIN_USER = "admin"
FINISHED_RUN_STATES = ("success", "failed")


class DagRunTimeoutError(RuntimeError):
    """A DAG run did not finish in the time allowed."""


class Watched(Protocol):
    """What a wait can check between polls: the deployment's processes (`AirflowServices`)."""

    def check_alive(self) -> None:
        """Raise if a component died, so a wait stops at once instead of at its timeout."""


def run_as_of(run: dict[str, Any]) -> date:
    """A daily run's as-of date: the day before its data interval ends (see `touchpoint.pipeline`)."""
    return datetime.fromisoformat(run["data_interval_end"]).date() - timedelta(days=1)


def admin_password(paths: Paths) -> str:
    """The admin password the simple auth manager generated for this home (made when the API server starts)."""
    generated = paths.airflow_home / "simple_auth_manager_passwords.json.generated"
    return json.loads(generated.read_text())[ADMIN_USER]


class AirflowClient:
    """The few calls of Airflow's REST API (v2) that running Touchpoint needs."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0)

    @classmethod
    def login(cls, url: str, paths: Paths) -> AirflowClient:
        """Log in as the admin of the deployment serving `paths` (its generated password)."""
        response = httpx.post(
            f"{url}/auth/token", json={"username": ADMIN_USER, "password": admin_password(paths)}, timeout=10.0
        )
        response.raise_for_status()
        return cls(url, response.json()["access_token"])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        # Reads are retried: an API server on a busy machine (SQLite metadata, tasks running beside it) can
        # miss a deadline now and then. Writes are not: a retried trigger could start a run twice.
        attempts = 4 if method == "GET" else 1
        for attempt in range(attempts):
            try:
                response = self.http.request(method, f"/api/v2{path}", **kwargs)
                break
            except httpx.TransportError:
                if attempt == attempts - 1:
                    raise
                time.sleep(2.0 * 2**attempt)
        if response.is_error:
            raise httpx.HTTPStatusError(
                f"{method} {path}: {response.status_code} {response.text[:500]}",
                request=response.request,
                response=response,
            )
        return response.json() if response.content else None

    def unhealthy_components(self) -> str | None:
        health = self._call("GET", "/monitor/health")
        bad = [name for name, part in health.items() if isinstance(part, dict) and part.get("status") != "healthy"]
        return f"not healthy yet: {', '.join(bad)}" if bad else None

    def missing_dag(self, dag_id: str) -> str | None:
        response = self.http.get(f"/api/v2/dags/{dag_id}")
        return None if response.status_code == 200 else f"DAG {dag_id} not parsed yet ({response.status_code})"

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, as_of: date | None = None, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run. With `as_of` it carries no logical date (Airflow 3 allows that), so any date can be
        run again beside the scheduled run of the same day; without, it is as of the last complete day."""
        logical_date = None if as_of else datetime.now(UTC).isoformat()
        conf = {**(conf or {}), **({"as_of": as_of.isoformat()} if as_of else {})}
        return self._call("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": logical_date, "conf": conf})[
            "dag_run_id"
        ]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "run_after"})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})[
            "task_instances"
        ]

    def wait_for_run(
        self, dag_id: str, run_id: str, timeout_s: float, services: Watched | None = None
    ) -> dict[str, Any]:
        """Poll until the run succeeds or fails; raise DagRunTimeoutError naming the unfinished tasks."""
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in FINISHED_RUN_STATES:
                return run
            if services:
                services.check_alive()
            if time.monotonic() > deadline:
                pending = [
                    f"{ti['task_id']}={ti['state']}"
                    for ti in self.task_instances(dag_id, run_id)
                    if ti["state"] not in ("success", "skipped")
                ]
                raise DagRunTimeoutError(
                    f"{dag_id} run {run_id} still {run['state']} after {timeout_s:.0f}s: {pending}"
                )
            time.sleep(2.0)

    def create_backfill(
        self, dag_id: str, start: date, end: date, conf: dict[str, Any] | None = None, max_active_runs: int = 1
    ) -> dict[str, Any]:
        """Airflow's own backfill of the runs as of `start`..`end`: a daily run at midnight is as of the day
        before (`logical_date_for`)."""
        body = {
            "dag_id": dag_id,
            "from_date": logical_date_for(start).isoformat(),
            "to_date": logical_date_for(end).isoformat(),
            "dag_run_conf": conf or {},
            "max_active_runs": max_active_runs,
            "reprocess_behavior": "completed",
        }
        return self._call("POST", "/backfills", json=body)

    def backfill_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return [run for run in self.dag_runs(dag_id) if run["run_type"] == "backfill"]

    def wait_for_backfill(
        self,
        backfill: dict[str, Any],
        timeout_s: float,
        on_run_done: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Poll until Airflow marks the backfill complete; return its runs (as of its dates, this backfill's)."""
        deadline = time.monotonic() + timeout_s
        start, end = (run_as_of({"data_interval_end": backfill[key]}) for key in ("from_date", "to_date"))
        created = datetime.fromisoformat(backfill["created_at"])
        reported: set[str] = set()
        while True:
            done = self._call("GET", f"/backfills/{backfill['id']}")["completed_at"] is not None
            runs = [
                run
                for run in self.backfill_runs(backfill["dag_id"])
                if start <= run_as_of(run) <= end
                and run["end_date"]
                and datetime.fromisoformat(run["end_date"]) > created
            ]
            for run in runs:
                if run["state"] in FINISHED_RUN_STATES and run["dag_run_id"] not in reported:
                    reported.add(run["dag_run_id"])
                    if on_run_done:
                        on_run_done(run)
            if done:
                return runs
            if time.monotonic() > deadline:
                raise DagRunTimeoutError(f"backfill {backfill['id']} not complete after {timeout_s:.0f}s")
            time.sleep(5.0)

    def asset_events(self, asset_name: str) -> list[dict[str, Any]]:
        assets = self._call("GET", "/assets", params={"name_pattern": asset_name})["assets"]
        if not assets:
            return []
        return self._call("GET", "/assets/events", params={"asset_id": assets[0]["id"], "limit": 100})["asset_events"]
