"""Run one dbt layer (staging, identity, marts, scored) against the working warehouse, and build dbt's docs site.

dbt runs in the calling process through its programmatic runner (`dbtRunner`), one invocation per layer: a
`touchpoint run` (every task in one process) imports dbt once instead of once per layer (about 3 s each), and a
killed run or task takes dbt with it. dbt's console lines go to the run's artifacts, not to the caller's output.
A failure names the model or test that failed, read from dbt's `run_results.json`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from touchpoint.config import Paths, RunContext, dbt_project_dir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layer:
    """What one `dbt build` selects (dbt node selectors) and leaves out."""

    select: tuple[str, ...]
    exclude: tuple[str, ...] = ()


# Everything that reads an output of the ML stage (the `ml` source), directly or through another model.
READS_ML = "source:ml+"
# A file beside a layer's kept run results while its dbt build runs: left behind by a build that never returned, it
# makes the layer's next build a full one, as a failed build's results do (_last_build_failed).
UNFINISHED_MARKER = "build_unfinished"

# The layers in the order a run builds them; the ML stage runs between marts and scored. A model dropped into a
# layer's folder is built, tested and published with it, without a DAG edit; seeds/marts holds reference data
# the marts read (the RFM segment grid, the CLV tiers). A model that reads the ML stage's outputs cannot be
# built before the ML stage, which reads the marts: by lineage, not by folder, the marts layer leaves out every
# such model and the scored layer, run after the ML stage and its gate, builds exactly those (models/ml's views
# of this run's ml partition, and customer_360).
LAYERS: dict[str, Layer] = {
    "staging": Layer(select=("path:models/staging",)),
    "identity": Layer(select=("path:models/intermediate", "path:models/identity")),
    "marts": Layer(select=("path:seeds/marts", "path:models/marts"), exclude=(READS_ML,)),
    "scored": Layer(select=(READS_ML,)),
}


class DbtLayerFailed(RuntimeError):
    """dbt reported errors or failing tests for a layer (deterministic: not retried)."""


class DbtDocsFailed(RuntimeError):
    """`dbt docs generate` failed (e.g. the project does not compile, or no working warehouse yet)."""


@dataclass(frozen=True)
class DbtNodeResult:
    unique_id: str
    status: str
    seconds: float
    message: str | None


@dataclass(frozen=True)
class DbtLayerResult:
    layer: str
    seconds: float
    nodes: list[DbtNodeResult]
    full_refresh: str | None = None  # why the layer's incremental models were rebuilt in full, if they were

    @property
    def models_built(self) -> int:
        return sum(n.unique_id.startswith("model.") and n.status == "success" for n in self.nodes)

    @property
    def tests_passed(self) -> int:
        return sum(n.unique_id.startswith("test.") and n.status == "pass" for n in self.nodes)


def build_target(paths: Paths) -> Path:
    """dbt's target path for the layers of a run: their run results and the manifest (`manifest.json`)."""
    return paths.work / "dbt_target" / "build"


def read_manifest(paths: Paths) -> dict[str, Any]:
    """The manifest of the last build (every model, seed and source with its yml), or {} before any: written by
    the last layer of a run (_writes_manifest), which publish follows."""
    path = build_target(paths) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_layer(ctx: RunContext, layer: str, extra_args: list[str] | None = None) -> DbtLayerResult:
    """`dbt build` the models of one layer with the run's as-of date; raise DbtLayerFailed on any failure."""
    if layer not in LAYERS:
        raise ValueError(f"unknown dbt layer {layer!r}; expected one of {sorted(LAYERS)}")
    # One target path for every layer: a run's layers share dbt's vars, so every layer after the first reuses the
    # first one's parse (partial parsing) instead of parsing the whole project again (about 4 s a layer).
    target_path = build_target(ctx.paths)
    selection = LAYERS[layer]
    select = [
        "--select",
        *selection.select,
        *(["--exclude", *selection.exclude] if selection.exclude else []),
        # A test runs with the layer that completes its inputs (a test on staging + identity runs with identity).
        "--indirect-selection",
        "buildable",
        # dbt's advice: unit tests in development and CI, not in production. Their inputs are rows fixed in the
        # yml, so they say the same every day. The test suite runs them (tests/test_marts.py builds with plain dbt).
        "--exclude-resource-type",
        "unit_test",
    ]
    full_refresh = _full_refresh_reason(ctx, layer)
    extra = [*(extra_args or []), *(["--full-refresh"] if full_refresh else [])]
    return _build_and_check(ctx, ["build", *select, *extra], target_path, layer, full_refresh)


def _build_and_check(
    ctx: RunContext, command: list[str], target_path: Path, layer: str, full_refresh: str | None
) -> DbtLayerResult:
    """Run one layer's dbt command, keep its run results as `dbt_target/<layer>/run_results.json` (readable after the
    next layer's) and raise DbtLayerFailed naming the failing nodes, else return them."""
    results = target_path / "run_results.json"
    results.unlink(missing_ok=True)  # a command that fails to compile writes none: never read the last layer's
    kept = ctx.paths.work / "dbt_target" / layer
    kept.mkdir(parents=True, exist_ok=True)
    # Until dbt returns, the layer's build is unfinished: an interrupt (Ctrl-C, Airflow's SIGTERM, a kill) can stop
    # it after an incremental model committed rows and before their tests ran, and leaves no results saying so.
    unfinished = kept / UNFINISHED_MARKER
    unfinished.write_text(f"{ctx.run_id}\n")
    started = time.monotonic()
    completed = _run_dbt(ctx, command, target_path, log_name=layer,
                         write_manifest=_writes_manifest(layer, target_path))
    seconds = time.monotonic() - started
    nodes = _read_run_results(results)
    # A command that wrote no results (it failed to parse or compile, or to open the warehouse) built nothing:
    # the kept results of the layer's last build stay, and with them a "last build failed" (_last_build_failed).
    if results.exists():
        shutil.copyfile(results, kept / "run_results.json")
    unfinished.unlink()
    if not completed.succeeded:
        failed = [n for n in nodes if n.status in ("error", "fail")]
        detail = "; ".join(f"{n.unique_id}: {n.status}: {(n.message or '').strip()[:300]}" for n in failed[:10])
        if not detail:  # compilation errors leave no node results: show dbt's own last lines
            detail = completed.last_lines()
        message = f"dbt layer {layer!r} failed ({len(failed)} failing nodes): {detail}"
        raise DbtLayerFailed(message) from completed.exception
    return DbtLayerResult(layer=layer, seconds=seconds, nodes=nodes, full_refresh=full_refresh)


def _writes_manifest(layer: str, target_path: Path) -> bool:
    """Whether this layer's build writes dbt's `manifest.json`: the last layer of a run (publish reads its `pii`
    tags after it), or any layer when there is none yet. dbt writes it twice per command, after parsing and at
    the end, 1.2 s a layer at any scale; the run results, which every layer needs, are written from dbt's result
    instead (_run_dbt). Every layer of a run shares one project, so the last layer's manifest is theirs too."""
    return layer == list(LAYERS)[-1] or not (target_path / "manifest.json").exists()


def _full_refresh_reason(ctx: RunContext, layer: str) -> str | None:
    """Staging (the event tables), identity (person_map) and the marts (web sessions, funnel steps, email
    engagement) hold the incremental models; the rest is rebuilt every run. The histories (person_id_history,
    customer_rfm_history) are `full_refresh: false`. A layer whose last build failed, or never finished, is rebuilt
    in full: an incremental model committed rows its tests then failed on, or never ran on, and a rerun would build
    on them (its tests read only the rows it writes: dbt_project/macros/test_scope.sql)."""
    from touchpoint.incremental import INCREMENTAL_LAYERS, full_refresh_reason

    if layer not in INCREMENTAL_LAYERS:
        return None
    if _last_build_failed(ctx.paths.work / "dbt_target" / layer / "run_results.json"):
        return "last build failed"
    return full_refresh_reason(str(ctx.paths.work_db), ctx.as_of_end)


def _last_build_failed(results: Path) -> bool:
    """Whether the layer's last build did not finish (UNFINISHED_MARKER beside its kept run_results), or the
    run_results kept from it hold an error or a failing test."""
    if results.with_name(UNFINISHED_MARKER).exists():
        return True
    return results.exists() and any(node.status in ("error", "fail") for node in _read_run_results(results))


def generate_docs(ctx: RunContext) -> Path:
    """Build dbt's docs as one self-contained page, `<run artifacts>/docs/index.html`, and return its path.

    `dbt docs generate --static` reads the catalog (tables, columns, types) from the working warehouse
    under the writer lock, and embeds manifest and catalog in `static_index.html`: the page opens from
    disk or any static host, with no `dbt docs serve`.
    """
    from touchpoint.warehouse import writer_lock

    target_path = ctx.paths.work / "dbt_target" / "docs"
    with writer_lock(ctx.paths):
        completed = _run_dbt(ctx, ["docs", "generate", "--static"], target_path, log_name="docs")
    built = target_path / "static_index.html"
    if not completed.succeeded or not built.exists():
        raise DbtDocsFailed(f"dbt docs generate failed: {completed.last_lines()}") from completed.exception
    site = ctx.run_artifacts / "docs" / "index.html"
    site.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, site)
    return site


@dataclass(frozen=True)
class DbtInvocation:
    """What one in-process dbt command gave: whether it succeeded, its console lines (kept in `<log>.out`) and the
    exception that stopped it, if one did (a parse error, a profile or plugin error; not a failing node)."""

    succeeded: bool
    output: str
    exception: BaseException | None = None

    def last_lines(self, lines: int = 15) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def _run_dbt(ctx: RunContext, command: list[str], target_path: Path, log_name: str,
             write_manifest: bool = True) -> DbtInvocation:
    """Run one dbt command in this process on the working warehouse with the run's vars; keep its console output
    in the run's artifacts (`<log_name>.out`) and its debug log beside it (`dbt.log`). Without `write_manifest`,
    dbt writes no JSON artifact and the run results are written here (`<target_path>/run_results.json`)."""
    from dbt.cli.main import dbtRunner

    project_dir = dbt_project_dir()
    log_path = ctx.run_artifacts / "dbt"
    log_path.mkdir(parents=True, exist_ok=True)
    args = [
        *command,
        "--project-dir", str(project_dir),
        "--profiles-dir", str(project_dir),
        "--target-path", str(target_path),
        "--log-path", str(log_path),
        "--vars", json.dumps(ctx.dbt_vars()),
        # The console lines go to `<log_name>.out` through the callback, not to the caller's stdout.
        "--log-level", "none",
        "--log-level-file", "debug",
        "--no-use-colors",
        "--no-send-anonymous-usage-stats",
        *([] if write_manifest else ["--no-write-json"]),
    ]
    console = _ConsoleLines()
    with _dbt_environment(ctx.env()):
        result = dbtRunner(callbacks=[console.keep]).invoke(args)
    if not write_manifest and hasattr(result.result, "write"):
        result.result.write(str(target_path / "run_results.json"))  # as dbt does at a command's end
    if result.exception is not None:
        console.lines.append(f"{type(result.exception).__name__}: {result.exception}")
    output = "\n".join(console.lines) + "\n"
    (log_path / f"{log_name}.out").write_text(output)
    # dbtRunner turns every exception into a failed result: an interrupt (Ctrl-C, a task's SIGTERM as Airflow
    # raises it) must stop the run, not read as a failing layer.
    if isinstance(result.exception, (KeyboardInterrupt, SystemExit)):
        raise result.exception
    return DbtInvocation(succeeded=result.success, output=output, exception=result.exception)


class _ConsoleLines:
    """Collects what dbt would print at its default console level (info and above), timestamped as it does."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def keep(self, event: Any) -> None:
        info = event.info
        if info.level in ("info", "warn", "error") and info.msg:
            self.lines.append(f"{info.ts.ToDatetime():%H:%M:%S}  {info.msg}")


@contextmanager
def _dbt_environment(env: dict[str, str]) -> Iterator[None]:
    """The run's variables in `os.environ` for one dbt command (dbt's `env_var()` and the profile read them),
    each put back as it was after it, and dbt's DuckDB database closed. Only these keys are touched: other
    threads of the process (Airflow's supervisor, `touchpoint run`'s watcher) read the environment meanwhile.
    Every path dbt needs is passed absolute, so the working directory stays as it is."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _close_dbt_duckdb()


def _close_dbt_duckdb() -> None:
    """dbt-duckdb keeps its DuckDB database open in the process after a command (a class-level environment,
    reused by the next command with the same profile). Closed here, so the next stage can open the warehouse
    with its own settings (DuckDB refuses a second configuration of an open file) and its memory is returned."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        environment, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
        if environment is None:
            return
        try:
            environment.close()  # usually closed already, with dbt's last connection; a checkpoint can fail
        except Exception as error:  # dbt's own result says what failed: this must not hide it
            logger.warning("closing dbt-duckdb's database failed: %s", error)


def _read_run_results(path: Path) -> list[DbtNodeResult]:
    if not path.exists():
        return []
    payload = json.loads(path.read_text())
    return [
        DbtNodeResult(
            unique_id=item["unique_id"],
            status=str(item["status"]),
            seconds=float(item.get("execution_time") or 0.0),
            message=item.get("message"),
        )
        for item in payload.get("results", [])
    ]
