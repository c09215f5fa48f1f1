"""Where the API is and which key to use: arguments, then the environment, then a running local stack."""

from __future__ import annotations

import json
import os
from pathlib import Path

from runplane_client.errors import RunplaneError

LOCAL_STATE = Path(".runplane") / "local.json"  # what `runplane local` writes while it runs


class ConfigurationError(RunplaneError):
    """No API URL or key could be found."""

    def __init__(self, message: str):
        super().__init__(None, "configuration", message)


def find_local_stack(start: Path | None = None) -> dict | None:
    """The `.runplane/local.json` of the nearest folder from `start` (the working directory) upwards."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        try:
            return json.loads((candidate / LOCAL_STATE).read_text())
        except (OSError, ValueError):
            continue
    return None


def resolve(api_url: str | None, api_key: str | None) -> tuple[str, str]:
    """(api_url, api_key). The local stack's key is taken only for the local stack's URL."""
    url = api_url or os.environ.get("RUNPLANE_API_URL")
    key = api_key or os.environ.get("RUNPLANE_API_KEY")
    if not (url and key):
        local = find_local_stack() or {}
        if not url or url.rstrip("/") == str(local.get("api_url", "")).rstrip("/"):
            url, key = url or local.get("api_url"), key or local.get("api_key")
    if not url:
        raise ConfigurationError(
            "no API URL: pass api_url, set RUNPLANE_API_URL, or start the local stack (`make run`)"
        )
    if not key:
        raise ConfigurationError(f"no API key for {url}: pass api_key or set RUNPLANE_API_KEY")
    return url, key
