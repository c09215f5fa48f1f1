"""The console in Chromium against `runplane local`: signing in, the runs list and its filters and pages, a
run followed to its end, cancelling, redelivering a dead callback; the key never in a URL nor in local
storage; run data shown as text, and the CSP refusing script that would get in anyway."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.console.conftest import Console, ended, eventually, start
from tests.local_stack import Stack, free_port

pytestmark = pytest.mark.e2e

PAYLOAD_IMG = "<img src=x onerror=window.__pwned=1>"
PAYLOAD_SCRIPT = "<script>window.__pwned=2</script>"


def row_ids(console: Console) -> list[str]:
    return console.page.eval_on_selector_all(
        "#runs tr[data-run-id]", "rows => rows.map(r => r.dataset.runId)"
    )


def wait_rows(console: Console, count: int, without: str = "") -> None:
    """Until the list shows `count` runs, `without` not among them (a function: the CSP refuses eval)."""
    console.page.wait_for_function(
        """([count, without]) => document.querySelectorAll('#runs tr[data-run-id]').length === count
            && !document.querySelector(`#runs tr[data-run-id='${without}']`)""",
        arg=[count, without],
    )


def test_signing_in_shows_the_account_and_the_keys_scopes_and_a_bad_key_the_apis_words(
    console: Console, stack: Stack
) -> None:
    page = console.page
    console.open()
    assert page.evaluate("document.activeElement.id") == "key"
    page.fill("#key", "rpk_0000000000000000_not-a-real-secret-at-all-0000000000")
    page.press("#key", "Enter")
    page.wait_for_selector(".error")
    assert page.text_content(".error .error-message") == "Missing or invalid API key"
    assert page.text_content(".error .error-code") == "unauthorized"
    page.fill("#key", console.key)
    page.click("button[type=submit]")
    assert page.text_content("#who-account") == "local"
    assert page.text_content("#who-scopes") == "Scopes: admin"
    page.wait_for_selector("#runs")
    page.click("#sign-out")
    page.wait_for_selector("#key")
    assert page.evaluate("sessionStorage.length") == 0

    reader = stack.call("POST", "/v1/keys", {"name": "reader", "scopes": ["runs:read", "runnables:read"]})
    page.fill("#key", reader.json()["api_key"])
    page.press("#key", "Enter")
    page.wait_for_selector("#runs")
    assert page.text_content("#who-scopes") == "Scopes: runnables:read, runs:read"  # a key without admin
    assert not [r.url for r in console.requests if r.url.endswith("/v1/keys")]  # the account names it


def test_runs_are_listed_newest_first_and_filtered_by_status_runnable_time_and_parent(
    console: Console, stack: Stack
) -> None:
    first = start(stack, "echo", {"n": 1})
    failed = start(stack, "fail", {"message": "on purpose"})
    parent = start(stack, "parent", {"child": stack.runnable("echo"), "items": [{"a": 1}, {"b": 2}]})
    ended(stack, first, failed, parent)
    children = [run["id"] for run in stack.call("GET", f"/v1/runs?parent_run_id={parent}").json()["items"]]
    assert len(children) == 2
    page = console.page
    console.sign_in()
    page.wait_for_selector("#runs tr[data-run-id]")
    ids = row_ids(console)
    assert ids.index(parent) < ids.index(failed) < ids.index(first)

    page.select_option("#f-status", "failed")
    page.click(".filters button[type=submit]")
    page.wait_for_url(re.compile(r"#/runs\?status=failed$"))
    page.wait_for_selector(f"#runs tr[data-run-id='{failed}']")
    statuses = page.eval_on_selector_all("#runs tr[data-run-id]", "rows => rows.map(r => r.dataset.status)")
    assert set(statuses) == {"failed"}
    assert page.text_content(f"tr[data-run-id='{failed}'] td:nth-child(3)") == "fail"

    page.select_option("#f-status", "")
    page.select_option("#f-runnable_id", label="echo")
    page.click(".filters button[type=submit]")
    page.wait_for_selector(f"#runs tr[data-run-id='{first}']")
    runnables = page.eval_on_selector_all(
        "#runs tr[data-run-id] td:nth-child(3)", "cells => cells.map(c => c.textContent)"
    )
    assert set(runnables) == {"echo"}
    assert {first, *children} <= set(row_ids(console))

    console.go(f"#/runs?parent_run_id={parent}")
    wait_rows(console, 2, without=first)
    assert set(row_ids(console)) == set(children)
    assert page.input_value("#f-parent_run_id") == parent

    page.fill("#f-parent_run_id", "")
    page.fill("#f-created_after", "2999-01-01T00:00:00")
    page.click(".filters button[type=submit]")
    page.wait_for_selector("#runs td.empty")


def test_a_long_listing_pages_forward_and_back(console: Console, stack: Stack) -> None:
    spec = {"name": "pager", "kind": "python", "config": {"function": "echo"}}
    runnable = stack.call("POST", "/v1/runnables", spec).json()["id"]
    runs = [
        stack.call("POST", f"/v1/runnable/{runnable}/runs", {"inputs": {"i": i}}).json()["id"]
        for i in range(22)
    ]
    page = console.page
    console.sign_in(f"#/runs?runnable_id={runnable}")
    wait_rows(console, 20)
    first_page = row_ids(console)
    page.click(".pager button:has-text('Next')")
    wait_rows(console, 2)
    assert set(first_page) | set(row_ids(console)) == set(runs)
    page.click(".pager button:has-text('Previous')")
    wait_rows(console, 20)
    assert row_ids(console) == first_page
    ended(stack, *runs)


def test_a_running_run_is_followed_to_its_end_with_its_state_outputs_and_log(
    console: Console, stack: Stack, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    script = [
        {"log": "first step", "fields": {"n": 1}},
        {"print": "printed to stdout"},
        {"state": {"phase": "halfway"}},
        {"outputs": {"draft": "partial"}},
        {"wait": str(gate)},
        {"log": "after the gate"},
    ]
    run_id = start(stack, "scripted", {"script": script, "returns": {"answer": 42}})
    page = console.page
    console.sign_in("#/runs")
    page.wait_for_selector(f"tr[data-run-id='{run_id}'] [data-status='running']")
    page.click(f"tr[data-run-id='{run_id}'] a")
    page.wait_for_selector("#run-log .line:has-text('first step')")
    page.wait_for_selector("#run-state pre:has-text('halfway')")
    page.wait_for_selector("#run-outputs pre:has-text('partial')")
    assert page.text_content("#run-status") == "running"
    assert "printed to stdout" in page.text_content("#run-log")
    assert page.is_visible("#cancel")
    gate.touch()
    page.wait_for_selector("#run-status [data-status='completed']")
    page.wait_for_selector("#run-log .line:has-text('after the gate')")
    page.wait_for_selector("#following:has-text('The run ended completed')")
    assert '"answer": 42' in page.text_content("#run-outputs")
    reasons = page.eval_on_selector_all(
        "#run-timeline li[data-type='status']", "items => items.map(i => i.textContent)"
    )
    assert [any(word in reason for reason in reasons) for word in ("accepted", "claimed", "ended")] == [
        True
    ] * 3
    assert not page.is_visible("#cancel")


def test_a_run_not_ended_is_cancelled(console: Console, stack: Stack) -> None:
    run_id = start(stack, "sleep", {"seconds": 30})
    page = console.page
    console.sign_in(f"#/run/{run_id}")
    page.wait_for_selector("#run-status [data-status='running']")
    page.click("#cancel")
    page.wait_for_selector("#run-status [data-status='cancelled']")
    page.wait_for_selector("#run-timeline li:has-text('cancel_requested')")
    assert stack.call("GET", f"/v1/run/{run_id}").json()["status"] == "cancelled"


def test_a_dead_callback_is_shown_with_its_attempts_and_redelivered(console: Console, stack: Stack) -> None:
    hook = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: every attempt fails
    run_id = start(stack, "echo", {"x": 1}, callback_url=hook)
    ended(stack, run_id)
    dead = eventually(
        lambda: [
            d
            for d in stack.call("GET", f"/v1/run/{run_id}/callbacks").json()["items"]
            if d["state"] == "dead"
        ]
    )
    assert len(dead[0]["attempts"]) == 2
    page = console.page
    console.sign_in(f"#/run/{run_id}")
    page.wait_for_selector(".delivery[data-state='dead'][data-attempts='2']")
    assert hook in page.text_content(".delivery")
    assert page.locator(".delivery tbody tr").count() == 2
    page.click("#redeliver")
    page.wait_for_selector(".delivery[data-attempts='3']", timeout=30_000)


def test_the_key_is_never_in_a_url_a_log_local_storage_or_a_cookie(console: Console, stack: Stack) -> None:
    run_id = start(stack, "echo", {"look": "around"})
    ended(stack, run_id)
    page = console.page
    console.sign_in()
    for fragment, ready in [
        ("#/runs", "#runs tr[data-run-id]"),
        (f"#/run/{run_id}", "#following:has-text('ended')"),
        ("#/runnables", "tr[data-runnable-id]"),
        (f"#/runnable/{stack.runnable('echo')}/run", "#start"),
        ("#/account", "#keys-list tr[data-key-id]"),
    ]:
        console.go(fragment)
        page.wait_for_selector(ready)
        assert console.key not in page.url
    page.reload()  # signed in still: the tab's session storage
    page.wait_for_selector("#who-account")
    key = console.key
    urls = [request.url for request in console.requests]
    assert any("/v1/runs" in url for url in urls)
    secret = key.split("_", 2)[2]  # rpk_<key id>_<secret>: the secret may hold "_" too
    assert [url for url in urls if secret in url] == []
    api_calls = [request for request in console.requests if "/v1/" in request.url]
    assert {request.headers.get("authorization") for request in api_calls} == {f"Bearer {key}"}
    assert [(r.url, r.headers.get("referer")) for r in console.requests if r.headers.get("referer")] == []
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert page.evaluate("Object.values(sessionStorage)") == [key]
    assert [message for message in console.messages if key in message] == []


def test_run_data_is_shown_as_text_and_the_csp_refuses_script_that_would_get_in(
    console: Console, stack: Stack
) -> None:
    script = [{"log": PAYLOAD_IMG}, {"state": {"html": PAYLOAD_SCRIPT}}]
    returns = {"img": PAYLOAD_IMG, "script": PAYLOAD_SCRIPT}
    run_id = start(stack, "scripted", {"script": script, "returns": returns})
    ended(stack, run_id)
    page = console.page
    response = console.open()
    policy = dict(part.split(" ", 1) for part in response.headers["content-security-policy"].split("; "))
    assert policy["default-src"] == policy["frame-ancestors"] == policy["base-uri"] == "'none'"
    assert policy["script-src"] == policy["connect-src"] == "'self'"  # no inline script, no eval
    assert policy["require-trusted-types-for"] == "'script'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    console.sign_in(f"#/run/{run_id}")
    page.wait_for_selector("#following:has-text('ended')")
    assert PAYLOAD_IMG in page.text_content("#run-outputs pre")
    assert PAYLOAD_SCRIPT in page.text_content("#run-outputs pre")
    assert PAYLOAD_SCRIPT in page.text_content("#run-state pre")
    assert PAYLOAD_IMG in page.text_content("#run-log")
    assert page.locator("main img, main script").count() == 0
    assert not [request for request in console.requests if request.url.endswith("/x")]
    assert page.evaluate("window.__pwned") is None

    # Were markup to reach the page anyway: Trusted Types refuse strings as HTML or script text, and the
    # CSP runs no inline script nor handler.
    refused = page.evaluate("""async () => {
        window.__violations = [];
        document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.effectiveDirective));
        const attempts = {};
        const attempt = (name, inject) => {
            try { inject(); attempts[name] = 'allowed'; } catch (error) { attempts[name] = error.name; }
        };
        // in a task of the page's own (what DevTools evaluates itself passes the CSP's eval check)
        await new Promise((done) => setTimeout(() => {
            attempt('innerHTML', () => { document.querySelector('#run-outputs').innerHTML = '<img src=x onerror="window.__pwned = 3">'; });
            attempt('script text', () => { document.createElement('script').textContent = 'window.__pwned = 4'; });
            attempt('script node', () => {
                const script = document.createElement('script');
                script.append(document.createTextNode('window.__pwned = 5'));
                document.body.append(script);
            });
            attempt('handler', () => {
                const img = document.createElement('img');
                img.setAttribute('onerror', 'window.__pwned = 6');
                img.src = 'nope.png';
                document.body.append(img);
            });
            attempt('eval', () => { (0, eval)('window.__pwned = 7'); });
            done();
        }, 0));
        await new Promise((resolve) => setTimeout(resolve, 300));
        return { pwned: window.__pwned ?? null, attempts, violations: window.__violations };
    }""")
    assert refused["pwned"] is None
    assert refused["attempts"] == {
        "innerHTML": "TypeError",
        "script text": "TypeError",
        "script node": "allowed",  # inserted, never run
        "handler": "TypeError",
        "eval": "EvalError",
    }
    assert refused["violations"] == ["require-trusted-types-for"] * 5
