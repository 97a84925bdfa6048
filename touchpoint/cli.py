"""`touchpoint`: generate demo sources, run the pipeline through Airflow, query the warehouse.

Only this module and the DAG print for people; everything else returns data.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from touchpoint.config import Paths, home_from_env, keep_files_private
from touchpoint.disk import disk_full_error

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from touchpoint.activation import SyncRunResult
    from touchpoint.orchestration import DagRunOutcome


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from error


def build_parser() -> argparse.ArgumentParser:
    # --home is accepted before or after the command (`touchpoint run --home DIR ...`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home", default=argparse.SUPPRESS, help="Touchpoint home (default $TOUCHPOINT_HOME or ./data)"
    )
    parser = argparse.ArgumentParser(prog="touchpoint", description=__doc__.splitlines()[0], parents=[common])
    commands = parser.add_subparsers(dest="command", required=True)
    for add_command in (
        _add_generate,
        _add_run,
        _add_backfill,
        _add_airflow,
        _add_sync,
        _add_docs,
        _add_identity,
        _add_batches,
        _add_sql,
        _add_erase,
    ):
        add_command(commands, common)
    return parser


# what `commands.add_parser` is called on: argparse's subparsers action (a private class, named as a string)
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_generate(commands: Commands, common: argparse.ArgumentParser) -> None:
    generate = commands.add_parser(
        "generate", parents=[common], help="build (or advance) the demo source systems with ground truth"
    )
    generate.add_argument("--customers", type=int, default=10_000)
    generate.add_argument("--days", type=int, default=730)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--start", type=_parse_date, default=date(2024, 7, 1))
    generate.add_argument("--advance", type=int, metavar="DAYS", help="append DAYS more days to existing sources")
    generate.add_argument("--out", type=Path, help="output folder (default <home>/sources)")
    generate.add_argument("--if-absent", action="store_true", help="do nothing when sources already exist")


def _add_run(commands: Commands, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", parents=[common], help="run the customer_360 DAG once through Airflow")
    run.add_argument("--extracts", type=Path, help="folder of bring-your-own extracts (landing contract)")
    run.add_argument("--as-of", type=_parse_date, help="logical date (default: last generated demo day)")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the incremental models in full (as TOUCHPOINT_FULL_REFRESH=always)",
    )


def _add_backfill(commands: Commands, common: argparse.ArgumentParser) -> None:
    backfill = commands.add_parser(
        "backfill", parents=[common], help="run consecutive as-of dates, each strictly as of its date"
    )
    backfill.add_argument("--from", dest="start", type=_parse_date, required=True)
    backfill.add_argument("--to", dest="end", type=_parse_date, required=True)
    backfill.add_argument("--extracts", type=Path, help="folder of bring-your-own extracts (landing contract)")


def _add_airflow(commands: Commands, common: argparse.ArgumentParser) -> None:
    airflow = commands.add_parser(
        "airflow", parents=[common], help="serve a local Airflow (UI, scheduler) for this home until Ctrl-C"
    )
    airflow.add_argument("--port", type=int, default=8080, help="API server / UI port (default 8080)")
    airflow.add_argument(
        "--executor",
        default=os.environ.get("AIRFLOW__CORE__EXECUTOR", "LocalExecutor"),
        help="Airflow executor (default LocalExecutor, or $AIRFLOW__CORE__EXECUTOR)",
    )
    airflow.add_argument(
        "--metadata-db",
        default=os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
        help="SQLAlchemy URL of Airflow's metadata DB, e.g. postgresql+psycopg2://... "
        "(default SQLite under <home>/airflow, or $AIRFLOW__DATABASE__SQL_ALCHEMY_CONN)",
    )
    airflow.add_argument(
        "--celery-broker",
        default=os.environ.get("AIRFLOW__CELERY__BROKER_URL"),
        help="with --executor CeleryExecutor: the broker, e.g. redis://127.0.0.1:6379/0",
    )
    airflow.add_argument("--unpause", action="store_true", help="let the scheduler start daily runs right away")


def _add_sync(commands: Commands, common: argparse.ArgumentParser) -> None:
    sync = commands.add_parser("sync", parents=[common], help="run the reverse-ETL syncs from the published warehouse")
    sync.add_argument("--dry-run", action="store_true", help="print the planned diff per sync, send nothing")
    sync.add_argument("--only", action="append", metavar="NAME", help="run only this sync (repeatable)")


def _add_docs(commands: Commands, common: argparse.ArgumentParser) -> None:
    commands.add_parser(
        "docs", parents=[common], help="build dbt's docs as a static page for the latest run (dbt docs generate)"
    )


def _add_identity(commands: Commands, common: argparse.ArgumentParser) -> None:
    identity = commands.add_parser("identity", parents=[common], help="inspect identity resolution")
    identity_commands = identity.add_subparsers(dest="identity_command", required=True)
    explain = identity_commands.add_parser(
        "explain", parents=[common], help="why records were joined into a person or kept apart, field by field"
    )
    explain.add_argument("subject", help="a person_id, or a source record as <source_entity>:<source_record_id>")


def _add_batches(commands: Commands, common: argparse.ArgumentParser) -> None:
    batches = commands.add_parser(
        "batches", parents=[common], help="batches a gate held out of raw: list them, release or drop them"
    )
    batch_commands = batches.add_subparsers(dest="batches_command", required=True)
    listing = batch_commands.add_parser("list", parents=[common], help="loaded batches and their status")
    listing.add_argument("--status", choices=("loaded", "held", "released", "dropped"), help="only this status")
    listing.add_argument("--all", action="store_true", help="every batch (default: held ones)")
    release = batch_commands.add_parser(
        "release", parents=[common], help="move held batches back into raw (the next run uses and gates them)"
    )
    release.add_argument("batch_ids", nargs="+", metavar="BATCH_ID")
    drop = batch_commands.add_parser(
        "drop", parents=[common], help="quarantine every row of held batches (audit.quarantine), with the reason"
    )
    drop.add_argument("batch_ids", nargs="+", metavar="BATCH_ID")


def _add_sql(commands: Commands, common: argparse.ArgumentParser) -> None:
    sql = commands.add_parser(
        "sql", parents=[common], help="read-only SQL shell on the published (pseudonymised) warehouse"
    )
    sql.add_argument("query", nargs="?", help="run one query and exit")
    sql.add_argument(
        "--pii", action="store_true",
        help="also attach the pii file (clear identifiers) read-only as pii.* (pii.persons, pii.source_records, ...)",
    )


def main(argv: list[str] | None = None) -> int:
    keep_files_private()  # before anything writes under the home; inherited by Airflow, dbt and their children
    args = build_parser().parse_args(argv)
    paths = Paths(home_from_env(getattr(args, "home", None)))
    handlers = {
        "generate": _generate,
        "run": _run,
        "backfill": _backfill,
        "airflow": _airflow,
        "sync": _sync,
        "docs": _docs,
        "sql": _sql,
        "identity": _identity,
        "batches": _batches,
        "erase": _erase,
    }
    try:
        return handlers[args.command](args, paths)
    except KeyboardInterrupt:
        return 130
    except FileNotFoundError as missing:  # e.g. no published warehouse yet: say so, no traceback
        print(f"touchpoint: {missing}", file=sys.stderr)
        return 2
    except Exception as error:
        # A full disk surfaces from DuckDB, SQLAlchemy, pyarrow or the OS, each with its own traceback;
        # the person at the terminal needs one line and what to do. Anything else keeps its traceback.
        full = disk_full_error(error, paths.home)
        if full is None:
            raise
        print(f"touchpoint: {full}", file=sys.stderr)
        return 1


def _generate(args: argparse.Namespace, paths: Paths) -> int:
    from touchpoint.sources import advance, generate

    out = (args.out or paths.demo_sources).resolve()
    if args.advance:
        summary = advance(out, days=args.advance, sends=_demo_sends(paths, out))
    else:
        if args.if_absent and (out / "generator.json").exists():
            print(f"demo sources already at {out}")
            return 0
        summary = generate(out, customers=args.customers, days=args.days, seed=args.seed, start=args.start)
    rows = sum(summary.rows.values())
    print(
        f"generated {rows:,} rows in {summary.seconds:.1f}s ({rows / max(summary.seconds, 1e-9):,.0f} rows/s) -> {out}"
    )
    for entity, count in sorted(summary.rows.items()):
        print(f"  {entity:<20} {count:>12,}")
    print(f"  days {summary.first_day} .. {summary.last_day}")
    return 0


def _demo_sends(paths: Paths, out: Path) -> pd.DataFrame | None:
    """What this home's syncs sent, for the demo world under it to answer (sources/treatment.py); None for
    sources elsewhere (`--out`), which this home's syncs never saw."""
    from touchpoint.activation.audit import assignment_files
    from touchpoint.sources import treatment
    from touchpoint.sources.generator import read_meta

    if out != paths.demo_sources.resolve():
        return None
    return treatment.sends_from_home(
        assignment_files(paths.home), paths.pii_db, out / "truth" / "record_persons.parquet", read_meta(out)["start"]
    )


def _run(args: argparse.Namespace, paths: Paths) -> int:
    from touchpoint.orchestration import HomeServedError, print_progress, run_dag

    as_of = args.as_of
    if as_of is None:
        if args.extracts:
            print("--as-of is required with --extracts", file=sys.stderr)
            return 2
        from touchpoint.sources import last_day

        if not (paths.demo_sources / "generator.json").exists():
            print(f"no demo sources under {paths.demo_sources}: run `touchpoint generate` first", file=sys.stderr)
            return 2
        as_of = last_day(paths.demo_sources)
    if args.extracts and not args.extracts.is_dir():
        print(f"extracts folder not found: {args.extracts}", file=sys.stderr)
        return 2
    paths.ensure()
    if args.full_refresh:  # read by the staging layer's task (touchpoint/incremental.py), a child process
        os.environ["TOUCHPOINT_FULL_REFRESH"] = "always"
    log_file = paths.artifacts / as_of.isoformat() / "airflow.log"
    conf = {
        "home": str(paths.home),
        "extracts": str(args.extracts.resolve()) if args.extracts else None,
        "as_of": as_of.isoformat(),
    }
    print(f"touchpoint run: customer_360 as of {as_of} (home {paths.home})")
    started = time.monotonic()
    run_started_at = time.time()
    try:
        outcome = run_dag(paths, as_of, conf, log_file, on_task_done=print_progress)
    except HomeServedError as served:
        print(f"touchpoint run: {served}", file=sys.stderr)
        return 2
    status = _print_run_summary(paths, as_of, outcome, log_file, run_started_at)
    # last, whatever the outcome: how long the whole run took, set-up and Airflow's own start included
    print(f"{'done' if status == 0 else 'failed'} in {_wall_time(time.monotonic() - started)} (wall time)")
    return status


def _wall_time(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


def _print_run_summary(
    paths: Paths, as_of: date, outcome: DagRunOutcome, log_file: Path, run_started_at: float
) -> int:
    """What the run did, or why it failed; the exit status."""
    print(f"dag run {outcome.state}; Airflow log: {log_file}")
    if outcome.state == "success" and not outcome.did_work:
        print(f"touchpoint run: the DAG run for {as_of} ran no task, so nothing was built or published; "
              f"see {log_file}", file=sys.stderr)
        return 1
    if not outcome.succeeded:
        failed = [t.task_id for t in outcome.tasks if t.state == "failed"]
        print(f"failed tasks: {', '.join(failed) or 'unknown'}", file=sys.stderr)
        if not _print_failed_gates(paths.artifacts / as_of.isoformat() / "gates", since=run_started_at):
            _print_failure_excerpt(log_file)
        _print_held_batches(paths, since=run_started_at)
        return 1
    _print_warehouse_summary(paths)
    return 0


def _backfill(args: argparse.Namespace, paths: Paths) -> int:
    from datetime import timedelta

    from touchpoint.orchestration import live_services

    if args.end < args.start:
        print("--to must not be before --from", file=sys.stderr)
        return 2
    serving = live_services(paths)
    if serving:
        return _backfill_on_scheduler(args, paths, serving["url"])
    day = args.start
    while day <= args.end:
        status = _run(argparse.Namespace(extracts=args.extracts, as_of=day, full_refresh=False), paths)
        if status != 0:
            print(f"backfill stopped at {day}: later dates were not run", file=sys.stderr)
            return status
        day += timedelta(days=1)
    return 0


def _backfill_on_scheduler(args: argparse.Namespace, paths: Paths, url: str) -> int:
    """Hand the dates to the Airflow serving the home as one Airflow backfill, one run at a time, in order."""
    import httpx

    from touchpoint.airflow_client import AirflowClient, run_as_of
    from touchpoint.orchestration import DAG_ID

    client = AirflowClient.login(url, paths)
    conf = {"extracts": str(args.extracts.resolve())} if args.extracts else {}
    try:
        backfill = client.create_backfill(DAG_ID, args.start, args.end, conf=conf, max_active_runs=1)
    except httpx.HTTPStatusError as refused:  # e.g. 409: Airflow runs one backfill of a DAG at a time
        print(f"touchpoint backfill: Airflow at {url} refused it: {refused}", file=sys.stderr)
        return 1
    print(f"Airflow backfill {backfill['id']} of {DAG_ID}, as of {args.start} .. {args.end}: {url}", flush=True)

    def report(run: dict) -> None:
        print(f"  {run['state']:<8} as of {run_as_of(run)}  ({run['dag_run_id']})", flush=True)

    runs = client.wait_for_backfill(backfill, timeout_s=24 * 3600, on_run_done=report)
    failed = [run for run in runs if run["state"] != "success"]
    print(f"backfill {backfill['id']}: {len(runs) - len(failed)} runs succeeded, {len(failed)} failed")
    return int(bool(failed) or not runs)


def _stop_requested(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _airflow(args: argparse.Namespace, paths: Paths) -> int:
    from touchpoint.airflow_client import admin_password
    from touchpoint.airflow_server import AirflowDeployment, AirflowServices, AirflowUnavailableError
    from touchpoint.orchestration import DAG_ID

    # Ctrl-C and a process manager's SIGTERM both stop every component. SIGINT is set explicitly: a shell
    # that starts a command in the background hands it SIGINT ignored.
    signal.signal(signal.SIGINT, _stop_requested)
    signal.signal(signal.SIGTERM, _stop_requested)
    paths.ensure()
    deployment = AirflowDeployment(
        paths,
        port=args.port,
        executor=args.executor,
        sql_alchemy_conn=args.metadata_db,
        celery_broker_url=args.celery_broker,
    )
    services = AirflowServices(deployment)
    print(f"starting Airflow for {paths.home} (executor {args.executor}, logs in {deployment.logs}) ...")
    try:
        services.start()
        client = services.wait_ready()
        if args.unpause:
            client.set_paused(DAG_ID, False)
        print(f"\nAirflow UI: {deployment.url}   login: admin / {admin_password(paths)}")
        print(f"DAG {DAG_ID}: {'scheduled daily' if args.unpause else 'paused (trigger it, or unpause it in the UI)'}")
        print("Ctrl-C stops every component.")
        while True:
            time.sleep(2)
            services.check_alive()
    except (AirflowUnavailableError, ValueError) as down:  # ValueError: settings that cannot work together
        print(f"touchpoint airflow: {down}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping Airflow ...")
        return 0
    finally:
        services.stop()


def _print_failed_gates(folder: Path, since: float) -> bool:
    """Every failing expectation of the gates this run judged (table, column, count, sample); False if none."""
    import json

    printed = False
    for report in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if report.stat().st_mtime < since - 1:
            continue  # a report of an earlier run of the same date
        body = json.loads(report.read_text())
        failures = [r for r in body.get("results", []) if not r["success"] and r["severity"] == "critical"]
        if body.get("success", True) or not failures:
            continue
        print(f"gate {body['layer']} FAILED ({len(failures)} of {len(body['results'])} expectations); "
              f"report: {report.with_suffix('.html')}", file=sys.stderr)
        for item in failures:
            check = ".".join(str(part) for part in (item["table"], item["column"], item["expectation"]) if part)
            sample = ", ".join(json.dumps(v, default=str) for v in item.get("sample") or [])[:300]
            detail = item.get("error") or f"{item['unexpected_count']:,} of {item['element_count']:,} unexpected"
            print(f"  FAILED {check}: {detail}" + (f"; e.g. {sample}" if sample else ""), file=sys.stderr)
        printed = True
    return printed


def _print_held_batches(paths: Paths, since: float) -> None:
    """Batches this run's gate held out of raw, and how to decide on them."""
    from datetime import UTC, datetime

    import duckdb

    from touchpoint.ingest.batches import COMMANDS

    if not paths.work_db.exists():
        return
    cutoff = datetime.fromtimestamp(since - 1, UTC).replace(tzinfo=None)
    try:
        con = duckdb.connect(str(paths.work_db), read_only=True)
    except duckdb.Error:
        return  # busy or unreadable: the Airflow log has the gate's message
    try:
        rows = con.execute(
            "select batch_id, entity, source_file, rows_loaded from audit.load_batches "
            "where status = 'held' and held_at >= ? order by batch_id", [cutoff]
        ).fetchall()
    except duckdb.Error:
        rows = []
    finally:
        con.close()
    if rows:
        print(f"held out of raw ({len(rows)} batch(es)); later runs go on without them:", file=sys.stderr)
        for batch_id, entity, source_file, count in rows:
            print(f"  {batch_id}  {entity}  {source_file}  {count:,} rows", file=sys.stderr)
        print(f"decide: {COMMANDS}", file=sys.stderr)


def _batches(args: argparse.Namespace, paths: Paths) -> int:
    from touchpoint.ingest.batches import BatchStateError, drop_batches, list_batches, release_batches
    from touchpoint.warehouse import connect_work

    if not paths.work_db.exists():
        print(f"touchpoint batches: no working warehouse under {paths.home}: run `touchpoint run` first",
              file=sys.stderr)
        return 2
    with connect_work(paths) as con:
        try:
            if args.batches_command == "list":
                status = None if args.all else (args.status or "held")
                shown = list_batches(con, status)
                if not shown:
                    print(f"no {status or ''} batches".replace("  ", " "))
            elif args.batches_command == "release":
                shown = release_batches(con, args.batch_ids)
            else:
                shown = drop_batches(con, args.batch_ids)
        except BatchStateError as refused:
            print(f"touchpoint batches: {refused}", file=sys.stderr)
            return 2
    for batch in shown:
        print(f"{batch.status:<9} {batch.batch_id}  {batch.entity}  {batch.source_file}  read {batch.rows_read:,} "
              f"loaded {batch.rows_loaded:,} quarantined {batch.rows_quarantined:,}")
        if batch.held_reason and batch.status == "held":
            print(f"          held: {batch.held_reason[:300]}")
            if batch.held_report:
                print(f"          report: {batch.held_report}")
    return 0


def _print_failure_excerpt(log_file: Path, lines: int = 25) -> None:
    """The first error lines from Airflow's log, so the reason is visible without opening it."""
    text = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
    errors = [line for line in text if "Error" in line or "error" in line or "Traceback" in line]
    for line in errors[:lines]:
        print(f"  {line[:400]}", file=sys.stderr)


SUMMARY_QUERIES = {
    "loaded": "select format('{:,} rows in {:,} batches, {:,} quarantined (audit.quarantine)', "
    "sum(rows_loaded), count(*), sum(rows_quarantined)) from audit.load_batches",
    "identity": "select format('{:,} source records -> {:,} persons', "
    "(select count(*) from identity.person_map), (select count(*) from identity.persons))",
    "marts": "select format('{:,} buyers in marts.customer_rfm, {:,} orders in marts.fct_orders', "
    "(select count(*) from marts.customer_rfm), (select count(*) from marts.fct_orders))",
    "journeys": "select format('{:,} web sessions ({:,} converted), {:,} touchpoints, {:,} abandoned carts, "
    "{:,} orders attributed', (select count(*) from marts.fct_web_sessions), "
    "(select count(*) from marts.fct_web_sessions where is_converted), "
    "(select count(*) from marts.fct_touchpoints), (select count(*) from marts.fct_abandoned_carts), "
    "(select count(distinct order_id) from marts.attribution_conversions))",
    "experiments": "select format('{:,} experiments, {:,} people assigned, {:,} readouts (marts.experiment_readouts)', "
    "(select count(distinct experiment) from marts.experiment_assignments), "
    "(select count(*) from marts.experiment_assignments), (select count(*) from marts.experiment_readouts))",
    "ml": "select format('{:,} models: {}', count(*), string_agg(model_name || ' ' || coalesce(action, status), "
    "', ' order by model_name)) from ml.model_runs where as_of = (select max(as_of) from ml.model_runs)",
    "gates": "select format('{} expectations, {} failed, layers {}', count(*), count(*) filter (where not success "
    "and severity = 'critical'), string_agg(distinct layer, ', ' order by layer)) from audit.gate_results "
    "where run_id = (select max(run_id) from audit.gate_results)",
}


def _print_warehouse_summary(paths: Paths) -> None:
    import duckdb

    target = paths.published_db if paths.published_db.exists() else paths.work_db
    con = duckdb.connect(str(target), read_only=True)
    print()
    try:
        for label, query in SUMMARY_QUERIES.items():
            try:
                line = con.execute(query).fetchone()[0]
            except duckdb.Error:  # a stage that wrote nothing yet (e.g. no ML on an empty extract)
                line = "n/a"
            print(f"  {label:<11} {line}")
    finally:
        con.close()
    audiences = sorted((paths.home / "activation").glob("*/audience.csv"))
    if audiences:
        print(f"  {'syncs':<11} {', '.join(str(path) for path in audiences)}")
    print(f"\nwarehouse: {target}")
    if paths.pii_db.exists():
        print(f"pii file:  {paths.pii_db} (clear identifiers: touchpoint sql --pii)")
    print('query it:  touchpoint sql "select rfm_segment, count(*) from marts.customer_rfm group by 1"')


def _sync(args: argparse.Namespace, paths: Paths) -> int:
    import uuid

    from touchpoint.activation import SyncsFailedError, load_sync_definitions, run_syncs
    from touchpoint.config import RunContext

    definitions = [d for d in load_sync_definitions() if not args.only or d.name in args.only]
    if args.only and len(definitions) != len(set(args.only)):
        print(f"unknown sync in {args.only}", file=sys.stderr)
        return 2
    ctx = RunContext(as_of=date.today(), home=paths.home, run_id=f"manual-{uuid.uuid4().hex[:8]}")
    # every sync is planned or run, whatever the others did; each prints its line (a failure's message, as
    # audited) when it ends, and the exit status says whether any failed
    try:
        run_syncs(
            ctx, definitions, dry_run=args.dry_run, on_result=_print_sync_plan if args.dry_run else _print_sync_result
        )
    except SyncsFailedError as failed:
        names = [r.sync_name for r in failed.results if r.status == "failed"]
        what = "sync plans" if args.dry_run else "syncs"
        print(f"{len(names)} of {len(failed.results)} {what} failed: {', '.join(names)}", file=sys.stderr)
        return 1
    return 0


def _print_sync_result(result: SyncRunResult) -> None:
    print(
        f"{result.sync_name:<28} {result.status:<8} sent {result.sent:>8,}  failed {result.failed:>6,}  "
        f"held back {result.skipped:>6,}  {result.duration_s:6.1f}s  {result.message}"
    )


def _print_sync_plan(result: SyncRunResult) -> None:
    """A dry run's line: the planned diff and sample keys, or why the sync would be skipped or fails."""
    plan = result.plan
    if result.status != "dry_run" or plan is None:
        print(f"{result.sync_name:<28} {result.status:<8} {result.message}")
        return
    held = ", ".join(f"{reason} {count}" for reason, count in sorted(plan.ineligible.items())) or "none"
    print(
        f"{plan.sync_name:<28} planned  {plan.destination_type:<9} eligible {plan.eligible:>8,}  "
        f"insert {plan.inserts:>7,}  update {plan.updates:>7,}  delete {plan.deletes:>7,}  held back: {held}"
    )
    for kind, keys in sorted(plan.sample_keys.items()):
        if keys:
            print(f"    {kind:<7} e.g. {', '.join(keys)}")


def _docs(args: argparse.Namespace, paths: Paths) -> int:
    from touchpoint.config import RunContext
    from touchpoint.dbt import DbtDocsFailed, generate_docs

    as_of = latest_run_date(paths)
    if as_of is None or not paths.work_db.exists():
        print(f"no run under {paths.home}: run `touchpoint run` first", file=sys.stderr)
        return 2
    ctx = RunContext(as_of=as_of, home=paths.home, run_id=as_of.isoformat())
    try:
        site = generate_docs(ctx)
    except DbtDocsFailed as failed:
        print(f"touchpoint docs: {failed}", file=sys.stderr)
        return 1
    print(f"dbt docs as of {as_of}: {site}")
    return 0


def latest_run_date(paths: Paths) -> date | None:
    """The latest as-of date with a run folder under `<home>/artifacts/` (run folders are named by date)."""
    dates = []
    for folder in paths.artifacts.glob("*/"):
        try:
            dates.append(date.fromisoformat(folder.name))
        except ValueError:  # manual runs (`manual-...`) and anything else that is not a run date
            continue
    return max(dates, default=None)


def _identity(args: argparse.Namespace, paths: Paths) -> int:
    """`touchpoint identity explain`: the person's records, the links that joined them, those not used."""
    from touchpoint.identity_explain import NotFound, explain
    from touchpoint.shell import open_analyst_connection

    con = open_analyst_connection(paths.published_db)
    try:
        explanation = explain(con, args.subject)
    except NotFound as missing:
        print(f"touchpoint identity explain: {missing}", file=sys.stderr)
        return 2
    finally:
        con.close()
    print(f"person {explanation.person_id}: {len(explanation.records)} person record(s)")
    for record in explanation.records:
        print(f"  {record['source_entity']}:{record['source_record_id']}  joined by {record['match_rule']}")
    print(f"linked ({len(explanation.links)}):")
    for link in explanation.links:
        _print_link(link)
    print(f"considered and not used ({len(explanation.kept_apart)}):")
    for link in explanation.kept_apart:
        _print_link(link)
    return 0


def _print_link(link) -> None:
    probability = "" if link.probability is None else f" p={link.probability:.4f}"
    status = "linked" if link.is_linked else f"not linked: {link.blocked_rule}"
    print(f"  {link.left_record} -- {link.right_record}  [{link.rule}{probability}] {status}")
    if link.fields:
        print(f"      prior {link.prior_weight:+.2f}")
        for contribution in link.fields:
            print(f"      {contribution.comparison:<11} {contribution.weight:+6.2f}  {contribution.level}")


def _sql(args: argparse.Namespace, paths: Paths) -> int:
    """`touchpoint sql`: one query, or a prompt reading statements that end with `;` (`.tables`, `.quit`)."""
    import duckdb

    from touchpoint.shell import open_analyst_connection

    try:
        con = open_analyst_connection(paths.published_db, pii=paths.pii_db if args.pii else None)
    except duckdb.Error as unreadable:
        print(f"touchpoint sql: cannot open {paths.published_db}: {unreadable}", file=sys.stderr)
        return 1
    try:
        if args.query is not None:
            return _sql_statement(con, args.query)
        return _sql_prompt(con)
    finally:
        con.close()


def _sql_prompt(con: duckdb.DuckDBPyConnection) -> int:
    """Read statements from stdin until `.quit` or end of input; 1 when any of them failed or was refused."""
    from touchpoint.shell import TABLES_QUERY

    interactive = sys.stdin.isatty()
    buffer: list[str] = []
    status = 0
    while True:
        if interactive:
            print("touchpoint> " if not buffer else "       ...> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        stripped = line.strip()
        if not buffer and stripped in (".quit", ".exit"):
            break
        if not buffer and stripped == ".tables":
            status |= _sql_statement(con, TABLES_QUERY, max_rows=10_000)
            continue
        buffer.append(line)
        if stripped.endswith(";"):
            status |= _sql_statement(con, "".join(buffer))
            buffer = []
    if "".join(buffer).strip():
        status |= _sql_statement(con, "".join(buffer))
    return status


def _sql_statement(con: duckdb.DuckDBPyConnection, sql: str, max_rows: int = 100) -> int:
    """Run `sql` in the analyst shell and print its rows; a refusal or an error is printed on stderr."""
    import duckdb

    from touchpoint.shell import ShellRefused, format_table, run_query

    try:
        result = run_query(con, sql, max_rows=max_rows)
    except ShellRefused as refused:
        print(f"touchpoint sql: refused: {refused}", file=sys.stderr)
        return 1
    except duckdb.Error as error:
        print(f"touchpoint sql: {error}", file=sys.stderr)
        return 1
    print(format_table(result) if result.columns else "ok", flush=True)
    return 0


def _add_erase(commands: Commands, common: argparse.ArgumentParser) -> None:
    erase = commands.add_parser(
        "erase", parents=[common],
        help="record a right-to-erasure request; the next run removes the person everywhere (docs/privacy.md)")
    erase.add_argument("--email", action="append", default=[], help="an email of the person (repeatable)")
    erase.add_argument("--phone", action="append", default=[], help="a phone of the person (repeatable)")
    erase.add_argument("--person-id", action="append", default=[], help="a person_id of identity.persons")
    erase.add_argument("--file", type=Path, help="CSV with columns email, phone and/or person_id: one request a row")
    erase.add_argument("--yes", action="store_true", help="do not ask when a request touches more than one person")
    erase.add_argument("--list", action="store_true", help="list recorded requests and what was removed")


def _erase(args: argparse.Namespace, paths: Paths) -> int:
    from touchpoint.privacy.erasure_requests import ErasureRequestError, load_requests, new_request, save_request

    if args.list:
        for request in load_requests(paths):
            removed = ", ".join(f"{where} {count:,}" for where, count in sorted(request.removed.items()))
            print(f"{request.request_id}  {request.status:<9} requested {request.requested_at}"
                  f"{'  honoured ' + request.honoured_at if request.honoured_at else ''}  {removed}")
        return 0
    try:
        asks = _erasure_asks(args)
        recorded = 0
        for emails, phones, person_ids in asks:
            resolution = _resolve_or_refuse(paths, emails, phones, person_ids, args.yes)
            if resolution is None:
                continue
            request = new_request(resolution.identifiers, len(resolution.persons) if paths.pii_db.exists() else None)
            save_request(paths, request)
            recorded += 1
            print(f"recorded {request.request_id}: {len(request.identifiers)} identifier hash(es), "
                  f"{len(resolution.persons)} person(s) in the published warehouse; the next run erases them")
    except ErasureRequestError as error:
        print(f"touchpoint erase: {error}", file=sys.stderr)
        return 2
    return 0 if recorded == len(asks) else 3


def _erasure_asks(args: argparse.Namespace) -> list[tuple[list[str], list[str], list[str]]]:
    """The requests the arguments make: one from --email/--phone/--person-id, one per row of --file."""
    import csv

    from touchpoint.privacy.erasure_requests import ErasureRequestError

    asks = []
    if args.email or args.phone or args.person_id:
        asks.append((args.email, args.phone, args.person_id))
    if args.file:
        with open(args.file, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            known = {"email", "phone", "person_id"}
            if not reader.fieldnames or not known & set(reader.fieldnames):
                raise ErasureRequestError(f"{args.file}: needs a header with email, phone and/or person_id")
            for row in reader:
                ask = tuple(
                    [value] if (value := (row.get(name) or "").strip()) else []
                    for name in ("email", "phone", "person_id")
                )
                if any(ask):
                    asks.append(ask)
    if not asks:
        raise ErasureRequestError("name the person: --email, --phone, --person-id or --file")
    return asks


def _resolve_or_refuse(paths: Paths, emails: list[str], phones: list[str], person_ids: list[str], yes: bool):
    from touchpoint.privacy.erasure_requests import ErasureRequestError, resolve_request

    resolution = resolve_request(paths, emails, phones, person_ids)
    if resolution.unknown:
        raise ErasureRequestError("not a usable identifier: " + ", ".join(resolution.unknown))
    if len(resolution.persons) > 1 and not yes:
        question = (f"{', '.join(emails + phones + person_ids)} resolves to {len(resolution.persons)} persons "
                    "in the published warehouse; erase all of them? [y/N] ")
        if not sys.stdin.isatty():
            print(f"touchpoint erase: {question[:-8]}: not recorded (confirm with --yes)", file=sys.stderr)
            return None
        if input(question).strip().lower() not in ("y", "yes"):
            print("not recorded")
            return None
    return resolution


if __name__ == "__main__":
    sys.exit(main())
