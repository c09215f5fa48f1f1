"""`Runplane`: the client, one HTTP session shared by its parts."""

from __future__ import annotations

import requests

from runplane_client.callbacks import Callbacks
from runplane_client.config import resolve
from runplane_client.resources import Resources
from runplane_client.runnables import Runnables
from runplane_client.runs import Runs
from runplane_client.transport import RetryPolicy, Transport


class Runplane:
    """A synchronous client of Runplane's native API.

    `api_url` and `api_key` default to RUNPLANE_API_URL and RUNPLANE_API_KEY, then to the local stack
    whose `.runplane/local.json` is found from the working directory up. `timeout`: seconds to connect
    and to wait for an answer (a long poll adds its wait). `retries`: how many times a failed request is
    sent again (a RetryPolicy sets the pauses too). A `session` may carry proxies or certificates.
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int | RetryPolicy = 3,
        session: requests.Session | None = None,
    ):
        url, key = resolve(api_url, api_key)
        policy = retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)
        self._transport = Transport(url, key, timeout=timeout, retry=policy, session=session)
        self.runnables = Runnables(self._transport)
        self.runs = Runs(self._transport, self.runnables)
        self.resources = Resources(self._transport)
        self.callbacks = Callbacks(self._transport)

    @property
    def api_url(self) -> str:
        return self._transport.api_url

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Runplane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Runplane({self.api_url!r})"
