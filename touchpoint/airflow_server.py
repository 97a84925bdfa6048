"""A real Airflow 3 deployment for one Touchpoint home: api-server, scheduler, dag-processor and triggerer.

`touchpoint airflow` (`make airflow`) runs it in the foreground for the UI; the scheduler tests and
`bench/orchestration.py` start it, trigger `customer_360` through the REST API and wait for the outcome.

The embedded default keeps Airflow's metadata in SQLite under `<home>/airflow` with the LocalExecutor. For
growth beyond one machine, point `sql_alchemy_conn` at PostgreSQL (and, with the Celery provider, set the
executor to CeleryExecutor): see the README's "Running it on a schedule". Components are started with the
`airflow` of this interpreter's venv, first on PATH, and the task runner reaches the API server through
`core.execution_api_server_url`, which follows the port.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from touchpoint import processes
from touchpoint.config import Paths
from touchpoint.orchestration import DAG_ID, airflow_env, logical_date_for, prepare_metadata

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
CELERY_EXECUTOR = "CeleryExecutor"
FINISHED_RUN_STATES = ("success", "failed")
ADMIN_USER = "admin"


class AirflowUnavailableError(RuntimeError):
    """The deployment did not come up, or a component died: the message names the log to read."""


class DagRunTimeoutError(RuntimeError):
    """A DAG run did not finish in the time allowed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class AirflowDeployment:
    """How Airflow runs for one home: API port, executor, metadata database."""

    paths: Paths
    port: int = 8080
    executor: str = "LocalExecutor"
    sql_alchemy_conn: str | None = None  # None: SQLite at <home>/airflow/airflow.db
    parallelism: int = 8
    celery_broker_url: str | None = None  # with CeleryExecutor, e.g. redis://127.0.0.1:6379/0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def components(self) -> dict[str, list[str]]:
        """Component name -> `airflow` arguments; CeleryExecutor adds a worker (run more on other machines)."""
        components = {component: [component] for component in COMPONENTS}
        if self.executor == CELERY_EXECUTOR:
            components["celery-worker"] = ["celery", "worker", "--concurrency", str(self.parallelism)]
        return components

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> Path:
        return self.paths.airflow_home / "logs"

    def env(self) -> dict[str, str]:
        env = {
            **airflow_env(self.paths),
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            # The task runner talks to the API server here: it must follow the port.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            # Every component signs or checks task tokens with it, so they must share one secret.
            "AIRFLOW__API_AUTH__JWT_SECRET": _home_secret(self.paths, "jwt_secret"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # task logs in the UI; component logs go to files
            **self.extra_env,
        }
        if self.sql_alchemy_conn:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = self.sql_alchemy_conn
        if self.executor == CELERY_EXECUTOR:
            if not (self.celery_broker_url and self.sql_alchemy_conn):
                raise ValueError("CeleryExecutor needs a broker URL and a shared (PostgreSQL) metadata database")
            env["AIRFLOW__CELERY__BROKER_URL"] = self.celery_broker_url
            # Task results live next to the metadata (Celery's SQLAlchemy backend takes a `db+` URL).
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + self.sql_alchemy_conn
        return env


def _home_secret(paths: Paths, name: str) -> str:
    """A random secret kept under the home's Airflow folder (outside the repo), made on first use."""
    path = paths.airflow_home / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def services_file(paths: Paths) -> Path:
    return paths.airflow_home / "services.json"


def live_services(paths: Paths) -> dict[str, Any] | None:
    """The running deployment serving this home (url and pids), or None."""
    path = services_file(paths)
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    alive = [pid for pid in info["pids"].values() if _alive(pid)]
    return info if alive else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AirflowServices:
    """The four components as child processes, each logging to `<home>/airflow/logs/<component>.log`."""

    def __init__(self, deployment: AirflowDeployment) -> None:
        self.deployment = deployment
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        if live_services(self.deployment.paths):
            raise AirflowUnavailableError(f"an Airflow already serves {self.deployment.paths.home}")
        env = {**os.environ, **self.deployment.env()}
        prepare_metadata(self.deployment.paths, env)
        self.deployment.logs.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).with_name("airflow"))
        for component, arguments in self.deployment.components.items():
            with open(self.deployment.logs / f"{component}.log", "ab") as log:
                # Own session: stopping the deployment stops each component's children (task runners) too.
                # SIGTERM, not SIGKILL, if this process dies: a component shuts down its own children
                # (executor workers, API workers) on SIGTERM, where SIGKILL would orphan them.
                self.processes[component] = processes.start(
                    [airflow, *arguments],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    signal_on_parent_death=signal.SIGTERM,
                )
        services_file(self.deployment.paths).write_text(
            json.dumps({"url": self.deployment.url, "pids": {c: p.pid for c, p in self.processes.items()}})
        )

    def check_alive(self) -> None:
        for component, process in self.processes.items():
            if process.poll() is not None:
                raise AirflowUnavailableError(
                    f"airflow {component} exited with {process.returncode}; "
                    f"see {self.deployment.logs / f'{component}.log'}"
                )

    def wait_ready(self, timeout_s: float = 180.0) -> AirflowClient:
        """Wait until every component reports healthy and the DAG is parsed; return a logged-in client."""
        deadline = time.monotonic() + timeout_s
        client: AirflowClient | None = None
        last_problem = "the API server did not answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                client = client or AirflowClient.login(self.deployment.url, self.deployment.paths)
                problem = client.unhealthy_components() or client.missing_dag(DAG_ID)
                if problem is None:
                    return client
                last_problem = problem
            except (httpx.HTTPError, FileNotFoundError) as error:
                last_problem = f"{type(error).__name__}: {error}"
            time.sleep(1.0)
        raise AirflowUnavailableError(
            f"Airflow at {self.deployment.url} not ready after {timeout_s:.0f}s ({last_problem}); "
            f"logs in {self.deployment.logs}"
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        services_file(self.deployment.paths).unlink(missing_ok=True)

    def __enter__(self) -> AirflowServices:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


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
        self, dag_id: str, run_id: str, timeout_s: float, services: AirflowServices | None = None
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
