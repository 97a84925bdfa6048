"""Test doubles: stand-ins for the systems Touchpoint talks to, for tests and benchmarks (never shipped)."""
