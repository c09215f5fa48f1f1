"""What the front door refuses and answers itself: bodies that are not objects, duplicate keys, forged
cursors, non-RFC 3339 dates, methods a path does not serve, HEAD and OPTIONS, and the doors without a key."""

from __future__ import annotations

import base64
import json

import pytest
from runplane.logic import keys
from runplane.logic.keys import CreatedKey

from tests.conftest import Api, drain, make_runnable

UNKNOWN = "7c1f7a9e-8e1a-4a39-9a53-5b8e4f0f1d11"
RUN_BODY_ROUTES = [
    "/v1/runnable/{echo}/runs",
    "/v1/agents/run/{echo}/async/",
    "/v1/agents/run/{echo}/",
    "/v1/agents/run/{echo}/async/many/",
    "/api/agents/{echo}/run-async",
    "/api/agents/{echo}/run-sync",
]
OTHER_BODY_ROUTES = [("POST", "/v1/runnables"), ("PUT", "/v1/runnable/{echo}"), ("POST", "/v1/keys")]
NOT_OBJECTS = ["[]", '[{"scopes": ["admin"]}]', "null", "7", '"text"', "true"]


def _code(reply) -> str:
    return reply.json()["code"]


@pytest.mark.parametrize("raw", NOT_OBJECTS)
def test_a_body_that_is_not_an_object_is_400_on_every_body_route_and_starts_nothing(
    api: Api, echo_id: str, raw: str
) -> None:
    routes = [("POST", path) for path in RUN_BODY_ROUTES] + OTHER_BODY_ROUTES
    for method, path in routes:
        reply = api.call(method, path.replace("{echo}", echo_id), raw=raw)
        assert reply.status == 400, (path, reply.text)
        assert _code(reply) == "invalid_body", path
    assert api.get("/v1/runs").json()["items"] == []
    assert len(api.get("/v1/keys").json()["items"]) == 1  # the array did not create an admin key
    assert [r["id"] for r in api.get("/v1/runnables").json()["items"]] == [echo_id]


def test_the_body_error_is_in_each_dialects_shape(api: Api, echo_id: str) -> None:
    roe = api.call("POST", f"/v1/agents/run/{echo_id}/async/", raw="[1]").json()
    assert roe["status_code"] == 400
    assert roe["error"] == "Invalid agent input data"
    cotool = api.call("POST", f"/api/agents/{echo_id}/run-async", raw="null").json()
    assert set(cotool) == {"error", "code", "issues"}


def test_an_object_with_a_key_twice_is_refused(api: Api, echo_id: str) -> None:
    raw = '{"inputs": {"a": 1}, "inputs": {"a": 2}}'
    reply = api.call("POST", f"/v1/runnable/{echo_id}/runs", raw=raw)
    assert reply.status == 400
    assert _code(reply) == "invalid_json"
    assert "'inputs' twice" in reply.json()["error"]
    nested = '{"inputs": {"a": 1, "a": 2}}'
    assert api.call("POST", f"/v1/runnable/{echo_id}/runs", raw=nested).status == 400
    assert api.get("/v1/runs").json()["items"] == []


def test_a_body_sent_with_get_or_delete_is_ignored(api: Api, echo_id: str) -> None:
    assert api.call("GET", "/v1/runs", raw="[not json").status == 200
    reply = api.call("GET", "/v1/runs", raw="x", headers={"Content-Type": "text/plain"})
    assert reply.status == 200


def _cursor(key: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.fixture
def listed(api: Api, account: CreatedKey, echo_id: str) -> dict[str, str]:
    """Three runs (a page of one has a next cursor) and the real cursors of the listings."""
    for _ in range(3):
        api.post(f"/v1/runnable/{echo_id}/runs")
    make_runnable(account.account_id, "echo")
    return {
        "/v1/runs": api.get("/v1/runs?limit=1").json()["next_cursor"],
        "/v1/runnables": api.get("/v1/runnables?limit=1").json()["next_cursor"],
        f"/v1/agents/{echo_id}/jobs/": api.get(f"/v1/agents/{echo_id}/jobs/?page_size=1").json()["next"],
    }


def test_every_listing_follows_its_own_cursor(api: Api, listed: dict[str, str]) -> None:
    assert api.get(f"/v1/runs?limit=1&cursor={listed['/v1/runs']}").json()["items"]
    assert api.get(f"/v1/runnables?limit=1&cursor={listed['/v1/runnables']}").json()["items"]


@pytest.mark.parametrize(
    "forged",
    [
        "!!!",
        _cursor([1, 2]),
        _cursor({"pk": 1, "account_id": True, "created_key": 2.5}),
        _cursor({"pk": "", "account_id": "", "created_key": ""}),
        _cursor({"pk": "acme#x", "account_id": "acme", "created_key": "x"}),
        _cursor({"account_id": 5, "id": False}),
        _cursor({"account_id": "acme", "id": ""}),
        _cursor({"account_id": "acme", "id": "not-a-uuid"}),
        base64.urlsafe_b64encode(b"[" * 1000).decode(),  # nests past the parser's recursion limit
        _cursor(
            {
                "pk": f"acme#{UNKNOWN}",
                "account_runnable": 7,
                "created_key": f"2026-01-01T00:00:00+00:00#{UNKNOWN}",
            }
        ),
    ],
)
def test_a_cursor_the_service_did_not_issue_is_400_on_every_listing(
    api: Api, listed: dict[str, str], echo_id: str, forged: str
) -> None:
    for path in ("/v1/runs", "/v1/runnables", f"/v1/agents/{echo_id}/jobs/"):
        reply = api.get(f"{path}?cursor={forged}")
        assert reply.status == 400, (path, reply.text)
        assert reply.json()["code"] == "invalid_cursor"


def test_a_cursor_of_another_account_or_listing_is_400(
    api: Api, listed: dict[str, str], echo_id: str
) -> None:
    other = Api(keys.create_key("globex").token)
    for path in ("/v1/runs", "/v1/runnables"):
        assert _code(other.get(f"{path}?cursor={listed[path]}")) == "invalid_cursor"
    assert _code(api.get(f"/v1/runnables?cursor={listed['/v1/runs']}")) == "invalid_cursor"
    assert _code(api.get(f"/v1/runs?status=completed&cursor={listed['/v1/runs']}")) == "invalid_cursor"


def test_a_cursor_outside_the_created_range_is_400_not_a_dynamodb_error(
    api: Api, listed: dict[str, str]
) -> None:
    cursor = listed["/v1/runs"]
    reply = api.get(f"/v1/runs?created_before=2001-01-01T00:00:00Z&cursor={cursor}")
    assert reply.status == 400
    assert _code(reply) == "invalid_cursor"


@pytest.mark.parametrize(
    "query",
    [
        "created_after=0",
        "created_after=1700000000",
        "created_before=2026-01-01",
        "created_after=yesterday",
    ],
)
def test_date_time_query_parameters_are_rfc3339_only(api: Api, echo_id: str, query: str) -> None:
    for path in ("/v1/runs", f"/v1/agents/{echo_id}/jobs/"):
        roe_query = query.replace("created_after", "created_from").replace("created_before", "created_to")
        reply = api.get(f"{path}?{roe_query if 'agents' in path else query}")
        assert reply.status == 400, (path, reply.text)


def test_a_date_time_needs_its_zone_except_in_roes_listing(api: Api, echo_id: str) -> None:
    """Roe AI's SDK sends Python's isoformat(), which has no zone for a naive datetime: UTC, then."""
    assert api.get("/v1/runs?created_after=2026-01-01T00:00:00").status == 400
    assert api.get(f"/v1/agents/{echo_id}/jobs/?created_from=2026-01-01T00:00:00.250").status == 200


def test_rfc3339_date_times_with_any_offset_are_accepted(api: Api) -> None:
    for stamp in ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5%2B02:00", "2026-01-01t00:00:00z"):
        assert api.get(f"/v1/runs?created_after={stamp}").status == 200, stamp


@pytest.mark.parametrize("query", ["end=0", "start=20260101", "start=2026-1-1", "end=2026-01-01T00:00:00Z"])
def test_usage_days_are_full_dates_only(api: Api, query: str) -> None:
    assert api.get(f"/v1/account/usage?{query}").status == 400
    assert api.get("/v1/account/usage?start=2026-01-01&end=2026-01-31").status == 200


def test_a_method_a_known_path_does_not_serve_is_405_with_allow(api: Api, echo_id: str) -> None:
    for method, path, allowed in [
        ("DELETE", "/v1/runs", "GET, HEAD, OPTIONS"),
        ("PATCH", f"/v1/runnable/{echo_id}", "DELETE, GET, PUT, HEAD, OPTIONS"),
        ("TRACE", "/v1/runnables", "GET, POST, HEAD, OPTIONS"),
        ("PROPFIND", f"/v1/agents/jobs/{echo_id}/status/", "GET, HEAD, OPTIONS"),
        ("GET", f"/api/agents/{echo_id}/run-async", "POST, OPTIONS"),
    ]:
        reply = api.call(method, path)
        assert reply.status == 405, (method, path, reply.text)
        assert reply.headers["Allow"] == allowed
    roe = api.call("PUT", f"/v1/agents/jobs/{echo_id}/cancel/").json()
    assert roe["status_code"] == 405  # in Roe AI's error shape


def test_an_unknown_path_is_still_404(api: Api) -> None:
    for method in ("GET", "TRACE"):
        reply = api.call(method, "/v2/anything")
        assert reply.status == 404
        assert _code(reply) == "route_not_found"


def test_options_lists_the_methods_and_head_answers_get_without_a_body(api: Api) -> None:
    options = api.call("OPTIONS", "/v1/runnables")
    assert (options.status, options.headers["Allow"], options.text) == (204, "GET, POST, HEAD, OPTIONS", "")
    head = api.call("HEAD", "/v1/runs")
    assert (head.status, head.text) == (200, "")
    assert head.headers["Content-Type"] == "application/json"
    assert api.call("HEAD", "/v1/runs", token=None).status == 401


def test_the_service_doors_need_no_key_and_nothing_else_opens(api: Api) -> None:
    root = api.get("/", token=None, headers={"Host": "runs.example.com"})
    assert root.status == 200
    assert root.json()["docs"] == "http://runs.example.com/docs"
    assert root.json()["openapi"] == "http://runs.example.com/openapi.json"
    assert api.get("/health", token=None).json() == {"status": "ok"}
    assert api.get("/health/", token=None).status == 200
    for path in ("/v1/runs", "/v1/runnables", "/api/agents", "/v1/account"):
        assert api.get(path, token=None).status == 401


def test_a_served_run_result_leaves_out_what_it_does_not_have(api: Api, echo_id: str) -> None:
    succeeded = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {"a": 1}}).json()["id"]
    failing = make_runnable("acme", "fail")
    failed = api.post(f"/v1/runnable/{failing}/runs").json()["id"]
    drain("worker")
    done = api.get(f"/v1/run/{succeeded}").json()["result"]
    assert "error" not in done
    assert done["outputs"] == {"a": 1}
    error = api.get(f"/v1/run/{failed}").json()["result"]
    assert "outputs" not in error
    assert error["error"]["message"]


@pytest.mark.parametrize(
    ("field", "typed"),
    [
        ("retry_on_worker_lost", [0, "true", "no", 1.0]),
        ("timeout_seconds", ["5", 5.5, True]),
        ("max_concurrency", ["2", 2.5, True]),
    ],
)
def test_json_types_are_what_the_schema_says_no_coercion(api: Api, field: str, typed: list) -> None:
    spec = {"name": "x", "kind": "python", "config": {"function": "echo"}}
    for value in typed:
        assert api.post("/v1/runnables", {**spec, field: value}).status == 400, value
    proper = {"retry_on_worker_lost": False, "timeout_seconds": 5.0, "max_concurrency": 2}[field]
    assert api.post("/v1/runnables", {**spec, field: proper}).status == 201  # 5.0 is a JSON integer


def test_a_creation_range_holding_no_instant_is_an_empty_page(api: Api, echo_id: str) -> None:
    api.post(f"/v1/runnable/{echo_id}/runs")
    stamp = "2030-01-01T00:00:00Z"
    reply = api.get(f"/v1/runs?created_after={stamp}&created_before={stamp}")
    assert (reply.status, reply.json()["items"]) == (200, [])
    assert (
        api.get(f"/v1/agents/{echo_id}/jobs/?created_from={stamp}&created_to=2001-01-01T00:00:00Z").status
        == 200
    )


def test_a_forged_cursor_is_refused_even_for_an_empty_range(api: Api) -> None:
    query = "created_after=2026-01-02T00:00:00Z&created_before=2026-01-01T00:00:00Z&cursor=garbage"
    assert _code(api.get(f"/v1/runs?{query}")) == "invalid_cursor"


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00%2B05:00", "9999-12-31T23:59:59-05:00", "2026-01-01 00:00:00Z"]
)
def test_a_date_time_out_of_range_in_utc_or_without_t_is_400(api: Api, echo_id: str, stamp: str) -> None:
    assert api.get(f"/v1/runs?created_after={stamp}").status == 400
    assert api.get(f"/v1/agents/{echo_id}/jobs/?created_from={stamp}").status == 400


@pytest.mark.parametrize("headers", [{"X-A": "v\n"}, {"X-A\n": "v"}])
def test_a_header_with_a_trailing_newline_is_refused(api: Api, headers: dict[str, str]) -> None:
    spec = {"name": "x", "kind": "http", "config": {"url": "https://example.com", "headers": headers}}
    assert api.post("/v1/runnables", spec).status == 400


def test_405_follows_the_resolvers_own_routes(api: Api) -> None:
    assert api.call("POST", "/openapi.json", token=None).status == 405  # a public door, any method
    reply = api.call("POST", "/docs")
    assert (reply.status, reply.headers["Allow"]) == (405, "GET, HEAD, OPTIONS")
