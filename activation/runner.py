"""Run a sync: read the published warehouse, diff against the last-synced state, send only the changes.

A run, under the sync's lock:
1. stream the source rows (with consent) from the published analytics warehouse, opened read-only and
   sandboxed, and join in the declared personal fields from the pii file by person_id (clear or SHA-256), with
   email validity, key and row hash computed on what is sent (`diff.py`);
2. hold out the control arm of the sync's experiment when it declares a `holdout` (`experiments.py`: a stable
   hash of person and experiment; never sent, counted as `held_out`, not as rejections);
3. diff eligible rows against the state: inserts, updates, deletes (a person whose consent was withdrawn,
   or who left the audience, or who is in the control arm of a holdout added after they were sent, is deleted
   at the destination);
4. send: batch destinations get deletes then upserts in batches, and the state advances in one transaction
   per acknowledged batch (a crash resends at most one batch, and upserts by key make that harmless);
   file destinations get the full audience and the diff at once, then the state is replaced;
5. write the audit record of the run and the rejected records, and after a successful send the experiment
   assignments it made (see `audit.py`).
A sync whose connection is not configured is skipped with that reason (and audited), never a crash. Any
other failure (a malformed connection, a destination that cannot be built or refuses, a busy lock, a source
query refused) is returned as a failed result with one audit row, and the other syncs of the run go on; a
malformed connection's message names the sync and the connection. Failure messages never carry the
connection's password or token. A failed result says whether it is `retryable` (see `failures.py`), so the DAG
retries a destination that was briefly away, and not a definition that will fail the same way again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from touchpoint.activation import audit, experiments
from touchpoint.activation.connections import (
    ConnectionInfo,
    ConnectionNotConfiguredError,
    MalformedConnectionError,
    check_connection,
    get_connection,
)
from touchpoint.activation.definitions import SyncDefinition
from touchpoint.activation.destinations import (
    BatchDestination,
    SnapshotDestination,
    strip_control_characters,
)
from touchpoint.activation.destinations.files import FileDestination
from touchpoint.activation.diff import SyncPlan, build_plan, load_candidates
from touchpoint.activation.failures import is_retryable
from touchpoint.activation.state import (
    compact_state,
    open_state,
    record_acknowledged,
    record_deleted,
    replace_state,
    sync_folder,
    sync_lock,
)
from touchpoint.config import RunContext
from touchpoint.shell import open_analyst_connection
from touchpoint.sql_text import quote_ident

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SyncRunResult:
    sync_name: str
    status: str  # success | skipped | failed | dry_run
    destination_type: str
    attempt_id: str
    plan: SyncPlan | None = None
    sent_upserts: int = 0
    sent_deletes: int = 0
    failed: int = 0  # refused by the destination
    skipped: int = 0  # held back: no consent, invalid email, no key
    held_out: int = 0  # eligible but in the control arm of the sync's experiment: never sent, not a rejection
    duration_s: float = 0.0
    message: str = ""
    files: list[Path] = field(default_factory=list)
    retryable: bool = False  # failed only: running it again unchanged may succeed (failures.is_retryable)

    @property
    def sent(self) -> int:
        return self.sent_upserts + self.sent_deletes

    def raise_if_failed(self) -> SyncRunResult:
        """This result, or SyncFailedError (with `retryable`) when the sync failed."""
        if self.status == "failed":
            raise SyncFailedError(self)
        return self


class SyncFailedError(RuntimeError):
    """One sync failed (its result is audited). `retryable` is False for a deterministic failure (a bad
    definition, a refused source query, a malformed connection, a request the destination refuses): running it
    again unchanged fails the same way, so an orchestrator should fail it at once instead of retrying."""

    def __init__(self, result: SyncRunResult) -> None:
        self.result = result
        self.retryable = result.retryable
        named = result.message.startswith(f"sync {result.sync_name!r}")  # a connection error names the sync
        super().__init__(result.message if named else f"sync {result.sync_name!r} failed: {result.message}")


class SyncsFailedError(RuntimeError):
    """One or more syncs failed; `results` has every sync's outcome (the others still ran)."""

    def __init__(self, results: list[SyncRunResult]) -> None:
        self.results = results
        failed = [f"{r.sync_name}: {r.message}" for r in results if r.status == "failed"]
        super().__init__(f"{len(failed)} sync(s) failed: " + "; ".join(failed))

    @property
    def retryable(self) -> bool:
        """True when every failure is retryable (one deterministic failure fails a retry of them all too)."""
        return all(r.retryable for r in self.results if r.status == "failed")


# options that say *where* records go (changing them means a new destination), not how they are sent
_IDENTITY_OPTIONS = ("schema", "table", "upsert_path", "delete_path")


def destination_fingerprint(sync: SyncDefinition) -> str:
    """Identity of the destination a sync's state describes (see `state.open_state`)."""
    spec = sync.destination
    identity = {k: spec.options.get(k) for k in _IDENTITY_OPTIONS if k in spec.options}
    return json.dumps(
        {"type": spec.type, "connection": spec.connection, "key": sync.primary_key, **identity},
        sort_keys=True,
    )


def activation_folder(ctx: RunContext, sync_name: str) -> Path:
    """Where a file destination writes: `<home>/activation/<sync>/`."""
    return ctx.home / "activation" / sync_name


def sync_connection(sync: SyncDefinition) -> ConnectionInfo | None:
    """The connection a sync's destination uses (None for files), checked against the destination's type.

    ConnectionNotConfiguredError if it is missing; MalformedConnectionError (naming the sync and the
    connection, never a secret) if it is set but unusable.
    """
    spec = sync.destination
    if spec.type == "file":
        return None
    try:
        return check_connection(get_connection(spec.connection or ""), spec.type)
    except MalformedConnectionError as error:
        raise MalformedConnectionError(f"sync {sync.name!r}: {error}; fix it and rerun") from None


def build_destination(
    ctx: RunContext, sync: SyncDefinition, run_id: str, connection: ConnectionInfo | None = None
) -> BatchDestination | SnapshotDestination:
    """The destination object for a sync, on `connection` or else the sync's own (see `sync_connection`)."""
    spec = sync.destination
    if spec.type == "file":
        return FileDestination(activation_folder(ctx, sync.name), spec.options["formats"])
    connection = connection or sync_connection(sync)
    assert connection is not None  # only file destinations have none
    if spec.type == "postgres":
        from touchpoint.activation.destinations.postgres import PostgresDestination

        return PostgresDestination(
            connection,
            table=spec.options["table"],
            schema=spec.options.get("schema", "public"),
            primary_key=sync.primary_key,
            run_id=run_id,
        )
    from touchpoint.activation.destinations.http import HttpDestination

    return HttpDestination(
        connection, sync_name=sync.name, primary_key=sync.primary_key, run_id=run_id, **spec.options
    )


def _load(
    con: duckdb.DuckDBPyConnection, ctx: RunContext, sync: SyncDefinition, sample_size: int = 5
) -> SyncPlan:
    # sync SQL is untrusted (rule 9): read-only, no file or network access, settings locked; it reads the
    # pseudonymised analytics file only, and the declared personal fields come from the pii file (rule 8)
    published = open_analyst_connection(ctx.paths.published_db)
    try:
        load_candidates(con, published, sync, ctx.paths.pii_db)
    finally:
        published.close()
    folder = sync_folder(ctx.paths.state, sync.name)
    experiments.apply_holdout(con, sync.experiment, sync.holdout, folder, ctx.as_of)
    return build_plan(con, sync, sample_size=sample_size)


def plan_sync(ctx: RunContext, sync: SyncDefinition, *, sample_size: int = 5) -> SyncPlan:
    """What `run_sync` would send now; writes nothing. `run_syncs(..., dry_run=True)` plans them all.

    `skipped_reason` is set when the sync would be skipped (disabled, connection not configured). What a real
    run would fail on raises here too: a malformed connection, a destination that cannot be built, a source
    query that is refused or fails, an unreadable state.
    """
    reason = _skip_reason(ctx, sync)
    folder = sync_folder(ctx.paths.state, sync.name)
    # a running sync holds its state file open for writing: wait for it rather than fail to attach
    with sync_lock(folder) if folder.exists() else nullcontext():
        con = open_state(ctx.paths.state, sync.name, destination_fingerprint(sync), read_only=True)
        try:
            plan = _load(con, ctx, sync, sample_size)
        finally:
            con.close()
    return replace(plan, skipped_reason=reason) if reason else plan


def _skip_reason(ctx: RunContext, sync: SyncDefinition) -> str | None:
    """Why a run would skip the sync, or None; raises what building its destination raises in a real run."""
    if not sync.enabled:
        return "disabled in its definition"
    try:
        build_destination(ctx, sync, ctx.run_id)
    except ConnectionNotConfiguredError as error:
        return str(error)
    return None


def _columns(sync: SyncDefinition) -> str:
    return ", ".join(quote_ident(f) for f in sync.fields)


def _fields(con: duckdb.DuckDBPyConnection, sync: SyncDefinition, table: str, where: str) -> pa.Table:
    columns = _columns(sync)
    return con.sql(
        f"select _key, _row_hash, {columns} from {table} where {where} order by _key"
    ).to_arrow_table()


def _rejections(
    sync: SyncDefinition,
    ctx: RunContext,
    attempt_id: str,
    keys: list[str | None],
    reasons: list[str],
    details: list[str | None],
) -> pa.Table:
    now = datetime.now(UTC).replace(tzinfo=None)
    n = len(keys)
    return pa.table(
        {
            "sync_name": [sync.name] * n,
            "run_id": [ctx.run_id] * n,
            "attempt_id": [attempt_id] * n,
            "record_key": keys,
            "reason": reasons,
            "detail": details,
            "rejected_at": pa.array([now] * n, pa.timestamp("us")),
        },
        schema=audit.SYNC_REJECTIONS_SCHEMA,
    )


@dataclass
class _Tally:
    """What a run has done so far (kept when it fails halfway, for the audit record)."""

    upserts: int = 0
    deletes: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    cleaned: dict[str, str] = field(default_factory=dict)  # sent with control characters removed


def _send_batches(
    con: duckdb.DuckDBPyConnection,
    sync: SyncDefinition,
    destination: BatchDestination,
    run_id: str,
    tally: _Tally,
    progress: Progress | None,
) -> None:
    """Deletes, then upserts, batch by batch, checkpointing each acknowledged batch in the state."""
    delete_keys = [
        r[0]
        for r in con.execute("select _key from changes where _change = 'delete' order by _key").fetchall()
    ]
    upserts = _fields(con, sync, "changes", "_change <> 'delete'")
    schema = con.sql(f"select {_columns(sync)} from candidates limit 0")
    destination.open(schema.to_arrow_table().schema)
    size = sync.batch_size
    for start in range(0, len(delete_keys), size):
        keys = delete_keys[start : start + size]
        result = destination.delete(keys)
        record_deleted(con, [k for k in keys if k not in result.refused])
        tally.refused.update(result.refused)
        tally.deletes += len(keys) - len(result.refused)
        if progress:
            progress(f"{sync.name}: deleted {start + len(keys)}/{len(delete_keys)}")
    for start in range(0, upserts.num_rows, size):
        batch = upserts.slice(start, size)
        # one bad value must not fail the batch (or the sync): clean it, and audit that we did
        rows, cleaned = strip_control_characters(batch.select(list(sync.fields)), sync.primary_key)
        result = destination.upsert(rows)
        tally.cleaned.update(
            {k: "removed control characters from " + ", ".join(cols) for k, cols in cleaned.items()}
        )
        keys = batch.column("_key").to_pylist()
        status = ["refused" if k in result.refused else "synced" for k in keys]
        record_acknowledged(
            con, pa.table({"key": keys, "row_hash": batch.column("_row_hash"), "status": status}), run_id
        )
        tally.refused.update(result.refused)
        tally.upserts += len(keys) - len(result.refused)
        if progress:
            progress(f"{sync.name}: upserted {start + batch.num_rows}/{upserts.num_rows}")


def _write_snapshot(
    con: duckdb.DuckDBPyConnection,
    ctx: RunContext,
    sync: SyncDefinition,
    plan: SyncPlan,
    destination: SnapshotDestination,
    tally: _Tally,
) -> list[Path]:
    """Rewrite a file destination when anything changed (or its files are missing), then the state."""
    existing = getattr(destination, "audience_files", list)()
    if plan.changes == 0 and all(p.exists() for p in existing):
        return []
    audience = _fields(con, sync, "desired", "true").drop_columns(["_key", "_row_hash"])
    changes = con.sql(f"select _change, {_columns(sync)} from changes order by _key").to_arrow_table()
    files = destination.write(audience, changes, ctx.run_id)
    replace_state(con, "desired", ctx.run_id)
    tally.upserts, tally.deletes = plan.inserts + plan.updates, plan.deletes
    return files


def _one_line(error: Exception) -> str:
    """An error as the one line the CLI, the Airflow task and the audit row show."""
    # a connection error already names the sync and the connection; anything else says what kind it was
    text = str(error) if isinstance(error, MalformedConnectionError) else f"{type(error).__name__}: {error}"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


class _Attempt:
    """One attempt of one sync: what it has done so far, and its audit record when it ends."""

    def __init__(self, ctx: RunContext, sync: SyncDefinition) -> None:
        self.ctx, self.sync = ctx, sync
        self.started = datetime.now(UTC).replace(tzinfo=None)
        self.clock = time.monotonic()
        self.attempt_id = audit.new_attempt_id(self.started)
        self.folder = sync_folder(ctx.paths.state, sync.name)
        self.tally = _Tally()  # kept when the attempt fails halfway: the audit says what was sent
        self.plan: SyncPlan | None = None
        self.rejections: list[pa.Table] = []
        self.connection: ConnectionInfo | None = None

    def result(
        self, status: str, message: str = "", files: list[Path] | None = None, *, retryable: bool = False
    ) -> SyncRunResult:
        # a driver's or server's error text may quote what it was given: never let the secret reach the audit
        message = self.connection.redact(message) if self.connection else message
        plan, tally = self.plan, self.tally
        return SyncRunResult(
            sync_name=self.sync.name,
            status=status,
            destination_type=self.sync.destination.type,
            attempt_id=self.attempt_id,
            plan=plan,
            sent_upserts=tally.upserts,
            sent_deletes=tally.deletes,
            failed=len(tally.refused),
            skipped=sum(plan.ineligible.values()) if plan else 0,
            held_out=plan.held_out if plan else 0,
            duration_s=round(time.monotonic() - self.clock, 3),
            message=message,
            files=files or [],
            retryable=retryable,
        )

    def reject(self, keys: list[str | None], reasons: list[str], details: list[str | None]) -> None:
        self.rejections.append(_rejections(self.sync, self.ctx, self.attempt_id, keys, reasons, details))

    def finish(
        self, status: str, message: str = "", files: list[Path] | None = None, *, retryable: bool = False
    ) -> SyncRunResult:
        """The attempt's result, after writing its audit record and rejected records."""
        result = self.result(status, message, files, retryable=retryable)
        for reason, by_key in (("destination_refused", self.tally.refused), ("text_cleaned", self.tally.cleaned)):
            keys = sorted(by_key)
            if keys:
                self.reject(list(keys), [reason] * len(keys), [by_key[k] for k in keys])
        if self.rejections:
            audit.write_rejections(self.folder, self.attempt_id, pa.concat_tables(self.rejections))
        plan = self.plan
        audit.write_run_record(
            self.folder,
            {
                "sync_name": self.sync.name,
                "run_id": self.ctx.run_id,
                "attempt_id": self.attempt_id,
                "as_of": self.ctx.as_of,
                "destination_type": self.sync.destination.type,
                "status": status,
                "started_at": self.started,
                "finished_at": datetime.now(UTC).replace(tzinfo=None),
                "duration_s": result.duration_s,
                "eligible": plan.eligible if plan else None,
                "planned_inserts": plan.inserts if plan else None,
                "planned_updates": plan.updates if plan else None,
                "planned_deletes": plan.deletes if plan else None,
                "sent": result.sent,
                "failed": result.failed,
                "skipped": result.skipped,
                "message": result.message,
                "held_out": result.held_out,
            },
        )
        return result


def _send(
    run: _Attempt, destination: BatchDestination | SnapshotDestination, progress: Progress | None
) -> list[Path]:
    """Plan and send under the sync's lock; the files written (file destinations)."""
    ctx, sync = run.ctx, run.sync
    with sync_lock(run.folder):
        con = open_state(ctx.paths.state, sync.name, destination_fingerprint(sync))
        try:
            run.plan = plan = _load(con, ctx, sync)
            held_back = con.execute(
                "select _key, _reject_reason from candidates where _reject_reason is not null order by _key"
            ).fetchall()
            run.reject([k for k, _ in held_back], [r for _, r in held_back], [None] * len(held_back))
            if isinstance(destination, BatchDestination):
                try:
                    _send_batches(con, sync, destination, ctx.run_id, run.tally, progress)
                finally:
                    destination.close()
                files: list[Path] = []
            else:
                files = _write_snapshot(con, ctx, sync, plan, destination, run.tally)
            _record_assignments(run, con)
            return files
        finally:
            con.close()


def _record_assignments(run: _Attempt, con: duckdb.DuckDBPyConnection) -> None:
    """After a send went through: the experiment assignments this run made (none without a holdout)."""
    sync = run.sync
    if sync.holdout is None or sync.experiment is None:
        return
    experiments.record_assignments(
        con,
        run.folder,
        experiment=sync.experiment,
        holdout=sync.holdout,
        sync_name=sync.name,
        run_id=run.ctx.run_id,
        attempt_id=run.attempt_id,
        as_of=run.ctx.as_of,
        assigned_at=run.started,
    )


def run_sync(
    ctx: RunContext,
    sync: SyncDefinition,
    *,
    dry_run: bool = False,
    destination: BatchDestination | SnapshotDestination | None = None,
    progress: Progress | None = None,
) -> SyncRunResult:
    """Send a sync's changes since its last successful run; see the module docstring.

    Reads only the published warehouse (read-only). `destination` overrides the one built from the
    definition (tests, embedding). Every outcome is returned and audited, failures included (status "failed",
    the error on one line with secrets redacted, and whether it is `retryable`): a caller running several
    syncs goes on with the next, and decides how to fail (`raise_if_failed`). The state keeps every
    acknowledged batch, so a rerun resumes. Only an interrupt, or an audit record that cannot be written,
    propagates. A dry run plans and writes nothing (no state, no audit, no sends): "dry_run", "skipped", or
    "failed" when the sync cannot be planned or a real run would fail on its connection.
    """
    run = _Attempt(ctx, sync)
    if dry_run:
        return _dry_run(run)
    if not sync.enabled:
        return run.finish("skipped", message="disabled in its definition")
    try:
        if destination is None:
            try:
                run.connection = sync_connection(sync)
            except ConnectionNotConfiguredError as error:
                return run.finish("skipped", message=str(error))
            destination = build_destination(ctx, sync, ctx.run_id, run.connection)
        files = _send(run, destination, progress)
        if run.tally.deletes:
            # a delete (erasure, withdrawn consent) would leave the key in a free block of the state file
            compact_state(ctx.paths.state, sync.name)
    except Exception as error:  # noqa: BLE001 - a failed sync is a result (audited), not a crash of the run
        return run.finish("failed", message=_one_line(error), retryable=is_retryable(error))
    return run.finish("success", files=files)


def _dry_run(run: _Attempt) -> SyncRunResult:
    """Plan one sync without writing anything; what stops the plan is a failed result, as in a real run."""
    try:
        run.plan = plan_sync(run.ctx, run.sync)
    except Exception as error:  # noqa: BLE001 - every sync is planned and reported, whatever the others did
        return run.result("failed", message=_one_line(error), retryable=is_retryable(error))
    reason = run.plan.skipped_reason
    return run.result("skipped" if reason else "dry_run", message=reason or "")


def run_syncs(
    ctx: RunContext,
    syncs: list[SyncDefinition],
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    on_result: Callable[[SyncRunResult], None] | None = None,
) -> list[SyncRunResult]:
    """Run (or with `dry_run`, plan) every sync, in order; SyncsFailedError at the end (with every result) if
    any failed.

    `on_result` sees each result as soon as its sync ends (the CLI prints it).
    """
    results: list[SyncRunResult] = []
    for sync in syncs:
        try:
            result = run_sync(ctx, sync, dry_run=dry_run, progress=progress)
        except Exception as error:  # noqa: BLE001 - only when its audit record could not be written
            result = SyncRunResult(
                sync_name=sync.name,
                status="failed",
                destination_type=sync.destination.type,
                attempt_id="",
                message=f"not audited: {_one_line(error)}",
            )
        results.append(result)
        if on_result:
            on_result(result)
    if any(r.status == "failed" for r in results):
        raise SyncsFailedError(results)
    return results
