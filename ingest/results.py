"""What extraction and loading report back (the CLI and DAG print summaries from these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from touchpoint.ingest.landing import BatchManifest


@dataclass
class EntityCounts:
    """Row counts of one entity. At extraction `rows_quarantined` counts lines the reader could not
    parse (they land flagged and are quarantined by the loader); at load it is every quarantined row."""

    entity: str
    batches: int = 0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0

    def add(self, rows_read: int, rows_loaded: int, rows_quarantined: int) -> None:
        self.batches += 1
        self.rows_read += rows_read
        self.rows_loaded += rows_loaded
        self.rows_quarantined += rows_quarantined


@dataclass(frozen=True)
class ExtractError:
    """A file (or table) that failed as a whole; its entity's other files and other sources go on."""

    source: str
    entity: str
    source_file: str
    error: str


@dataclass
class ExtractResult:
    source: str
    batches: list[BatchManifest] = field(default_factory=list)
    entities: dict[str, EntityCounts] = field(default_factory=dict)
    errors: list[ExtractError] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self, entity: str) -> EntityCounts:
        return self.entities.setdefault(entity, EntityCounts(entity))

    @property
    def rows(self) -> int:
        return sum(c.rows_read for c in self.entities.values())


@dataclass(frozen=True)
class BatchLoad:
    batch_id: str
    entity: str
    source_file: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int


@dataclass
class LoadResult:
    batches: list[BatchLoad] = field(default_factory=list)
    entities: dict[str, EntityCounts] = field(default_factory=dict)
    errors: list[ExtractError] = field(
        default_factory=list
    )  # extract errors recorded in audit.extract_errors
    seconds: float = 0.0

    def counts(self, entity: str) -> EntityCounts:
        return self.entities.setdefault(entity, EntityCounts(entity))

    @property
    def rows_read(self) -> int:
        return sum(c.rows_read for c in self.entities.values())

    @property
    def rows_loaded(self) -> int:
        return sum(c.rows_loaded for c in self.entities.values())

    @property
    def rows_quarantined(self) -> int:
        return sum(c.rows_quarantined for c in self.entities.values())
