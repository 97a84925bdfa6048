"""Ingest: incremental extraction into immutable landing files, and loading into `raw`.

The DAG and CLI call `extract_source(ctx, source)` once per source (in parallel, no warehouse access),
then `load_pending(ctx, con)` once, as the single writer.
"""

from touchpoint.ingest.contract import ENTITIES, ENTITY_SPECS, SOURCES, EntitySpec, entities_of
from touchpoint.ingest.extract import extract_source
from touchpoint.ingest.load import RowAccountingError, ensure_tables, load_pending
from touchpoint.ingest.readers import LayoutError
from touchpoint.ingest.results import BatchLoad, EntityCounts, ExtractError, ExtractResult, LoadResult

__all__ = [
    "ENTITIES",
    "ENTITY_SPECS",
    "SOURCES",
    "BatchLoad",
    "EntityCounts",
    "EntitySpec",
    "ExtractError",
    "ExtractResult",
    "LayoutError",
    "LoadResult",
    "RowAccountingError",
    "ensure_tables",
    "entities_of",
    "extract_source",
    "load_pending",
]
