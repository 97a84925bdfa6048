"""The pipeline's stages as plain functions: the DAG wires them, the benchmarks call them directly.

Each stage takes a RunContext (one logical date, one home) and returns a small JSON-able summary that
Airflow keeps as XCom and `touchpoint run` prints. Stage modules are imported inside the functions so
that importing this module (and parsing the DAG) stays cheap.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from touchpoint.config import RunContext, home_from_env, keep_files_private
from touchpoint.disk import disk_full_error

if TYPE_CHECKING:
    from touchpoint.activation.definitions import SyncDefinition
    from touchpoint.warehouse import LeaseHolder

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
Stage = Callable[Concatenate[RunContext, P], R]


def _stage(outcome: str = "nothing was published") -> Callable[[Stage[P, R]], Stage[P, R]]:
    """Make a stage function fail on a full disk with DiskFullError's one line, not a library's traceback.

    The DAG's tasks call these functions, so the error a failed task shows (in the UI, in `touchpoint run`'s
    excerpt) says what to do. `outcome` says what the failure leaves behind (before publish: nothing published).
    """

    def decorate(function: Stage[P, R]) -> Stage[P, R]:
        @functools.wraps(function)
        def run(ctx: RunContext, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return function(ctx, *args, **kwargs)
            except Exception as error:
                full = disk_full_error(error, ctx.home, outcome)
                if full is None or full is error:
                    raise
                raise full from error

        return run

    return decorate


def as_of_for_interval_end(data_interval_end: datetime) -> date:
    """The run's as-of date: the last complete UTC day before the end of its data interval.

    A daily run at 2026-07-01T00:00Z covers 2026-06-30; a run triggered mid-day covers the day before,
    so a run never reads a day that is still being written.
    """
    end = data_interval_end.astimezone(UTC) if data_interval_end.tzinfo else data_interval_end
    return end.date() - timedelta(days=1)


def context_from_airflow(airflow_context: dict[str, Any]) -> RunContext:
    """Build the RunContext from an Airflow task context (params `home`, `extracts`, `as_of`).

    Every task of the DAG starts here, so this is also where a task process (which a scheduler or a Celery
    worker may have started with any umask) is made to create only owner-only files under the home.
    """
    keep_files_private()
    params = airflow_context.get("params") or {}
    if params.get("as_of"):
        as_of = date.fromisoformat(str(params["as_of"]))
    else:
        as_of = as_of_for_interval_end(airflow_context["data_interval_end"])
    extracts = params.get("extracts")
    dag_run = airflow_context.get("dag_run")
    return RunContext(
        as_of=as_of,
        home=home_from_env(params.get("home")),
        run_id=as_of.isoformat(),
        extracts_dir=Path(extracts).resolve() if extracts else None,
        lease_key=f"{dag_run.dag_id}/{dag_run.run_id}" if dag_run is not None else None,
    )


def lease_run_key(holder_key: str) -> tuple[str, str]:
    """(dag_id, run_id) of a lease key written by `context_from_airflow`."""
    dag_id, _, run_id = holder_key.partition("/")
    return dag_id, run_id


@_stage()
def claim_warehouse(ctx: RunContext, is_stale: Callable[[LeaseHolder], bool]) -> dict[str, Any]:
    """Claim the working warehouse for this run: `claimed` false while another live run holds it."""
    from touchpoint.warehouse import WarehouseLease

    ctx.paths.ensure()
    holder = WarehouseLease(ctx.paths).try_claim(_lease_key(ctx), ctx.as_of.isoformat(), is_stale)
    if holder is not None:
        return {"claimed": False, "held_by": holder.run_key, "held_as_of": holder.as_of, "since": holder.claimed_at}
    return {"claimed": True, "lease": _lease_key(ctx), "as_of": ctx.as_of.isoformat()}


@_stage(outcome="the next run takes the warehouse lease over")
def release_warehouse(ctx: RunContext) -> dict[str, Any]:
    """Give the working warehouse back, whether the run succeeded or not."""
    from touchpoint.warehouse import WarehouseLease

    return {"lease": _lease_key(ctx), "released": WarehouseLease(ctx.paths).release(_lease_key(ctx))}


def _lease_key(ctx: RunContext) -> str:
    if not ctx.lease_key:
        raise ValueError("claiming the warehouse needs a run with a lease key (an orchestrated run)")
    return ctx.lease_key


def _hold(ctx: RunContext) -> None:
    """Stop a stage whose run does not hold the warehouse (orchestrated runs only)."""
    if ctx.lease_key:
        from touchpoint.warehouse import WarehouseLease

        WarehouseLease(ctx.paths).check(ctx.lease_key)


def _summary(result: Any) -> dict[str, Any]:
    """A JSON-able summary of a stage result (dataclass or dict)."""
    if is_dataclass(result) and not isinstance(result, type):
        data = asdict(result)
    elif isinstance(result, dict):
        data = result
    else:
        data = {"result": str(result)}
    return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@_stage()
def extract(ctx: RunContext, source: str) -> dict[str, Any]:
    """Pull one source incrementally into landing (no warehouse access: sources run in parallel)."""
    _hold(ctx)
    from touchpoint.ingest import extract_source

    ctx.paths.ensure()
    return _summary(extract_source(ctx, source))


@_stage()
def load(ctx: RunContext) -> dict[str, Any]:
    """Load every landed batch into the raw schema, quarantining bad rows (the single writer), then expire what
    the retention policy says is past its time (touchpoint.privacy.retention): every run enforces it."""
    _hold(ctx)
    from touchpoint.activation import load_sync_audit
    from touchpoint.ingest import load_pending
    from touchpoint.privacy.retention import RetentionPolicy, apply_retention
    from touchpoint.warehouse import connect_work

    ctx.paths.ensure()
    policy = RetentionPolicy.from_env()  # a bad setting fails the task before anything is loaded
    with connect_work(ctx.paths) as con:
        summary = _summary(load_pending(ctx, con))
        # The last syncs' run log and rejections (written beside the read-only published warehouse)
        # enter the warehouse here, with the one writer, and are published with this run.
        summary["sync_audit"] = load_sync_audit(con, ctx.home)
        expired = apply_retention(ctx.paths, con, ctx.as_of, ctx.run_id, policy)
        summary["retention"] = {outcome.layer: outcome.items for outcome in expired}
        return summary


@_stage()
def dbt_layer(ctx: RunContext, layer: str) -> dict[str, Any]:
    """Build and test one dbt layer (`touchpoint.dbt.LAYERS`) under the single-writer lock.

    A run builds staging, identity and marts, then the ML stage (`ml`), then scored: the models that read the
    ML stage's outputs (customer_360), which the ML stage, reading the marts, cannot wait for.
    """
    _hold(ctx)
    from touchpoint.dbt import run_layer
    from touchpoint.warehouse import writer_lock

    with writer_lock(ctx.paths):
        result = run_layer(ctx, layer)
    return {
        "layer": layer,
        "seconds": round(result.seconds, 2),
        "models": result.models_built,
        "tests_passed": result.tests_passed,
        **({"full_refresh": result.full_refresh} if result.full_refresh else {}),
    }


@_stage()
def gate(ctx: RunContext, layer: str) -> dict[str, Any]:
    """Run the Great Expectations suite of a layer; raises GateFailed, which stops the run.

    A failed raw gate first holds this run's batches of the failing tables out of raw, when the gate passes
    without them, so the next run is not blocked by the same bad batch (ingest/batches.py).
    """
    _hold(ctx)
    from touchpoint.expectations import GateFailed, evaluate_gate, run_gate
    from touchpoint.ingest.batches import hold_failing_batches
    from touchpoint.warehouse import connect_work

    with connect_work(ctx.paths) as con:
        try:
            return _summary(run_gate(ctx, layer, con))
        except GateFailed as failed:
            if layer != "raw":
                raise
            result = failed.result
            outcome = hold_failing_batches(
                ctx,
                con,
                failing_tables={r.table for r in result.failures},
                reason="raw gate failed: " + "; ".join(r.line() for r in result.failures)[:2000],
                report=str(result.reports.get("html", "")) or None,
                passes_without=lambda: evaluate_gate(ctx, layer, con).success,
            )
            raise GateFailed(result, note=outcome.message()) from None


@_stage()
def ml(ctx: RunContext) -> dict[str, Any]:
    """Fit and score segments, propensity and CLV; write the ml schema."""
    _hold(ctx)
    from touchpoint.ml.stage import run_ml
    from touchpoint.warehouse import connect_work

    with connect_work(ctx.paths) as con:
        return _summary(run_ml(ctx, con))


@_stage()
def erase(ctx: RunContext) -> dict[str, Any]:
    """Honour pending erasure requests and keep suppressed people out of this run (touchpoint.privacy.erasure).

    Runs after dbt's staging layer (whose identifier view it reads) and before identity, so nothing downstream
    ever sees an erased person's rows.
    """
    _hold(ctx)
    from touchpoint.privacy.erasure import honour_erasures
    from touchpoint.warehouse import connect_work

    with connect_work(ctx.paths) as con:
        return _summary(honour_erasures(ctx, con))


@_stage()
def publish(ctx: RunContext) -> dict[str, Any]:
    """Replace the published warehouse atomically with the gated working one.

    After a run that erased someone, the working warehouse is first rewritten into a fresh file, so no deleted
    row survives in a free block of it (the published files are always written fresh).
    """
    _hold(ctx)
    from touchpoint.privacy.erasure import compaction_marker
    from touchpoint.publish import publish as publish_warehouse
    from touchpoint.warehouse import compact_database, writer_lock

    marker = compaction_marker(ctx)
    compacted = None
    if marker.exists():
        with writer_lock(ctx.paths):
            compacted = compact_database(ctx.paths.work_db)
        marker.unlink()
    summary = _summary(publish_warehouse(ctx))
    if compacted:
        summary["compacted_after_erasure"] = compacted
    return summary


def sync_names() -> list[str]:
    """Names of the reverse-ETL syncs defined in the repo."""
    from touchpoint.activation import load_sync_definitions

    return [definition.name for definition in load_sync_definitions()]


@_stage(outcome="the published warehouse is this run's; this sync did not finish")
def sync(ctx: RunContext, name: str) -> dict[str, Any]:
    """Run one reverse-ETL sync from the published warehouse; a failed one (audited) fails its task.

    Each sync is its own mapped task in the DAG, so a failure here stops no other sync and fails the run.
    The failure raised (`SyncFailedError`, its audited message) says whether it is `retryable`: the DAG
    retries only those.
    """
    _hold(ctx)
    from touchpoint.activation import load_sync_definitions, run_sync

    definitions = {definition.name: definition for definition in load_sync_definitions()}
    return _summary(run_sync(ctx, definitions[name]).raise_if_failed())


def stages_in_order(
    ctx: RunContext, syncs: Iterable[SyncDefinition] | None = None
) -> list[tuple[str, Callable[[], Any]]]:
    """The customer_360 DAG's stages as (task id, call), in the DAG's order (tests/test_dag_hygiene.py pins
    the two together), for running a whole pipeline in one process without Airflow: benchmarks and tests.

    `syncs`: the definitions to run after publish, each failing the run if it fails; None runs the repo's
    syncs as the DAG does (`sync`).

    Unlike the DAG: no warehouse lease is claimed (do not point it at a home an Airflow also runs), and the first
    failing sync stops the ones after it (the DAG's mapped sync tasks run independently, with retries).
    """
    from touchpoint.ingest import SOURCES

    stages: list[tuple[str, Callable[[], Any]]] = [
        *((f"extract.{source}", functools.partial(extract, ctx, source)) for source in SOURCES),
        ("load.raw", functools.partial(load, ctx)),
        ("load.gate_raw", functools.partial(gate, ctx, "raw")),
        ("dbt.staging", functools.partial(dbt_layer, ctx, "staging")),
        ("dbt.erase", functools.partial(erase, ctx)),
        ("dbt.identity", functools.partial(dbt_layer, ctx, "identity")),
        ("dbt.marts", functools.partial(dbt_layer, ctx, "marts")),
        ("ml.score", functools.partial(ml, ctx)),
        ("ml.gate_ml", functools.partial(gate, ctx, "ml")),
        ("scored.dbt", functools.partial(dbt_layer, ctx, "scored")),
        ("scored.gate_marts", functools.partial(gate, ctx, "marts")),
        ("publish", functools.partial(publish, ctx)),
    ]
    if syncs is None:
        return stages + [(f"sync.run[{name}]", functools.partial(sync, ctx, name)) for name in sync_names()]
    return stages + [(f"sync.run[{d.name}]", functools.partial(_run_given_sync, ctx, d)) for d in syncs]


def _run_given_sync(ctx: RunContext, definition: SyncDefinition) -> dict[str, Any]:
    from touchpoint.activation import run_sync

    return _summary(run_sync(ctx, definition).raise_if_failed())


def run_in_process(ctx: RunContext, syncs: Iterable[SyncDefinition] | None = None) -> dict[str, Any]:
    """Every stage of `stages_in_order`, one after the other; returns each task's summary by task id."""
    return {task_id: call() for task_id, call in stages_in_order(ctx, syncs)}
