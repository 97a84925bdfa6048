"""Suites by layer: `suite_for("raw")` returns the function that lists a layer's checks.

Extension point: a layer's suite is the module `expectations/suites/<layer>.py` defining
`build_suite(ctx: RunContext, con: duckdb.DuckDBPyConnection) -> list[Check]`. It is found by name
when the gate of that layer first runs, so adding a layer (the ML outputs: `ml.py`) needs no edit
here nor in the DAG. `register_suite` registers a builder under any name (tests, plugins).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import duckdb

from touchpoint.config import RunContext

from ..checks import Check

SuiteBuilder = Callable[[RunContext, duckdb.DuckDBPyConnection], list[Check]]
LAYERS = ("raw", "marts", "ml")

_registry: dict[str, SuiteBuilder] = {}


class UnknownSuiteError(LookupError):
    """No suite is registered or importable for a layer."""


def register_suite(layer: str) -> Callable[[SuiteBuilder], SuiteBuilder]:
    """Decorator: register `builder` as the suite of `layer` (replacing any earlier one)."""

    def decorate(builder: SuiteBuilder) -> SuiteBuilder:
        _registry[layer] = builder
        return builder

    return decorate


def unregister_suite(layer: str) -> None:
    _registry.pop(layer, None)


def suite_for(layer: str) -> SuiteBuilder:
    """The suite builder of `layer`: registered, else `expectations/suites/<layer>.py:build_suite`."""
    if layer in _registry:
        return _registry[layer]
    if not layer.isidentifier():
        raise UnknownSuiteError(f"not a layer name: {layer!r}")
    try:
        module = importlib.import_module(f"{__name__}.{layer}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{layer}":
            raise
        raise UnknownSuiteError(
            f"no suite for layer {layer!r}: add expectations/suites/{layer}.py defining build_suite(ctx, con)"
        ) from None
    builder = getattr(module, "build_suite", None)
    if builder is None:
        raise UnknownSuiteError(f"expectations/suites/{layer}.py has no build_suite(ctx, con)")
    _registry[layer] = builder
    return builder
