"""The whole pipeline at one scale, full refresh and +1 day, stage by stage: `make bench SCALE=S|M|L`.

    .venv/bin/python bench/harness.py --scale S            # 10k customers, 730 days
    .venv/bin/python bench/harness.py --scale M --no-peers # 100k, without Splink and lifetimes
    .venv/bin/python bench/harness.py --scale L            # 1M

Generates a demo world of 729 days in a fresh home under --work (default: the system's temp folder), runs every
stage of the customer_360 DAG in its order (`pipeline.stages_in_order`), each in its own process as Airflow runs
its tasks, then lets the world advance one day and runs again: the daily run. Each stage's wall time and peak
RSS are recorded for both runs: the time includes the stage process's start-up and imports (as an Airflow task
pays them); the RSS is the sum over the process and its children (dbt included), sampled every 0.1 s, so pages
they share count twice and a child that exits between samples can be missed.

After the full refresh, on the same working warehouse:
- floors: per mart, one hand-written DuckDB query from raw computing the same grain (no identity stitching, no
  tests: a lower bound, not an equivalent), beside the seconds dbt reports for the model;
- peers: Splink 5 (bench/identity_splink.py's generic configuration) on the staged person records, against the
  identity stage; lifetimes' BG/NBD + Gamma-Gamma on the same purchases, against the ML stage's CLV step.

Writes `bench/results/<scale>-<date>.md` and replaces the table between the bench markers in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from floors import run_floors  # noqa: E402
from peers import lifetimes_peer, splink_peer  # noqa: E402

SCALES = {"S": 10_000, "M": 100_000, "L": 1_000_000}
DAYS = 730
TOUCHPOINT = [str(Path(sys.executable).parent / "touchpoint")]
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    summary: dict


def measure(command: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run `command`, sampling the RSS of it and its children; its stdout's last line may be a JSON summary.
    Output goes to files, not pipes: a pipe nobody reads while sampling would block a chatty child."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = psutil.Popen(command, stdout=out, stderr=err, text=True, env=env, cwd=ROOT)
        peak = 0
        while process.poll() is None:
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        printed, errors = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{printed[-3000:]}\n{errors[-3000:]}")
    lines = printed.strip().splitlines()
    try:
        summary = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        summary = {}
    return Measured(seconds, peak / 2**20, summary if isinstance(summary, dict) else {})


def run_stages(home: Path, as_of: date) -> dict[str, Measured]:
    """Every stage of the DAG in its order, each in its own process."""
    from touchpoint import pipeline
    from touchpoint.config import RunContext

    ctx = RunContext(as_of=as_of, home=home, run_id=f"bench-{as_of.isoformat()}")
    measured = {}
    for task_id, _ in pipeline.stages_in_order(ctx):
        command = [sys.executable, __file__, "stage", task_id, "--home", str(home), "--as-of", as_of.isoformat()]
        measured[task_id] = measure(command)
        print(f"  {task_id:<36} {measured[task_id].seconds:8.1f} s {measured[task_id].peak_rss_mb:8.0f} MB", flush=True)
    return measured


def run_one_stage(task_id: str, home: Path, as_of: date) -> None:
    """The `stage` subcommand: one task, its summary printed as JSON on the last line."""
    from touchpoint import pipeline
    from touchpoint.config import RunContext

    ctx = RunContext(as_of=as_of, home=home, run_id=f"bench-{as_of.isoformat()}")
    stages = dict(pipeline.stages_in_order(ctx))
    print(json.dumps(stages[task_id](), default=str))


def machine() -> str:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    memory = psutil.virtual_memory().total / 2**30
    python = platform.python_version()
    return f"{os.cpu_count()} cores, {memory:.0f} GiB, Python {python}, load average {load} at the end"


def stage_table(
    full: dict[str, Measured], daily: dict[str, Measured], generate: tuple[Measured, Measured]
) -> list[str]:
    rows = [
        "| stage | full refresh s | peak RSS MB | +1 day s | peak RSS MB | +1 day / full |",
        "|---|---|---|---|---|---|",
    ]
    pairs = [("generate (729 days / +1 day)", *generate), *((task, full[task], daily[task]) for task in full)]
    for name, first, second in pairs:
        ratio = second.seconds / first.seconds if first.seconds else float("nan")
        rows.append(
            f"| {name} | {first.seconds:.1f} | {first.peak_rss_mb:.0f} | {second.seconds:.1f} | "
            f"{second.peak_rss_mb:.0f} | {ratio:.2f} |"
        )
    total_full = sum(m.seconds for m in full.values())
    total_daily = sum(m.seconds for m in daily.values())
    peak_full = max(m.peak_rss_mb for m in full.values())
    peak_daily = max(m.peak_rss_mb for m in daily.values())
    rows.append(
        f"| **pipeline (sum of stages)** | **{total_full:.1f}** | **{peak_full:.0f}** | **{total_daily:.1f}** | "
        f"**{peak_daily:.0f}** | **{total_daily / total_full:.2f}** |"
    )
    return rows


def write_results(scale: str, customers: int, lines: list[str]) -> Path:
    out = ROOT / "bench" / "results" / f"{scale}-{date.today().isoformat()}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_START in text and README_END in text:
        head, rest = text.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        body = [f"Latest `make bench` ({scale}, {customers:,} customers; all tables: `{out.relative_to(ROOT)}`):", ""]
        body += _first_table(lines)
        readme.write_text(head + README_START + "\n" + "\n".join(body) + "\n" + README_END + tail)
    return out


def _first_table(lines: list[str]) -> list[str]:
    """The stage table: the first run of consecutive table lines."""
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def bench(scale: str, work: Path, peers: bool) -> Path:
    from touchpoint.sources import last_day

    customers = SCALES[scale]
    home = work / f"bench-{scale}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    print(f"scale {scale}: {customers:,} customers, home {home}", flush=True)
    generated = measure([*TOUCHPOINT, "generate", "--home", str(home), "--customers", str(customers),
                         "--days", str(DAYS - 1)])
    as_of = last_day(home / "sources")
    full = run_stages(home, as_of)
    floors = run_floors(home, as_of)
    peer_rows = (splink_peer(home, full) + lifetimes_peer(home, as_of, full)) if peers else []
    advanced = measure([*TOUCHPOINT, "generate", "--home", str(home), "--advance", "1"])
    daily = run_stages(home, last_day(home / "sources"))
    lines = [
        f"# Bench {scale}: {customers:,} customers, {DAYS} days ({date.today().isoformat()})",
        "",
        f"Machine: {machine()}. Each stage in its own process, as Airflow runs it; dbt runs in the stage's process.",
        "",
        *stage_table(full, daily, (generated, advanced)),
        "",
        "## Marts against their floors (one hand-written DuckDB query from raw; full refresh)",
        "",
        *floors,
        "",
        "## Peers (full refresh)",
        "",
        *(peer_rows or ["not run (--no-peers)"]),
    ]
    return write_results(scale, customers, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    stage = sub.add_parser("stage", help="run one stage (used by the harness itself)")
    stage.add_argument("task_id")
    stage.add_argument("--home", type=Path, required=True)
    stage.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--scale", choices=sorted(SCALES), default="S")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "touchpoint-bench")
    parser.add_argument("--no-peers", action="store_true", help="skip Splink and lifetimes")
    parser.add_argument("--customers", type=int, help="override the scale's customers (a quick look)")
    args = parser.parse_args(argv)
    if args.command == "stage":
        run_one_stage(args.task_id, args.home, args.as_of)
        return 0
    if args.customers:
        SCALES[args.scale] = args.customers
    print(f"results: {bench(args.scale, args.work, peers=not args.no_peers)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
