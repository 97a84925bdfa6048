"""A real Airflow 3 deployment for one Touchpoint home: api-server, scheduler, dag-processor and triggerer.

`touchpoint airflow` (`make airflow`) runs it in the foreground for the UI; the scheduler tests and
`bench/orchestration.py` start it, trigger `customer_360` through the REST API (`touchpoint.airflow_client`)
and wait for the outcome.

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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from touchpoint import processes
from touchpoint.airflow_client import ADMIN_USER, AirflowClient
from touchpoint.config import Paths
from touchpoint.orchestration import DAG_ID, airflow_env, live_services, prepare_metadata, services_file

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
CELERY_EXECUTOR = "CeleryExecutor"


class AirflowUnavailableError(RuntimeError):
    """The deployment did not come up, or a component died: the message names the log to read."""


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
