"""dbt's view of the project, for tests that compare it with the warehouse or with other stages."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest_identity import DBT, DBT_DIR


def parse_manifest(target: Path) -> dict[str, Any]:
    """The manifest `dbt parse` writes under `target` (no warehouse is opened or built)."""
    env = {**os.environ, "DBT_PROFILES_DIR": str(DBT_DIR), "TOUCHPOINT_WORK_DB": str(target / "parse.duckdb")}
    parsed = subprocess.run(
        [str(DBT), "parse", "--project-dir", str(DBT_DIR), "--target-path", str(target), "--log-path", str(target)],
        env=env,
        capture_output=True,
        text=True,
        cwd=DBT_DIR,
    )
    assert parsed.returncode == 0, parsed.stdout[-4000:]
    return json.loads((target / "manifest.json").read_text())


def relation(node: dict[str, Any]) -> str:
    """`schema.table` of a model, seed or source node, as the warehouse names it."""
    return f"{node['schema']}.{node.get('alias') or node.get('identifier') or node['name']}"
