"""HTTP for the client: authentication, timeouts, retries with backoff, errors as typed exceptions."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests
from urllib3.exceptions import NewConnectionError

from runplane_client.endpoints import Endpoint
from runplane_client.errors import ApiConnectionError, RunplaneError, ServerError, from_answer
from runplane_client.models import Request
from runplane_client.version import __version__

# refused before anything was done: safe to send again whatever the request
NOT_APPLIED = frozenset({429, 503})
# unknown whether it was applied: sent again only when the endpoint is repeatable
UNKNOWN = frozenset({500, 502, 504})
# refusals that ask for the same request again (another request held what this one needed)
TRY_AGAIN = frozenset({"runnable_name_busy", "run_busy"})


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are sent again: up to `retries` more times, after a pause that doubles from
    `base_delay` up to `max_delay` (with jitter: half of it, plus up to half at random), or after what
    `Retry-After` asks for. An answer asking for more than `max_retry_after` seconds is raised at once."""

    retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0

    def pause(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` in seconds: a number of seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds()) if when.tzinfo else None


def _never_sent(error: requests.RequestException) -> bool:
    """The request failed before a byte of it reached the server (no connection could be made)."""
    reason = getattr(error.args[0] if error.args else None, "reason", None)
    return isinstance(error, requests.ConnectTimeout) or isinstance(reason, NewConnectionError)


class Transport:
    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: float,
        retry: RetryPolicy,
        session: requests.Session | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.timeout, self.retry = timeout, retry
        self.session = session or requests.Session()
        self.headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": f"runplane-client/{__version__}",
        }

    def close(self) -> None:
        self.session.close()

    def call(
        self,
        endpoint: Endpoint,
        *,
        path: dict[str, str] | None = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        body: Request | None = None,
        wait: float = 0.0,
    ) -> Any:
        """The decoded JSON answer of `endpoint` (None for a 204). `wait`: seconds the server may hold the
        answer (a long poll), added to the read timeout."""
        self._check(endpoint, query or {}, headers or {}, body)
        url = self.api_url + endpoint.path.format(**{k: quote(v, safe="") for k, v in (path or {}).items()})
        params = {k: _param(v) for k, v in (query or {}).items() if v is not None}
        request = {
            "params": params,
            "headers": {**self.headers, **(headers or {})},
            "timeout": (self.timeout, self.timeout + wait),
        }
        if body is not None:
            request["json"] = body.body()
        attempts = 0
        while True:
            attempts += 1
            try:
                response = self.session.request(endpoint.method, url, **request)
            except requests.RequestException as error:
                failure = ApiConnectionError(None, "connection_error", str(error), attempts=attempts)
                retryable = endpoint.repeatable or _never_sent(error)
                self._pause_or_raise(failure, attempts, retryable, None, error)
                continue
            if response.status_code < 400:
                return _json(response)
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            failure = from_answer(
                response.status_code, _decoded(response), attempts=attempts, retry_after=retry_after
            )
            status = response.status_code
            retryable = (
                status in NOT_APPLIED
                or failure.code in TRY_AGAIN
                or (status in UNKNOWN and endpoint.repeatable)
            )
            self._pause_or_raise(failure, attempts, retryable, retry_after)

    def _pause_or_raise(
        self,
        failure: RunplaneError,
        attempts: int,
        retryable: bool,
        retry_after: float | None,
        cause: Exception | None = None,
    ) -> None:
        too_late = retry_after is not None and retry_after > self.retry.max_retry_after
        if not retryable or attempts > self.retry.retries or too_late:
            raise failure from cause
        time.sleep(self.retry.pause(attempts, retry_after))

    @staticmethod
    def _check(endpoint: Endpoint, query: dict[str, Any], headers: dict[str, str], body: Any) -> None:
        """A call matches its endpoint's declaration (what the drift test compares with the document)."""
        unknown = (set(query) - set(endpoint.query)) | (set(headers) - set(endpoint.headers))
        if unknown:
            raise ValueError(f"{endpoint.method} {endpoint.path} declares no {sorted(unknown)}")
        fits = body is None if endpoint.body is None else isinstance(body, endpoint.body)
        if not fits:
            raise TypeError(f"{endpoint.method} {endpoint.path} takes {endpoint.body}, not {type(body)}")


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone: the API needs one")
        return value.isoformat()
    return str(value)


def _json(response: requests.Response) -> Any:
    """A 2xx answer's JSON; ServerError when it is none (not the API at this URL, perhaps)."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type", "no content type")
        raise ServerError(
            response.status_code,
            "not_json",
            f"the answer to {response.url} is not JSON ({kind}): is this the API?",
        ) from None


def _decoded(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text.strip()
