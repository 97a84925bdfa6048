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
PSEUDONYM_PADS = "tp_pseudonym"  # the variable prefix dbt's macro reads
SUPPRESSION_PADS = "tp_suppression"  # erasure's suppression hashes (privacy/erasure.py), another key


def pseudonym(value: str | None, key: PrivacyKey) -> str | None:
    """The pseudonym of `value` (64 hex characters), or None for a missing value."""
    if value is None:
        return None
    return hmac.new(key.secret, value.encode(), hashlib.sha256).hexdigest()


def _pads(secret: bytes) -> tuple[bytes, bytes]:
    block = hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret
    block = block.ljust(_BLOCK, b"\0")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def connection_setup(key: PrivacyKey, pads: str = PSEUDONYM_PADS) -> list[str]:
    """Statements that let dbt's `pseudonym()` macro (dbt_project/macros/pseudonym.sql), or `hmac_sql` with the
    same `pads`, run on a DuckDB connection: the key's two pads as connection variables `<pads>_ipad` and
    `<pads>_opad` (run them on every connection and cursor)."""
    inner, outer = _pads(key.secret)
    return [
        f"set variable {pads}_ipad = unhex('{inner.hex()}')",
        f"set variable {pads}_opad = unhex('{outer.hex()}')",
    ]


def hmac_sql(expression: str, pads: str = PSEUDONYM_PADS) -> str:
    """HMAC-SHA256 of a SQL expression as hex, with the key whose pads `connection_setup(key, pads)` set: the
    SQL form of `pseudonym` for Python-side stages (dbt models use the macro). Null stays null."""
    return (
        f"sha256(getvariable('{pads}_opad') || unhex(sha256(getvariable('{pads}_ipad') "
        f"|| encode(cast(({expression}) as varchar)))))"
    )
