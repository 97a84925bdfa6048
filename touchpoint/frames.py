"""DataFrames into DuckDB: the one way a Python stage (a dbt Python model, the ML stage) hands a frame to SQL."""

from __future__ import annotations

import duckdb
import pandas as pd


def temp_table(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> None:
    """`frame` copied into the temp table `name`: unlike a registered frame, SQL can still read it after the
    Python code that built it has returned (a dbt Python model's returned relation is read later)."""
    con.register(f"{name}_frame", frame)
    try:
        con.execute(f"create or replace temp table {name} as select * from {name}_frame")
    finally:
        con.unregister(f"{name}_frame")
