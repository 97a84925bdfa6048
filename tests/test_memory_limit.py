"""The working warehouse's DuckDB memory limit: one setting for every stage's connection and for dbt."""

from __future__ import annotations

from pathlib import Path

import yaml

from touchpoint.config import DEFAULT_MEMORY_LIMIT, MEMORY_LIMIT_SETTING, Paths, duckdb_memory_limit
from touchpoint.warehouse import connect_work


def test_stage_connections_take_the_setting(tmp_path, monkeypatch):
    paths = Paths(tmp_path / "home")
    paths.ensure()
    monkeypatch.setenv(MEMORY_LIMIT_SETTING, "1GB")
    with connect_work(paths) as con:
        assert con.execute("select current_setting('memory_limit')").fetchone()[0] == "953.6 MiB"
    monkeypatch.delenv(MEMORY_LIMIT_SETTING)
    assert duckdb_memory_limit() == DEFAULT_MEMORY_LIMIT == "40%"


def test_dbt_profile_reads_the_same_setting_with_the_same_default():
    profile = yaml.safe_load((Path(__file__).resolve().parent.parent / "dbt_project" / "profiles.yml").read_text())
    limit = profile["touchpoint"]["outputs"]["work"]["settings"]["memory_limit"]
    assert limit == f"{{{{ env_var('{MEMORY_LIMIT_SETTING}', '{DEFAULT_MEMORY_LIMIT}') }}}}"
