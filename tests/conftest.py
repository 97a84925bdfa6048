"""Shared test fixtures. Tests never touch ./data: each gets its own Touchpoint home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_EXTRACTS = PROJECT_ROOT.parent / "shared" / "conformance" / "extracts"


@pytest.fixture(scope="session", autouse=True)
def _isolated_airflow(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Airflow reads its home at import: point it at a throwaway folder for the whole session."""
    airflow_home = tmp_path_factory.mktemp("airflow_home")
    os.environ.setdefault("AIRFLOW_HOME", str(airflow_home))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.fixture
def conformance_extracts() -> Path:
    if not CONFORMANCE_EXTRACTS.is_dir():
        pytest.fail(f"conformance extracts not found at {CONFORMANCE_EXTRACTS}")
    return CONFORMANCE_EXTRACTS
