"""HMAC-SHA256 pseudonyms: the same hex string in Python (`pseudonym`) and in dbt (`{{ pseudonym(expr) }}`).

DuckDB has SHA-256 but no HMAC, so the dbt macro writes HMAC out (RFC 2104): sha256(opad || sha256(ipad ||
message)), with the key's two pads held in connection variables. The pads are the key in another form: they
are set per connection (`connection_setup`) and never appear in compiled SQL, dbt's artifacts or the
warehouse file.
"""

from __future__ import annotations

import hashlib
import hmac

from .keys import PrivacyKey

_BLOCK = 64  # SHA-256's block size in bytes
IPAD_VARIABLE = "tp_pseudonym_ipad"
OPAD_VARIABLE = "tp_pseudonym_opad"


def pseudonym(value: str | None, key: PrivacyKey) -> str | None:
    """The pseudonym of `value` (64 hex characters), or None for a missing value."""
    if value is None:
        return None
    return hmac.new(key.secret, value.encode(), hashlib.sha256).hexdigest()


def _pads(secret: bytes) -> tuple[bytes, bytes]:
    block = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    block = block.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def connection_setup(key: PrivacyKey) -> list[str]:
    """Statements that let dbt's `pseudonym()` macro (dbt_project/macros/pseudonym.sql) run on a DuckDB
    connection: the key's two pads as connection variables (run them on every connection and cursor)."""
    inner, outer = _pads(key.secret)
    return [
        f"set variable {IPAD_VARIABLE} = unhex('{inner.hex()}')",
        f"set variable {OPAD_VARIABLE} = unhex('{outer.hex()}')",
    ]
