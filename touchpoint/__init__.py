"""touchpoint."""
