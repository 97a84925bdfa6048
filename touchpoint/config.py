"""Where things live and what one run is: the few settings every stage shares.

Paths come from `--home` / the `TOUCHPOINT_HOME` environment variable (default `./data`).
A run is fixed by its logical date (`as_of`): nothing dated after the end of that day is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"  # the default; runs read dbt_project_dir()
DEFAULT_HOME = "data"
DEFAULT_COUNTRY = "DE"  # region used to read phone numbers written without a country code
# DuckDB's memory_limit for the working warehouse (dbt through profiles.yml, which repeats this default for a
# bare `dbt build`, and every stage's connection): DuckDB's own default is 80% of RAM, which let dbt's process
# reach 18 GB at 1M customers on a 24 GB machine; DuckDB spills past the limit to <warehouse>.tmp instead.
MEMORY_LIMIT_SETTING = "TOUCHPOINT_DUCKDB_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "40%"


def duckdb_memory_limit() -> str:
    """The working warehouse's DuckDB memory_limit: TOUCHPOINT_DUCKDB_MEMORY_LIMIT ('8GB', '40%'), or 40%."""
    return os.environ.get(MEMORY_LIMIT_SETTING, "").strip() or DEFAULT_MEMORY_LIMIT
# The run's as-of date for dbt: an environment variable, not a dbt var. dbt parses the project again from
# scratch whenever a var changes, and the date changes every day (dbt_project/macros/as_of.sql).
AS_OF_SETTING = "TOUCHPOINT_AS_OF"
UNBOUNDED_AS_OF = "2099-12-31"  # no as-of date given: everything is read


def run_as_of(configured: object = None) -> str:
    """The as-of date ('YYYY-MM-DD') a dbt Python model computes for: its `as_of` config when plain dbt passed
    `--vars '{as_of: ...}'`, else TOUCHPOINT_AS_OF (set by the pipeline), else UNBOUNDED_AS_OF. The SQL models'
    as_of() macro reads the same three in the same order."""
    return str(configured or "").strip() or os.environ.get(AS_OF_SETTING, "").strip() or UNBOUNDED_AS_OF


# The home holds personal data in clear text (landing, the pii schema, audiences): whatever a Touchpoint
# process creates there is its owner's only, files 0600 and folders 0700.
PRIVATE_UMASK = 0o077
PRIVATE_FOLDER_MODE = 0o700


def keep_files_private() -> None:
    """Make every file this process (and any child it starts: Airflow, dbt) creates owner-only.

    A process-wide umask rather than a mode at each write: DuckDB, pyarrow, dbt and Airflow create files
    themselves, and all of them honour the umask. Called by the entry points: the CLI's `main` and every
    Airflow task (`touchpoint.pipeline.context_from_airflow`).
    """
    os.umask(PRIVATE_UMASK)


def dbt_project_dir() -> Path:
    """The dbt project a run builds: $TOUCHPOINT_DBT_PROJECT_DIR, else the repo's `dbt_project/`.

    Read when a run happens, not at import, so a test or an engineer can point a run at a copy of the
    project (e.g. with an extra model) without editing the DAG.
    """
    override = os.environ.get("TOUCHPOINT_DBT_PROJECT_DIR")
    return Path(override).resolve() if override else DBT_PROJECT_DIR


def home_from_env(home: str | os.PathLike[str] | None = None) -> Path:
    """The Touchpoint home: the argument, else $TOUCHPOINT_HOME, else ./data."""
    return Path(home or os.environ.get("TOUCHPOINT_HOME") or DEFAULT_HOME).resolve()


@dataclass(frozen=True)
class Paths:
    """The files under one Touchpoint home (see shared/ARCHITECTURE.md)."""

    home: Path

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def state(self) -> Path:
        return self.home / "state"

    @property
    def work(self) -> Path:
        return self.home / "work"

    @property
    def work_db(self) -> Path:
        """The working warehouse: written by one process at a time, never read by analysts."""
        return self.work / "warehouse.duckdb"

    @property
    def published_db(self) -> Path:
        """The published warehouse analysts and syncs read, pseudonymised (the analytics file); replaced
        atomically after the gates pass."""
        return self.home / "warehouse.duckdb"

    @property
    def pii_db(self) -> Path:
        """The published home of clear identifiers (`pii.persons`, ...), written and replaced with the analytics
        file: `touchpoint sql --pii` and the syncs' personal fields read it (docs/privacy.md)."""
        return self.home / "pii.duckdb"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def demo_sources(self) -> Path:
        """Default output of `touchpoint generate`: `systems/` (what extraction reads) and `truth/`."""
        return self.home / "sources"

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    def ensure(self) -> Paths:
        """Create the home and its folders owner-only (0700), and close up folders an older version left open.

        Tightening the existing folders also hides files created before the umask was set: nobody else can
        reach into a 0700 folder, whatever the files' own modes.
        """
        self.home.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
        for folder in (self.landing, self.state, self.work, self.artifacts):
            folder.mkdir(mode=PRIVATE_FOLDER_MODE, exist_ok=True)
            status = folder.stat()
            if status.st_mode & 0o077 and status.st_uid == os.getuid():
                folder.chmod(PRIVATE_FOLDER_MODE)
        return self


@dataclass(frozen=True)
class RunContext:
    """One pipeline run: its logical date, its home and where its extracts come from.

    `extracts_dir` set means bring-your-own extracts (the landing contract); unset means the
    demo source systems under `<home>/sources/systems`. `lease_key` names the orchestrated run that
    must hold the working warehouse's lease for its stages to run (unset: stages called directly).
    """

    as_of: date
    home: Path
    run_id: str
    extracts_dir: Path | None = None
    lease_key: str | None = None
    default_country: str = DEFAULT_COUNTRY
    paths: Paths = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", Paths(self.home))

    @property
    def as_of_end(self) -> datetime:
        """First instant after the as-of day (UTC, naive): everything read is strictly before it."""
        return datetime.combine(self.as_of + timedelta(days=1), time.min)

    @property
    def run_artifacts(self) -> Path:
        return self.paths.artifacts / self.run_id

    @property
    def source_systems(self) -> Path:
        return self.paths.demo_sources / "systems"

    def dbt_vars(self) -> dict[str, str]:
        """dbt's vars for a run: only settings that stay the same from day to day. The as-of date goes through
        the environment (`env`, AS_OF_SETTING), so a new day does not make dbt parse the project again."""
        return {"default_country": self.default_country}

    def env(self) -> dict[str, str]:
        """The variables dbt (run in-process, touchpoint/dbt.py) and child processes read: home, date, memory."""
        return {
            "TOUCHPOINT_HOME": str(self.home),
            "TOUCHPOINT_WORK_DB": str(self.paths.work_db),
            AS_OF_SETTING: self.as_of.isoformat(),
            MEMORY_LIMIT_SETTING: duckdb_memory_limit(),
        }
