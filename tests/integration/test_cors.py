"""CORS (setting `cors_origins`): none by default; an allowed origin's preflights answered without a key and
its answers naming it, other origins' answers only varying by Origin; either API type's events, through the
api handler and through the local gateway."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from pydantic import ValidationError
from runplane.api.app import create_app
from runplane.api.cors import ALLOW_HEADERS, EXPOSE_HEADERS
from runplane.local.gateway import Gateway
from runplane.logic import services
from runplane.logic.keys import CreatedKey
from runplane.settings import Settings

from tests.conftest import Api, Reply
from tests.unit.test_api_imports import steps  # noqa: F401 - the handler's imports, request by request

APP = "https://app.example.com"
DEV = "http://localhost:5173"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}
API_TYPES = ("http", "rest")


@pytest.fixture
def deployed(account: CreatedKey, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Api]]:
    """An Api behind an API of `api_type` whose deployment allows `origins` (none: the setting unset)."""

    def make(api_type: str = "http", origins: str | None = f"{APP},{DEV}") -> Api:
        monkeypatch.setenv("RUNPLANE_API_TYPE", api_type)
        if origins is None:
            monkeypatch.delenv("RUNPLANE_CORS_ORIGINS", raising=False)
        else:
            monkeypatch.setenv("RUNPLANE_CORS_ORIGINS", origins)
        services.reset()
        return Api(account.token)

    yield make
    services.reset()


def cors_headers(reply: Reply) -> dict[str, str]:
    return {k: v for k, v in reply.headers.items() if k.lower().startswith("access-control-") or k == "Vary"}


def listed(value: str) -> list[str]:
    return [part.strip() for part in value.split(",")]


@pytest.mark.parametrize("api_type", API_TYPES)
def test_by_default_no_answer_has_cors_headers_and_a_preflight_needs_a_key(
    deployed: Callable[..., Api], api_type: str
) -> None:
    api = deployed(api_type, origins=None)
    assert cors_headers(api.get("/v1/runs", headers={"Origin": APP})) == {}
    preflight = api.call("OPTIONS", "/v1/runs", headers={"Origin": APP, **PREFLIGHT}, token=None)
    assert (preflight.status, cors_headers(preflight)) == (401, {})


@pytest.mark.parametrize("api_type", API_TYPES)
def test_an_allowed_origins_preflight_is_answered_without_a_key(
    deployed: Callable[..., Api], api_type: str
) -> None:
    api = deployed(api_type)
    for origin in (APP, DEV):
        reply = api.call(
            "OPTIONS", "/v1/runnable/x/runs", headers={"Origin": origin, **PREFLIGHT}, token=None
        )
        assert (reply.status, reply.text) == (204, "")
        headers = cors_headers(reply)
        assert headers["Access-Control-Allow-Origin"] == origin
        assert headers["Vary"] == "Origin"
        assert set(listed(headers["Access-Control-Allow-Methods"])) >= {"GET", "POST", "PUT", "DELETE"}
        allowed = listed(headers["Access-Control-Allow-Headers"])
        assert {"Authorization", "Content-Type", "Idempotency-Key", "Prefer"} <= set(allowed)
        assert int(headers["Access-Control-Max-Age"]) > 0
        assert "Access-Control-Allow-Credentials" not in headers


@pytest.mark.parametrize("api_type", API_TYPES)
def test_an_allowed_origins_answers_name_it_errors_included(
    deployed: Callable[..., Api], api_type: str, echo_id: str
) -> None:
    api = deployed(api_type)
    started = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {}}, headers={"Origin": APP})
    refused = api.get("/v1/runs", headers={"Origin": DEV}, token="rpk_0000000000000000_wrong")
    head = api.call("HEAD", "/v1/runs", headers={"Origin": APP})
    for reply, origin in ((started, APP), (refused, DEV), (head, APP)):
        headers = cors_headers(reply)
        assert headers["Access-Control-Allow-Origin"] == origin, reply.status
        assert headers["Vary"] == "Origin"
        assert {"Location", "Retry-After", "ETag"} <= set(listed(headers["Access-Control-Expose-Headers"]))
    assert (started.status, refused.status, head.status, head.text) == (202, 401, 200, "")
    assert started.headers["Location"].endswith(f"/v1/run/{started.json()['id']}")


@pytest.mark.parametrize("api_type", API_TYPES)
def test_another_origin_gets_no_cors_headers_and_its_preflight_is_an_ordinary_options(
    deployed: Callable[..., Api], api_type: str
) -> None:
    api = deployed(api_type)
    for origin in ("https://evil.example.com", f"{APP}.evil.example.com", "null", APP.upper()):
        reply = api.get("/v1/runs", headers={"Origin": origin})
        assert (reply.status, cors_headers(reply)) == (200, {"Vary": "Origin"}), origin
        preflight = api.call("OPTIONS", "/v1/runs", headers={"Origin": origin, **PREFLIGHT}, token=None)
        assert (preflight.status, cors_headers(preflight)) == (401, {"Vary": "Origin"}), origin
    no_origin = api.get("/v1/runs")
    assert cors_headers(no_origin) == {"Vary": "Origin"}
    options = api.call(
        "OPTIONS", "/v1/runnables", headers={"Origin": APP}
    )  # not a preflight: no request method
    assert (options.status, options.headers["Allow"]) == (204, "GET, POST, HEAD, OPTIONS")
    assert cors_headers(options)["Access-Control-Allow-Origin"] == APP


def test_any_origin_is_allowed_with_a_star_and_never_with_credentials(deployed: Callable[..., Api]) -> None:
    api = deployed("rest", origins="*")
    reply = api.get("/v1/runs", headers={"Origin": "https://anywhere.example"})
    assert cors_headers(reply)["Access-Control-Allow-Origin"] == "*"
    preflight = api.call("OPTIONS", "/v1/runs", headers={"Origin": DEV, **PREFLIGHT}, token=None)
    assert preflight.status == 204
    assert cors_headers(preflight)["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in preflight.headers


def test_the_console_is_served_as_before(deployed: Callable[..., Api]) -> None:
    api = deployed()
    reply = api.get("/console/", headers={"Origin": APP}, token=None)
    assert reply.status == 200
    assert cors_headers(reply) == {}  # its files are for its own origin (Cross-Origin-Resource-Policy)


@pytest.mark.parametrize(
    "value",
    [
        "*,https://app.example.com",
        "https://app.example.com/",
        "https://app.example.com/console",
        "https://App.example.com",
        "https://app.example.com:443",
        "http://app.example.com:80",
        "app.example.com",
        "ftp://app.example.com",
        "https://user@app.example.com",
        "https://app.example.com:port",
    ],
)
def test_the_setting_takes_exact_origins_or_a_star_alone(value: str) -> None:
    with pytest.raises(ValidationError, match="cors_origins"):
        Settings.from_env({"RUNPLANE_CORS_ORIGINS": value})


def test_the_setting_is_comma_separated_and_empty_by_default() -> None:
    assert Settings().cors_origins == []
    given = Settings.from_env(
        {"RUNPLANE_CORS_ORIGINS": f" {APP}, {DEV},http://[::1]:8080,https://a.example:8443"}
    )
    assert given.cors_origins == [APP, DEV, "http://[::1]:8080", "https://a.example:8443"]


def test_without_origins_the_handler_never_imports_the_cors_module(steps: dict) -> None:  # noqa: F811
    assert [name for step in steps.values() for name in step["modules"] if "cors" in name] == []
    assert steps["/v1/runs"]["status"] == 200


def test_the_lists_name_what_the_api_reads_and_sends() -> None:
    assert {"Idempotency-Key", "Prefer", "Last-Event-ID"} <= set(ALLOW_HEADERS)
    assert {"Idempotent-Replayed", "Location", "Retry-After"} <= set(EXPOSE_HEADERS)


@pytest.mark.parametrize("api_type", API_TYPES)
def test_the_local_gateway_passes_them_through(
    deployed: Callable[..., Api], api_type: str, account: CreatedKey
) -> None:
    deployed(api_type)
    gateway = Gateway("127.0.0.1", 0, create_app)
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            preflight = client.options("/v1/runs", headers={"Origin": APP, **PREFLIGHT})
            listing = client.get(
                "/v1/runs", headers={"Origin": APP, "Authorization": f"Bearer {account.token}"}
            )
    finally:
        gateway.stop()
        thread.join(5)
    assert (preflight.status_code, preflight.headers["access-control-allow-origin"]) == (204, APP)
    assert (listing.status_code, listing.headers["access-control-allow-origin"]) == (200, APP)
    assert listing.headers.get_list("vary") == ["Origin"]
