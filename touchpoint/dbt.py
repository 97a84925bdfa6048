"""Run one dbt layer (staging, identity, marts, scored) against the working warehouse, and build dbt's docs site.

dbt runs as a subprocess: it keeps its own logging and global state out of the Airflow task, and its
DuckDB connection is closed for certain when it exits. It is started through `touchpoint.processes`, so it
dies with the process that started it (a killed `touchpoint run` or task) instead of writing on as an orphan.
A failure names the model or test that failed, read from dbt's `run_results.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from touchpoint import processes
from touchpoint.config import Paths, RunContext, dbt_project_dir


@dataclass(frozen=True)
class Layer:
    """What one `dbt build` selects (dbt node selectors) and leaves out."""

    select: tuple[str, ...]
    exclude: tuple[str, ...] = ()


# Everything that reads an output of the ML stage (the `ml` source), directly or through another model.
READS_ML = "source:ml+"

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
        return sum(n.unique_id.startswith(("test.", "unit_test.")) and n.status == "pass" for n in self.nodes)


def dbt_executable() -> str:
    """The dbt next to this interpreter (the project's venv), else the one on PATH."""
    candidate = Path(sys.executable).with_name("dbt")
    return str(candidate) if candidate.exists() else (shutil.which("dbt") or "dbt")


def build_target(paths: Paths) -> Path:
    """dbt's target path for the layers of a run: their run results and the manifest (`manifest.json`)."""
    return paths.work / "dbt_target" / "build"


def read_manifest(paths: Paths) -> dict[str, Any]:
    """The manifest the last layer built wrote (every model, seed and source with its yml), or {} before any."""
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
    ]
    full_refresh = _full_refresh_reason(ctx, layer)
    extra = [*(extra_args or []), *(["--full-refresh"] if full_refresh else [])]
    started = time.monotonic()
    completed = _run_dbt(ctx, ["build", *select, *extra], target_path, log_name=layer)
    seconds = time.monotonic() - started
    nodes = _read_run_results(target_path / "run_results.json")
    kept = ctx.paths.work / "dbt_target" / layer  # each layer's own results stay readable after the next layer
    kept.mkdir(parents=True, exist_ok=True)
    if (target_path / "run_results.json").exists():
        shutil.copyfile(target_path / "run_results.json", kept / "run_results.json")
    if completed.returncode != 0:
        failed = [n for n in nodes if n.status in ("error", "fail")]
        detail = "; ".join(f"{n.unique_id}: {n.status}: {(n.message or '').strip()[:300]}" for n in failed[:10])
        if not detail:  # compilation errors leave no node results: show dbt's own last lines
            detail = _last_lines(completed)
        raise DbtLayerFailed(f"dbt layer {layer!r} failed ({len(failed)} failing nodes): {detail}")
    return DbtLayerResult(layer=layer, seconds=seconds, nodes=nodes, full_refresh=full_refresh)


def _full_refresh_reason(ctx: RunContext, layer: str) -> str | None:
    """Staging (the event tables), identity (person_map) and the marts (web sessions, funnel steps) hold the
    incremental models; the rest is rebuilt every run. The histories (person_id_history, customer_rfm_history)
    are `full_refresh: false`. A layer whose last build failed is rebuilt in full: an incremental model
    committed rows its tests then failed on, and a rerun would build on them."""
    from touchpoint.incremental import INCREMENTAL_LAYERS, full_refresh_reason

    if layer not in INCREMENTAL_LAYERS:
        return None
    if _last_build_failed(ctx.paths.work / "dbt_target" / layer / "run_results.json"):
        return "last build failed"
    return full_refresh_reason(str(ctx.paths.work_db), ctx.as_of_end)


def _last_build_failed(results: Path) -> bool:
    """Whether the run_results kept from a layer's last build hold an error or a failing test."""
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
    if completed.returncode != 0 or not built.exists():
        raise DbtDocsFailed(f"dbt docs generate failed: {_last_lines(completed)}")
    site = ctx.run_artifacts / "docs" / "index.html"
    site.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, site)
    return site


def _run_dbt(ctx: RunContext, command: list[str], target_path: Path, log_name: str) -> subprocess.CompletedProcess[str]:
    """Run one dbt command on the working warehouse with the run's vars; keep its output in the run's artifacts."""
    project_dir = dbt_project_dir()
    log_path = ctx.run_artifacts / "dbt"
    log_path.mkdir(parents=True, exist_ok=True)
    args = [
        dbt_executable(),
        *command,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(project_dir),
        "--target-path",
        str(target_path),
        "--log-path",
        str(log_path),
        "--vars",
        json.dumps(ctx.dbt_vars()),
        "--no-use-colors",
    ]
    env = {**os.environ, **ctx.env(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    # SIGKILL when the parent dies: nothing is left to read dbt's output, and an interrupted build is redone
    # whole by the next run (the working warehouse is never published half-built).
    completed = processes.run(args, env=env, capture_output=True, text=True, cwd=project_dir)
    (log_path / f"{log_name}.out").write_text(completed.stdout + completed.stderr)
    return completed


def _last_lines(completed: subprocess.CompletedProcess[str], lines: int = 15) -> str:
    return "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-lines:])


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
