"""Great Expectations gates: suites per layer as code (`suites/`), DuckDB-computed checks (`checks.py`)
and the gate runner (`gate.py`).

    from touchpoint.expectations import run_gate, GateFailed
    run_gate(ctx, "raw", con)   # raises GateFailed, report under <run artifacts>/gates/
"""

from .checks import CRITICAL, WARNING, Check
from .gate import ExpectationResult, GateFailed, GateResult, evaluate_gate, run_gate
from .suites import LAYERS, UnknownSuiteError, register_suite, suite_for, unregister_suite

__all__ = [
    "CRITICAL", "LAYERS", "WARNING", "Check", "ExpectationResult", "GateFailed", "GateResult",
    "UnknownSuiteError", "evaluate_gate", "register_suite", "run_gate", "suite_for", "unregister_suite",
]
