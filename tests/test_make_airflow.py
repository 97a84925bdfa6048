"""`touchpoint airflow` (what `make airflow` runs): serves the UI on the embedded default, prints its URL and a
login that works, and Ctrl-C stops every component."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from touchpoint.airflow_server import free_port, live_services
from touchpoint.config import Paths

pytestmark = pytest.mark.slow


def test_touchpoint_airflow_prints_a_working_url_and_login_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "home")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "touchpoint.cli", "airflow", "--port", str(port), "--home", str(paths.home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    printed: list[str] = []
    try:
        deadline = time.monotonic() + 240
        login = None
        while login is None and time.monotonic() < deadline and process.poll() is None:
            line = process.stdout.readline()
            printed.append(line)
            login = re.search(r"Airflow UI: (http://\S+)\s+login: (\w+) / (\S+)", line)
        assert login, "".join(printed)
        url, user, password = login.groups()
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(url, timeout=10).status_code == 200  # the UI's page
        token = httpx.post(f"{url}/auth/token", json={"username": user, "password": password}, timeout=10)
        assert token.status_code in (200, 201), token.text
        dag = httpx.get(
            f"{url}/api/v2/dags/customer_360",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=10,
        )
        assert dag.status_code == 200 and dag.json()["is_paused"] is True
        assert live_services(paths) is not None
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=90)
        printed.append(out)
    assert process.returncode == 0, "".join(printed)
    assert live_services(paths) is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=5)
