"""Children Touchpoint starts die with the process that started them (`touchpoint.processes`).

Each test starts a real parent process, kills it with SIGKILL (nothing in the parent gets to clean up), and
polls until the child is gone.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from touchpoint import processes
from touchpoint.config import PROJECT_ROOT

pytestmark = pytest.mark.skipif(not processes.SUPPORTED, reason="PR_SET_PDEATHSIG is Linux only")

DEADLINE_S = 30.0
SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped yet (in a container, PID 1 may never reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {DEADLINE_S:.0f}s")
        time.sleep(0.05)


def _kill_parent_and_wait_for_child(parent: subprocess.Popen, child_pid: int) -> None:
    try:
        assert not _gone(child_pid), "the child should run while its parent lives"
        parent.kill()
        parent.wait(timeout=DEADLINE_S)
        _wait_until(lambda: _gone(child_pid), f"child {child_pid} gone after its parent was killed")
    finally:
        if not _gone(child_pid):  # leave nothing behind when the assertion failed
            os.kill(child_pid, signal.SIGKILL)


# A parent that starts the sleeper through the helper, prints the child's pid, then waits to be killed.
PARENT = """
import json, signal, sys, threading, time
from touchpoint import processes
# a thread alive at fork time, as `touchpoint run`'s task watcher is: the launcher must not need preexec_fn
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
kwargs = json.loads(sys.argv[1])
child = processes.start(json.loads(sys.argv[2]), signal_on_parent_death=kwargs.pop("signal"), **kwargs)
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize(
    ("sig", "kwargs"),
    [
        (signal.SIGKILL, {}),  # the airflow CLI
        (signal.SIGTERM, {"start_new_session": True}),  # Airflow components: own session, SIGTERM
    ],
)
def test_a_child_dies_when_its_parent_is_killed(sig: int, kwargs: dict) -> None:
    import json

    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, json.dumps({"signal": int(sig), **kwargs}), json.dumps(SLEEPER)],
        stdout=subprocess.PIPE,
        text=True,
    )
    child_pid = int(parent.stdout.readline())
    if kwargs.get("start_new_session"):
        assert os.getsid(child_pid) == child_pid  # the group handling of the Airflow components is kept
    _kill_parent_and_wait_for_child(parent, child_pid)


def test_a_child_whose_parent_died_before_prctl_does_not_run(tmp_path: Path) -> None:
    # The race: the parent dies between fork and prctl, so no signal will come. The launcher sees a parent
    # other than the one that started it and exits before running the program.
    marker = tmp_path / "ran"
    command = processes.command_dying_with_parent([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    parent_pid_at = command.index(str(os.getpid()))
    command[parent_pid_at] = str(os.getpid() + 1_000_000)  # not our pid: as if we had died and it was reparented
    completed = subprocess.run(command)
    assert completed.returncode == -signal.SIGKILL
    assert not marker.exists()


def test_the_helper_behaves_like_subprocess() -> None:
    command = ["sh", "-c", 'echo "$GREETING"; grep SigIgn /proc/self/status; exit 3']
    options = {"env": {"PATH": os.environ["PATH"], "GREETING": "hi"}, "capture_output": True, "text": True}
    completed = processes.run(command, **options)
    plain = subprocess.run(command, **options)
    # Output, exit status and env pass through, and the program ignores exactly the signals a plain subprocess
    # would: what the test's own parent ignores (a shell's background job ignores SIGINT), none added by the
    # launcher's Python (which ignores SIGPIPE for itself).
    assert (completed.returncode, completed.stdout) == (3, plain.stdout) and plain.returncode == 3
    assert completed.stdout.startswith("hi\nSigIgn:")
    with pytest.raises(FileNotFoundError):
        processes.run(["no-such-program-touchpoint"])


RUNTIME_PACKAGES = ("touchpoint", "ingest", "ml", "activation", "expectations", "sources", "dags")
STARTS_A_PROCESS = {
    *("run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"),  # subprocess
    *("system", "popen", "spawnv", "spawnvp", "spawnl", "spawnlp", "execv", "execvp", "fork"),  # os
}


def test_every_child_is_started_through_the_helper() -> None:
    """One place starts children, so none of them can outlive its parent by being started another way."""
    offenders = []
    for package in RUNTIME_PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            if path == Path(processes.__file__):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("subprocess", "os")
                    and node.func.attr in STARTS_A_PROCESS
                ):
                    where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
                    offenders.append(f"{where} {node.func.value.id}.{node.func.attr}")
    assert offenders == [], "start children with touchpoint.processes.run/start"
