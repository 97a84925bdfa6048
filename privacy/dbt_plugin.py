"""dbt-duckdb plugin: every connection and cursor dbt opens can compute pseudonyms.

Listed under `plugins` in dbt_project/profiles.yml. The key is read here, in the dbt process, from the
environment or Airflow (`keys.pseudonym_key`), so it is never a dbt var (vars are written to dbt's artifacts).
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from .keys import pseudonym_key
from .pseudonyms import connection_setup


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self._statements = connection_setup(pseudonym_key())

    def configure_connection(self, conn) -> None:
        for statement in self._statements:
            conn.execute(statement)

    def configure_cursor(self, cursor) -> None:
        # variables belong to one connection: a cursor dbt copies from the parent needs them set again
        for statement in self._statements:
            cursor.execute(statement)
