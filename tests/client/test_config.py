"""Where the client finds the API and its key: arguments, RUNPLANE_API_URL / RUNPLANE_API_KEY, then the
`.runplane/local.json` of a running local stack, from the working directory up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from runplane_client import ConfigurationError, Runplane

from tests.client.servers import Reply, Scripted, scripted

EMPTY_PAGE = Reply(200, {"Content-Type": "application/json"}, b'{"items": [], "next_cursor": null}')


@pytest.fixture
def api() -> Iterator[Scripted]:
    with scripted(None, EMPTY_PAGE) as server:
        yield server


@pytest.fixture(autouse=True)
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variables set, and a working directory with no local stack above it."""
    monkeypatch.delenv("RUNPLANE_API_URL", raising=False)
    monkeypatch.delenv("RUNPLANE_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def key_sent(client: Runplane, api: Scripted) -> str:
    assert list(client.runnables.list()) == []
    return api.seen[-1].headers["Authorization"]


def local_stack(folder: Path, api_url: str, api_key: str) -> None:
    (folder / ".runplane").mkdir(parents=True)
    (folder / ".runplane" / "local.json").write_text(json.dumps({"api_url": api_url, "api_key": api_key}))


def test_arguments_come_first_then_the_environment(api: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPLANE_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("RUNPLANE_API_KEY", "rpk_from_env")
    assert key_sent(Runplane(api.url, "rpk_given"), api) == "Bearer rpk_given"
    assert key_sent(Runplane(api.url + "/"), api) == "Bearer rpk_from_env"
    monkeypatch.setenv("RUNPLANE_API_URL", api.url)
    client = Runplane()
    assert client.api_url == api.url
    assert key_sent(client, api) == "Bearer rpk_from_env"


def test_the_local_stack_is_found_from_a_folder_below_it(
    api: Scripted, nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_stack(nowhere, api.url, "rpk_local")
    below = nowhere / "a" / "b"
    below.mkdir(parents=True)
    monkeypatch.chdir(below)
    client = Runplane()
    assert client.api_url == api.url
    assert key_sent(client, api) == "Bearer rpk_local"
    assert key_sent(Runplane(api_key="rpk_mine"), api) == "Bearer rpk_mine"


def test_the_local_stacks_key_is_never_sent_elsewhere(
    api: Scripted, nowhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_stack(nowhere, "http://127.0.0.1:9", "rpk_local")
    with pytest.raises(ConfigurationError, match="no API key for"):
        Runplane(api.url)
    monkeypatch.setenv("RUNPLANE_API_URL", api.url)
    with pytest.raises(ConfigurationError):
        Runplane()


def test_nothing_configured_says_what_to_do() -> None:
    with pytest.raises(ConfigurationError, match="RUNPLANE_API_URL") as missing:
        Runplane()
    assert (missing.value.status, missing.value.code) == (None, "configuration")
