"""The console's files as the api function serves them, without a browser: content types, security and
caching headers, conditional requests, methods, unknown names and traversal attempts, in either API
type's event; the page's own rules (no inline script, no HTML from strings); the package carries them;
and a request that is not for the console never imports the console's module."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from runplane.api import console
from runplane.api.app import create_app, serve
from runplane.local.gateway import proxy_event
from runplane.local.lambda_context import LocalLambdaContext

from infra import bundle

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "functions" / "runplane" / "console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; "
    "trusted-types 'none'"
)


@pytest.fixture(params=["http", "rest"])
def get(request: pytest.FixtureRequest):
    api_type = request.param
    app = create_app(api_type)

    def call(path: str, method: str = "GET", headers: dict[str, str] | None = None) -> dict:
        multi = {name: [value] for name, value in (headers or {}).items()}
        event = proxy_event(method, path, multi, b"", "127.0.0.1", api_type=api_type)
        reply = serve(app, event, LocalLambdaContext("api"))
        return {**reply, "headers": {k.lower(): v for k, v in reply.get("headers", {}).items()}}

    return call


def test_the_page_is_served_with_its_content_type_and_security_headers(get) -> None:
    reply = get("/console/")
    headers = reply["headers"]
    assert reply["statusCode"] == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cache-control"] == "no-cache"
    assert re.fullmatch(r'"[0-9a-f]{32}"', headers["etag"])
    assert '<script type="module" src="app.js"></script>' in reply["body"]
    assert get("/console/index.html")["body"] == reply["body"]


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("run.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ],
)
def test_each_file_has_its_content_type_and_the_same_headers(get, name: str, content_type: str) -> None:
    reply = get(f"/console/{name}")
    assert reply["statusCode"] == 200
    assert reply["headers"]["content-type"] == content_type
    assert reply["headers"]["content-security-policy"] == CSP
    assert reply["body"] == (FOLDER / name).read_text()


def test_the_bare_path_redirects_to_the_folder_relatively_so_a_stage_prefix_stays(get) -> None:
    reply = get("/console")
    assert reply["statusCode"] == 308
    assert reply["headers"]["location"] == "console/"


def test_a_matching_etag_is_a_304_without_a_body_and_a_changed_one_the_file(get) -> None:
    etag = get("/console/app.js")["headers"]["etag"]
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        reply = get("/console/app.js", headers={"If-None-Match": sent})
        assert (reply["statusCode"], reply["body"], reply["headers"]["etag"]) == (304, "", etag), sent
    assert get("/console/app.js", headers={"If-None-Match": '"stale"'})["statusCode"] == 200
    assert get("/console/style.css")["headers"]["etag"] != etag


def test_head_has_the_headers_without_the_body_and_options_lists_the_methods(get) -> None:
    head = get("/console/app.js", "HEAD")
    assert (head["statusCode"], head["body"]) == (200, "")
    assert head["headers"]["content-type"] == "text/javascript; charset=utf-8"
    options = get("/console/", "OPTIONS")
    assert (options["statusCode"], options["headers"]["allow"]) == (204, "GET, HEAD, OPTIONS")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_in_the_apis_error_shape(get, method: str) -> None:
    reply = get("/console/app.js", method)
    assert reply["statusCode"] == 405
    assert reply["headers"]["allow"] == "GET, HEAD, OPTIONS"
    assert json.loads(reply["body"])["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "path",
    [
        "/console/nope.js",
        "/console/../runplane/api/app.py",
        "/console/..%2f..%2fsettings.py",
        "/console/%2e%2e/api/console.py",
        "/console/./app.js",
        "/console//app.js",
        "/console/app.js/",
        "/console/sub/app.js",
        "/console/.app.js",
        "/console/APP.JS",
        "/console/app.js%00.html",
        "/console/__init__.py",
        "/console/..",
    ],
)
def test_unknown_names_and_traversal_attempts_are_404(get, path: str) -> None:
    reply = get(path)
    assert reply["statusCode"] == 404, path
    assert json.loads(reply["body"]) == {
        "error": "No such console file",
        "code": "route_not_found",
        "issues": [],
    }


def test_a_path_that_only_starts_like_the_consoles_is_the_apis() -> None:
    event = proxy_event("GET", "/consoles", {}, b"", "127.0.0.1", api_type="http")
    reply = serve(create_app("http"), event, LocalLambdaContext("api"))
    assert (reply["statusCode"], json.loads(reply["body"])["code"]) == (401, "unauthorized")


def test_every_file_of_the_folder_is_served_and_only_those() -> None:
    files = {path.name for path in FOLDER.iterdir() if path.is_file()}
    assert set(console.assets()) == files
    assert {Path(name).suffix for name in files} <= set(console.TYPES)


def test_the_page_has_no_inline_script_style_or_handler_and_builds_no_html_from_strings() -> None:
    page = (FOLDER / "index.html").read_text()
    assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", page))
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page)
    scripts = {path.name: path.read_text() for path in FOLDER.glob("*.js")}
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|localStorage|"
        r"setAttribute\(\"style\"|\.cookie\b"
    )
    assert {name: forbidden.findall(text) for name, text in scripts.items() if forbidden.search(text)} == {}
    for name, text in scripts.items():  # small modules
        assert text.count("\n") < 400, name


def test_the_package_and_the_lambda_bundle_carry_the_files() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["runplane"]
    for path in FOLDER.iterdir():
        assert any(path.match(f"*/{pattern}") for pattern in patterns), path.name
    ignored = shutil.ignore_patterns("__pycache__", *bundle.LOCAL_ONLY)  # what infra.bundle leaves out
    assert ignored(str(FOLDER), [p.name for p in FOLDER.iterdir()]) == set()
    assert ignored(str(FOLDER.parent), ["console"]) == set()


def test_only_a_console_request_imports_the_consoles_module() -> None:
    probe = """
import json, sys
import runplane.handlers.api as handler
from runplane.local.gateway import proxy_event
from runplane.local.lambda_context import LocalLambdaContext
seen = ["runplane.api.console" in sys.modules]
for path in ("/health", "/console/"):
    event = proxy_event("GET", path, {}, b"", "127.0.0.1")
    status = handler.lambda_handler(event, LocalLambdaContext("api"))["statusCode"]
    seen.append([status, "runplane.api.console" in sys.modules])
print(json.dumps(seen))
"""
    environment = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], env=environment, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [False, [200, False], [200, True]]
