"""Destination connections: addresses and secrets come from outside the repo.

Looked up by name, in order:
1. `TOUCHPOINT_CONN_<NAME>` environment variable (a URI, e.g. `postgresql://user:pw@host:5432/db`,
   `https://:TOKEN@api.example.com/v1`, or `https://api.example.com/v1?token=...`);
2. `AIRFLOW_CONN_<NAME>` environment variable (same URI form Airflow reads);
3. an Airflow connection (`BaseHook.get_connection`), only when running inside Airflow, so the CLI
   never pays for importing Airflow or needs its metadata database.
A name found nowhere is "not configured": the sync is skipped with that reason, not failed.
A connection that is set but cannot be used as written (empty, not a URI, a port that is not a number, a
type its destination cannot use) is "malformed": the sync fails with a message naming the connection and
where it was read, never its secrets (MalformedConnectionError).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

# Connection types each destination can use: Airflow spells PostgreSQL both ways; HTTP's scheme is the URL's.
ACCEPTED_CONN_TYPES: dict[str, tuple[str, ...]] = {"postgres": ("postgres", "postgresql"), "http": ("http", "https")}
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+.-]{0,40}")
# `extra` keys whose values are secrets, besides the password (redacted from messages like the password)
_SECRET_EXTRA = re.compile(r"token|secret|password|passwd|key|auth|credential", re.IGNORECASE)


class ConnectionNotConfiguredError(LookupError):
    """No connection with this name exists in the environment or in Airflow."""


class MalformedConnectionError(ValueError):
    """A connection is set but unusable as written. The message names it and where it was read; it never
    quotes the value, which may hold a password in any position a typo put it."""


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
    source: str | None = None  # where it was read: an environment variable, or "the Airflow connection"

    def __str__(self) -> str:  # never print the secret
        return (
            f"{self.name} ({self.conn_type}://{self.host or ''}{':' + str(self.port) if self.port else ''})"
        )

    def redact(self, text: str) -> str:
        """`text` with this connection's password and secret-looking extras replaced by `***`."""
        secrets = [self.password] + [str(v) for k, v in self.extra.items() if _SECRET_EXTRA.search(str(k))]
        # longest first, so a secret that contains another is replaced whole
        for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def _described(name: str, source: str | None) -> str:
    return f"connection {name!r}" + (f" ({source})" if source else "")


def check_connection(conn: ConnectionInfo, destination_type: str) -> ConnectionInfo:
    """`conn` if a `destination_type` destination can use it, else MalformedConnectionError saying why."""
    accepted = ACCEPTED_CONN_TYPES.get(destination_type)
    if accepted and conn.conn_type not in accepted:
        # a type read from JSON or Airflow is free text: quote it only when it looks like a type name
        shown = repr(conn.conn_type) if _TYPE_NAME.fullmatch(conn.conn_type) else "an unreadable type"
        raise MalformedConnectionError(
            f"{_described(conn.name, conn.source)} has type {shown}; a {destination_type} destination needs "
            + " or ".join(f"{t}://" for t in accepted)
        )
    if destination_type == "http" and not conn.host:
        raise MalformedConnectionError(f"{_described(conn.name, conn.source)} has no host")
    return conn


def _env_name(name: str) -> str:
    return name.upper()


def parse_connection_uri(name: str, uri: str, source: str | None = None) -> ConnectionInfo:
    """Parse an Airflow-style connection URI (or Airflow's JSON form) into its parts; query parameters become
    `extra`. MalformedConnectionError, naming `name` and `source` (where the value was read), if it does not parse.
    """

    def malformed(reason: str) -> MalformedConnectionError:
        return MalformedConnectionError(f"{_described(name, source)} {reason}")

    if not uri.strip():
        raise malformed("is empty")
    if uri.lstrip().startswith("{"):
        return _parse_json(name, uri, source, malformed)
    if not _SCHEME.match(uri.strip()):
        raise malformed("is not a URI of the form type://[user:password@]host[:port][/path]")
    try:
        parts = urlsplit(uri.strip())
        extra: dict[str, Any] = dict(parse_qsl(parts.query))
        host, login, password = parts.hostname, parts.username, parts.password
    except ValueError:  # urllib's message may quote part of the value: give our own
        raise malformed("is not a valid URI (a bracketed IPv6 host must be closed, e.g. http://[::1]:80)") from None
    try:
        port = parts.port
    except ValueError:
        raise malformed(
            "has a port that is not a number from 0 to 65535 "
            "(a '/', '?', '#' or '@' in the user or password must be percent-encoded)"
        ) from None
    if "__extra__" in extra:
        extra = _json_object(extra["__extra__"], malformed, "has an __extra__ that is not a JSON object")
    return ConnectionInfo(
        name=name,
        conn_type=parts.scheme.replace("-", "_"),
        host=unquote(host) if host else None,
        port=port,
        login=unquote(login) if login else None,
        password=unquote(password) if password else None,
        schema=unquote(parts.path.lstrip("/")) or None,
        extra=extra,
        source=source,
    )


def _parse_json(
    name: str, text: str, source: str | None, malformed: Callable[[str], MalformedConnectionError]
) -> ConnectionInfo:
    # Airflow also accepts JSON: {"conn_type": ..., "host": ..., "port": ..., "extra": {...}}
    data = _json_object(text, malformed, "is not a valid JSON object")
    extra = data.get("extra") or {}
    if isinstance(extra, str):
        extra = _json_object(extra, malformed, "has an extra that is not a JSON object")
    if not isinstance(extra, dict):
        raise malformed("has an extra that is not a JSON object")
    port = data.get("port")
    if port not in (None, "") and not (str(port).isdigit() and int(port) <= 65535):
        raise malformed("has a port that is not a number from 0 to 65535")
    return ConnectionInfo(
        name=name,
        conn_type=str(data.get("conn_type") or ""),
        host=data.get("host"),
        port=int(port) if port not in (None, "") else None,
        login=data.get("login"),
        password=data.get("password"),
        schema=data.get("schema"),
        extra=dict(extra),
        source=source,
    )


def _json_object(text: str, malformed: Callable[[str], MalformedConnectionError], reason: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:  # JSONDecodeError's message quotes no value, but its position says little: our reason
        raise malformed(reason) from None
    if not isinstance(data, dict):
        raise malformed(reason)
    return data


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
        source="the Airflow connection",
    )


def get_connection(name: str) -> ConnectionInfo:
    """The connection called `name`, or ConnectionNotConfiguredError naming where it was looked for.

    A variable that is set counts as configured even when empty (a secret store that rendered nothing):
    that is MalformedConnectionError, reported, not a silently skipped sync.
    """
    for prefix in ("TOUCHPOINT_CONN_", "AIRFLOW_CONN_"):
        variable = prefix + _env_name(name)
        uri = os.environ.get(variable)
        if uri is not None:
            return parse_connection_uri(name, uri, source=variable)
    conn = _from_airflow(name)
    if conn is not None:
        return conn
    raise ConnectionNotConfiguredError(
        f"connection {name!r} is not configured: set TOUCHPOINT_CONN_{_env_name(name)} (a URI) "
        f"or create the Airflow connection {name!r}"
    )
