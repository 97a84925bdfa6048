"""Demo source systems of a fictional retailer, with ground truth (see sources/README.md).

`generate`, `advance`, `last_day`, `GenerateSummary` and `GeneratorError` live in
`touchpoint.sources.generator`; they are re-exported here lazily so that importing the package (e.g. from a
DAG file) does not pull in numpy/pandas.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GenerateSummary", "GeneratorError", "advance", "generate", "last_day"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
