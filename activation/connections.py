"""Destination connections: addresses and secrets come from outside the repo.

Looked up by name, in order:
1. `TOUCHPOINT_CONN_<NAME>` environment variable (a URI, e.g. `postgresql://user:pw@host:5432/db`,
   `https://:TOKEN@api.example.com/v1`, or `https://api.example.com/v1?token=...`);
2. `AIRFLOW_CONN_<NAME>` environment variable (same URI form Airflow reads);
3. an Airflow connection (`BaseHook.get_connection`), only when running inside Airflow, so the CLI
   never pays for importing Airflow or needs its metadata database.
A name found nowhere is "not configured": the sync is skipped with that reason, not failed.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


class ConnectionNotConfiguredError(LookupError):
    """No connection with this name exists in the environment or in Airflow."""


@dataclass(frozen=True)
class ConnectionInfo:
    name: str
    conn_type: str
    host: str | None = None
    port: int | None = None
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    schema: str | None = None  # database name for PostgreSQL, URL path for HTTP
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:  # never print the secret
        return (
            f"{self.name} ({self.conn_type}://{self.host or ''}{':' + str(self.port) if self.port else ''})"
        )


def _env_name(name: str) -> str:
    return name.upper()


def parse_connection_uri(name: str, uri: str) -> ConnectionInfo:
    """Parse an Airflow-style connection URI into its parts (query parameters become `extra`)."""
    if uri.lstrip().startswith("{"):
        data = json.loads(uri)  # Airflow also accepts JSON: {"conn_type": ..., "host": ..., ...}
        extra = data.get("extra") or {}
        return ConnectionInfo(
            name=name,
            conn_type=str(data.get("conn_type", "")),
            host=data.get("host"),
            port=int(data["port"]) if data.get("port") else None,
            login=data.get("login"),
            password=data.get("password"),
            schema=data.get("schema"),
            extra=json.loads(extra) if isinstance(extra, str) else dict(extra),
        )
    parts = urlsplit(uri)
    if not parts.scheme:
        raise ValueError(f"connection {name!r}: not a URI")
    extra: dict[str, Any] = dict(parse_qsl(parts.query))
    if "__extra__" in extra:
        extra = json.loads(extra["__extra__"])
    return ConnectionInfo(
        name=name,
        conn_type=parts.scheme.replace("-", "_"),
        host=unquote(parts.hostname) if parts.hostname else None,
        port=parts.port,
        login=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        schema=unquote(parts.path.lstrip("/")) or None,
        extra=extra,
    )


def _from_airflow(name: str) -> ConnectionInfo | None:
    if "airflow" not in sys.modules:  # not inside Airflow: don't import it (slow, needs its config)
        return None
    try:
        from airflow.sdk import BaseHook  # Airflow 3 task SDK
    except ImportError:  # pragma: no cover - older layouts
        try:
            from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
        except ImportError:
            return None
    try:
        conn = BaseHook.get_connection(name)
    except Exception:  # noqa: BLE001 - Airflow raises various "not found" types across versions
        return None
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
    return ConnectionInfo(
        name=name,
        conn_type=str(conn.conn_type or ""),
        host=conn.host,
        port=int(conn.port) if conn.port else None,
        login=conn.login,
        password=conn.password,
        schema=conn.schema,
        extra=dict(extra or {}),
    )


def get_connection(name: str) -> ConnectionInfo:
    """The connection called `name`, or ConnectionNotConfiguredError naming where it was looked for."""
    for prefix in ("TOUCHPOINT_CONN_", "AIRFLOW_CONN_"):
        uri = os.environ.get(prefix + _env_name(name))
        if uri:
            return parse_connection_uri(name, uri)
    conn = _from_airflow(name)
    if conn is not None:
        return conn
    raise ConnectionNotConfiguredError(
        f"connection {name!r} is not configured: set TOUCHPOINT_CONN_{_env_name(name)} (a URI) "
        f"or create the Airflow connection {name!r}"
    )
