"""Raw suite: what the loader wrote to `raw.<entity>` (contracts.md §4) is complete and plausible.

- every entity's table exists, with the contract's columns and the load metadata (`_batch_id`, `_extract_date`..);
- the required (*) fields of the landing contract (`ingest/contract.py`) are never null, except those a dbt
  source test already holds not null (the `_<source>__sources.yml` files: the staging layer runs those tests in
  the same run, and nothing is asserted twice);
- volume: for event entities, the latest extract day's (`_extract_date`) batch holds a similar number of rows to the
  previous day's (tolerance `TOUCHPOINT_GATE_VOLUME_TOLERANCE`, default 0.8: between x0.2 and x5). An entity's first
  batch is never the reference (a first shop extract is the whole history), so the comparison starts with
  the third batch;
- formats: at least `TOUCHPOINT_GATE_EMAIL_VALID_SHARE` (default 0.9) of the non-null emails look like
  emails (the staging layer flags the rest individually);
- nothing about event times: rows dated after the as-of day are "not yet" (a full export holds them; staging
  leaves them out of this run and a later run uses them), and a broken clock or an implausible date is judged
  per row at load, against the time of extraction (ingest/plausibility.py), where it is quarantined.
A batch this gate fails on is held out of raw (ingest/batches.py), so it never blocks later runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml

from touchpoint.config import RunContext, dbt_project_dir
from touchpoint.ingest.contract import ENTITY_SPECS, LOAD_METADATA

from .. import checks
from ..checks import Check

EMAILS = {"crm_contacts": "email", "shop_customers": "email", "email_events": "email",
          "pos_transactions": "email"}
VOLUME_ENTITIES = ("shop_orders", "web_events", "email_events", "pos_transactions")
# Deliberately loose: staging validates each address; this catches a shifted column or a broken export.
EMAIL_REGEX = r"^\s*[^@\s]+@[^@\s]+\.[^@\s]+\s*$"
ROW_LABEL = "_source_file || ':' || _row_number"


@dataclass(frozen=True)
class RawSuiteConfig:
    volume_tolerance: float = 0.8
    email_valid_share: float = 0.9
    # Below this many rows a day, a ratio is noise (4 rows instead of 9), not an outage.
    volume_min_rows: int = 20

    @classmethod
    def from_env(cls) -> RawSuiteConfig:
        return cls(
            volume_tolerance=float(os.environ.get("TOUCHPOINT_GATE_VOLUME_TOLERANCE", cls.volume_tolerance)),
            email_valid_share=float(os.environ.get("TOUCHPOINT_GATE_EMAIL_VALID_SHARE",
                                                   cls.email_valid_share)),
            volume_min_rows=int(os.environ.get("TOUCHPOINT_GATE_VOLUME_MIN_ROWS", cls.volume_min_rows)),
        )


def build_suite(ctx: RunContext, con: duckdb.DuckDBPyConnection,
                config: RawSuiteConfig | None = None) -> list[Check]:
    config = config or RawSuiteConfig.from_env()
    tested_by_dbt = dbt_source_tests(dbt_project_dir())
    suite: list[Check] = []
    for entity, spec in ENTITY_SPECS.items():
        table = f"raw.{entity}"
        suite.append(checks.has_columns(table, [*spec.column_names, *(name for name, _ in LOAD_METADATA)]))
        suite += [checks.not_null(table, column, label=ROW_LABEL) for column in spec.required
                  if "not_null" not in tested_by_dbt.get((table, column), set())]
        if entity in EMAILS:
            suite.append(checks.matches(table, EMAILS[entity], EMAIL_REGEX, mostly=config.email_valid_share,
                                        description="emails look like emails (share)"))
        if entity in VOLUME_ENTITIES:
            suite.append(checks.volume_vs_previous_batch(table, config.volume_tolerance, until=ctx.as_of_end,
                                                         min_rows=config.volume_min_rows))
    return suite


def dbt_source_tests(project: Path) -> dict[tuple[str, str], set[str]]:
    """(schema.table, column) -> the names of the dbt tests on that source column (`not_null`, `unique`, ...)."""
    tested: dict[tuple[str, str], set[str]] = {}
    for path in sorted((project / "models").rglob("_*__sources.yml")):
        for source in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("sources") or []:
            schema = source.get("schema", source["name"])
            for table in source.get("tables") or []:
                for column in table.get("columns") or []:
                    tests = column.get("data_tests") or column.get("tests") or []
                    names = {test if isinstance(test, str) else next(iter(test)) for test in tests}
                    tested.setdefault((f"{schema}.{table['name']}", column["name"]), set()).update(names)
    return tested
