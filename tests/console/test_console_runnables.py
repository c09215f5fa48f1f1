"""The console in Chromium against `runplane local`: registering a runnable with the API's errors next to
its fields, starting a run from the form its input_schema makes, the account page (usage chart, secret,
keys), keyboard use, and screenshots at 1280x800 and a phone's width, light and dark."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from tests.console.conftest import ARTIFACTS, DESKTOP, NARROW, Console, ended, eventually, start
from tests.local_stack import Stack
from tests.receiver import Answer, receiving

pytestmark = pytest.mark.e2e

SCHEMA = {
    "type": "object",
    "required": ["name", "times"],
    "properties": {
        "name": {"type": "string", "title": "Who", "minLength": 1},
        "times": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
        "ratio": {"type": "number", "description": "Any number"},
        "loud": {"type": "boolean", "default": False},
        "tone": {"enum": ["warm", "dry"]},
        "where": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}}},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def field(path: str) -> str:
    return f"[data-path='{path}'] :is(input, select, textarea)"


def error(path: str) -> str:
    return f"[data-path='{path}'] > .field-error"


def test_a_runnable_is_registered_with_the_apis_errors_by_its_fields_then_run_from_its_form(
    console: Console, stack: Stack
) -> None:
    page = console.page
    name = f"greeter-{uuid.uuid4().hex[:6]}"
    console.sign_in("#/runnables")
    page.click("#new-runnable")
    page.fill(field("name"), name)
    page.fill(field("config"), '{"function": "nope"}')
    page.fill(field("input_schema"), json.dumps(SCHEMA))
    page.fill(field("max_concurrency"), "0")
    page.click("button[type=submit]")
    page.wait_for_selector(f"{error('max_concurrency')}:visible")
    assert "greater than or equal to 1" in page.text_content(error("max_concurrency"))
    assert page.get_attribute(field("max_concurrency"), "aria-invalid") == "true"
    assert page.text_content(".summary .error-message") == "Request validation failed"

    page.fill(field("max_concurrency"), "2")
    page.click("button[type=submit]")
    page.wait_for_selector(f"{error('config')}:visible")
    assert page.text_content(error("config")).startswith("config.function: registered functions: ")
    assert page.text_content(".summary .error-message") == "no python runnable named 'nope' is registered"
    assert page.get_attribute(field("max_concurrency"), "aria-invalid") is None

    page.fill(field("config"), "{oops")
    page.click("button[type=submit]")
    page.wait_for_selector(f"{error('config')}:has-text('is not valid JSON')")

    page.fill(field("config"), '{"function": "echo"}')
    page.click("button[type=submit]")
    page.wait_for_selector(f"h1:has-text('{name}')")
    runnable_id = page.url.rsplit("/", 1)[-1]
    assert stack.call("GET", f"/v1/runnable/{runnable_id}").json()["input_schema"] == SCHEMA

    page.click("#start-run")
    page.wait_for_selector("#start")
    assert page.input_value(field("inputs.times")) == "1"
    assert page.get_attribute(field("inputs.times"), "step") == "1"
    assert page.eval_on_selector(field("inputs.tone"), "s => [...s.options].map(o => o.text)") == [
        "— not set —",
        "warm",
        "dry",
    ]
    assert page.get_attribute(field("inputs.loud"), "type") == "checkbox"
    assert page.eval_on_selector(field("inputs.tags"), "e => e.tagName") == "TEXTAREA"
    assert page.is_visible("fieldset[data-path='inputs.where'] legend:has-text('where')")
    page.fill(field("inputs.times"), "0")
    page.click("#start")
    page.wait_for_selector(f"{error('inputs.times')}:visible")
    assert page.text_content(error("inputs.times")) == "0 is less than the minimum of 1"
    assert page.text_content(error("inputs.name")) == "'name' is a required property"
    console.shot("desktop-form-errors", full_page=True)

    page.fill(field("inputs.name"), "Ada <b>Lovelace</b>")
    page.fill(field("inputs.times"), "3")
    page.fill(field("inputs.ratio"), "0.5")
    page.check(field("inputs.loud"))
    page.select_option(field("inputs.tone"), label="dry")
    page.fill(field("inputs.where.city"), "Paris")
    page.fill(field("inputs.where.zip"), "75001")
    page.fill(field("inputs.tags"), '["a", "b"]')
    page.click("#start")
    page.wait_for_selector("#run-status [data-status='completed']")
    run_id = page.url.rsplit("/", 1)[-1]
    expected = {
        "name": "Ada <b>Lovelace</b>",
        "times": 3,
        "ratio": 0.5,
        "loud": True,
        "tone": "dry",
        "where": {"city": "Paris", "zip": 75001},
        "tags": ["a", "b"],
    }
    assert stack.call("GET", f"/v1/run/{run_id}").json()["result"]["outputs"] == expected
    assert json.loads(page.text_content("#run-outputs pre")) == expected

    console.go(f"#/runnable/{runnable_id}/edit")
    page.wait_for_selector(f"h1:has-text('Edit {name}')")
    assert page.input_value(field("max_concurrency")) == "2"
    page.fill(field("tags"), "greeting, demo")
    page.click("button[type=submit]")
    page.wait_for_selector("dd:has-text('greeting, demo')")


def test_the_account_page_charts_usage_reveals_and_rotates_the_secret_and_manages_keys(
    console: Console, stack: Stack
) -> None:
    ended(stack, start(stack, "llm"), start(stack, "llm"))
    page = console.page
    console.sign_in("#/account")
    page.wait_for_selector(".chart svg rect.bar")
    assert page.locator(".chart").count() == 2
    assert page.locator(".chart:nth-child(1) rect.bar").count() == 2  # today's input and output
    assert page.locator(".chart:nth-child(2) rect.bar").count() == 1
    assert page.text_content("#usage-cost") not in ("$0", "—")
    label = page.get_attribute(".chart:nth-child(1) svg", "aria-label")
    assert re.fullmatch(r"Tokens per day: \S+ over 30 days", label), label
    assert page.text_content("#concurrency").strip().endswith("running")

    page.click("#reveal-secret")
    secret = page.text_content("#secret")
    assert secret.startswith("whsec_")
    page.click("#secret-out + .actions button:has-text('Rotate')")
    page.click("button:has-text('Rotate now')")
    page.wait_for_function("(old) => document.querySelector('#secret')?.textContent !== old", arg=secret)
    assert page.text_content("#secret") == stack.call("GET", "/v1/callbacks/secret").json()["secret"]

    page.click("summary:has-text('Create a key')")
    page.fill("#key-name", "console test")
    page.uncheck("#scope-runs-write")
    page.click("button:has-text('Create a key')")
    created = page.text_content("#key-created code")
    assert created.startswith("rpk_")
    key_id = created.split("_")[1]
    row = f"tr[data-key-id='{key_id}']"
    page.wait_for_selector(row)
    scopes = page.text_content(f"{row} td:nth-child(3)").split(", ")
    assert sorted(scopes) == ["runnables:read", "runnables:write", "runs:read"]
    page.click(f"{row} button:has-text('Revoke')")
    page.click(f"{row} button:has-text('Revoke {key_id}')")
    page.wait_for_selector(f"{row} td:has-text('revoked')")
    assert stack.call("GET", "/v1/runs", headers={"Authorization": f"Bearer {created}"}).status_code == 401


def test_the_account_page_lists_a_dead_callback_and_replays_it(console: Console, stack: Stack) -> None:
    with receiving(Answer(500)) as receiver:
        run_id = start(stack, "echo", {"x": 1}, callback_url=receiver.url)
        ended(stack, run_id)
        callbacks = f"/v1/run/{run_id}/callbacks"
        [dead] = eventually(
            lambda: [d for d in stack.call("GET", callbacks).json()["items"] if d["state"] == "dead"]
        )
        page = console.page
        console.sign_in("#/account")
        row = f"#dead-list tr[data-delivery-id='{dead['id']}']"
        page.wait_for_selector(row)
        assert page.get_attribute(f"{row} a", "href") == f"#/run/{run_id}"
        assert receiver.url in page.text_content(row)
        assert "500" in page.text_content(f"{row} td:nth-child(4)")

        receiver.script = [Answer(200)]
        page.click("#replay-dead")
        page.wait_for_selector(row, state="detached")
        eventually(lambda: stack.call("GET", callbacks).json()["items"][0]["state"] == "succeeded")
    page.wait_for_selector("#dead-list .empty")


def test_the_console_is_usable_from_the_keyboard(console: Console, stack: Stack) -> None:
    page = console.page
    console.open()
    page.keyboard.type(console.key)  # the key field has the focus
    page.keyboard.press("Enter")
    page.wait_for_selector("#runs tr[data-run-id], #runs td.empty")
    assert page.evaluate("document.activeElement.id") == "main"  # a new page: its content has the focus
    page.reload()
    page.wait_for_selector("#runs tr[data-run-id], #runs td.empty")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Runnables":
            break
    page.keyboard.press("Enter")
    page.wait_for_selector("h1:has-text('Runnables')")
    page.focus("tr[data-runnable-id] a")
    page.keyboard.press("Enter")
    page.wait_for_selector("#start-run")


def shots(console: Console, name: str, run_id: str, **viewport: Any) -> None:
    """The runs list, a run, the account and a run form, each as a screenshot named `name`-…"""
    page = console.page
    page.set_viewport_size(viewport or DESKTOP)
    console.go("#/runs")
    page.wait_for_selector(f"#runs tr[data-run-id='{run_id}']")
    console.shot(f"{name}-runs")
    console.go(f"#/run/{run_id}")
    page.wait_for_selector("#following:has-text('ended')")
    console.shot(f"{name}-run", full_page=True)
    console.go("#/account")
    page.wait_for_selector(".chart svg rect.bar")
    console.shot(f"{name}-account", full_page=True)
    console.go(f"#/runnable/{console.stack.runnable('sleep')}/run")
    page.wait_for_selector("#start")
    console.shot(f"{name}-start")
    for fragment, ready in [("#/runs", "#runs tr"), (f"#/run/{run_id}", "#run-log"), ("#/account", ".chart")]:
        console.go(fragment)
        page.wait_for_selector(ready)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (name, fragment, overflow)  # wide tables scroll in their own box


def test_screenshots_at_desktop_and_narrow_widths_in_light_and_dark(
    console: Console, stack: Stack, browser: Any
) -> None:
    running = start(stack, "sleep", {"seconds": 60})
    usage = [{"provider": "openai", "model": "gpt-4o", "prompt_tokens": 1200, "completion_tokens": 340}]
    done = [
        start(stack, "usage", {"usage": usage}),
        start(stack, "fail", {"message": "no such order"}),
        start(stack, "echo", {"hi": 1}),
    ]
    ended(stack, *done)
    console.sign_in("#/runs")
    console.page.wait_for_selector(f"#runs tr[data-run-id='{running}'] [data-status='running']")
    console.shot("readme")
    shots(console, "desktop", done[0])
    shots(console, "narrow", done[0], **NARROW)
    dark = Console(browser.new_context(viewport=DESKTOP, color_scheme="dark").new_page(), stack)
    try:
        dark.sign_in("#/runs")
        background = dark.page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert sum(int(part) for part in background[4:-1].split(",")) < 120, background
        shots(dark, "dark", done[0])
    finally:
        dark.page.context.close()
    assert stack.call("POST", f"/v1/run/{running}/cancel").status_code in (200, 202)
    ended(stack, running)
    assert {path.name for path in ARTIFACTS.glob("*.png")} >= {
        f"{name}-{view}.png"
        for name in ("desktop", "narrow", "dark")
        for view in ("runs", "run", "account", "start")
    }
