"""Reverse-ETL: declarative syncs from the published warehouse to operational tools.

Public API (used by the DAG and the CLI):
- `load_sync_definitions(folder=None)`: the YAML syncs in `activation/syncs/` (or `folder`);
- `plan_sync(ctx, sync)`: what a run would send (counts and sample keys); writes nothing;
- `run_sync(ctx, sync, dry_run=False)` / `run_syncs(ctx, syncs, dry_run=False)`: send (or only plan, for
  `touchpoint sync --dry-run`) the changes since the last run; every outcome, a failure too, is a returned
  `SyncRunResult` (audited unless a dry run) that says whether a failure is `retryable`; `run_syncs` raises
  SyncsFailedError after running them all, `result.raise_if_failed()` raises SyncFailedError;
- `sync_audit_tables(home)`: the sync audit log as Arrow tables; `load_sync_audit(con, home)` writes them to
  `audit.sync_runs` / `audit.sync_rejections` of a warehouse connection the caller holds for writing.
"""

from touchpoint.activation.audit import load_sync_audit, sync_audit_tables
from touchpoint.activation.definitions import (
    DestinationSpec,
    SyncDefinition,
    SyncDefinitionError,
    load_sync_definitions,
)
from touchpoint.activation.diff import SyncPlan, SyncSourceError
from touchpoint.activation.failures import is_retryable
from touchpoint.activation.runner import (
    SyncFailedError,
    SyncRunResult,
    SyncsFailedError,
    plan_sync,
    run_sync,
    run_syncs,
)

__all__ = [
    "DestinationSpec",
    "SyncDefinition",
    "SyncDefinitionError",
    "SyncFailedError",
    "SyncPlan",
    "SyncRunResult",
    "SyncSourceError",
    "SyncsFailedError",
    "is_retryable",
    "load_sync_audit",
    "load_sync_definitions",
    "plan_sync",
    "run_sync",
    "run_syncs",
    "sync_audit_tables",
]
