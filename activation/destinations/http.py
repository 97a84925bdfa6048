"""HTTP JSON API destination: batched upserts and deletes, retried politely.

Protocol (what a receiving API implements; most audience APIs map onto it with a small adapter):
- `POST <base>/<upsert_path>` body `{"sync": name, "records": [{field: value, ...}, ...]}`
- `POST <base>/<delete_path>` body `{"sync": name, "keys": ["p1", ...]}`
- header `Authorization: Bearer <token>` and `Idempotency-Key` (same run + batch -> same key, so a retried
  request the server already applied can be recognised);
- a 2xx answer acknowledges the batch; its JSON body may list refused records:
  `{"errors": [{"key": "p1", "reason": "..."}, {"index": 3, "reason": "..."}]}`.
- 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter, waiting at
  least what `Retry-After` says (seconds or an HTTP date); other 4xx stop the run (a bug, not a blip).

Connection: a URI (`https://:TOKEN@api.example.com/v1`, or `?token=`) or an Airflow HTTP connection with the
token as password or extra `token`. Options (sync YAML `destination:`): `upsert_path` (records),
`delete_path` (records/delete), `timeout_s` (10), `max_attempts` (6), `backoff_s` (0.5), `max_backoff_s` (30).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pyarrow as pa

from touchpoint.activation.connections import ConnectionInfo
from touchpoint.activation.definitions import relative_api_path
from touchpoint.activation.destinations import BatchResult, DestinationError, DestinationUnavailableError

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 300.0


class HttpRetriesExhaustedError(DestinationUnavailableError):
    """The API kept failing transiently for every attempt (a later run may find it back)."""


def base_url(conn: ConnectionInfo) -> str:
    host = conn.host or ""
    if host.startswith(("http://", "https://")):
        url = host.rstrip("/")
    else:
        scheme = conn.conn_type if conn.conn_type in ("http", "https") else conn.extra.get("scheme", "https")
        url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    if conn.schema:
        url += "/" + conn.schema.strip("/")
    return url


def token_of(conn: ConnectionInfo) -> str | None:
    return conn.extra.get("token") or conn.password


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header (delta seconds or HTTP date) into seconds to wait."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _checked_path(path: str, option: str) -> str:
    try:
        return relative_api_path(path)
    except ValueError as error:
        raise DestinationError(f"HTTP destination {option} {error}") from error


class HttpDestination:
    def __init__(
        self,
        connection: ConnectionInfo,
        *,
        sync_name: str,
        primary_key: str,
        run_id: str = "",
        upsert_path: str = "records",
        delete_path: str = "records/delete",
        timeout_s: float = 10.0,
        max_attempts: int = 6,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base_url(connection)
        self.token = token_of(connection)
        self.sync_name = sync_name
        self.primary_key = primary_key
        self.run_id = run_id
        self.upsert_path = _checked_path(upsert_path, "upsert_path")
        self.delete_path = _checked_path(delete_path, "delete_path")
        self.timeout_s = float(timeout_s)
        self.max_attempts = int(max_attempts)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.attempts = 0  # requests made, for progress and tests
        self.retries = 0
        self._client: httpx.Client | None = None

    def open(self, schema: pa.Schema) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "touchpoint-activation"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # no redirects: the bearer token is only for the configured host (rule 6)
        self._client = httpx.Client(
            base_url=self.base, headers=headers, timeout=self.timeout_s, follow_redirects=False
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)  # "equal jitter": spread, never zero
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        return delay

    def _post(self, path: str, payload: dict[str, Any]) -> Any:
        if self._client is None:
            raise DestinationError("HTTP destination used before open()")
        body = json.dumps(payload, default=_json_default, separators=(",", ":")).encode()
        # same run + same batch -> same key (retries, resumed attempts); a later run re-sending equal content
        # (e.g. re-consent after a delete) gets a new key so the server does not discard it as a replay
        seed = f"{self.run_id}\0{path}\0".encode() + body
        headers = {"Idempotency-Key": hashlib.sha256(seed).hexdigest()}
        last_problem = ""
        for attempt in range(self.max_attempts):
            self.attempts += 1
            retry_after: float | None = None
            request = self._client.build_request("POST", path, content=body, headers=headers)
            self._check_target(request.url)
            try:
                response = self._client.send(request)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                last_problem = f"{type(error).__name__}: {error}"
            else:
                if 200 <= response.status_code < 300:
                    try:
                        return response.json() if response.content else {}
                    except ValueError:
                        return {}
                if response.status_code not in RETRYABLE_STATUS:
                    raise DestinationError(
                        f"{self.base}/{path} answered {response.status_code}: {response.text[:500]}"
                    )
                last_problem = f"HTTP {response.status_code}"
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt + 1 < self.max_attempts:
                self.retries += 1
                self.sleep(self._backoff(attempt, retry_after))
        raise HttpRetriesExhaustedError(
            f"{self.base}/{path}: gave up after {self.max_attempts} attempts (last: {last_problem})"
        )

    def _check_target(self, url: httpx.URL) -> None:
        """Refuse to send (and so to send the token) anywhere but under the configured base URL."""
        base = httpx.URL(self.base + "/")
        same_origin = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
        if not same_origin or not url.path.startswith(base.path):
            raise DestinationError(f"refusing to send to {url.scheme}://{url.host}{url.path}: not under {self.base}")

    def _refused(self, answer: Any, keys: list[str]) -> dict[str, str]:
        refused: dict[str, str] = {}
        known = set(keys)
        errors = answer.get("errors") if isinstance(answer, dict) else None
        for error in errors or []:
            if not isinstance(error, dict):
                continue
            reason = str(error.get("reason") or error.get("error") or error.get("message") or "refused")
            key = error.get("key")
            if key is None and isinstance(error.get("index"), int) and 0 <= error["index"] < len(keys):
                key = keys[error["index"]]
            if key is not None and str(key) in known:
                refused[str(key)] = reason
        return refused

    def upsert(self, rows: pa.Table) -> BatchResult:
        records = [
            {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}
            for record in rows.to_pylist()
        ]  # NaN is not JSON
        keys = [str(r[self.primary_key]) for r in records]
        answer = self._post(self.upsert_path, {"sync": self.sync_name, "records": records})
        return BatchResult(refused=self._refused(answer, keys))

    def delete(self, keys: list[str]) -> BatchResult:
        answer = self._post(self.delete_path, {"sync": self.sync_name, "keys": list(keys)})
        return BatchResult(refused=self._refused(answer, list(keys)))
