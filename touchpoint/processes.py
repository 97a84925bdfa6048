"""Start child processes that die with the process that started them: every child Touchpoint starts goes here.

Why: `kill -9` of `touchpoint run` (or of an Airflow task process) left dbt (a child then; it runs in-process
since) as an orphan, still writing the working warehouse and holding its DuckDB lock; the `airflow` CLI and the
Airflow components of `touchpoint airflow` likewise. Linux can tie a child to its parent: after
`prctl(PR_SET_PDEATHSIG, sig)` in the child, the kernel sends it `sig` when its parent dies, however it dies.
The call has to happen in the child, between fork and exec, and the setting survives exec.

Why a launcher and not `preexec_fn`: preexec_fn runs Python between fork and exec, which the subprocess docs
call unsafe with threads in the parent (the child can deadlock on a lock another thread held at fork time).
`touchpoint run` polls Airflow's metadata from a watcher thread while `dag.test()` runs the tasks in-process
(beside the supervisor's socket thread), and Airflow task processes have threads of their own. So the child
first execs this very file with the same interpreter (`python -I -S processes.py <parent pid> <signal> --
program args...`), with no Python run between fork and exec. The launcher sets the parent-death signal,
checks that its parent is still the process that started it (a parent that died between fork and prctl sends
no signal: the child would be an orphan already), puts back the signal dispositions the Python start-up
changed, and execs the program in the same process, so the pid callers see is the program's. The cost is one
bare interpreter start (~50 ms measured here) per child, nothing next to Airflow.

Caveats:
- The kernel signals the child when the *thread* that started it exits, not only the process. `run` blocks
  that thread until the child ends, so it cannot matter there; with `start`, start children from a thread
  that lives as long as they should (the main thread, for the Airflow components).
- Only Linux has PR_SET_PDEATHSIG: elsewhere (a laptop's macOS) children start plainly and may outlive a
  killed parent.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SUPPORTED = sys.platform.startswith("linux")
CANNOT_RUN = 127  # the exit status a shell gives for a command it could not run; the launcher does the same
_SEPARATOR = "--"


def command_dying_with_parent(
    args: Sequence[str],
    signal_on_parent_death: int = signal.SIGKILL,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> list[str]:
    """`args` run through the launcher, so the program gets `signal_on_parent_death` when this process dies.

    The program is looked up here, on the PATH of `env` (as subprocess does), so a missing one raises
    FileNotFoundError in the caller as before, not a status 127 from the launcher.
    """
    program = _resolve(args[0], env, cwd)
    if not SUPPORTED:
        return [program, *args[1:]]
    launcher = [sys.executable, "-I", "-S", os.path.abspath(__file__)]
    return [*launcher, str(os.getpid()), str(int(signal_on_parent_death)), _SEPARATOR, program, *args[1:]]


def run(
    args: Sequence[str], *, signal_on_parent_death: int = signal.SIGKILL, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run(args, **kwargs)` whose child dies with this process (see the module docstring)."""
    command = command_dying_with_parent(
        args, signal_on_parent_death, env=kwargs.get("env"), cwd=kwargs.get("cwd")
    )
    return subprocess.run(command, **_checked(kwargs))


def start(
    args: Sequence[str], *, signal_on_parent_death: int = signal.SIGKILL, **kwargs: Any
) -> subprocess.Popen[Any]:
    """`subprocess.Popen(args, **kwargs)` whose child dies with this process (see the module docstring)."""
    command = command_dying_with_parent(
        args, signal_on_parent_death, env=kwargs.get("env"), cwd=kwargs.get("cwd")
    )
    return subprocess.Popen(command, **_checked(kwargs))


def _checked(kwargs: dict[str, Any]) -> dict[str, Any]:
    # A shell or another executable would be what the launcher execs, and a preexec_fn is what this
    # module exists to avoid.
    for unsupported in ("shell", "executable", "preexec_fn"):
        if kwargs.get(unsupported):
            raise ValueError(f"touchpoint.processes does not support {unsupported}=")
    return kwargs


def _resolve(program: str, env: Mapping[str, str] | None, cwd: str | os.PathLike[str] | None) -> str:
    if os.sep in program:
        # relative paths stay relative: the launcher runs in `cwd`, as the program itself would have
        if not os.path.exists(os.path.join(cwd or "", program)):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        return program
    found = shutil.which(program, path=(os.environ if env is None else env).get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found


def _launch(argv: list[str]) -> None:
    """The launcher (runs in the child, before the program): parent-death signal, parent check, exec."""
    import ctypes

    parent, signum, separator, *command = argv
    if separator != _SEPARATOR or not command:
        sys.stderr.write("usage: processes.py <parent pid> <signal> -- program [args...]\n")
        os._exit(CANNOT_RUN)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        sys.stderr.write(f"touchpoint: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}\n")
        os._exit(CANNOT_RUN)
    if os.getppid() != int(parent):
        # The parent died before prctl ran, so no signal will ever come: die now, as the signal would have.
        os.kill(os.getpid(), int(signum))
        os._exit(CANNOT_RUN)
    # Python starts with SIGPIPE and SIGXFSZ ignored, and ignored signals stay ignored across exec:
    # give the program the defaults it would have had without the launcher (subprocess' restore_signals).
    for name in ("SIGPIPE", "SIGXFSZ"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execv(command[0], command)
    except OSError as error:
        sys.stderr.write(f"touchpoint: cannot run {command[0]}: {error.strerror}\n")
        os._exit(CANNOT_RUN)


if __name__ == "__main__":
    _launch(sys.argv[1:])
