"""Run the `customer_360` DAG through Airflow itself (`dag.test()`), for `touchpoint run` and `make run`.

Airflow's metadata lives in SQLite under `<home>/airflow` (the embedded default). Airflow's own log output
goes to `<home>/artifacts/<run id>/airflow.log`; the terminal gets one line per finished task instead.
What the embedded run shares with a deployment of the home (`touchpoint.airflow_server`) lives here: the
environment, the metadata database and its pool, and `live_services`, which says whether one serves the home.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

from touchpoint import processes
from touchpoint.config import PROJECT_ROOT, Paths
from touchpoint.locks import file_lock

DAG_ID = "customer_360"
DAGS_FOLDER = PROJECT_ROOT / "dags"


@dataclass
class TaskOutcome:
    task_id: str
    state: str
    seconds: float


@dataclass
class DagRunOutcome:
    state: str
    logical_date: datetime
    tasks: list[TaskOutcome] = field(default_factory=list)
    log_file: Path | None = None

    @property
    def did_work(self) -> bool:
        """Whether any task ran: Airflow marks a run without a single task instance 'success'."""
        return any(task.state == "success" for task in self.tasks)

    @property
    def succeeded(self) -> bool:
        return self.state == "success" and self.did_work


def airflow_env(paths: Paths) -> dict[str, str]:
    """Environment for an embedded Airflow: SQLite metadata under the home, this repo's DAGs, quiet logs."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "AIRFLOW_HOME": str(paths.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "TOUCHPOINT_HOME": str(paths.home),
        # Airflow starts components with `airflow` from PATH: the venv's must come first.
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
    }


WAREHOUSE_POOL = ("touchpoint_warehouse", "1", "Single writer of the working DuckDB warehouse")


def configure_airflow(paths: Paths) -> None:
    """Point this process's Airflow at the home (before airflow is imported) and prepare its metadata DB."""
    env = airflow_env(paths)
    os.environ.update(env)
    marker = paths.airflow_home / ".migrated"
    if not marker.exists():
        prepare_metadata(paths, {**os.environ, **env})
        marker.write_text("ok\n")


def prepare_metadata(paths: Paths, env: dict[str, str]) -> None:
    """Migrate the metadata database that `env` names and create the writer pool (both idempotent)."""
    paths.airflow_home.mkdir(parents=True, exist_ok=True)
    airflow = str(Path(sys.executable).with_name("airflow"))
    log = paths.airflow_home / "db-migrate.log"
    for command in (["db", "migrate"], ["pools", "set", *WAREHOUSE_POOL]):
        # killed with the caller: a migration cut short is finished by the next `db migrate` (idempotent)
        completed = processes.run([airflow, *command], env=env, capture_output=True, text=True)
        with open(log, "a") as handle:
            handle.write(completed.stdout + completed.stderr)
        if completed.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(command)} failed; see {log}")


def logical_date_for(as_of: date) -> datetime:
    """The logical date whose run is as of `as_of`: midnight UTC after that day."""
    return datetime.combine(as_of + timedelta(days=1), dtime.min, tzinfo=UTC)


def services_file(paths: Paths) -> Path:
    """Where a deployment serving the home (`touchpoint.airflow_server`) records its URL and process ids."""
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


def run_dag(
    paths: Paths,
    as_of: date,
    conf: dict[str, str | None],
    log_file: Path,
    on_task_done: Callable[[TaskOutcome], None] | None = None,
) -> DagRunOutcome:
    """Run customer_360 once for `as_of` through `dag.test()`; Airflow's output goes to `log_file`.

    Refuses while a scheduler serves the home (its runs and this one would share the metadata DB and the
    warehouse), and runs one embedded run per home at a time.
    """
    serving = live_services(paths)
    if serving:
        raise HomeServedError(
            f"an Airflow scheduler serves {paths.home} at {serving['url']}: trigger runs there "
            "(UI, REST API, or `touchpoint backfill`, which hands the dates to it)"
        )
    with _embedded_run_lock(paths):
        return _run_dag_embedded(paths, as_of, conf, log_file, on_task_done)


class HomeServedError(RuntimeError):
    """A local Airflow deployment serves this home, so an embedded run would race its runs."""


@contextmanager
def _embedded_run_lock(paths: Paths) -> Iterator[None]:
    """One embedded run per home. Holding it with no scheduler serving the home, any warehouse lease left
    behind belongs to a run whose process died (Ctrl-C, OOM): it is released, not waited for."""
    from touchpoint.warehouse import WarehouseLease

    def busy() -> HomeServedError:
        return HomeServedError(f"another `touchpoint run` is running on {paths.home}")

    with file_lock(paths.airflow_home / ".embedded-run.lock", timeout_s=0, busy=busy):
        WarehouseLease(paths).release_abandoned()
        yield


def _run_dag_embedded(
    paths: Paths,
    as_of: date,
    conf: dict[str, str | None],
    log_file: Path,
    on_task_done: Callable[[TaskOutcome], None] | None,
) -> DagRunOutcome:
    configure_airflow(paths)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with _redirect_output(log_file):  # Airflow's import-time warnings belong in its log, not on the terminal
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(DAG_ID)
    logical_date = logical_date_for(as_of)
    order = dag_task_order(dag)

    stop = threading.Event()
    watcher = (
        threading.Thread(target=_watch_tasks, args=(logical_date, stop, on_task_done, order), daemon=True)
        if on_task_done
        else None
    )
    with _redirect_output(log_file):
        if watcher:
            watcher.start()
        try:
            dag_run = dag.test(logical_date=logical_date, run_conf=conf)
        finally:
            stop.set()
            if watcher:
                watcher.join(timeout=5)
    return DagRunOutcome(
        state=str(getattr(dag_run.state, "value", dag_run.state)),
        logical_date=logical_date,
        tasks=in_dag_order(_task_outcomes(logical_date), order),
        log_file=log_file,
    )


def _task_outcomes(logical_date: datetime) -> list[TaskOutcome]:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = DagRun.find(dag_id=DAG_ID, logical_date=logical_date, session=session)
        if not runs:
            return []
        tis = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == runs[-1].run_id)
            .all()
        )
        outcomes = []
        for ti in tis:
            seconds = (ti.end_date - ti.start_date).total_seconds() if ti.start_date and ti.end_date else 0.0
            label = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.rendered_map_index or ti.map_index}]"
            outcomes.append(TaskOutcome(label, str(getattr(ti.state, "value", ti.state)), seconds))
        return outcomes


def dag_task_order(dag: object) -> list[str]:
    """The DAG's task ids in topological order (a task after its upstreams; groups kept together, in the order
    the DAG declares them): the order a reader expects a run's tasks in."""
    from airflow.sdk.definitions.taskgroup import TaskGroup

    def walk(group: TaskGroup) -> Iterator[str]:
        for node in group.topological_sort():
            if isinstance(node, TaskGroup):
                yield from walk(node)
            else:
                yield node.task_id

    return list(walk(dag.task_group))  # type: ignore[attr-defined]


def in_dag_order(outcomes: list[TaskOutcome], order: list[str]) -> list[TaskOutcome]:
    """`outcomes` sorted by `order` (dag_task_order); mapped instances (`sync.run[name]`) by name within their
    task. Tasks that finish within one poll of each other would otherwise come out alphabetically
    (ml.gate_ml before ml.score)."""
    rank = {task_id: index for index, task_id in enumerate(order)}

    def key(outcome: TaskOutcome) -> tuple[int, str]:
        task_id = outcome.task_id.split("[", 1)[0]
        return rank.get(task_id, len(rank)), outcome.task_id

    return sorted(outcomes, key=key)


def _watch_tasks(
    logical_date: datetime, stop: threading.Event, report: Callable[[TaskOutcome], None], order: list[str]
) -> None:
    """Report each task once it reaches a final state (polls the metadata DB), in DAG order within a poll."""
    seen: set[str] = set()
    while True:
        finished = stop.wait(1.0)
        try:
            for outcome in in_dag_order(_task_outcomes(logical_date), order):
                if outcome.state in ("success", "failed", "upstream_failed", "skipped") and outcome.task_id not in seen:
                    seen.add(outcome.task_id)
                    report(outcome)
        except Exception:  # the metadata DB may be busy for a moment; the final summary is authoritative
            pass
        if finished:
            return


class _redirect_output:
    """Send fd 1 and 2 (Python and native writes) to a file; keep a handle on the terminal for progress."""

    terminal: object = None

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _redirect_output:
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        _redirect_output.terminal = os.fdopen(os.dup(self._saved[0]), "w", buffering=1)
        self._file = open(self.path, "ab")
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._file.close()
        if _redirect_output.terminal is not None:
            _redirect_output.terminal.close()  # type: ignore[attr-defined]
            _redirect_output.terminal = None


def print_progress(outcome: TaskOutcome) -> None:
    """Print a finished task to the real terminal even while Airflow's output is redirected."""
    out = _redirect_output.terminal or sys.stdout
    mark = {"success": "ok", "skipped": "--"}.get(outcome.state, "!!")
    print(f"  {mark} {outcome.task_id:<34} {outcome.seconds:7.1f}s  {outcome.state}", file=out, flush=True)  # type: ignore[arg-type]
